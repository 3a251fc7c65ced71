//! Going down: SIGTERM, SIGINT and `ferry shutdown` notify clients, terminate jobs' process
//! groups, remove the socket and exit 0.

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::helper::{live_processes_in_group, wait_until, wait_with_timeout, Daemon};

/// Starts a job that ignores nothing, with a grandchild, and a client attached to it.
fn job_with_attached_client(daemon: &Daemon) -> (std::process::Child, u32) {
    let mut client = daemon
        .ferry()
        .args(["run", "--", "sh", "-c", "sleep 300 & echo $$; wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(client.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("pid line");
    let pgid: u32 = line.trim().parse().expect("pid");
    (client, pgid)
}

fn assert_goes_down(mut daemon: Daemon, stop: impl FnOnce(&mut Daemon) -> Option<i32>) {
    let (client, pgid) = job_with_attached_client(&daemon);
    let socket = daemon.socket.clone();
    assert_eq!(
        stop(&mut daemon),
        Some(0),
        "daemon exits 0; log:\n{}",
        daemon.log()
    );
    let out = client.wait_with_output().expect("client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("daemon is going down"), "{stderr}");
    assert_eq!(out.status.code(), Some(128 + 15), "the job was terminated");
    wait_until(
        "no process of the job to be left",
        Duration::from_secs(5),
        || live_processes_in_group(pgid).is_empty().then_some(()),
        || format!("{:?}", live_processes_in_group(pgid)),
    );
    assert!(!socket.exists(), "socket removed");
}

#[test]
fn sigterm_notifies_clients_terminates_jobs_and_removes_the_socket() {
    assert_goes_down(Daemon::start(&[]), |d| d.stop_with(libc::SIGTERM));
}

#[test]
fn sigint_does_the_same() {
    assert_goes_down(Daemon::start(&[]), |d| d.stop_with(libc::SIGINT));
}

#[test]
fn ferry_shutdown_does_the_same() {
    assert_goes_down(Daemon::start(&[]), |d| {
        let out = d.run(&["shutdown"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = d.child.take().expect("running");
        wait_with_timeout(&mut child, Duration::from_secs(20))
    });
}

#[test]
fn a_job_that_ignores_term_is_killed_after_the_grace_period() {
    let mut daemon = Daemon::start(&["--kill-grace", "500ms"]);
    let mut client = daemon
        .ferry()
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(client.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(daemon.stop_with(libc::SIGTERM), Some(0));
    assert_eq!(
        wait_with_timeout(&mut client, Duration::from_secs(20)),
        Some(128 + 9)
    );
}

#[test]
fn a_second_daemon_on_a_held_state_directory_fails_before_it_listens() {
    let daemon = Daemon::start(&[]);
    let other_socket = daemon.dir.path().join("other").join("ferry.sock");
    let out = std::process::Command::new(crate::helper::ferry_bin())
        .arg("daemon")
        .arg("--socket")
        .arg(&other_socket)
        .arg("--state-dir")
        .arg(&daemon.state_dir)
        .env("FERRY_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("second daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    let its_own = format!("listening on ferry:unix:{}", other_socket.display());
    assert!(!stderr.contains(&its_own), "it never listened: {stderr}");
    assert!(!other_socket.exists(), "{stderr}");
    for needle in [
        "is in use by another ferry daemon".to_string(),
        format!("pid {}", daemon.pid()),
        format!("ferry:unix:{}", daemon.socket.display()),
        "--state-dir".to_string(),
    ] {
        assert!(stderr.contains(&needle), "{needle} in: {stderr}");
    }
    daemon.assert_serving();
}

#[test]
fn commands_start_the_daemon_after_a_crash_and_shutdown_without_one_is_fine() {
    let mut daemon = Daemon::start(&[]);
    let out = daemon.run(&["run", "--detach", "--", "sleep", "300"]);
    let job = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let ps = daemon.run(&["ps", "--json"]);
    let listed: serde_json::Value =
        serde_json::from_slice(ps.stdout.split(|&b| b == b'\n').next().expect("a job"))
            .expect("json");
    let pid = listed["pid"].as_u64().expect("pid") as u32;
    assert_eq!(daemon.stop_with(libc::SIGKILL), None, "killed");
    // No `ferry run` first: `ps --all` starts the daemon, which finds the job lost.
    let out = daemon.run(&["ps", "--all", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(r#""id":{job}"#)) && text.contains(r#""state":"lost""#),
        "{text}"
    );
    // The client that started it is told, once, what happened.
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ferry: the daemon had stopped unexpectedly (killed, or the machine stopped) and was started again; 1 job it ran was lost (`ferry ps --all` shows it)\n"
    );
    let again = daemon.run(&["ps"]);
    assert!(again.stderr.is_empty(), "{again:?}");
    // `log` and `attach` of the lost job work on the new daemon too; attach says it was
    // lost, with ferry's own status (its own is unknown).
    let out = daemon.run(&["attach", &job]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("job {job} was lost")),
        "{out:?}"
    );
    assert!(daemon.run(&["log", &job]).status.success());
    // The new daemon ended the job the dead one left behind; stop it (cleanly: the next
    // start says nothing).
    crate::helper::wait_until(
        "the lost job's process to be ended",
        std::time::Duration::from_secs(20),
        || {
            (!std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
            })
            .then_some(())
        },
        || daemon.log(),
    );
    assert!(daemon.run(&["shutdown"]).status.success());
    let fresh = daemon.run(&["ps"]);
    assert!(
        fresh.stderr.is_empty(),
        "a clean stop is not a crash: {fresh:?}"
    );
    assert!(daemon.run(&["shutdown"]).status.success());
    // With no daemon running, `shutdown` says so and succeeds.
    let out = daemon.run(&["shutdown"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no daemon is running"),
        "{out:?}"
    );
}

/// `ferry ARGS` with `socket` and `state` as the client's (and an autostarted daemon's).
fn ferry_with(socket: &std::path::Path, state: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(crate::helper::ferry_bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env("FERRY_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .expect("ferry")
}

#[test]
fn network_listeners_keep_the_owners_socket_and_shutdown_finds_a_daemon_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, state, tls) = (
        dir.path().join("run/ferry.sock"),
        dir.path().join("state"),
        dir.path().join("tls"),
    );
    crate::remote::tls_init(&tls, &[]);
    // The README's remote daemon: a TLS listener alone on the command line.
    let mut daemon = std::process::Command::new(crate::helper::ferry_bin())
        .arg("daemon")
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(&state)
        .args([
            "--listen",
            "ferry:tls:127.0.0.1:0",
            "--allow-any-command",
            "--tls-dir",
        ])
        .arg(&tls)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    // Waited for by connecting (a `ferry ps` before the daemon listens would start another).
    crate::helper::wait_until(
        "the owner's socket",
        std::time::Duration::from_secs(20),
        || {
            std::os::unix::net::UnixStream::connect(&socket)
                .ok()
                .map(drop)
        },
        String::new,
    );
    let out = ferry_with(&socket, &state, &["ps"]);
    assert!(out.status.success(), "the owner's socket serves: {out:?}");
    let out = ferry_with(&socket, &state, &["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(daemon.wait().expect("wait").code(), Some(0));
    // A daemon told to serve the owner elsewhere: `shutdown` with the usual socket finds it by
    // the state directory it holds.
    let elsewhere = dir.path().join("elsewhere.sock");
    let mut daemon = std::process::Command::new(crate::helper::ferry_bin())
        .arg("daemon")
        .arg("--state-dir")
        .arg(&state)
        .arg("--listen")
        .arg(format!("ferry:unix:{}", elsewhere.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    crate::helper::wait_until(
        "the daemon to hold its state directory",
        std::time::Duration::from_secs(20),
        || {
            std::os::unix::net::UnixStream::connect(&elsewhere)
                .ok()
                .map(drop)
        },
        String::new,
    );
    let out = ferry_with(&socket, &state, &["shutdown"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", daemon.id()))
            && stderr.contains(&format!("ferry:unix:{}", elsewhere.display()))
            && stderr.contains("stopping it with SIGTERM"),
        "{stderr}"
    );
    assert_eq!(daemon.wait().expect("wait").code(), Some(0));
}

#[test]
fn status_names_the_daemon_and_its_log_which_holds_no_terminal_escapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, state) = (dir.path().join("run/ferry.sock"), dir.path().join("state"));
    let out = ferry_with(&socket, &state, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not running"),
        "{out:?}"
    );
    // A command starts the daemon; its log is a file in the state directory.
    assert!(
        ferry_with(&socket, &state, &["run", "--no-fds", "--", "true"])
            .status
            .success()
    );
    let out = ferry_with(&socket, &state, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let log = state.join("daemon.log");
    for needle in [
        "running, pid ".to_string(),
        format!("listening ferry:unix:{}", socket.display()),
        format!("log       {}", log.display()),
        "jobs      0 running, 0 queued".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle} in:\n{text}");
    }
    let out = ferry_with(&socket, &state, &["status", "--log"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", log.display())
    );
    let json = ferry_with(&socket, &state, &["status", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(value["running"], true);
    // Written to a file, the log has no colour codes.
    let written = std::fs::read(&log).expect("log");
    assert!(!written.is_empty());
    assert!(
        !written.contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&written)
    );
    assert!(ferry_with(&socket, &state, &["shutdown"]).status.success());
}
