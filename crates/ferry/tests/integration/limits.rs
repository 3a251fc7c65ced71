//! Limits: frame size, connections, running jobs (with a queue), and per-job timeouts.

use std::time::Duration;

use ferry_wire::native::{ClientMessage, DaemonMessage, ErrorCode};

use crate::helper::{wait_until, Daemon, Raw};

#[test]
fn a_frame_over_the_configured_limit_is_refused_and_others_are_served() {
    let daemon = Daemon::start(&["--max-frame-size", "100000"]);
    let mut raw = daemon.raw();
    raw.send(&ClientMessage::Stdin {
        job: 1,
        data: vec![b'x'; 200_000],
    });
    let (code, message) = raw.expect_error();
    assert_eq!(code, ErrorCode::FrameTooLarge);
    assert!(
        message.contains("over the limit of 100000 bytes"),
        "{message}"
    );
    raw.expect_closed();
    daemon.assert_serving();
}

#[test]
fn connections_over_the_limit_are_refused() {
    let daemon = Daemon::start(&["--max-connections", "2"]);
    // The start-up probe's connection may hold a slot for a moment: wait until both are ours.
    let (first, second) = wait_until(
        "two connections of ours to be served",
        Duration::from_secs(10),
        || {
            let first = daemon.raw();
            let mut second = Raw::connect(&daemon.socket);
            second.send(&ClientMessage::Hello {
                version: ferry_wire::PROTOCOL_VERSION,
                client: "test".into(),
                token: None,
            });
            match second.recv() {
                Some(DaemonMessage::Welcome { .. }) => Some((first, second)),
                _ => None,
            }
        },
        || daemon.log(),
    );
    let mut third = Raw::connect(&daemon.socket);
    let (code, message) = third.expect_error();
    assert_eq!(code, ErrorCode::LimitReached);
    let expected = format!(
        "too many connections on ferry:unix:{} (the limit is 2)",
        daemon.socket.display()
    );
    assert_eq!(message, expected);
    drop((first, second));
    // Slots free up once connections close.
    wait_until(
        "the slots to free up",
        Duration::from_secs(10),
        || {
            daemon
                .run(&["run", "--", "echo", "ok"])
                .status
                .success()
                .then_some(())
        },
        || daemon.log(),
    );
}

#[test]
fn jobs_over_the_running_limit_wait_in_the_queue() {
    let daemon = Daemon::start(&["--max-jobs", "1"]);
    let first = daemon.run(&["run", "-d", "--", "sleep", "300"]);
    let first = String::from_utf8_lossy(&first.stdout).trim().to_owned();
    let second = daemon.run(&["run", "-d", "--", "echo", "queued job ran"]);
    let second = String::from_utf8_lossy(&second.stdout).trim().to_owned();
    let ps = String::from_utf8_lossy(&daemon.run(&["ps"]).stdout).into_owned();
    let row = ps
        .lines()
        .find(|l| l.split_whitespace().next() == Some(second.as_str()))
        .expect("row");
    assert!(row.contains("queued"), "{ps}");
    assert_eq!(daemon.run(&["kill", &first]).status.code(), Some(0));
    let out = daemon.run(&["attach", &second]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "queued job ran\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_queued_job_can_be_cancelled() {
    let daemon = Daemon::start(&["--max-jobs", "1"]);
    let first = daemon.run(&["run", "-d", "--", "sleep", "300"]);
    let first = String::from_utf8_lossy(&first.stdout).trim().to_owned();
    let second = daemon.run(&["run", "-d", "--", "echo", "never"]);
    let second = String::from_utf8_lossy(&second.stdout).trim().to_owned();
    assert_eq!(daemon.run(&["kill", &second]).status.code(), Some(0));
    let out = daemon.run(&["attach", &second]);
    assert_eq!(out.status.code(), Some(128 + 15));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled"));
    assert!(out.stdout.is_empty());
    daemon.run(&["kill", &first]);
}

#[test]
fn a_timeout_terminates_the_job_and_the_exit_says_so() {
    let daemon = Daemon::start(&[]);
    let out = daemon.run(&["run", "--timeout", "300ms", "--", "sleep", "300"]);
    assert_eq!(out.status.code(), Some(128 + 15));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timed out"), "{stderr}");
    let mut raw = daemon.raw();
    raw.send(&ClientMessage::ListJobs {
        request: 1,
        all: false,
    });
    match raw.recv() {
        Some(DaemonMessage::Jobs { jobs, .. }) => {
            let exit = jobs[0].exit.as_ref().expect("finished");
            assert!(exit.timed_out);
            assert_eq!(exit.signal, Some(15));
        }
        other => panic!("expected Jobs, got {other:?}"),
    }
}

#[test]
fn output_past_the_stored_cap_still_reaches_the_jobs_own_client_whole() {
    let daemon = Daemon::start(&["--max-log-size", "100000"]);
    // A slow consumer: the job must wait for it rather than drop what it has not read.
    let out = crate::helper::shell(
        &daemon,
        r#""$FERRY" run -- seq 1 4000000 | (sleep 1; sha256sum) | cut -c1-64; seq 1 4000000 | sha256sum | cut -c1-64"#,
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let sums: Vec<&str> = text.lines().collect();
    assert_eq!(sums.len(), 2, "{text}");
    assert_eq!(sums[0], sums[1], "every byte arrived, in order");
    let listed = daemon.run(&["ps", "--json"]);
    let job: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .next()
            .expect("a job"),
    )
    .expect("json");
    let id = job["id"].as_u64().expect("id").to_string();
    // The stored log holds the head and the tail within the cap, and says what is missing.
    let log = daemon.run(&["log", &id]);
    assert!(
        !log.stdout.is_empty() && log.stdout.len() <= 100_000,
        "{}",
        log.stdout.len()
    );
    assert!(log.stdout.starts_with(b"1\n2\n3\n"), "the head");
    assert!(log.stdout.ends_with(b"3999999\n4000000\n"), "the tail");
    let stderr = String::from_utf8_lossy(&log.stderr);
    assert!(stderr.contains("were not stored"), "{stderr}");
}
