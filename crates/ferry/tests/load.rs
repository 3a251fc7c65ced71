//! The load and fault suite: the real daemon binary under many clients and under faults, one
//! case after another, each printing a row (what was done, a figure, bytes or jobs lost, the
//! daemon's RSS and open fds before and after) of one table at the end. A case fails when
//! something is lost, the daemon stops serving, or its memory or fds do not come back.
//!
//!   cargo test -p ferry --test load                      # the short version (also in .ci/run)
//!   FERRY_LOAD=full cargo test -p ferry --release --test load   # the full one
//!
//! Not a benchmark: figures are printed, never compared with a time.

#[path = "integration/helper.rs"]
mod helper;
#[path = "load/idle.rs"]
mod idle;
#[path = "load/soak.rs"]
mod soak;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use helper::{ferry_bin, poll_until, Daemon};

/// How big the cases are.
struct Scale {
    full: bool,
    clients: usize,
    lines: usize,
}

/// A case of the suite.
type Case = fn(&Scale) -> Row;

/// One row of the table.
struct Row {
    case: String,
    figure: String,
    lost: u64,
    rss: (u64, u64),
    fds: (usize, usize),
    failure: Option<String>,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The daemon's RSS and fds, once it has settled (memory is given back after a pause).
fn settled(daemon: &Daemon) -> (u64, usize) {
    std::thread::sleep(Duration::from_millis(1500));
    (rss_kib(daemon.pid()), fd_count(daemon.pid()))
}

/// Runs `case` around its daemon: measures before and after, checks that the daemon still
/// serves and that its fds came back (to at most 4 more) and its RSS stayed within `rss_slack`.
fn measured(
    case: &'static str,
    daemon: &Daemon,
    rss_slack_kib: u64,
    body: impl FnOnce() -> Result<(String, u64), String>,
) -> Row {
    let (rss_before, fds_before) = settled(daemon);
    let outcome = body();
    // Memory goes back once output has paused (the engine trims after a quiet second):
    // wait for it, up to 15 s, then take what is there.
    let pid = daemon.pid();
    poll_until(Duration::from_secs(15), || {
        (rss_kib(pid) <= rss_before + rss_slack_kib && fd_count(pid) <= fds_before + 4)
            .then_some(())
    });
    let (rss_after, fds_after) = settled(daemon);
    let mut failure = match &outcome {
        Ok((_, 0)) => None,
        Ok((_, lost)) => Some(format!("{lost} lost")),
        Err(e) => Some(e.clone()),
    };
    let out = job(daemon, &["true"]);
    if failure.is_none() && !out.status.success() {
        failure = Some(format!("the daemon stopped serving: {out:?}"));
    }
    if failure.is_none() && fds_after > fds_before + 4 {
        failure = Some(format!("fds grew from {fds_before} to {fds_after}"));
    }
    if failure.is_none() && rss_after > rss_before + rss_slack_kib {
        failure = Some(format!("RSS grew from {rss_before} to {rss_after} KiB"));
    }
    let (figure, lost) = outcome.unwrap_or_else(|e| (format!("error: {e}"), 0));
    Row {
        case: case.to_owned(),
        figure,
        lost,
        rss: (rss_before, rss_after),
        fds: (fds_before, fds_after),
        failure,
    }
}

/// `ferry run -- ARGS` against `daemon`.
fn job(daemon: &Daemon, args: &[&str]) -> std::process::Output {
    daemon
        .ferry()
        .arg("run")
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ferry run")
}

fn expected(n: usize, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("client-{n}-line-{i}\n"))
        .collect()
}

/// The dialects the mixed load speaks, a client of each in turn.
const DIALECTS: [&str; 5] = ["native", "fanos", "c2", "rake64", "cbsd"];

/// Writes the job every client runs, `sh LINES_SH N COUNT`: COUNT numbered lines naming client
/// N (one word per argument, as CBSD's requests split them).
fn lines_script(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("lines.sh");
    let script = "i=0; while [ $i -lt $2 ]; do echo client-$1-line-$i; i=$((i+1)); done\n";
    std::fs::write(&path, script).expect("script");
    path
}

