//! Bad input never takes the daemon down: each case gets a clear error where one can be sent,
//! the connection is closed, and the daemon goes on serving others.

use std::io::Write;

use ferry_wire::native::{ClientMessage, DaemonMessage, ErrorCode, PROTOCOL_VERSION};

use crate::helper::{Daemon, Raw};

#[test]
fn garbage_bytes_get_an_error_and_a_close() {
    let daemon = Daemon::start(&[]);
    let mut raw = Raw::connect(&daemon.socket);
    raw.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (code, message) = raw.expect_error();
    assert_eq!(code, ErrorCode::FrameTooLarge);
    assert!(message.contains("before the handshake"), "{message}");
    raw.expect_closed();
    daemon.assert_serving();
}

#[test]
fn small_garbage_frame_is_malformed() {
    let daemon = Daemon::start(&[]);
    let mut raw = Raw::connect(&daemon.socket);
    raw.send_bytes(&[0, 0, 0, 4, 0xff, 0xfe, 0xfd, 0xfc]);
    let (code, message) = raw.expect_error();
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(message.contains("malformed message"), "{message}");
    raw.expect_closed();
    daemon.assert_serving();
}

#[test]
fn a_huge_length_prefix_after_the_handshake_is_refused_at_once() {
    let daemon = Daemon::start(&[]);
    let mut raw = daemon.raw();
    raw.send_bytes(&[0x7f, 0xff, 0xff, 0xff]);
    let (code, message) = raw.expect_error();
    assert_eq!(code, ErrorCode::FrameTooLarge);
    assert!(message.contains("2147483647 bytes"), "{message}");
    raw.expect_closed();
    daemon.assert_serving();
}

#[test]
fn a_truncated_frame_closes_only_that_connection() {
    let daemon = Daemon::start(&[]);
    let mut raw = daemon.raw();
    raw.send_bytes(&[0, 0, 0, 50, 0xa1, 0x63]);
    raw.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half close");
    let (code, message) = raw.expect_error();
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(message.contains("middle of a frame"), "{message}");
    daemon.assert_serving();
}

#[test]
fn an_unknown_message_is_a_clear_error() {
    let daemon = Daemon::start(&[]);
    let mut raw = daemon.raw();
    // CBOR {"Frobnicate": {}}
    let body = b"\xa1\x6aFrobnicate\xa0";
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    raw.send_bytes(&frame);
    let (code, message) = raw.expect_error();
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(message.contains("Frobnicate"), "{message}");
    raw.expect_closed();
    daemon.assert_serving();
}

#[test]
fn anything_before_the_handshake_is_refused() {
    let daemon = Daemon::start(&[]);
    let mut raw = Raw::connect(&daemon.socket);
    raw.send(&ClientMessage::ListJobs {
        request: 1,
        all: false,
    });
    let (code, message) = raw.expect_error();
    assert_eq!(code, ErrorCode::BadHandshake);
    assert!(message.contains("must be Hello, not ListJobs"), "{message}");
    raw.expect_closed();
    daemon.assert_serving();
}

#[test]
fn a_wrong_protocol_version_is_refused() {
    let daemon = Daemon::start(&[]);
    // A newer client, and an older one (version 2, before groups): each is told the daemon's
    // version and pid, and what to do.
    for version in [PROTOCOL_VERSION + 1, PROTOCOL_VERSION - 1] {
        let mut raw = Raw::connect(&daemon.socket);
        raw.send(&ClientMessage::Hello {
            version,
            client: "another ferry".into(),
            token: None,
        });
        let (code, message) = raw.expect_error();
        assert_eq!(code, ErrorCode::VersionMismatch);
        assert!(
            message.contains(&format!("client speaks protocol version {version}")),
            "{message}"
        );
        assert!(
            message.contains(&format!("pid {}", daemon.pid())),
            "{message}"
        );
        assert!(
            message.contains("use the ferry of the daemon's version"),
            "{message}"
        );
        raw.expect_closed();
    }
    daemon.assert_serving();
}

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let daemon = Daemon::start(&["--handshake-timeout", "200ms"]);
    let mut raw = Raw::connect(&daemon.socket);
    let (code, message) = raw.expect_error();
    assert_eq!(code, ErrorCode::BadHandshake);
    assert!(message.contains("no Hello within 200 ms"), "{message}");
    raw.expect_closed();
    daemon.assert_serving();
}

#[test]
fn a_second_hello_is_refused() {
    let daemon = Daemon::start(&[]);
    let mut raw = daemon.raw();
    raw.send(&ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        client: "again".into(),
        token: None,
    });
    let (code, _) = raw.expect_error();
    assert_eq!(code, ErrorCode::BadHandshake);
    raw.expect_closed();
    daemon.assert_serving();
}

#[test]
fn requests_about_unknown_jobs_get_errors_and_the_connection_goes_on() {
    let daemon = Daemon::start(&[]);
    let mut raw = daemon.raw();
    raw.send(&ClientMessage::Signal {
        request: 7,
        job: 4242,
        signal: 15,
    });
    match raw.recv() {
        Some(DaemonMessage::Error {
            request: Some(7),
            code: ErrorCode::UnknownJob,
            message,
        }) => assert!(message.contains("no job 4242")),
        other => panic!("expected UnknownJob, got {other:?}"),
    }
    raw.send(&ClientMessage::Run {
        request: 8,
        argv: vec![],
        cwd: None,
        env: None,
        stdin: false,
        timeout_ms: None,
        hangup_on_disconnect: false,
        follow: false,
        sandbox: None,
        pass_stdio: false,
        session: None,
        group: None,
        label: None,
        after: Vec::new(),
        after_any: false,
        tty: None,
    });
    match raw.recv() {
        Some(DaemonMessage::Error {
            request: Some(8),
            code: ErrorCode::InvalidRequest,
            message,
        }) => assert!(message.contains("empty command")),
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    raw.send(&ClientMessage::ListJobs {
        request: 9,
        all: false,
    });
    assert!(matches!(
        raw.recv(),
        Some(DaemonMessage::Jobs { request: 9, .. })
    ));
}

#[test]
fn a_client_that_vanishes_mid_job_leaves_the_daemon_serving() {
    let daemon = Daemon::start(&[]);
    {
        let mut raw = daemon.raw();
        raw.send(&ClientMessage::Run {
            request: 1,
            argv: ["sh", "-c", "yes | head -c 50000000"]
                .iter()
                .map(|a| serde_bytes::ByteBuf::from(a.as_bytes().to_vec()))
                .collect(),
            cwd: None,
            env: None,
            stdin: true,
            timeout_ms: None,
            hangup_on_disconnect: false,
            follow: true,
            sandbox: None,
            pass_stdio: false,
            session: None,
            group: None,
            label: None,
            after: Vec::new(),
            after_any: false,
            tty: None,
        });
        // Read a little, send half a frame, then vanish.
        assert!(raw.recv().is_some());
        raw.stream.write_all(&[0, 0, 1]).expect("partial");
        crate::helper::wait_until_read(&raw.stream);
    }
    daemon.assert_serving();
    let ps = daemon.run(&["ps", "--json"]);
    assert!(String::from_utf8_lossy(&ps.stdout).contains("\"id\""));
}
