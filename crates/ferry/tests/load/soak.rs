//! The soak: a steady mix of what clients do (runs, detached jobs and attaches, puts and gets,
//! sessions, chat, rake sets) for a while, the daemon's RSS and open fds sampled all along;
//! at the end every job's record and log are checked against what its client asked for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::helper::{ferry_bin, Daemon};
use super::{fd_count, native_member, next_message, rss_kib, Row, Scale};

/// What one soak job was asked to do: its stdout and exit code.
#[derive(Clone)]
struct Expected {
    stdout: String,
    exit: i32,
}

/// What the workers share: the deadline, every job they expect to find at the end (by its
/// unique command line), and their failures.
struct Soak {
    daemon: Daemon,
    work: PathBuf,
    token: PathBuf,
    until: Instant,
    expected: Mutex<HashMap<String, Expected>>,
    failures: Mutex<Vec<String>>,
    operations: AtomicU64,
    stop: AtomicBool,
}

impl Soak {
    fn running(&self) -> bool {
        Instant::now() < self.until && !self.stop.load(Ordering::Relaxed)
    }

    fn fail(&self, what: String) {
        eprintln!("soak: {what}");
        let mut failures = self.failures.lock().expect("failures");
        failures.push(what);
        if failures.len() > 20 {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn ferry(&self, args: &[&str]) -> Output {
        self.daemon
            .ferry()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ferry")
    }

    fn done(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }
}

/// `ferry run` of a command whose output and exit name it.
fn runs(soak: &Soak) {
    let mut n = 0u64;
    while soak.running() {
        n += 1;
        let script = format!("echo soak-run-{n}; echo soak-err-{n} >&2; exit {}", n % 3);
        let out = soak.ferry(&["run", "--", "sh", "-c", &script]);
        let stdout = format!("soak-run-{n}\n");
        if out.stdout != stdout.as_bytes()
            || out.stderr != format!("soak-err-{n}\n").as_bytes()
            || out.status.code() != Some((n % 3) as i32)
        {
            soak.fail(format!("run {n}: {out:?}"));
        }
        soak.expected.lock().expect("expected").insert(
            script,
            Expected {
                stdout,
                exit: (n % 3) as i32,
            },
        );
        soak.done();
    }
}

/// Detached jobs, followed with `ferry attach`.
fn detached_and_attached(soak: &Soak) {
    let mut n = 0u64;
    while soak.running() {
        n += 1;
        let script = format!("sleep 0.1; echo soak-detached-{n}");
        let out = soak.ferry(&["run", "--detach", "--", "sh", "-c", &script]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let attached = soak.ferry(&["attach", &id]);
        let stdout = format!("soak-detached-{n}\n");
        if attached.stdout != stdout.as_bytes() || !attached.status.success() {
            soak.fail(format!("attach {id}: {attached:?}"));
        }
        soak.expected
            .lock()
            .expect("expected")
            .insert(script, Expected { stdout, exit: 0 });
        soak.done();
    }
}

/// A file put and fetched back (twenty names, overwritten in turn).
fn puts_and_gets(soak: &Soak) {
    let mut n = 0u64;
    while soak.running() {
        n += 1;
        let size = 1000 + (n * 7919 % 300_000) as usize;
        let data: Vec<u8> = (0..size).map(|i| (i as u64 * 31 + n) as u8).collect();
        let local = soak.work.join(format!("put-{}", n % 20));
        std::fs::write(&local, &data).expect("write");
        let name = format!("soak/{}.bin", n % 20);
        let put = soak.ferry(&["put", "--quiet", path(&local), &name]);
        let back = soak.work.join("back.bin");
        let get = soak.ferry(&["get", "--quiet", "--force", &name, path(&back)]);
        if !put.status.success() || !get.status.success() {
            soak.fail(format!("put/get {n}: {put:?} {get:?}"));
        } else if std::fs::read(&back).ok().as_deref() != Some(&data[..]) {
            soak.fail(format!("get {n}: not the bytes put"));
        }
        soak.done();
    }
}

/// A session: its state carried from one command to the next, then closed.
fn sessions(soak: &Soak) {
    let mut n = 0u64;
    while soak.running() {
        n += 1;
        let out = soak.ferry(&["session", "new"]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let set = soak.ferry(&["run", "--session", &id, "--", &format!("cd /; V=soak-{n}")]);
        let shown = soak.ferry(&["run", "--session", &id, "--", "echo $V $PWD"]);
        let close = soak.ferry(&["session", "close", &id]);
        if !set.status.success()
            || shown.stdout != format!("soak-{n} /\n").as_bytes()
            || !close.status.success()
        {
            soak.fail(format!("session {n}: {set:?} {shown:?} {close:?}"));
        }
        soak.done();
    }
}

/// Two hub members: one says a numbered line to the other, which must get every one in order.
fn chat(soak: &Soak) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let endpoint = ferry_client::Endpoint::Unix(soak.daemon.socket.clone());
        let mut ann = native_member(&endpoint, "soak-ann").await.expect("join");
        let mut bob = native_member(&endpoint, "soak-bob").await.expect("join");
        let mut n = 0u64;
        while soak.running() {
            n += 1;
            let text = format!("line {n}");
            if let Err(e) = ann.say(Some("soak-bob"), &text, false).await {
                soak.fail(format!("say {n}: {e}"));
                break;
            }
            let got = next_message(&mut bob, Duration::from_secs(30)).await;
            if got.map(|(_, got)| got) != Some(text.clone()) {
                soak.fail(format!("chat line {n} did not arrive"));
                break;
            }
            soak.done();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// A Rakefile of two sets: a remote action on the daemon's own TCP listener (its input sent,
/// the file it makes brought back), then a local one reading that file.
fn rake_sets(soak: &Soak) {
    let project = soak.work.join("rake");
    std::fs::create_dir_all(&project).expect("project");
    let port = soak.daemon.port("tcp");
    let mut n = 0u64;
    while soak.running() {
        n += 1;
        std::fs::write(project.join("input.txt"), "x".repeat(n as usize % 5000)).expect("input");
        let _ = std::fs::remove_file(project.join("count.txt"));
        std::fs::write(
            project.join("Rakefile"),
            format!(
                "HOSTS = 127.0.0.1:{port}\nactionset1:\n\tremote-wc -c < input.txt > count.txt\n\
                 \t\trequires input.txt\nactionset2:\n\techo rake-{n}: $(cat count.txt)\n"
            ),
        )
        .expect("Rakefile");
        let out = Command::new(ferry_bin())
            .current_dir(&project)
            .arg("--socket")
            .arg(&soak.daemon.socket)
            .args(["--no-tls", "--token-file", path(&soak.token), "rake"])
            .stdin(Stdio::null())
            .output()
            .expect("ferry rake");
        let want = format!("rake-{n}: {}\n", n % 5000);
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains(&want) {
            soak.fail(format!("rake {n}: {out:?}"));
        }
        soak.done();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every job the workers expect, found in the history with its exit code and its log.
fn check_records(soak: &Soak) -> Result<usize, String> {
    let ps = soak.ferry(&["ps", "--all", "--json"]);
    let expected = soak.expected.lock().expect("expected").clone();
    let mut logs_to_check = Vec::new();
    for line in String::from_utf8_lossy(&ps.stdout).lines() {
        let record: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let Some(script) = record["command"].get(2).and_then(|s| s.as_str()) else {
            continue;
        };
        let Some(want) = expected.get(script) else {
            continue;
        };
        let id = record["id"].to_string();
        if record["state"] != "exited" || record["exit_code"] != want.exit {
            return Err(format!("job {id} ({script}): record {record}"));
        }
        logs_to_check.push((id, want.stdout.clone()));
    }
    let found = logs_to_check.len();
    if found != expected.len() {
        return Err(format!(
            "{found} of {} jobs found in the history",
            expected.len()
        ));
    }
    // Every job's log, four `ferry log` at a time.
    let parts: Vec<Vec<(String, String)>> = logs_to_check
        .chunks(found.div_ceil(4).max(1))
        .map(<[_]>::to_vec)
        .collect();
    std::thread::scope(|scope| {
        let checkers: Vec<_> = parts
            .iter()
            .map(|part| {
                scope.spawn(move || {
                    for (id, stdout) in part {
                        let log = soak.ferry(&["log", id]);
                        if log.stdout != stdout.as_bytes() {
                            return Err(format!("job {id}: log {log:?}"));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        checkers.into_iter().try_for_each(|checker| {
            checker
                .join()
                .map_err(|_| "a checker panicked".to_owned())?
        })
    })?;
    Ok(found)
}

/// The soak case: 30 minutes in the full run, 2 in the short one.
pub fn soak(scale: &Scale) -> Row {
    let minutes = if scale.full { 30 } else { 2 };
    let minutes: u64 = std::env::var("FERRY_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(minutes);
    let work = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start_networked(
        &["--allow-any-command", "--history-max-jobs", "1000000"],
        &["ferry:tcp:127.0.0.1:0"],
    );
    let token = daemon.tls_dir().join("token");
    let started = Instant::now();
    let soak = Arc::new(Soak {
        daemon,
        work: work.path().to_owned(),
        token,
        until: started + Duration::from_secs(minutes * 60),
        expected: Mutex::default(),
        failures: Mutex::default(),
        operations: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let workers: [fn(&Soak); 6] = [
        runs,
        detached_and_attached,
        puts_and_gets,
        sessions,
        chat,
        rake_sets,
    ];
    // Open fds are compared while the daemon is quiet, before and after: during the run they
    // count the connections and jobs in flight.
    let fds_quiet = fd_count(soak.daemon.pid());
    let handles: Vec<_> = workers
        .into_iter()
        .map(|worker| {
            let soak = Arc::clone(&soak);
            std::thread::spawn(move || worker(&soak))
        })
        .collect();
    // RSS and fds sampled every twentieth of the run.
    let pid = soak.daemon.pid();
    let mut samples = Vec::new();
    while soak.running() {
        let left = soak.until.saturating_duration_since(Instant::now());
        std::thread::sleep(Duration::from_secs(minutes * 3).min(left));
        samples.push((rss_kib(pid), fd_count(pid)));
    }
    for handle in handles {
        if handle.join().is_err() {
            soak.fail("a worker panicked".into());
        }
    }
    let pid_after = soak.daemon.pid();
    let fds_after = super::helper::poll_until(Duration::from_secs(15), || {
        (fd_count(pid_after) <= fds_quiet + 4).then_some(())
    })
    .map_or_else(|| fd_count(pid_after), |()| fd_count(pid_after));
    let operations = soak.operations.load(Ordering::Relaxed);
    let checked = check_records(&soak);
    let mut failure = soak.failures.lock().expect("failures").first().cloned();
    // Flat: the RSS the second half of the run reached is no more than the first half's most
    // plus 8 MiB; the fds, once quiet again, no more than before plus 4.
    let half = samples.len() / 2;
    let most = |part: &[(u64, usize)]| {
        part.iter()
            .fold((0, 0), |(r, f), (rss, fds)| (r.max(*rss), f.max(*fds)))
    };
    let (first, second) = (most(&samples[..half]), most(&samples[half..]));
    if failure.is_none() && (second.0 > first.0 + 8 * 1024 || fds_after > fds_quiet + 4) {
        failure = Some(format!(
            "grew: RSS {} -> {} KiB, fds (quiet) {fds_quiet} -> {fds_after}",
            first.0, second.0
        ));
    }
    let figure = match &checked {
        Ok(found) => format!(
            "{minutes} min, {operations} operations; {found} job records and logs right; RSS and fds sampled {} times",
            samples.len()
        ),
        Err(e) => {
            failure.get_or_insert_with(|| e.clone());
            format!("{minutes} min, {operations} operations")
        }
    };
    if failure.is_some() {
        let log = soak.daemon.log();
        let notable: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("ERROR")
                    || l.contains("WARN")
                    || l.contains("panick")
                    || l.contains("listening on")
            })
            .take(40)
            .collect();
        eprintln!(
            "soak: the daemon's log, notable lines:\n{}",
            notable.join("\n")
        );
    }
    let (start, end) = (
        samples.first().copied().unwrap_or_default(),
        samples.last().copied().unwrap_or_default(),
    );
    Row {
        case: "soak: runs, attaches, files, sessions, chat, rake".into(),
        figure,
        lost: 0,
        rss: (start.0, end.0),
        fds: (fds_quiet, fds_after),
        failure,
    }
}
