//! `ferry rake` on a real remote-execution cluster: BuildGrid (from PyPI, installed by
//! `.ci/deps` into `target/buildgrid-venv`) with the test worker `tests/fixtures/buildgrid_bot.py`
//! on its Bots service. The C example end to end and again from the action cache; inputs and
//! outputs over the batch limit (ByteStream); a failing action; a dropped Execute stream
//! resumed with WaitExecution; Ctrl-C cancelling an operation; a server that is down.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helper::{ferry_bin, wait_until, Daemon};

/// BuildGrid's virtual environment.
fn venv() -> PathBuf {
    let path = std::env::var_os("FERRY_BUILDGRID_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/buildgrid-venv"),
        PathBuf::from,
    );
    assert!(
        path.join("bin/bgd").exists(),
        "BuildGrid is not installed at {}: run `bash .ci/deps` (the README's test command does)",
        path.display()
    );
    path
}

/// BuildGrid's configuration (shared with bench/reapi.sh): loopback on port 0, an in-memory
/// CAS and action cache, a SQLite scheduler it makes itself, short poll intervals, one
/// instance named "".
const CONFIG: &str = include_str!("../fixtures/buildgrid.yml");

/// What a secured BuildGrid is configured with: TLS with client certificates (signed by
/// `DIR/ca.pem`, made by `ferry tls init DIR`) and JWT bearer tokens (HS256 with `secret`).
struct Security {
    tls: PathBuf,
    secret: PathBuf,
    worker_token: PathBuf,
}

/// A BuildGrid server and its workers, stopped when dropped.
struct Grid {
    dir: tempfile::TempDir,
    server: Child,
    bots: Vec<Child>,
    port: u16,
    security: Option<Security>,
    /// Workers are started `--hostile`: every result names outputs never declared.
    hostile: bool,
}

impl Grid {
    fn start(workers: usize) -> Grid {
        Grid::start_with(workers, None)
    }

    /// A grid whose one worker is hostile (see `buildgrid_bot.py --hostile`).
    fn start_hostile() -> Grid {
        Grid::start_as(1, None, true)
    }

    fn start_with(workers: usize, security: Option<Security>) -> Grid {
        Grid::start_as(workers, security, false)
    }

    fn start_as(workers: usize, security: Option<Security>, hostile: bool) -> Grid {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("buildgrid.yml");
        let text = match &security {
            None => CONFIG.to_owned(),
            Some(security) => CONFIG
                .replace(
                    "    insecure-mode: true\n",
                    &format!(
                        "    insecure-mode: false\n    credentials:\n      tls-server-key: {}\n      tls-server-cert: {}\n      tls-client-certs: {}\nauthorization:\n  method: jwt\n  secret: {}\n  algorithm: hs256\n",
                        security.tls.join("server-key.pem").display(),
                        security.tls.join("server.pem").display(),
                        security.tls.join("ca.pem").display(),
                        security.secret.display(),
                    ),
                ),
        };
        std::fs::write(&config, text).expect("config");
        let server = Grid::serve(dir.path(), &config);
        let pid = server.id();
        let mut grid = Grid {
            dir,
            server,
            bots: Vec::new(),
            port: 0,
            security,
            hostile,
        };
        grid.port = wait_until(
            "BuildGrid to listen",
            Duration::from_secs(60),
            || listening_port(pid),
            || grid.server_log(),
        );
        for n in 0..workers {
            grid.add_worker(n);
        }
        grid
    }

    /// `bgd server start CONFIG` in `dir`, its output appended to `dir/server.log`.
    fn serve(dir: &Path, config: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("log");
        Command::new(venv().join("bin/bgd"))
            .args(["server", "start"])
            .arg(config)
            .current_dir(dir)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("bgd server start")
    }

