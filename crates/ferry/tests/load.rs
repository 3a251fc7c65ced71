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

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use helper::{ferry_bin, poll_until, Daemon};

/// How big the cases are.
struct Scale {
    full: bool,
    clients: usize,
    lines: usize,
}

/// One row of the table.
struct Row {
    case: &'static str,
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
        case,
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

/// The output a job of client `n` writes: numbered lines naming it.
fn script(n: usize, lines: usize) -> String {
    format!("i=0; while [ $i -lt {lines} ]; do echo client-{n}-line-$i; i=$((i+1)); done")
}

fn expected(n: usize, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("client-{n}-line-{i}\n"))
        .collect()
}

/// Many clients at once, each running a job with output through the native protocol, every
/// byte checked.
fn concurrent_clients(scale: &Scale) -> Row {
    // Finished jobs stay in memory with their output up to --max-finished (1000 by default:
    // 40 MB for these); 100 keeps what this case measures to the connections and jobs.
    let daemon = Daemon::start(&[
        "--max-connections",
        "2048",
        "--max-jobs",
        "64",
        "--max-finished",
        "100",
    ]);
    let (clients, lines) = (scale.clients, scale.lines);
    measured("concurrent native clients", &daemon, 16 * 1024, || {
        let started = Instant::now();
        let handles: Vec<_> = (0..clients)
            .map(|n| {
                let socket = daemon.socket.clone();
                std::thread::spawn(move || {
                    Command::new(ferry_bin())
                        .arg("--socket")
                        .arg(&socket)
                        .args(["run", "--", "sh", "-c", &script(n, lines)])
                        .stdin(Stdio::null())
                        .output()
                })
            })
            .collect();
        let mut lost = 0u64;
        let mut bytes = 0u64;
        for (n, handle) in handles.into_iter().enumerate() {
            let want = expected(n, lines);
            bytes += want.len() as u64;
            match handle.join() {
                Ok(Ok(out)) if out.status.success() && out.stdout == want.as_bytes() => {}
                Ok(Ok(out)) => {
                    lost += want.len().abs_diff(out.stdout.len()).max(1) as u64;
                    eprintln!("client {n}: {:?}", String::from_utf8_lossy(&out.stderr));
                }
                _ => lost += want.len() as u64,
            }
        }
        Ok((
            format!(
                "{clients} clients, {} KB checked in {:.1} s",
                bytes / 1000,
                started.elapsed().as_secs_f64()
            ),
            lost,
        ))
    })
}

/// CBSD text clients at once, each running a command and checking its output and exit.
fn concurrent_cbsd_clients(scale: &Scale) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("cbsd.sock");
    let spec = format!("cbsd:unix:{}", socket.display());
    // CBSD's clients take a refusal as final (ferry's own wait and try again): the handshake
    // pool is made as large as the burst.
    let daemon = Daemon::start_networked(
        &["--max-connections", "2048", "--max-handshakes", "1024"],
        &[spec.as_str()],
    );
    let clients = scale.clients / 2;
    let count = scale.lines;
    measured("concurrent CBSD clients", &daemon, 16 * 1024, || {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let socket = socket.clone();
                std::thread::spawn(move || -> Result<String, String> {
                    let mut stream = UnixStream::connect(&socket).map_err(|e| e.to_string())?;
                    stream
                        .set_read_timeout(Some(Duration::from_secs(60)))
                        .map_err(|e| e.to_string())?;
                    stream
                        .write_all(format!("command seq 1 {count}\n").as_bytes())
                        .map_err(|e| e.to_string())?;
                    let mut buf = Vec::new();
                    let mut output = String::new();
                    loop {
                        match ferry_wire::cbsd::decode_frame(&buf).map_err(|e| e.to_string())? {
                            Some((frame, used)) => {
                                buf.drain(..used);
                                match frame.kind {
                                    ferry_wire::cbsd::kind::STDOUT => {
                                        output.push_str(&String::from_utf8_lossy(&frame.payload))
                                    }
                                    ferry_wire::cbsd::kind::EXIT => return Ok(output),
                                    _ => {}
                                }
                            }
                            None => {
                                let mut chunk = [0u8; 8192];
                                let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
                                if n == 0 {
                                    return Err("closed".into());
                                }
                                buf.extend_from_slice(&chunk[..n]);
                            }
                        }
                    }
                })
            })
            .collect();
        let want: String = (1..=count).map(|i| format!("{i}\n")).collect();
        let mut lost = 0u64;
        for handle in handles {
            match handle.join() {
                Ok(Ok(output)) if output == want => {}
                Ok(Ok(output)) => lost += want.len().abs_diff(output.len()).max(1) as u64,
                _ => lost += want.len() as u64,
            }
        }
        Ok((format!("{clients} clients, seq 1 {count} each"), lost))
    })
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

