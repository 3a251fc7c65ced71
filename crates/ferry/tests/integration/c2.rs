//! The C2 dialect over TCP and a FIFO pair: `ferry c2` against a daemon's c2 listener (results,
//! true exit statuses, a 1 MiB output through continuation frames, errors), raw frames byte for
//! byte (KubOS's own client's request: a map that declares five pairs and holds four, a one-string
//! ARGS, its buffer's zeros after the CBOR; 60 000 bytes of output in one frame; every error
//! response), and CBOR from an independent encoder (Debian's python3-cbor2) both ways.

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
        || daemon.log_shows("dropped a partial request").then_some(()),
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

/// A CSP id from address 2, ephemeral port 40, to the daemon (address 1, port 10).
const REQUEST_ID: u32 = (2 << 30) | (2 << 25) | (1 << 20) | (10 << 14) | (40 << 8);

/// One C2 frame: a u16 LE length, the u32 LE CSP id, the data.
fn frame(id: u32, data: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(data.len())
        .expect("fits a frame")
        .to_le_bytes()
        .to_vec();
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// Reads one frame's id and data.
fn read_frame(stream: &mut impl Read) -> (u32, Vec<u8>) {
    let mut header = [0u8; 6];
    stream.read_exact(&mut header).expect("frame header");
    let len = usize::from(u16::from_le_bytes([header[0], header[1]]));
    let id = u32::from_le_bytes([header[2], header[3], header[4], header[5]]);
    let mut data = vec![0u8; len];
    stream.read_exact(&mut data).expect("frame data");
    (id, data)
}

/// The CBOR of an error response, as KubOS's daemon writes it.
fn error_map(message: &str) -> Vec<u8> {
    let mut out = vec![0xa2];
    text(&mut out, "MSG_TYPE");
    out.push(0x02);
    text(&mut out, "ERROR_MSG");
    let len = message.len();
    if len < 24 {
        out.push(0x60 | len as u8);
    } else {
        out.extend_from_slice(&[0x78, u8::try_from(len).expect("a short message")]);
    }
    out.extend_from_slice(message.as_bytes());
    out
}

#[test]
fn an_output_of_60000_bytes_comes_whole_in_one_frame() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["c2:tcp:127.0.0.1:0"]);
    let request = ferry_wire::c2::encode_request(
        "sh",
        &["-c".into(), "head -c 60000 /dev/zero | tr '\\0' x".into()],
    );
    let mut stream =
        TcpStream::connect(("127.0.0.1", daemon.listener_port("c2:tcp"))).expect("connect");
    stream
        .write_all(&frame(REQUEST_ID, &request))
        .expect("write");
    let (_, data) = read_frame(&mut stream);
    // Four pairs (no OUTPUT_MORE), and OUTPUT a text of 60 000 bytes at the end.
    assert_eq!(data[0], 0xa4, "one frame, no continuation");
    let mut tail = Vec::new();
    text(&mut tail, "OUTPUT");
    tail.extend_from_slice(&[0x79, 0xea, 0x60]); // a text of 60 000 bytes
    tail.extend_from_slice(&[b'x'; 60_000]);
    assert!(data.ends_with(&tail), "{} bytes", data.len());
    match ferry_wire::c2::decode_response(&data).expect("a response") {
        ferry_wire::c2::Response::Result {
            return_code, more, ..
        } => assert_eq!((return_code, more), (0, 0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_error_gets_an_error_response_and_the_connection_goes_on() {
    let daemon = Daemon::start_networked(&[], &["c2:tcp:127.0.0.1:0"]);
    let mut stream =
        TcpStream::connect(("127.0.0.1", daemon.listener_port("c2:tcp"))).expect("connect");
    let mut wrong_type = vec![0xa4];
    text(&mut wrong_type, "MSG_TYPE");
    wrong_type.push(0x01);
    text(&mut wrong_type, "COMMAND_NAME");
    text(&mut wrong_type, "echo");
    text(&mut wrong_type, "ARG_COUNT");
    wrong_type.push(0x00);
    text(&mut wrong_type, "ARGS");
    text(&mut wrong_type, "");
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "a command outside the catalog",
            ferry_wire::c2::encode_request("rm", &["-rf".into(), "/".into()]),
        ),
        ("bad CBOR", vec![0xff, 0x00, 0x13]),
        ("not a map", vec![0x83, 0x01, 0x02, 0x03]),
        ("a wrong MSG_TYPE", wrong_type),
    ];
    let mut messages = Vec::new();
    for (case, request) in &cases {
        stream
            .write_all(&frame(REQUEST_ID, request))
            .expect("write");
        let (id, data) = read_frame(&mut stream);
        assert_eq!(
            id,
            (2 << 30) | (1 << 25) | (2 << 20) | (11 << 14) | (10 << 8)
        );
        let message = match ferry_wire::c2::decode_response(&data) {
            Ok(ferry_wire::c2::Response::Error { message }) => message,
            other => panic!("{case}: {other:?}"),
        };
        assert_eq!(data, error_map(&message), "{case}: byte for byte");
        messages.push(message);
    }
    assert!(messages[0].contains("rm"), "{messages:?}");
    assert!(messages[1].to_lowercase().contains("cbor"), "{messages:?}");
    assert!(messages[3].contains("MSG_TYPE"), "{messages:?}");
    // The same connection still serves (a catalog command the daemon has: none, so refused
    // again, answered again).
    stream
        .write_all(&frame(REQUEST_ID, &cases[0].1))
        .expect("write");
    assert_eq!(read_frame(&mut stream).1, error_map(&messages[0]));
    daemon.assert_serving();
}

#[test]
fn a_fifo_pair_exchanges_kubos_frames_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in");
    let output = dir.path().join("out");
    let spec = format!("c2:fifo:{},{}", input.display(), output.display());
    let daemon = Daemon::start_networked(&["--allow-any-command"], &[spec.as_str()]);
    let mut cbor = vec![0xa5];
    text(&mut cbor, "MSG_TYPE");
    cbor.push(0x00);
    text(&mut cbor, "COMMAND_NAME");
    text(&mut cbor, "timeout");
    text(&mut cbor, "ARG_COUNT");
    cbor.push(0x01);
    text(&mut cbor, "ARGS");
    text(&mut cbor, "0.05 sleep 9");
    // A one-string ARGS is split on white space, with no shell: timeout ends the sleep and
    // exits with its true status, 124.
    cbor.resize(250, 0);
    let mut to_daemon = std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .expect("open the input FIFO");
    let mut from_daemon = std::fs::File::open(&output).expect("open the output FIFO");
    // Written as the real client does: one write of the whole packet.
    to_daemon
        .write_all(&frame(REQUEST_ID, &cbor))
        .expect("write");
    let (id, data) = read_frame(&mut from_daemon);
    assert_eq!(
        id,
        (2 << 30) | (1 << 25) | (2 << 20) | (11 << 14) | (10 << 8)
    );
    let mut head = vec![0xa4];
    text(&mut head, "MSG_TYPE");
    head.push(0x01);
    text(&mut head, "RETURN_CODE");
    head.extend_from_slice(&[0xf8, 124]); // the simple value 124, in two bytes
    text(&mut head, "EXEC_TIME");
    assert_eq!(&data[..head.len()], head.as_slice(), "{data:02x?}");
    let mut tail = Vec::new();
    text(&mut tail, "OUTPUT");
    tail.push(0x60);
    assert_eq!(&data[head.len() + 9..], tail.as_slice());
    daemon.assert_serving();
}

