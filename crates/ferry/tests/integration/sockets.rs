//! Finding the daemon: --socket, FERRY_SOCKET, the default path, autostart, stale sockets,
//! one daemon per socket, peer uid checks, and listener specs.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helper::{ferry_bin, poll_until, send_signal, wait_until, wait_with_timeout, Daemon};

#[test]
fn socket_option_goes_before_or_after_the_subcommand() {
    let daemon = Daemon::start(&[]);
    let socket = daemon.socket.to_str().expect("utf8 path");
    for args in [
        vec!["--socket", socket, "run", "--", "echo", "hi"],
        vec!["run", "--socket", socket, "--", "echo", "hi"],
    ] {
        let out = Command::new(ferry_bin())
            .args(&args)
            .env_remove("FERRY_SOCKET")
            .env("XDG_RUNTIME_DIR", daemon.dir.path().join("elsewhere"))
            .output()
            .expect("run");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{args:?}");
    }
}

/// Counts daemon (`ferryd`) processes whose command line names `socket`.
fn daemons_on(socket: &std::path::Path) -> Vec<u32> {
    let needle = socket.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rfind(')')
                .is_some_and(|i| stat[i + 2..].starts_with('Z'));
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let ferryd = args.first().is_some_and(|a| a.ends_with("/ferryd"));
            !zombie && ferryd && args.contains(&needle)
        })
        .collect()
}

#[test]
fn run_starts_a_daemon_on_the_default_socket_and_racing_clients_start_only_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime_dir = dir.path().join("runtime");
    std::fs::create_dir(&runtime_dir).expect("runtime dir");
    let socket = runtime_dir.join("ferry").join("ferry.sock");
    let clients: Vec<_> = (0..6)
        .map(|i| {
            Command::new(ferry_bin())
                .args(["run", "--", "echo", &format!("client {i}")])
                .env_remove("FERRY_SOCKET")
                .env("XDG_RUNTIME_DIR", &runtime_dir)
                .env("FERRY_STATE_DIR", dir.path().join("state"))
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let out = client.wait_with_output().expect("client");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("client {i}\n")
        );
    }
    let mode = std::fs::metadata(socket.parent().expect("dir"))
        .expect("socket dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    // Losers of the start race exit.
    let daemons = wait_until(
        "exactly one daemon on the socket",
        Duration::from_secs(10),
        || Some(daemons_on(&socket)).filter(|d| d.len() == 1),
        || format!("{:?}", daemons_on(&socket)),
    );
    let out = Command::new(ferry_bin())
        .arg("shutdown")
        .env_remove("FERRY_SOCKET")
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .output()
        .expect("shutdown");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pid in daemons {
        // The daemon is not our child: it is gone once its /proc entry is.
        let gone = poll_until(Duration::from_secs(10), || {
            let gone = !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || daemons_on(&socket).is_empty();
            gone.then_some(())
        });
        if gone.is_none() {
            send_signal(pid, libc::SIGKILL);
            panic!("daemon {pid} did not stop");
        }
    }
    assert!(!socket.exists(), "socket removed");
}