/// Runs client `n`'s job through `dialect` against `daemon`, and returns its stdout.
fn dialect_client(
    dialect: &str,
    daemon: &Daemon,
    sockets: &MixedSockets,
    job: &[String],
) -> Result<Vec<u8>, String> {
    let output = |mut command: Command| -> Result<Vec<u8>, String> {
        let out = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    match dialect {
        "native" => {
            let mut command = daemon.ferry();
            command.args(["run", "--"]).args(job);
            output(command)
        }
        "fanos" => {
            let mut command = Command::new(ferry_bin());
            command
                .arg("fanos")
                .arg("--socket")
                .arg(&sockets.fanos)
                .arg("ARGV")
                .args(job);
            // `ferry fanos` prints the reply after what the job wrote.
            let mut out = output(command)?;
            let reply = b"STATUS 0\n";
            if !out.ends_with(reply) {
                return Err("no STATUS 0 reply".into());
            }
            out.truncate(out.len() - reply.len());
            Ok(out)
        }
        "c2" => {
            let mut command = Command::new(ferry_bin());
            command
                .args(["c2", "--addr", &format!("127.0.0.1:{}", sockets.c2)])
                .args(job);
            output(command)
        }
        "rake64" => rake64_command(sockets.rake64, &job.join(" ")),
        _ => cbsd_command(&sockets.cbsd, &job.join(" ")),
    }
}

/// Where the mixed load's dialects listen.
struct MixedSockets {
    fanos: std::path::PathBuf,
    cbsd: std::path::PathBuf,
    c2: u16,
    rake64: u16,
}

/// One rake64 `!C` request, as the seed's client sends it (a padded header, then the command):
/// the output of its `!SS` answer.
fn rake64_command(port: u16, command: &str) -> Result<Vec<u8>, String> {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut request = format!("!C{}", command.chars().count()).into_bytes();
    request.resize(64, b' ');
    request.extend_from_slice(command.as_bytes());
    stream.write_all(&request).map_err(|e| e.to_string())?;
    let mut header = [0u8; 64];
    stream.read_exact(&mut header).map_err(|e| e.to_string())?;
    let header = String::from_utf8_lossy(&header).trim_end().to_owned();
    let len: usize = header
        .strip_prefix("!SS")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("answer {header:?}"))?;
    let mut output = vec![0u8; len];
    stream.read_exact(&mut output).map_err(|e| e.to_string())?;
    let _ = stream.write_all(b"!D");
    Ok(output)
}

