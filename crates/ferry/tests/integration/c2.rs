//! The C2 dialect over TCP: `ferry c2` against a daemon's c2 listener (results, true exit
//! statuses, a 1 MiB output through continuation frames, errors), and KubOS's own client's
//! request, byte for byte (a map that declares five pairs and holds four, a one-string ARGS,
//! its buffer's zeros after the CBOR).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use crate::helper::{ferry_bin, Daemon};

fn c2(daemon: &Daemon, args: &[&str]) -> std::process::Output {
    Command::new(ferry_bin())
        .args([
            "c2",
            "--addr",
            &format!("127.0.0.1:{}", daemon.listener_port("c2:tcp")),
        ])
        .args(args)
        .output()
        .expect("ferry c2")
}

#[test]
fn commands_run_with_their_true_status_and_whole_output() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["c2:tcp:127.0.0.1:0"]);
    let out = c2(&daemon, &["echo", "hello", "world"]);
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), b"hello world\n".as_slice()),
        "{out:?}"
    );
    let out = c2(&daemon, &["sh", "-c", "echo failing; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "the true status: {out:?}");
    assert_eq!(out.stdout, b"failing\n");
    let out = c2(&daemon, &["-v", "head", "-c", "1048576", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        out.stdout.len(),
        1 << 20,
        "1 MiB through continuation frames"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exec time"),
        "{out:?}"
    );
    daemon.assert_serving();
}

#[test]
fn a_command_outside_the_catalog_gets_an_error_response() {
    let daemon = Daemon::start_networked(&[], &["c2:tcp:127.0.0.1:0"]);
    let out = c2(&daemon, &["rm", "-rf", "/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("ferry: c2: "),
        "{out:?}"
    );
    assert!(out.stdout.is_empty());
}

/// A CBOR text string.
fn text(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 24);
    out.push(0x60 | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

#[test]
fn kubos_clients_request_byte_for_byte() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["c2:tcp:127.0.0.1:0"]);
    let mut cbor = vec![0xa5]; // five pairs declared...
    text(&mut cbor, "MSG_TYPE");
    cbor.push(0x00);
    text(&mut cbor, "COMMAND_NAME");
    text(&mut cbor, "echo");
    text(&mut cbor, "ARG_COUNT");
    cbor.push(0x01);
    text(&mut cbor, "ARGS");
    text(&mut cbor, "hi");
    cbor.resize(250, 0); // ...four written, then the buffer's zeros
                         // Length, CSP id (priority 2, from address 2 port 40 to address 1 port 10), data.
    let id: u32 = (2 << 30) | (2 << 25) | (1 << 20) | (10 << 14) | (40 << 8);
    let mut frame = (cbor.len() as u16).to_le_bytes().to_vec();
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(&cbor);
    let mut stream =
        TcpStream::connect(("127.0.0.1", daemon.listener_port("c2:tcp"))).expect("connect");
    stream.write_all(&frame).expect("write");
    let mut header = [0u8; 6];
    stream.read_exact(&mut header).expect("header");
    let len = usize::from(u16::from_le_bytes([header[0], header[1]]));
    let answer_id = u32::from_le_bytes([header[2], header[3], header[4], header[5]]);
    // To address 2, port 11, from address 1, port 10.
    assert_eq!(
        answer_id,
        (2 << 30) | (1 << 25) | (2 << 20) | (11 << 14) | (10 << 8)
    );
    let mut data = vec![0u8; len];
    stream.read_exact(&mut data).expect("data");
    let mut expected = vec![0xa4];
    text(&mut expected, "MSG_TYPE");
    expected.push(0x01);
    text(&mut expected, "RETURN_CODE");
    expected.push(0xe0); // the simple value 0
    text(&mut expected, "EXEC_TIME");
    assert_eq!(&data[..expected.len()], expected.as_slice());
    assert_eq!(data[expected.len()], 0xfb, "a float64");
    let mut tail = Vec::new();
    text(&mut tail, "OUTPUT");
    text(&mut tail, "hi\n");
    assert_eq!(&data[expected.len() + 9..], tail.as_slice());
}

#[test]
fn a_fifo_pair_serves_requests_one_after_another_and_survives_a_client_dying_mid_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("client_to_server");
    let output = dir.path().join("server_to_client");
    let spec = format!("c2:fifo:{},{}", input.display(), output.display());
    let daemon = Daemon::start_networked(&["--allow-any-command"], &[spec.as_str()]);
    let pair = format!("{},{}", input.display(), output.display());
    let run = |args: &[&str]| {
        Command::new(ferry_bin())
            .args(["c2", "--fifo", &pair])
            .args(args)
            .output()
            .expect("ferry c2")
    };
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&input).expect("made");
    assert!(meta.file_type().is_fifo());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    for word in ["one", "two"] {
        let out = run(&["echo", word]);
        assert_eq!(out.stdout, format!("{word}\n").into_bytes(), "{out:?}");
    }
    // A client that dies in the middle of a frame: 6 header bytes announce 100, 10 come.
    {
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&input)
            .expect("open");
        let mut partial = 100u16.to_le_bytes().to_vec();
        partial.extend_from_slice(&[0; 4]);
        partial.extend_from_slice(&[0xa5; 10]);
        fifo.write_all(&partial).expect("write");
    }
    crate::helper::wait_until(
        "the partial frame to be dropped",
        std::time::Duration::from_secs(20),
        || daemon.log_shows("resynchronising").then_some(()),
        || daemon.log(),
    );
    let out = run(&["echo", "after"]);
    assert_eq!(out.stdout, b"after\n", "{out:?}");
    // A path that is not a FIFO is refused at start-up.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "").expect("file");
    let out = Command::new(ferry_bin())
        .args(["daemon", "--state-dir"])
        .arg(dir.path().join("other-state"))
        .arg("--socket")
        .arg(dir.path().join("other.sock"))
        .arg("--listen")
        .arg(format!("c2:fifo:{},{}", plain.display(), output.display()))
        .output()
        .expect("daemon");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a FIFO"),
        "{out:?}"
    );
}