#[test]
fn a_client_without_ferryd_beside_it_starts_it_from_path_or_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A `ferry` alone in a directory of its own (a copy: the client finds itself by its
    // executable's real path).
    let alone = dir.path().join("bin");
    std::fs::create_dir(&alone).expect("bin");
    let client = alone.join("ferry");
    std::fs::copy(ferry_bin(), &client).expect("copy ferry");
    let ferryd_dir = std::path::Path::new(env!("CARGO_BIN_EXE_ferryd"))
        .parent()
        .expect("ferryd's directory")
        .to_owned();
    let socket = dir.path().join("ferry.sock");
    let run = |path: &str, args: &[&str]| {
        Command::new(&client)
            .args(args)
            .env("PATH", path)
            .env("FERRY_SOCKET", &socket)
            .env("FERRY_STATE_DIR", dir.path().join("state"))
            .output()
            .expect("ferry")
    };
    // Nowhere: a clear error, nothing started.
    let out = run("/usr/bin:/bin", &["run", "--", "echo", "hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("cannot find the daemon's program `ferryd`")
            && stderr.contains(&*alone.to_string_lossy()),
        "{stderr}"
    );
    assert!(daemons_on(&socket).is_empty());
    // On PATH: started from there, and the job runs.
    let path = format!("{}:/usr/bin:/bin", ferryd_dir.display());
    let out = run(&path, &["run", "--", "echo", "hi"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{out:?}");
    let started = daemons_on(&socket);
    assert_eq!(started.len(), 1, "one ferryd serves {}", socket.display());
    let out = run(&path, &["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let gone = poll_until(Duration::from_secs(10), || {
        daemons_on(&socket).is_empty().then_some(())
    });
    assert!(gone.is_some(), "ferryd stopped at shutdown");
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("ferry.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists(), "the stale socket file stays behind");
    let mut daemon = Command::new(ferry_bin())
        .args(["daemon", "--socket"])
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    // Wait until it answers (`ferry run` now would start a daemon of its own while the stale
    // file refuses connections).
    wait_until(
        "the daemon to answer",
        Duration::from_secs(10),
        || std::os::unix::net::UnixStream::connect(&socket).ok(),
        String::new,
    );
    let out = Command::new(ferry_bin())
        .arg("--socket")
        .arg(&socket)
        .args(["run", "--", "echo", "fresh"])
        .output()
        .ok();
    send_signal(daemon.id(), libc::SIGTERM);
    assert_eq!(
        wait_with_timeout(&mut daemon, Duration::from_secs(10)),
        Some(0)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.expect("served").stdout),
        "fresh\n"
    );
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let daemon = Daemon::start(&[]);
    let out = Command::new(ferry_bin())
        .args(["daemon", "--socket"])
        .arg(&daemon.socket)
        .arg("--state-dir")
        .arg(daemon.dir.path().join("state2"))
        .output()
        .expect("second daemon");
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another ferry daemon is already serving"),
        "{stderr}"
    );
    daemon.assert_serving();
}

#[test]
fn another_user_is_refused() {
    if rustix::process::getuid().as_raw() != 0 {
        eprintln!("skipped: switching to another uid needs root");
        return;
    }
    let daemon = Daemon::start(&[]);
    // Open the path to everyone, so that only the daemon's own uid check stands in the way of
    // a raw client of another uid.
    for path in [
        daemon.dir.path(),
        daemon.socket.parent().expect("dir"),
        &daemon.socket,
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let raw_client = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
sys.stdout.buffer.write(data)
"#;
    let out = std::os::unix::process::CommandExt::uid(
        Command::new("python3")
            .arg("-c")
            .arg(raw_client)
            .arg(&daemon.socket),
        65534,
    )
    .output()
    .expect("a raw client as nobody");
    let (refusal, _) = ferry_wire::decode_frame::<ferry_wire::DaemonMessage>(&out.stdout, 1 << 20)
        .expect("a frame")
        .expect("whole");
    match refusal {
        ferry_wire::DaemonMessage::Error { code, message, .. } => {
            assert_eq!(code, ferry_wire::ErrorCode::PermissionDenied);
            assert!(message.contains("serves only its owner"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // `ferry` itself, as that user, will not talk to a socket in a directory it does not own.
    let out = std::os::unix::process::CommandExt::uid(
        Command::new(ferry_bin())
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("ps"),
        65534,
    )
    .output()
    .expect("run as nobody");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to talk to"), "{stderr}");
    // The owner's client, too, refuses the open directory; made private again, it is served.
    let out = daemon.run(&["ps"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("writable by others"),
        "{out:?}"
    );
    let dir = daemon.socket.parent().expect("dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    daemon.assert_serving();
}

#[test]
fn listener_specs_are_checked_with_clear_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("gopher:unix:/x", "unknown dialect 'gopher'"),
        ("ferry", "DIALECT:TRANSPORT:ADDRESS"),
        ("fanos:tcp:127.0.0.1:1", "served over: unix"),
    ];
    for (spec, expected) in cases {
        let out = Command::new(ferry_bin())
            .args(["daemon", "--listen", spec, "--state-dir"])
            .arg(dir.path())
            .output()
            .expect("daemon");
        assert_eq!(out.status.code(), Some(125), "{spec}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{spec}: {stderr}");
    }
    // An explicit native listener works.
    let socket = dir.path().join("explicit.sock");
    let mut daemon = Command::new(ferry_bin())
        .arg("daemon")
        .arg("--listen")
        .arg(format!("ferry:unix:{}", socket.display()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    wait_until(
        "the socket to appear",
        Duration::from_secs(10),
        || socket.exists().then_some(()),
        String::new,
    );
    let out = Command::new(ferry_bin())
        .arg("--socket")
        .arg(&socket)
        .args(["run", "--", "echo", "listening"])
        .output()
        .expect("run");
    send_signal(daemon.id(), libc::SIGTERM);
    assert_eq!(
        wait_with_timeout(&mut daemon, Duration::from_secs(10)),
        Some(0)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "listening\n");
}

#[test]
fn a_daemon_that_cannot_start_is_reported_with_its_reason() {
    // The state directory is held by another daemon: the one a client starts cannot serve.
    let holder = Daemon::start(&[]);
    let socket = holder.dir.path().join("other").join("ferry.sock");
    let out = Command::new(ferry_bin())
        .args(["run", "--", "true"])
        .env("FERRY_SOCKET", &socket)
        .env("FERRY_STATE_DIR", &holder.state_dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot start the ferry daemon"), "{stderr}");
    assert!(
        stderr.contains("in use by another ferry daemon"),
        "{stderr}"
    );
}

/// A listener (run as another user) that prints `ready` once listening, then how many bytes
/// its one client sent in its first write (0 if it closed without sending), and exits.
const COUNTING_LISTENER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
print(len(c.recv(65536)), flush=True)
"#;

#[test]
fn the_client_sends_nothing_to_a_socket_another_user_serves() {
    if rustix::process::getuid().as_raw() != 0 {
        eprintln!("skipped: a listener of another uid needs root to start");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The other user binds in a directory of its own...
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).expect("dir");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut listener = std::os::unix::process::CommandExt::uid(
        Command::new("python3")
            .arg("-c")
            .arg(COUNTING_LISTENER)
            .arg(theirs.join("ferry.sock")),
        65534,
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("listener");
    let mut out = std::io::BufReader::new(listener.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("ready");
    assert_eq!(line, "ready\n");
    // ...and the socket is then found in a directory of ours, where our daemon's would be.
    let ours = dir.path().join("ours");
    std::fs::create_dir(&ours).expect("dir");
    std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::rename(theirs.join("ferry.sock"), ours.join("ferry.sock")).expect("move");
    let run = Command::new(ferry_bin())
        .arg("--socket")
        .arg(ours.join("ferry.sock"))
        .args(["run", "--fds", "--", "echo", "secret"])
        .env("FERRY_TEST_SECRET", "must-not-travel")
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(125), "{run:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("refusing to talk to") && stderr.contains("process of uid 65534"),
        "{stderr}"
    );
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).expect("count");
    assert_eq!(line, "0\n", "bytes the other user's listener received");
    let _ = listener.wait();
}

#[test]
fn the_client_sends_nothing_to_a_socket_in_a_directory_others_can_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = dir.path().join("open");
    std::fs::create_dir(&open).expect("dir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let listener = std::os::unix::net::UnixListener::bind(open.join("ferry.sock")).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    // Bounded: a client that connected would wait for an answer that never comes.
    let run = Command::new("timeout")
        .arg("20")
        .arg(ferry_bin())
        .arg("--socket")
        .arg(open.join("ferry.sock"))
        .args(["run", "--", "echo", "secret"])
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(125), "{run:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("refusing to talk to") && stderr.contains("writable by others (mode 777)"),
        "{stderr}"
    );
    // It did not even connect.
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{accepted:?}"
    );
}

#[test]
fn a_squatted_tmp_fallback_directory_is_refused() {
    if rustix::process::getuid().as_raw() != 0 {
        eprintln!("skipped: acting as another uid needs root");
        return;
    }
    // Someone else (root, here) made the fallback directory of uid 65534 first.
    let squatted = std::path::Path::new("/tmp/ferry-65534");
    let made_here = !squatted.exists();
    if made_here {
        std::fs::create_dir(squatted).expect("squat");
    }
    let meta = std::fs::metadata(squatted).expect("meta");
    if std::os::unix::fs::MetadataExt::uid(&meta) == 65534 {
        eprintln!("skipped: /tmp/ferry-65534 already belongs to uid 65534 on this machine");
        return;
    }
    let out = std::os::unix::process::CommandExt::uid(
        Command::new(ferry_bin())
            .args(["run", "--", "true"])
            .env_remove("FERRY_SOCKET")
            .env_remove("XDG_RUNTIME_DIR")
            .env("HOME", "/nonexistent"),
        65534,
    )
    .output()
    .expect("run as nobody");
    if made_here {
        let _ = std::fs::remove_dir(squatted);
    }
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to talk to /tmp/ferry-65534/ferry.sock")
            && stderr.contains("belongs to uid 0, not to you (uid 65534)"),
        "{stderr}"
    );
}

#[test]
fn record_wire_keeps_each_read_of_each_connection_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("wire");
    let record_arg = record.to_str().expect("utf8 path");
    let daemon = Daemon::start(&["--record-wire", record_arg]);
    assert!(daemon.log_shows("recording every byte peers send"));
    let out = daemon.run(&["run", "--", "echo", "recorded"]);
    assert_eq!(out.stdout, b"recorded\n");
    // Some connection's reads, put together in order, are the client's frames: its Hello,
    // then the Run naming the command.
    let streams: Vec<Vec<u8>> = std::fs::read_dir(record.join("ferry"))
        .expect("a directory for the native dialect")
        .map(|connection| {
            let mut reads: Vec<_> = std::fs::read_dir(connection.expect("entry").path())
                .expect("reads")
                .map(|read| read.expect("entry").path())
                .collect();
            reads.sort();
            reads
                .iter()
                .flat_map(|read| std::fs::read(read).expect("read"))
                .collect()
        })
        .collect();
    use ferry_wire::native::ClientMessage;
    let whole_run = streams.iter().find_map(|stream| {
        let mut messages = Vec::new();
        let mut rest = stream.as_slice();
        while let Ok(Some((message, used))) =
            ferry_wire::native::decode_frame::<ClientMessage>(rest, 1 << 20)
        {
            messages.push(message);
            rest = &rest[used..];
        }
        match messages.as_slice() {
            [ClientMessage::Hello { .. }, ClientMessage::Run { argv, .. }, ..]
                if rest.is_empty() =>
            {
                Some(argv.iter().map(|arg| arg.to_vec()).collect::<Vec<_>>())
            }
            _ => None,
        }
    });
    assert_eq!(
        whole_run,
        Some(vec![b"echo".to_vec(), b"recorded".to_vec()]),
        "{streams:?}"
    );
}