/// One CBSD `command` request: its stdout frames until its exit frame.
fn cbsd_command(socket: &std::path::Path, command: &str) -> Result<Vec<u8>, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("command {command}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut output = Vec::new();
    loop {
        match ferry_wire::cbsd::decode_frame(&buf).map_err(|e| e.to_string())? {
            Some((frame, used)) => {
                buf.drain(..used);
                match frame.kind {
                    ferry_wire::cbsd::kind::STDOUT => output.extend_from_slice(&frame.payload),
                    ferry_wire::cbsd::kind::EXIT => return Ok(output),
                    _ => {}
                }
            }
            None => {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed before the exit".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// Many clients at once, of every dialect in turn (native, FANOS, C2 over TCP, rake64, CBSD),
/// each running a job whose output names it, every byte checked.
fn concurrent_clients(scale: &Scale) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let sockets_dir = dir.path();
    let fanos = sockets_dir.join("fanos.sock");
    let cbsd = sockets_dir.join("cbsd.sock");
    let listeners = [
        format!("fanos:unix:{}", fanos.display()),
        format!("cbsd:unix:{}", cbsd.display()),
        "c2:tcp:127.0.0.1:0".to_owned(),
        "rake64:tcp:127.0.0.1:0".to_owned(),
    ];
    let listeners: Vec<&str> = listeners.iter().map(String::as_str).collect();
    // Finished jobs stay in memory with their output up to --max-finished (1000 by default:
    // 40 MB for these); 100 keeps what this case measures to the connections and jobs. The
    // dialects without a wait-and-retry take a refusal as final: the handshake pools are made
    // as large as the burst.
    let daemon = Arc::new(Daemon::start_networked(
        &[
            "--allow-any-command",
            "--max-connections",
            "2048",
            "--max-handshakes",
            "2048",
            "--max-jobs",
            "64",
            "--max-finished",
            "100",
        ],
        &listeners,
    ));
    let sockets = Arc::new(MixedSockets {
        fanos,
        cbsd,
        c2: daemon.listener_port("c2:tcp"),
        rake64: daemon.listener_port("rake64:tcp"),
    });
    let script = lines_script(sockets_dir);
    let (clients, lines) = (scale.clients, scale.lines);
    measured(
        "concurrent clients, every dialect",
        &daemon,
        16 * 1024,
        || {
            let started = Instant::now();
            let handles: Vec<_> = (0..clients)
                .map(|n| {
                    let (daemon, sockets) = (Arc::clone(&daemon), Arc::clone(&sockets));
                    let job = vec![
                        "sh".to_owned(),
                        script.display().to_string(),
                        n.to_string(),
                        lines.to_string(),
                    ];
                    std::thread::spawn(move || {
                        dialect_client(DIALECTS[n % DIALECTS.len()], &daemon, &sockets, &job)
                    })
                })
                .collect();
            let mut lost = 0u64;
            let mut bytes = 0u64;
            for (n, handle) in handles.into_iter().enumerate() {
                let want = expected(n, lines);
                bytes += want.len() as u64;
                let dialect = DIALECTS[n % DIALECTS.len()];
                match handle.join() {
                    Ok(Ok(out)) if out == want.as_bytes() => {}
                    Ok(Ok(out)) => {
                        lost += want.len().abs_diff(out.len()).max(1) as u64;
                        eprintln!(
                            "client {n} ({dialect}): {} bytes, not as written",
                            out.len()
                        );
                    }
                    Ok(Err(e)) => {
                        lost += want.len() as u64;
                        eprintln!("client {n} ({dialect}): {e}");
                    }
                    Err(_) => lost += want.len() as u64,
                }
            }
            Ok((
                format!(
                    "{clients} clients ({} each of {}), {} KB checked in {:.1} s",
                    clients / DIALECTS.len(),
                    DIALECTS.join(", "),
                    bytes / 1000,
                    started.elapsed().as_secs_f64()
                ),
                lost,
            ))
        },
    )
}

/// Clients killed with -9 in the middle of a stream: their jobs are hung up, the daemon's fds
/// and memory come back.
fn clients_killed_mid_stream(scale: &Scale) -> Row {
    // Every job runs at once (queued ones would give their clients nothing to read).
    let daemon = Daemon::start(&["--max-jobs", "256"]);
    let clients = if scale.full { 100 } else { 10 };
    measured("clients killed -9 mid-stream", &daemon, 8 * 1024, || {
        let mut children: Vec<_> = (0..clients)
            .map(|_| {
                daemon
                    .ferry()
                    .args(["run", "--", "yes", "streaming"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("ferry run")
            })
            .collect();
        for child in &mut children {
            let mut first = [0u8; 1024];
            let stdout = child.stdout.as_mut().ok_or("no stdout")?;
            stdout.read_exact(&mut first).map_err(|e| e.to_string())?;
        }
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Every job is hung up with its client.
        let ended = poll_until(Duration::from_secs(30), || {
            let out = daemon.run(&["ps", "--json"]);
            (!String::from_utf8_lossy(&out.stdout).contains("\"running\"")).then_some(())
        });
        match ended {
            Some(()) => Ok((format!("{clients} streams cut, every job ended"), 0)),
            None => Err("jobs still running after their clients died".into()),
        }
    })
}

/// Readers that never read: a follower of a job writing without end, a hub member while
/// another broadcasts, a C2 client over TCP whose command writes 50 MB. The daemon goes on
/// serving others (jobs, and the hub's other members), its memory bounded.
fn a_reader_that_never_reads(_scale: &Scale) -> Row {
    use ferry_wire::native::{ClientMessage, DaemonMessage};
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["c2:tcp:127.0.0.1:0"]);
    measured(
        "readers that never read: job, chat, C2",
        &daemon,
        64 * 1024,
        || {
            let mut stuck = daemon
                .ferry()
                .args(["run", "--", "yes", "never read"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            // A hub member that never reads, and a C2 client that never reads its answer.
            let mut silent = daemon.raw();
            silent.send(&ClientMessage::Join {
                request: 1,
                name: Some("silent".into()),
                resume: None,
            });
            if !matches!(silent.recv(), Some(DaemonMessage::Joined { .. })) {
                return Err("the silent member did not join".into());
            }
            let mut c2 =
                std::net::TcpStream::connect(("127.0.0.1", daemon.listener_port("c2:tcp")))
                    .map_err(|e| e.to_string())?;
            let request = ferry_wire::c2::encode_request(
                "head",
                &["-c".into(), "50000000".into(), "/dev/zero".into()],
            );
            let id = ferry_wire::c2::CspId {
                destination: 1,
                destination_port: 10,
                source: 2,
                source_port: 40,
                ..ferry_wire::c2::CspId::default()
            };
            c2.write_all(&ferry_wire::c2::encode_frame(id, &request).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            // Two members talk meanwhile: a broadcast reaches the silent one's outbox too.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let chatted = runtime.block_on(async {
                let endpoint = ferry_client::Endpoint::Unix(daemon.socket.clone());
                let mut ann = ferry_client::Client::connect(&endpoint, "load")
                    .await
                    .ok()?;
                ann.join(Some("ann"), None).await.ok()?;
                let mut bob = ferry_client::Client::connect(&endpoint, "load")
                    .await
                    .ok()?;
                bob.join(Some("bob"), None).await.ok()?;
                // Bob reads as ann sends (his outbox holds 1024: a burst he read only
                // afterwards would lose the rest by the slow-consumer policy).
                let send = async {
                    for k in 0..2000 {
                        ann.say(None, &format!("{k} {}", "x".repeat(200)), false)
                            .await
                            .ok()?;
                    }
                    Some(())
                };
                let hear = async {
                    let mut heard = 0;
                    while heard < 2000 {
                        let event = tokio::time::timeout(Duration::from_secs(30), bob.next_event());
                        match event.await {
                            Ok(Ok(Some(ferry_client::Event::Message { .. }))) => heard += 1,
                            Ok(Ok(Some(_))) => {}
                            _ => break,
                        }
                    }
                    heard
                };
                let (sent, heard) = tokio::join!(send, hear);
                sent?;
                Some(heard)
            });
            std::thread::sleep(Duration::from_secs(2));
            let rss_during = rss_kib(daemon.pid());
            let mut served = 0;
            for n in 0..20 {
                let out = job(&daemon, &["sh", "-c", &format!("echo other-{n}")]);
                if out.stdout == format!("other-{n}\n").as_bytes() {
                    served += 1;
                }
            }
            let _ = stuck.kill();
            let _ = stuck.wait();
            drop((silent, c2));
            let heard = chatted.unwrap_or(0);
            Ok((
                format!(
                "20 of 20 jobs served meanwhile, {heard} of 2000 broadcasts heard by a reading \
                 member; daemon at {rss_during} KiB"
            ),
                20 - served + (2000 - heard) as u64,
            ))
        },
    )
}

/// A child that closes its stdout and goes on; a child that starts a daemon of its own.
fn children_that_misbehave(_scale: &Scale) -> Row {
    let daemon = Daemon::start(&[]);
    measured(
        "children: stdout closed, a daemon forked",
        &daemon,
        4 * 1024,
        || {
            let out = job(&daemon, &["sh", "-c", "exec >&-; sleep 1; exit 3"]);
            if out.status.code() != Some(3) {
                return Err(format!("stdout closed: {out:?}"));
            }
            let started = Instant::now();
            let out = job(
                &daemon,
                &[
                    "sh",
                    "-c",
                    "setsid sleep 30 </dev/null >/dev/null 2>&1 & echo $!",
                ],
            );
            let took = started.elapsed();
            let pid: i32 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|_| format!("forked: {out:?}"))?;
            // SAFETY: ending the test's own grandchild by the pid it printed.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            if !out.status.success() || took > Duration::from_secs(10) {
                return Err(format!("forked daemon held the job: {took:?} {out:?}"));
            }
            Ok((
                "exit 3 reported; the job with a daemon ended at once".into(),
                0,
            ))
        },
    )
}

/// The daemon killed with -9 under load, then started again: finished jobs kept, running ones
/// lost and their processes ended, ids not reused.
fn daemon_killed_under_load(scale: &Scale) -> Row {
    let mut daemon = Daemon::start(&["--max-jobs", "128"]);
    let jobs = if scale.full { 100 } else { 20 };
    let row = measured(
        "daemon killed -9 under load, restarted",
        &daemon,
        8 * 1024,
        || Ok((String::new(), 0)),
    );
    let rss_before = row.rss.0;
    let fds_before = row.fds.0;
    let before: Vec<u64> = (0..5)
        .map(|n| {
            let out = daemon.run(&["run", "--detach", "--", "sh", "-c", &format!("exit {n}")]);
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .collect();
    let mut pids = Vec::new();
    for _ in 0..jobs {
        let out = daemon.run(&["run", "--detach", "--", "sleep", "300"]);
        pids.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    std::thread::sleep(Duration::from_millis(500));
    daemon.stop_with(libc::SIGKILL);
    daemon.restart(&["--max-jobs", "128"], None);
    let ps = daemon.run(&["ps", "--all", "--json"]);
    let text = String::from_utf8_lossy(&ps.stdout).into_owned();
    let lost = text.matches("\"lost\"").count();
    let gone = poll_until(Duration::from_secs(20), || {
        let out = Command::new("pgrep")
            .args(["-f", "^sleep 300$"])
            .output()
            .ok()?;
        out.stdout.is_empty().then_some(())
    });
    let next = daemon.run(&["run", "--detach", "--", "true"]);
    let next: u64 = String::from_utf8_lossy(&next.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let mut failure = None;
    if lost != jobs {
        failure = Some(format!("{lost} of {jobs} recorded lost"));
    } else if gone.is_none() {
        failure = Some("orphaned sleeps still run".into());
    } else if before.iter().any(|id| *id >= next) {
        failure = Some(format!("id {next} reused"));
    }
    let (rss_after, fds_after) = settled(&daemon);
    Row {
        case: "daemon killed -9 under load, restarted".into(),
        figure: format!("{jobs} running jobs lost and their processes ended; next id {next}"),
        lost: 0,
        rss: (rss_before, rss_after),
        fds: (fds_before, fds_after),
        failure,
    }
}

/// A connection of any transport, for the slowloris peers.
trait Wire: Read + Write + Send {}
impl<T: Read + Write + Send> Wire for T {}

/// Peers that send one byte a second (slowloris) on every dialect and transport, each never
/// finishing its first request: each is closed at the handshake time limit (2 s here), and
/// the owner is served meanwhile.
fn slowloris(scale: &Scale) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    let listeners = [
        format!("fanos:unix:{}", path("fanos.sock").display()),
        format!("cbsd:unix:{}", path("cbsd.sock").display()),
        format!("cbsdng:unix:{}", path("cbsdng.sock").display()),
        "ferry:tls:127.0.0.1:0".to_owned(),
        "rake64:tcp:127.0.0.1:0".to_owned(),
        "tsockm:tcp:127.0.0.1:0".to_owned(),
        "c2:tcp:127.0.0.1:0".to_owned(),
    ];
    let listeners: Vec<&str> = listeners.iter().map(String::as_str).collect();
    let daemon = Daemon::start_networked(&["--handshake-timeout", "2s"], &listeners);
    let per_dialect = if scale.full { 50 } else { 5 };
    let tcp = |port: u16| -> Option<Box<dyn Wire>> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_nodelay(true).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        Some(Box::new(stream))
    };
    let unix = |path: &std::path::Path| -> Option<Box<dyn Wire>> {
        let stream = UnixStream::connect(path).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        Some(Box::new(stream))
    };
    // Each dialect's first request, never finished: the bytes go one a second.
    type Connect<'a> = Box<dyn Fn() -> Option<Box<dyn Wire>> + 'a>;
    let dialects: Vec<(&str, &[u8], Connect<'_>)> = vec![
        (
            "ferry",
            &[0, 0, 1, 0xff, 0xa1],
            Box::new(|| unix(&daemon.socket)),
        ),
        (
            "fanos",
            b"100:GETPID",
            Box::new(|| unix(&path("fanos.sock"))),
        ),
        (
            "cbsd",
            b"command sleep",
            Box::new(|| unix(&path("cbsd.sock"))),
        ),
        (
            "cbsdng",
            &[1, 0, 0, 0, 1],
            Box::new(|| unix(&path("cbsdng.sock"))),
        ),
        ("ferry over TLS", &[0x16, 0x03, 0x01, 0x02, 0x00], {
            let port = daemon.port("tls");
            Box::new(move || tcp(port))
        }),
        ("rake64", b"!C12    ", {
            let port = daemon.listener_port("rake64:tcp");
            Box::new(move || tcp(port))
        }),
        ("tsockm", b"REQ::COMM::2", {
            let port = daemon.listener_port("tsockm:tcp");
            Box::new(move || tcp(port))
        }),
        ("c2", &[0x20, 0x00, 0x00, 0x01, 0x00], {
            let port = daemon.listener_port("c2:tcp");
            Box::new(move || tcp(port))
        }),
    ];
    measured("slowloris on every dialect", &daemon, 4 * 1024, || {
        let mut peers: Vec<(&str, Box<dyn Wire>)> = Vec::new();
        for (name, _, connect) in &dialects {
            for _ in 0..per_dialect {
                peers.push((name, connect().ok_or(format!("cannot connect to {name}"))?));
            }
        }
        let started = Instant::now();
        let mut served = 0;
        // Four bytes a second apart: twice the limit.
        let longest = 4;
        for i in 0..longest {
            for (name, peer) in &mut peers {
                let bytes = dialects
                    .iter()
                    .find(|d| d.0 == *name)
                    .map_or(&[][..], |d| d.1);
                if let Some(byte) = bytes.get(i) {
                    let _ = peer.write_all(&[*byte]);
                }
            }
            if job(&daemon, &["true"]).status.success() {
                served += 1;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        // Closed by the daemon: each read ends (after a refusal in its dialect's words, or
        // none), where one still open would wait for its read time limit.
        let mut open = Vec::new();
        for (name, peer) in &mut peers {
            let mut rest = Vec::new();
            match peer.read_to_end(&mut rest) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(_) => open.push(*name),
            }
        }
        let took = started.elapsed().as_secs_f64();
        if served < longest {
            return Err(format!("the owner was served {served} times of {longest}"));
        }
        if !open.is_empty() {
            eprintln!("slowloris peers still open past the limit: {open:?}");
        }
        Ok((
            format!(
                "{} peers ({per_dialect} on each of {}), a byte a second: {} closed by \
                     {took:.1} s (limit 2 s); the owner served {served} of {longest}",
                peers.len(),
                dialects.len(),
                peers.len() - open.len(),
            ),
            open.len() as u64,
        ))
    })
}

/// A client killed with -9 in the middle of an upload: nothing half-written appears, the
/// daemon's fds come back.
fn killed_mid_upload(_scale: &Scale) -> Row {
    let daemon = Daemon::start(&[]);
    measured("client killed -9 mid-upload", &daemon, 8 * 1024, || {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let fifo = dir.path().join("slow-source");
        let status = Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("mkfifo failed".into());
        }
        let mut put = daemon
            .ferry()
            .args(["put", "--quiet"])
            .arg(&fifo)
            .arg("half.bin")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut source = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .map_err(|e| e.to_string())?;
        let _ = source.write_all(&vec![7u8; 4 << 20]);
        let _ = put.kill();
        let _ = put.wait();
        drop(source);
        std::thread::sleep(Duration::from_millis(500));
        let listed = daemon.run(&["get", "half.bin", "/dev/null"]);
        if listed.status.success() {
            return Err("a half upload appeared under its name".into());
        }
        Ok(("4 MiB sent, client killed: no half.bin".into(), 0))
    })
}

/// FANOS clients gone with fds in flight: some die with their fds sent and their request
/// half written (the daemon must close those fds at once: a pipe whose write end only the
/// daemon held reads its end), others are killed with -9 while the ARGV they sent runs on
/// their fds (the command goes on to its end, as a kicked FANOS peer's does, and then its
/// fds go too).
fn fanos_clients_killed_with_fds(scale: &Scale) -> Row {
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("fanos.sock");
    let daemon = Daemon::start_networked(&[], &[&format!("fanos:unix:{}", socket.display())]);
    let rounds = if scale.full { 200 } else { 20 };
    measured(
        "FANOS clients killed with fds in flight",
        &daemon,
        4 * 1024,
        || {
            // Half a request, its three fds sent with the first bytes, then gone.
            let mut leaked = 0u64;
            for _ in 0..rounds {
                let stream = UnixStream::connect(&socket).map_err(|e| e.to_string())?;
                let (read_end, write_end) = rustix::pipe::pipe().map_err(|e| e.to_string())?;
                let fds = [write_end.as_fd(), write_end.as_fd(), write_end.as_fd()];
                ferry_io::fdpass::send_all_with_fds(stream.as_fd(), b"40:ARGV sh\0-c\0ech", &fds)
                    .map_err(|e| e.to_string())?;
                drop((stream, write_end));
                // The daemon's copies are the only write ends left: closed, the read sees its end.
                let mut read_end = std::fs::File::from(read_end);
                let reader = std::thread::spawn(move || {
                    let mut rest = Vec::new();
                    read_end.read_to_end(&mut rest).map(|_| rest.len())
                });
                let ended = poll_until(Duration::from_secs(10), || {
                    reader.is_finished().then_some(())
                });
                if ended.is_none() {
                    leaked += 1;
                }
            }
            // `ferry fanos ARGV` killed while its command runs on the client's fds.
            let marks = dir.path().join("marks");
            let mut killed = 0;
            for n in 0..rounds / 4 {
                let mut client = Command::new(ferry_bin())
                    .arg("fanos")
                    .arg("--socket")
                    .arg(&socket)
                    .args(["ARGV", "sh", "-c"])
                    .arg(format!(
                        "echo started; sleep 0.5; echo {n} >> {}",
                        marks.display()
                    ))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                let mut started = [0u8; 8];
                let stdout = client.stdout.as_mut().ok_or("no stdout")?;
                stdout.read_exact(&mut started).map_err(|e| e.to_string())?;
                let _ = client.kill();
                let _ = client.wait();
                killed += 1;
            }
            let finished = poll_until(Duration::from_secs(20), || {
                let text = std::fs::read_to_string(&marks).ok()?;
                (text.lines().count() == rounds / 4).then_some(())
            });
            if finished.is_none() {
                return Err("the commands of killed clients did not run to their end".into());
            }
            let mut next = UnixStream::connect(&socket).map_err(|e| e.to_string())?;
            next.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            next.write_all(b"6:GETPID,").map_err(|e| e.to_string())?;
            // The reply comes in one write: `N:OK PID,`.
            let mut answer = [0u8; 64];
            let n = next.read(&mut answer).map_err(|e| e.to_string())?;
            let answer = String::from_utf8_lossy(&answer[..n]);
            if !answer.contains(":OK ") {
                return Err(format!("the next client: {answer:?}"));
            }
            Ok((
                format!(
                    "{rounds} gone mid-request with 3 fds each: {} fds closed at once; {killed} \
                 killed while their command ran: each ran to its end; the next served",
                    rounds as u64 - leaked
                ),
                leaked,
            ))
        },
    )
}

/// TLS clients that vanish in the middle of their handshake (half a ClientHello, then gone, or
/// a `ferry --host` killed with -9 as it connects): the daemon serves the next TLS client.
fn killed_in_tls_handshakes(scale: &Scale) -> Row {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["ferry:tls:127.0.0.1:0"]);
    let rounds = if scale.full { 200 } else { 20 };
    measured("TLS clients gone mid-handshake", &daemon, 8 * 1024, || {
        let port = daemon.port("tls");
        for _ in 0..rounds {
            let mut stream =
                std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
            // A handshake record's header announcing more than follows.
            let _ = stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]);
        }
        for _ in 0..rounds / 4 {
            let mut client = daemon
                .remote()
                .args(["run", "--", "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(5));
            let _ = client.kill();
            let _ = client.wait();
        }
        let out = daemon
            .remote()
            .args(["run", "--", "echo", "after"])
            .output()
            .map_err(|e| e.to_string())?;
        if out.stdout != b"after\n" {
            return Err(format!("the next TLS client: {out:?}"));
        }
        Ok((
            format!(
                "{rounds} half handshakes, {} clients killed; the next served",
                rounds / 4
            ),
            0,
        ))
    })
}

/// A disk that fills (files may not grow past 1-2 MiB: `ulimit -f 2048`): a job writing more
/// still delivers every byte to its client, with a clear warning; the next job runs.
fn a_full_disk(_scale: &Scale) -> Row {
    let daemon = Daemon::start_after("ulimit -f 2048", &[]);
    measured("a full disk (ulimit -f)", &daemon, 8 * 1024, || {
        let out = job(&daemon, &["head", "-c", "3000000", "/dev/zero"]);
        let delivered = out.stdout.len() as u64;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.contains("can no longer be stored") {
            return Err(format!("no clear warning: {stderr}"));
        }
        let next = job(&daemon, &["echo", "next"]);
        if next.stdout != b"next\n" {
            return Err(format!("the next job: {next:?}"));
        }
        Ok((
            format!("{delivered} of 3000000 bytes delivered past the full log; next job ran"),
            3_000_000 - delivered.min(3_000_000),
        ))
    })
}

/// Few fds (`ulimit -n 64`) and more connections than that: errors, and service once they go.
fn fd_exhaustion(_scale: &Scale) -> Row {
    let daemon = Daemon::start_after("ulimit -n 64", &[]);
    measured("fd exhaustion (ulimit -n 64)", &daemon, 8 * 1024, || {
        let held: Vec<UnixStream> = (0..100)
            .filter_map(|_| UnixStream::connect(&daemon.socket).ok())
            .collect();
        let count = held.len();
        drop(held);
        // Service comes back once they are gone.
        let back = poll_until(Duration::from_secs(20), || {
            job(&daemon, &["true"]).status.success().then_some(())
        });
        match back {
            Some(()) => Ok((
                format!("{count} connections held against a 64-fd limit; service back after"),
                0,
            )),
            None => Err("no service after the connections closed".into()),
        }
    })
}

/// Every decoder's fuzz target for a bounded time (`fuzz/run`: built with coverage on a
/// stable toolchain, the inputs that once crashed one replayed first, then fuzzed on its kept
/// corpus): one row per target, a crash counted as lost. The daemon is not involved.
fn fuzzing(scale: &Scale) -> Vec<Row> {
    let seconds = if scale.full { 60 } else { 4 };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let run = Command::new("bash")
        .arg(format!("{root}/fuzz/run"))
        .args(["--seconds", &seconds.to_string()])
        .stdin(Stdio::null())
        .output();
    let row = |case: String, figure: String, lost: u64, failure: Option<String>| Row {
        case,
        figure,
        lost,
        rss: (0, 0),
        fds: (0, 0),
        failure,
    };
    let out = match run {
        Ok(out) => out,
        Err(e) => return vec![row("fuzzing".into(), String::new(), 0, Some(e.to_string()))],
    };
    let mut rows: Vec<Row> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("fuzz ")?.split_whitespace();
            let target = words.next()?;
            let field = |name: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.parse().ok())
                    .unwrap_or(0)
            };
            let crashes = field("crashes=");
            Some(row(
                format!("fuzz {target}"),
                format!(
                    "{} runs in {seconds} s on a corpus of {}; {} new inputs",
                    field("runs="),
                    field("corpus="),
                    field("found=")
                ),
                crashes,
                (crashes > 0).then(|| "crashed: see target/fuzz/".to_owned()),
            ))
        })
        .collect();
    if !out.status.success() && rows.iter().all(|r| r.failure.is_none()) {
        rows.push(row(
            "fuzzing".into(),
            String::new(),
            0,
            Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        ));
    }
    rows
}