    /// Kills the server and its workers (-9).
    fn stop(&mut self) {
        for child in self
            .bots
            .iter_mut()
            .chain(std::iter::once(&mut self.server))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server (-9) and its workers, and starts the server again on the same port
    /// (an in-memory CAS and scheduler: it forgets everything) with a new worker.
    fn restart(&mut self) {
        self.stop();
        let config = self.dir.path().join("buildgrid-again.yml");
        let address = format!("127.0.0.1:{}", self.port);
        std::fs::write(&config, CONFIG.replace("127.0.0.1:0", &address)).expect("config");
        self.server = Grid::serve(self.dir.path(), &config);
        let pid = self.server.id();
        let port = wait_until(
            "BuildGrid to listen again",
            Duration::from_secs(60),
            || listening_port(pid),
            || self.server_log(),
        );
        assert_eq!(port, self.port);
        let n = self.bots.len();
        self.add_worker(n);
    }

    fn add_worker(&mut self, n: usize) {
        let log = std::fs::File::create(self.dir.path().join(format!("bot{n}.out"))).expect("log");
        let mut bot = Command::new(venv().join("bin/python"));
        bot.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/buildgrid_bot.py"));
        if let Some(security) = &self.security {
            bot.arg("--ca")
                .arg(security.tls.join("ca.pem"))
                .arg("--cert")
                .arg(security.tls.join("clients/worker.pem"))
                .arg("--key")
                .arg(security.tls.join("clients/worker-key.pem"))
                .arg("--token-file")
                .arg(&security.worker_token);
        }
        if self.hostile {
            bot.arg("--hostile");
        }
        let bot = bot
            .args(["--remote", &format!("127.0.0.1:{}", self.port)])
            .args(["--name", &format!("bot{n}")])
            .arg("--log")
            .arg(self.work_log())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the worker");
        self.bots.push(bot);
    }

    fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    fn work_log(&self) -> PathBuf {
        self.dir.path().join("work.log")
    }

    /// The workers' log: `started HASH`, `ran HASH ARGV`, `cancelled HASH`...
    fn work(&self) -> String {
        std::fs::read_to_string(self.work_log()).unwrap_or_default()
    }

    fn ran(&self) -> usize {
        self.work()
            .lines()
            .filter(|l| l.starts_with("ran "))
            .count()
    }

    fn server_log(&self) -> String {
        let mut text =
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        for n in 0..self.bots.len() {
            text.push_str(
                &std::fs::read_to_string(self.dir.path().join(format!("bot{n}.out")))
                    .unwrap_or_default(),
            );
        }
        text
    }
}

impl Drop for Grid {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The TCP port process `pid` listens on (from /proc: its socket inodes, the LISTEN rows).
fn listening_port(pid: u32) -> Option<u16> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let target = std::fs::read_link(entry.path()).ok()?;
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            inodes.push(inode.to_owned());
        }
    }
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        for row in text.lines().skip(1) {
            let fields: Vec<&str> = row.split_whitespace().collect();
            if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|i| i == fields[9]) {
                let port = fields[1].rsplit(':').next()?;
                return u16::from_str_radix(port, 16).ok();
            }
        }
    }
    None
}

/// The seed's C example (as in the pool's tests) with a Rakefile for `hosts`.
fn c_project(hosts: &str) -> tempfile::TempDir {
    let project = tempfile::tempdir().expect("tempdir");
    crate::rake::c_program(project.path());
    std::fs::write(
        project.path().join("Rakefile"),
        format!("HOSTS = {hosts}\n{}", crate::rake::C_SETS),
    )
    .expect("Rakefile");
    project
}

/// A project directory holding only `rakefile`.
fn project(rakefile: &str) -> tempfile::TempDir {
    let project = tempfile::tempdir().expect("tempdir");
    std::fs::write(project.path().join("Rakefile"), rakefile).expect("Rakefile");
    project
}

/// `ferry rake ARGS` in `dir` with `local` as the local daemon.
fn rake(dir: &Path, local: &Daemon, args: &[&str]) -> Output {
    rake_command(dir, local, args).output().expect("ferry rake")
}

fn rake_command(dir: &Path, local: &Daemon, args: &[&str]) -> Command {
    let mut command = Command::new(ferry_bin());
    command
        .current_dir(dir)
        .arg("--socket")
        .arg(&local.socket)
        .arg("rake")
        .args(args);
    command
}