/// Debian's Python, where python3-cbor2 lives (`.ci/deps` installs it).
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// Encodes a request with cbor2, sends it to the daemon as KubOS frames it, decodes the
/// answer with cbor2 and prints what it found; also decodes the request ferry's client
/// encodes (given in hex as the first argument).
const CBOR2_PEER: &str = r#"
import socket, struct, sys, cbor2
ours = cbor2.loads(bytes.fromhex(sys.argv[1]))
print("ferry's request:", sorted(ours.items()))
request = cbor2.dumps({"MSG_TYPE": 0, "COMMAND_NAME": "sh", "ARG_COUNT": 2,
                       "ARGS": ["-c", "printf 'caf\u00e9'; exit 3"]})
sock = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
sock.sendall(struct.pack("<HI", len(request), 0x8412a800) + request)
def read(n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "closed"
        data += chunk
    return data
length, csp = struct.unpack("<HI", read(6))
answer = cbor2.loads(read(length))
code = answer["RETURN_CODE"]
print("type:", answer["MSG_TYPE"])
print("code:", type(code).__name__, code.value if hasattr(code, "value") else code)
print("time:", type(answer["EXEC_TIME"]).__name__, answer["EXEC_TIME"] >= 0)
print("output:", answer["OUTPUT"])
"#;

#[test]
fn an_independent_cbor_encoder_and_ferry_understand_each_other() {
    let has_cbor2 = Command::new(DEBIAN_PYTHON)
        .args(["-c", "import cbor2"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        has_cbor2,
        "{DEBIAN_PYTHON} with python3-cbor2 is needed: run `bash .ci/deps` (the README's test command does)"
    );
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["c2:tcp:127.0.0.1:0"]);
    let ours = ferry_wire::c2::encode_request("echo", &["a b".into(), "c".into()]);
    let hex: String = ours.iter().map(|byte| format!("{byte:02x}")).collect();
    let out = Command::new(DEBIAN_PYTHON)
        .args(["-c", CBOR2_PEER, &hex])
        .arg(daemon.listener_port("c2:tcp").to_string())
        .output()
        .expect("python");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ferry's request: [('ARGS', ['a b', 'c']), ('ARG_COUNT', 2), ('COMMAND_NAME', 'echo'), ('MSG_TYPE', 0)]\n\
         type: 1\n\
         code: CBORSimpleValue 3\n\
         time: float True\n\
         output: café\n"
    );
    daemon.assert_serving();
}