/// A follower that never reads: the job and the daemon go on serving others, its memory
/// bounded.
fn a_reader_that_never_reads(_scale: &Scale) -> Row {
    let daemon = Daemon::start(&[]);
    measured("a reader that never reads", &daemon, 64 * 1024, || {
        let mut stuck = daemon
            .ferry()
            .args(["run", "--", "yes", "never read"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
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
        Ok((
            format!("20 of 20 others served meanwhile; daemon at {rss_during} KiB"),
            20 - served,
        ))
    })
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
        case: "daemon killed -9 under load, restarted",
        figure: format!("{jobs} running jobs lost and their processes ended; next id {next}"),
        lost: 0,
        rss: (rss_before, rss_after),
        fds: (fds_before, fds_after),
        failure,
    }
}

/// Peers that send one byte a second (slowloris): each is closed at the handshake time limit,
/// and the owner is served meanwhile.
fn slowloris(scale: &Scale) -> Row {
    let daemon = Daemon::start(&["--handshake-timeout", "2s"]);
    let peers = if scale.full { 200 } else { 20 };
    measured(
        "slowloris: a byte a second until the time limit",
        &daemon,
        4 * 1024,
        || {
            let mut streams: Vec<UnixStream> = (0..peers)
                .filter_map(|_| UnixStream::connect(&daemon.socket).ok())
                .collect();
            let started = Instant::now();
            let mut closed = 0;
            let mut served = 0;
            // A frame's length, a byte at a time: never a whole Hello.
            for byte in [0u8, 0, 1, 0xff] {
                for stream in &mut streams {
                    let _ = stream.write_all(&[byte]);
                }
                if job(&daemon, &["true"]).status.success() {
                    served += 1;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            for stream in &mut streams {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| e.to_string())?;
                let mut rest = Vec::new();
                // Closed by the daemon: the read ends (with or without a refusal first).
                if stream.read_to_end(&mut rest).is_ok() {
                    closed += 1;
                }
            }
            let took = started.elapsed().as_secs_f64();
            if served < 4 {
                return Err(format!("the owner was served {served} times of 4"));
            }
            Ok((
                format!("{closed} of {peers} closed within {took:.1} s; owner served 4 of 4"),
                (peers - closed) as u64,
            ))
        },
    )
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

fn main() {
    let full = std::env::var("FERRY_LOAD").is_ok_and(|v| v == "full");
    let scale = Scale {
        full,
        clients: if full { 1000 } else { 100 },
        lines: if full { 2000 } else { 200 },
    };
    let cases: &[fn(&Scale) -> Row] = &[
        concurrent_clients,
        concurrent_cbsd_clients,
        clients_killed_mid_stream,
        a_reader_that_never_reads,
        children_that_misbehave,
        daemon_killed_under_load,
        slowloris,
        killed_mid_upload,
        killed_in_tls_handshakes,
        a_full_disk,
        fd_exhaustion,
    ];
    let mut rows = Vec::new();
    for case in cases {
        let row = case(&scale);
        eprintln!("{}: {}", row.case, row.failure.as_deref().unwrap_or("ok"));
        rows.push(row);
    }
    println!(
        "\nLoad and faults ({} version)\n\n| case | figure | lost | daemon RSS KiB before -> after | open fds before -> after | result |\n|---|---|---|---|---|---|",
        if full { "full" } else { "short" }
    );
    for row in &rows {
        println!(
            "| {} | {} | {} | {} -> {} | {} -> {} | {} |",
            row.case,
            row.figure,
            row.lost,
            row.rss.0,
            row.rss.1,
            row.fds.0,
            row.fds.1,
            row.failure.as_deref().unwrap_or("ok")
        );
    }
    let failed = rows.iter().filter(|r| r.failure.is_some()).count();
    if failed > 0 {
        eprintln!("{failed} case(s) failed");
        std::process::exit(1);
    }
}