fn main() {
    let full = std::env::var("FERRY_LOAD").is_ok_and(|v| v == "full");
    let scale = Scale {
        full,
        clients: if full { 1000 } else { 100 },
        lines: if full { 2000 } else { 200 },
    };
    // FERRY_LOAD_ONLY=WORD runs the cases whose function names hold WORD (while working on one).
    let only = std::env::var("FERRY_LOAD_ONLY").unwrap_or_default();
    let cases: &[(&str, Case)] = &[
        ("concurrent_clients", concurrent_clients),
        ("clients_killed_mid_stream", clients_killed_mid_stream),
        ("a_reader_that_never_reads", a_reader_that_never_reads),
        ("children_that_misbehave", children_that_misbehave),
        ("daemon_killed_under_load", daemon_killed_under_load),
        ("slowloris", slowloris),
        ("killed_mid_upload", killed_mid_upload),
        ("killed_in_tls_handshakes", killed_in_tls_handshakes),
        (
            "fanos_clients_killed_with_fds",
            fanos_clients_killed_with_fds,
        ),
        ("idle_peers", idle::idle_peers),
        ("soak", soak::soak),
        ("a_full_disk", a_full_disk),
        ("fd_exhaustion", fd_exhaustion),
    ];
    let mut rows = Vec::new();
    if "fuzzing".contains(only.as_str()) {
        rows.extend(fuzzing(&scale));
    }
    for (name, case) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let row = case(&scale);
        eprintln!("{}: {}", row.case, row.failure.as_deref().unwrap_or("ok"));
        rows.push(row);
    }
    println!(
        "\nLoad and faults ({} version)\n\n| case | figure | lost | daemon RSS KiB before -> after | open fds before -> after | result |\n|---|---|---|---|---|---|",
        if full { "full" } else { "short" }
    );
    for row in &rows {
        // Rows without a daemon (the fuzz targets) show none.
        let (rss, fds) = if row.rss == (0, 0) {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!("{} -> {}", row.rss.0, row.rss.1),
                format!("{} -> {}", row.fds.0, row.fds.1),
            )
        };
        println!(
            "| {} | {} | {} | {rss} | {fds} | {} |",
            row.case,
            row.figure,
            row.lost,
            row.failure.as_deref().unwrap_or("ok")
        );
    }
    let failed = rows.iter().filter(|r| r.failure.is_some()).count();
    if failed > 0 {
        eprintln!("{failed} case(s) failed");
        std::process::exit(1);
    }
}
