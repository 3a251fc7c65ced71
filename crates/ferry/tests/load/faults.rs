//! Faults: clients killed in the middle of what they do, the daemon killed under load,
//! readers that never read, slowloris on every dialect, misbehaving children, a full disk, fd
//! exhaustion.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::helper::{ferry_bin, poll_until, Daemon};
use super::{job, measured, native_member, rss_kib, settled, Row, Scale};

/// Clients killed with -9 in the middle of a stream: their jobs are hung up, the daemon's fds
/// and memory come back.
pub fn clients_killed_mid_stream(scale: &Scale) -> Row {
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
pub fn a_reader_that_never_reads(_scale: &Scale) -> Row {
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
                seen: None,
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
                let mut ann = native_member(&endpoint, "ann").await.ok()?;
                let mut bob = native_member(&endpoint, "bob").await.ok()?;
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
pub fn children_that_misbehave(_scale: &Scale) -> Row {
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
pub fn daemon_killed_under_load(scale: &Scale) -> Row {
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
    // The sleeps' own pids, once every one runs: the check below is about them, not about
    // any `sleep 300` on the machine.
    let sleeping = poll_until(Duration::from_secs(10), || {
        let ps = daemon.run(&["ps", "--json"]);
        let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        let sleeping: Vec<u32> = listed
            .iter()
            .filter(|job| pids.iter().any(|id| job["id"].as_u64() == id.parse().ok()))
            .filter_map(|job| job["pid"].as_u64().and_then(|pid| u32::try_from(pid).ok()))
            .collect();
        (sleeping.len() == jobs).then_some(sleeping)
    })
    .unwrap_or_default();
    let still_sleeping = || -> Vec<String> {
        sleeping
            .iter()
            .filter_map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                (cmdline == b"sleep\x00300\x00").then(|| {
                    let cgroup =
                        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                    format!("{pid} in {}", cgroup.trim())
                })
            })
            .collect()
    };
    // The check sees the sleeps while they run, so that it can see them afterwards.
    let seen_before = still_sleeping().len();
    daemon.stop_with(libc::SIGKILL);
    daemon.restart(&["--max-jobs", "128"], None);
    let ps = daemon.run(&["ps", "--all", "--json"]);
    let text = String::from_utf8_lossy(&ps.stdout).into_owned();
    let lost = text.matches("\"lost\"").count();
    let gone = poll_until(Duration::from_secs(20), || {
        still_sleeping().is_empty().then_some(())
    });
    let next = daemon.run(&["run", "--detach", "--", "true"]);
    let next: u64 = String::from_utf8_lossy(&next.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let mut failure = None;
    if sleeping.len() != jobs || seen_before != jobs {
        failure = Some(format!(
            "{} of {jobs} sleeps listed, {seen_before} seen running",
            sleeping.len()
        ));
    } else if lost != jobs {
        failure = Some(format!("{lost} of {jobs} recorded lost"));
    } else if gone.is_none() {
        failure = Some(format!(
            "orphaned sleeps still run: {}",
            still_sleeping().join(", ")
        ));
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
pub fn slowloris(scale: &Scale) -> Row {
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
pub fn killed_mid_upload(_scale: &Scale) -> Row {
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
        // The daemon has seen the client go when the upload's temporary file is gone.
        let files = daemon.state_dir.join("files");
        if poll_until(Duration::from_secs(10), || {
            (!holds_an_upload_in_flight(&files)).then_some(())
        })
        .is_none()
        {
            return Err("the killed upload's temporary file was never removed".into());
        }
        let listed = daemon.run(&["ls", "--json"]);
        if !listed.status.success() {
            return Err(format!("ferry ls failed: {listed:?}"));
        }
        if String::from_utf8_lossy(&listed.stdout).contains("half.bin") {
            return Err("a half upload appeared under its name".into());
        }
        Ok(("4 MiB sent, client killed: no half.bin".into(), 0))
    })
}

/// Whether `dir` holds, at its top, the temporary file of an upload in progress.
fn holds_an_upload_in_flight(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(ferry_engine::files::IN_FLIGHT.as_bytes())
        })
    })
}

/// FANOS clients gone with fds in flight: some die with their fds sent and their request
/// half written (the daemon must close those fds at once: a pipe whose write end only the
/// daemon held reads its end), others are killed with -9 while the ARGV they sent runs on
/// their fds (the command goes on to its end, as a kicked FANOS peer's does, and then its
/// fds go too).
pub fn fanos_clients_killed_with_fds(scale: &Scale) -> Row {
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
pub fn killed_in_tls_handshakes(scale: &Scale) -> Row {
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
pub fn a_full_disk(_scale: &Scale) -> Row {
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
pub fn fd_exhaustion(_scale: &Scale) -> Row {
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