#[test]
fn the_c_example_runs_on_buildgrid_and_again_from_its_action_cache() {
    let grid = Grid::start(2);
    let local = Daemon::start(&[]);
    let reapi = format!("reapi://127.0.0.1:{}", grid.port);
    let project = c_project(&reapi);
    let joblog = project.path().join("joblog.tsv");
    let joblog_arg = joblog.to_str().expect("utf-8");
    let out = rake(
        project.path(),
        &local,
        &["--platform", "OSFamily=linux", "--joblog", joblog_arg],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}\n{}", grid.server_log());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "9 8\n");
    for made in ["program.o", "square.o", "cube.o", "program"] {
        assert!(
            project.path().join(made).exists(),
            "{made} came back: {stderr}"
        );
    }
    assert_eq!(grid.ran(), 4, "{}", grid.work());
    let log = std::fs::read_to_string(&joblog).expect("joblog");
    assert!(
        log.lines()
            .nth(1)
            .is_some_and(|l| l.contains(&format!("\t{}\t", grid.url()))),
        "{log}"
    );
    // Again: every action from the action cache, nothing executed.
    std::fs::remove_file(project.path().join("program")).expect("rm");
    let out = rake(
        project.path(),
        &local,
        &["--platform", "OSFamily=linux", "--joblog", joblog_arg],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "9 8\n");
    assert_eq!(grid.ran(), 4, "nothing ran again: {}", grid.work());
    let log = std::fs::read_to_string(&joblog).expect("joblog");
    assert_eq!(log.matches(" (cached)\t").count(), 4, "{log}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(cached)"),
        "the summary marks them: {out:?}"
    );
    // --no-cache runs them again.
    let out = rake(
        project.path(),
        &local,
        &["--no-cache", "--platform", "OSFamily=linux"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(grid.ran(), 8, "{}", grid.work());
}

#[test]
fn outputs_of_a_hostile_cluster_land_only_where_they_may() {
    let grid = Grid::start_hostile();
    let local = Daemon::start(&[]);
    let exposed = crate::returned::Exposed::new(
        &format!("HOSTS = reapi://127.0.0.1:{}", grid.port),
        crate::returned::HARMFUL_COMMAND,
    );
    let out = crate::returned::rake(exposed.project.path(), &local, &[]);
    let mut refused = crate::returned::REFUSED.to_vec();
    let undeclared = "is not an output the action declared";
    refused.extend([
        ("../x", undeclared),
        ("/abs", undeclared),
        ("../up", undeclared),
    ]);
    exposed.assert_unharmed(&out, &refused);
}

#[test]
fn inputs_and_outputs_over_the_batch_limit_go_by_bytestream() {
    let grid = Grid::start(1);
    let local = Daemon::start(&[]);
    let project = tempfile::tempdir().expect("tempdir");
    // 6 MiB: over gRPC's 4 MiB message limit, so no batch call could carry it.
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(project.path().join("big.bin"), &big).expect("write");
    std::fs::write(
        project.path().join("Rakefile"),
        "actionset1:\n\tremote-cp big.bin copy.bin && wc -c < big.bin > size.txt\n\t\trequires big.bin\n",
    )
    .expect("Rakefile");
    let out = rake(project.path(), &local, &["--reapi", &grid.url()]);
    assert!(out.status.success(), "{out:?}\n{}", grid.server_log());
    assert_eq!(
        std::fs::read_to_string(project.path().join("size.txt")).expect("size.txt"),
        format!("{}\n", big.len())
    );
    assert!(std::fs::read(project.path().join("copy.bin")).expect("copy.bin") == big);
}

#[test]
fn a_failing_action_reports_its_exit_code_and_stderr_and_a_down_server_is_named() {
    let grid = Grid::start(1);
    let local = Daemon::start(&[]);
    let project =
        project("actionset1:\n\tremote-echo oops >&2; exit 3\n\nactionset2:\n\techo never\n");
    let out = rake(project.path(), &local, &["--reapi", &grid.url()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.starts_with("oops\n"), "its stderr: {stderr}");
    assert!(
        stderr.contains("failed on") && stderr.contains("with exit 3"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("never"));
    // A server that is down: a clear error, before anything runs.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let url = format!("grpc://127.0.0.1:{port}");
    let out = rake(project.path(), &local, &["--reapi", &url]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the REAPI server at {url}")),
        "{stderr}"
    );
}

/// `ferry rake --reapi URL` started in the background, once its action has started on the
/// worker.
fn rake_once_started(grid: &Grid, dir: &Path, local: &Daemon, url: &str) -> std::process::Child {
    let child = rake_command(dir, local, &["--reapi", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry rake");
    wait_until(
        "the action to start on the worker",
        Duration::from_secs(30),
        || grid.work().contains("started ").then_some(()),
        || grid.server_log(),
    );
    child
}

/// A TCP relay whose connections can all be cut at once.
struct Relay {
    port: u16,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn to(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let held = Arc::clone(&streams);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut kept = held.lock().expect("lock");
                for stream in [&client, &server] {
                    kept.push(stream.try_clone().expect("clone"));
                }
                drop(kept);
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, streams }
    }

    /// Cuts every connection made so far.
    fn cut(&self) {
        for stream in self.streams.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn a_dropped_execute_stream_is_resumed_with_wait_execution() {
    let grid = Grid::start(1);
    let local = Daemon::start(&[]);
    let relay = Relay::to(grid.port);
    let project = project("actionset1:\n\tremote-sleep 2; echo done > done.txt\n");
    let url = format!("grpc://127.0.0.1:{}", relay.port);
    let child = rake_once_started(&grid, project.path(), &local, &url);
    relay.cut();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}\n{}", grid.server_log());
    assert!(stderr.contains("resuming with WaitExecution"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(project.path().join("done.txt")).expect("done.txt"),
        "done\n"
    );
    assert_eq!(grid.ran(), 1, "{}", grid.work());
}

#[test]
fn a_server_restarted_mid_action_gets_the_action_again() {
    let mut grid = Grid::start(1);
    let local = Daemon::start(&[]);
    let project = project(
        "actionset1:\n\tremote-sleep 2; cat input.txt > copy.txt\n\t\trequires input.txt\n",
    );
    std::fs::write(project.path().join("input.txt"), "kept\n").expect("input");
    let child = rake_once_started(&grid, project.path(), &local, &grid.url());
    // Its Execute stream drops; it resumes until the server answers again, which has forgotten
    // the operation and every blob: the inputs go again, and the action runs anew.
    grid.restart();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}\n{}", grid.server_log());
    assert!(stderr.contains("resuming with WaitExecution"), "{stderr}");
    assert!(
        stderr.contains("lost operation") && stderr.contains("uploading the inputs again"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("copy.txt")).expect("copy.txt"),
        "kept\n"
    );
}

#[test]
fn ctrl_c_cancels_the_running_operation() {
    let grid = Grid::start(1);
    let local = Daemon::start(&[]);
    let project = project("actionset1:\n\tremote-sleep 120\n");
    let child = rake_once_started(&grid, project.path(), &local, &grid.url());
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cancelled 1 operation(s)"),
        "{out:?}"
    );
    wait_until(
        "the worker to stop the cancelled command",
        Duration::from_secs(30),
        || grid.work().contains("cancelled ").then_some(()),
        || format!("{}\n{}", grid.work(), grid.server_log()),
    );
}

/// An HS256 JWT for `secret`, valid for an hour (made by BuildGrid's own PyJWT).
fn jwt(secret: &Path, subject: &str) -> String {
    let out = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import jwt, sys, time; print(jwt.encode({'sub': sys.argv[2], 'exp': int(time.time()) + 3600}, open(sys.argv[1]).read().strip(), algorithm='HS256'))",
        ])
        .arg(secret)
        .arg(subject)
        .output()
        .expect("python");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_cluster_behind_tls_client_certificates_and_bearer_tokens() {
    let keys = tempfile::tempdir().expect("tempdir");
    let tls = keys.path().join("tls");
    for args in [
        vec!["tls", "init", tls.to_str().expect("utf-8")],
        vec!["tls", "client", tls.to_str().expect("utf-8"), "worker"],
        vec!["tls", "client", tls.to_str().expect("utf-8"), "rake"],
    ] {
        let out = Command::new(ferry_bin())
            .args(&args)
            .output()
            .expect("ferry tls");
        assert!(out.status.success(), "{out:?}");
    }
    let secret = keys.path().join("jwt-secret");
    std::fs::write(&secret, "a-shared-secret-for-the-test\n").expect("secret");
    let worker_token = keys.path().join("worker-token");
    std::fs::write(&worker_token, jwt(&secret, "worker")).expect("token");
    let client_token = keys.path().join("client-token");
    std::fs::write(&client_token, jwt(&secret, "rake")).expect("token");
    let grid = Grid::start_with(
        1,
        Some(Security {
            tls: tls.clone(),
            secret,
            worker_token,
        }),
    );
    let local = Daemon::start(&[]);
    let project = project("actionset1:\n\tremote-echo secure > out.txt\n");
    let url = format!("grpcs://127.0.0.1:{}", grid.port);
    let ca = tls.join("ca.pem");
    let cert = tls.join("clients/rake.pem");
    let key = tls.join("clients/rake-key.pem");
    let full = [
        "--reapi",
        url.as_str(),
        "--reapi-ca",
        ca.to_str().expect("utf-8"),
        "--reapi-cert",
        cert.to_str().expect("utf-8"),
        "--reapi-key",
        key.to_str().expect("utf-8"),
        "--reapi-token-file",
        client_token.to_str().expect("utf-8"),
    ];
    // Without the token: refused, and said so.
    let out = rake(project.path(), &local, &full[..8]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{out:?}"
    );
    // Without the client certificate: the handshake fails.
    let mut no_cert = full[..4].to_vec();
    no_cert.extend_from_slice(&full[8..]);
    let out = rake(project.path(), &local, &no_cert);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(!project.path().join("out.txt").exists());
    // With both: it runs.
    let out = rake(project.path(), &local, &full);
    assert!(out.status.success(), "{out:?}\n{}", grid.server_log());
    assert_eq!(
        std::fs::read_to_string(project.path().join("out.txt")).expect("out.txt"),
        "secure\n"
    );
}
