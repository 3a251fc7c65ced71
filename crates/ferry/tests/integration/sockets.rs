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

/// Counts `ferry daemon` processes whose command line names `socket`.
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
            !zombie && args.iter().any(|a| a == "daemon") && args.contains(&needle)
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
    // Open the path to everyone, so that only the daemon's own uid check stands in the way.
    for path in [
        daemon.dir.path(),
        daemon.socket.parent().expect("dir"),
        &daemon.socket,
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let out = std::os::unix::process::CommandExt::uid(
        Command::new(ferry_bin())
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("ps"),
        65534,
    )
    .output()
    .expect("run as nobody");
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("serves only its owner"), "{stderr}");
    daemon.assert_serving();
}

#[test]
fn listener_specs_are_checked_with_clear_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("tsockm:tcp:127.0.0.1:0", "does not serve it yet"),
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
    let dir = tempfile::tempdir().expect("tempdir");
    let open = dir.path().join("open");
    std::fs::create_dir(&open).expect("dir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = Command::new(ferry_bin())
        .args(["run", "--", "true"])
        .env("FERRY_SOCKET", open.join("ferry.sock"))
        .env("FERRY_STATE_DIR", dir.path().join("state"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot start the ferry daemon"), "{stderr}");
    assert!(stderr.contains("writable by others"), "{stderr}");
}
