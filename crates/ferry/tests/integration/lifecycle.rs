//! Going down: SIGTERM, SIGINT and `ferry shutdown` notify clients, terminate jobs' process
//! groups, remove the socket and exit 0.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::helper::{live_processes_in_group, wait_with_timeout, Daemon};

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
    let deadline = Instant::now() + Duration::from_secs(5);
    while !live_processes_in_group(pgid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        live_processes_in_group(pgid).is_empty(),
        "no process of the job is left"
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