#[test]
fn frames_split_at_every_boundary_and_joined_in_one_write_are_served() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["c2:tcp:127.0.0.1:0"]);
    let request = frame(
        REQUEST_ID,
        &ferry_wire::c2::encode_request("echo", &["split".into()]),
    );
    let output = |data: &[u8]| match ferry_wire::c2::decode_response(data) {
        Ok(ferry_wire::c2::Response::Result { output, .. }) => output,
        other => panic!("{other:?}"),
    };
    for cut in 1..request.len() {
        let mut stream =
            TcpStream::connect(("127.0.0.1", daemon.listener_port("c2:tcp"))).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.write_all(&request[..cut]).expect("write");
        // Sent (and, on loopback, taken in) before the second piece goes.
        crate::helper::wait_until_read(&stream);
        stream.write_all(&request[cut..]).expect("write");
        assert_eq!(
            output(&read_frame(&mut stream).1),
            "split\n",
            "cut at {cut}"
        );
    }
    // Two frames in one write: two answers, in order.
    let mut stream =
        TcpStream::connect(("127.0.0.1", daemon.listener_port("c2:tcp"))).expect("connect");
    let mut both = request.clone();
    both.extend_from_slice(&frame(
        REQUEST_ID,
        &ferry_wire::c2::encode_request("echo", &["again".into()]),
    ));
    stream.write_all(&both).expect("write");
    assert_eq!(output(&read_frame(&mut stream).1), "split\n");
    assert_eq!(output(&read_frame(&mut stream).1), "again\n");
    daemon.assert_serving();
}

#[test]
fn an_answer_keeps_16_mib_of_output_and_says_where_the_rest_is() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["c2:tcp:127.0.0.1:0"]);
    let out = c2(&daemon, &["head", "-c", "20000000", "/dev/zero"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = 16 * 1024 * 1024;
    assert!(out.stdout[..kept].iter().all(|b| *b == 0));
    let note = String::from_utf8_lossy(&out.stdout[kept..]);
    assert!(
        note.starts_with(&format!(
            "\n[ferry: {} bytes more were written; the whole output is in the job's log: ferry log ",
            20_000_000 - kept
        )),
        "{note}"
    );
    // The job's log has every byte.
    let id: String = note
        .trim_end()
        .trim_end_matches(']')
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    let log = daemon.run(&["log", &id]);
    assert_eq!(log.stdout.len(), 20_000_000);
}

/// A C2 peer is anonymous, and on loopback its user is known: its commands run in its
/// principal's file area (`files/anonymous/c2/UID`), never in the daemon's own working
/// directory.
#[test]
fn an_anonymous_command_runs_in_its_file_area() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start_networked_in(
        cwd.path(),
        &["--allow-any-command"],
        &["c2:tcp:127.0.0.1:0"],
    );
    let out = c2(&daemon, &["pwd"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dir = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim_end());
    let uid = rustix::process::getuid().as_raw().to_string();
    let area = daemon.state_dir.join("files").join("anonymous").join("c2");
    assert_eq!(dir, area.join(uid));
    assert!(!dir.starts_with(cwd.path()));
}
