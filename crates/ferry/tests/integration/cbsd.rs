//! The CBSD text dialect over its Unix socket, byte for byte: the seed's case (two clients each
//! run a command, one gets the output of both), input, kill, list, and malformed lines.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ferry_wire::cbsd::{decode_frame, kind, Frame};

use crate::helper::Daemon;

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Frames of other commands, read while waiting for one's.
    held: Vec<Frame>,
}

impl Client {
    fn connect(path: &std::path::Path) -> Client {
        let stream = UnixStream::connect(path).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
            held: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn frame(&mut self) -> Frame {
        loop {
            if let Some((frame, used)) = decode_frame(&self.buf).expect("a frame") {
                self.buf.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(
                n > 0,
                "closed; had {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next ACCEPTED frame (the frames of commands already running that come first are
    /// held for [`Client::until_exit`]).
    fn accepted(&mut self) -> Frame {
        loop {
            let frame = self.frame();
            if frame.kind == kind::ACCEPTED {
                return frame;
            }
            self.held.push(frame);
        }
    }

    /// Frames until the end of command `id` (its exit), as (kind, payload) of that command.
    fn until_exit(&mut self, id: u64) -> Vec<(u32, String)> {
        let mut seen = Vec::new();
        let mut held = std::mem::take(&mut self.held).into_iter();
        loop {
            let frame = match held.next() {
                Some(frame) => frame,
                None => self.frame(),
            };
            if frame.id != id {
                self.held.push(frame);
                continue;
            }
            seen.push((
                frame.kind,
                String::from_utf8_lossy(&frame.payload).into_owned(),
            ));
            if frame.kind == kind::EXIT {
                self.held.extend(held);
                return seen;
            }
        }
    }
}

/// A daemon serving CBSD on `DIR/cbsd.sock` (and its own socket).
fn daemon(dir: &std::path::Path) -> (Daemon, std::path::PathBuf) {
    let socket = dir.join("cbsd.sock");
    let spec = format!("cbsd:unix:{}", socket.display());
    (Daemon::start_networked(&[], &[spec.as_str()]), socket)
}

#[test]
fn two_clients_run_commands_and_one_gets_the_output_of_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, socket) = daemon(dir.path());
    let mut first = Client::connect(&socket);
    let mut second = Client::connect(&socket);
    first.send(b"command echo one\n");
    let accepted = first.frame();
    assert_eq!(accepted.kind, kind::ACCEPTED);
    let one = accepted.id;
    second.send(b"command echo two\n");
    let two = second.frame().id;
    assert_ne!(one, two);
    assert_eq!(
        second.until_exit(two),
        [
            (kind::STDOUT, "two\n".to_owned()),
            (kind::EXIT, "0".to_owned())
        ]
    );
    // The first client asks for the second's output too, and gets both, with their ids.
    first.send(format!("attach {two}\n").as_bytes());
    let theirs = first.until_exit(two);
    assert_eq!(theirs.last(), Some(&(kind::EXIT, "0".to_owned())));
    assert!(theirs.contains(&(kind::STDOUT, "two\n".to_owned())));
    assert_eq!(
        first.until_exit(one),
        [
            (kind::STDOUT, "one\n".to_owned()),
            (kind::EXIT, "0".to_owned())
        ]
    );
    daemon.assert_serving();
}

#[test]
fn input_kill_list_and_malformed_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, socket) = daemon(dir.path());
    let mut client = Client::connect(&socket);
    // The seed's frame, byte for byte: "<id> <type> <size> <payload>".
    client.send(b"command cat\n");
    let cat = client.frame().id;
    client.send(format!("input {cat} 5\nopala").as_bytes());
    client.send(format!("input {cat} 0\n").as_bytes());
    assert_eq!(
        client.until_exit(cat),
        [
            (kind::STDOUT, "opala".to_owned()),
            (kind::EXIT, "0".to_owned())
        ]
    );
    client.send(b"command sleep 300\n");
    let sleep = client.frame().id;
    client.send(b"list\n");
    let mut listed = Vec::new();
    loop {
        let frame = client.frame();
        assert_eq!(frame.kind, kind::LISTED);
        if frame.id == 0 {
            assert!(frame.payload.is_empty(), "the end of the list: {frame:?}");
            break;
        }
        listed.push(String::from_utf8_lossy(&frame.payload).into_owned());
    }
    assert_eq!(
        listed,
        [
            format!("{cat} finished cat"),
            format!("{sleep} running sleep 300")
        ]
    );
    client.send(format!("kill {sleep}\n").as_bytes());
    let end = client.until_exit(sleep);
    assert_eq!(end.last(), Some(&(kind::EXIT, "143".to_owned())), "{end:?}");
    // Long output comes in frames of bounded size, every byte kept.
    client.send(b"command head -c 100000 /dev/zero\n");
    let zeros = client.frame().id;
    let frames = client.until_exit(zeros);
    let stdout: Vec<&String> = frames
        .iter()
        .filter(|(kind, _)| *kind == kind::STDOUT)
        .map(|(_, payload)| payload)
        .collect();
    assert!(stdout.len() > 1, "{} frames", stdout.len());
    assert!(stdout
        .iter()
        .all(|payload| payload.len() <= ferry_wire::cbsd::MAX_PAYLOAD));
    assert_eq!(
        stdout.iter().map(|payload| payload.len()).sum::<usize>(),
        100_000
    );
    // A malformed line: an error frame with id 0, then the connection closes.
    let mut raw = UnixStream::connect(&socket).expect("connect");
    raw.write_all(b"frobnicate now\n").expect("write");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).expect("read");
    assert!(
        answer.starts_with("0 4 ") && answer.contains("unknown request 'frobnicate'"),
        "{answer:?}"
    );
    // A size that lies (more than the limit) is refused the same way.
    let mut raw = UnixStream::connect(&socket).expect("connect");
    raw.write_all(b"input 1 99999999999\n").expect("write");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).expect("read");
    assert!(
        answer.starts_with("0 4 ") && answer.contains("at most"),
        "{answer:?}"
    );
    daemon.assert_serving();
}

#[test]
fn cbsdng_frames_both_ways_with_a_request_split_over_many_writes() {
    use ferry_wire::cbsdng::{
        bits, decode_frame as decode_ng, encode_frame as encode_ng, Frame as NgFrame,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("cbsdng.sock");
    let spec = format!("cbsdng:unix:{}", socket.display());
    let daemon = Daemon::start_networked(&[], &[spec.as_str()]);
    let mut stream = UnixStream::connect(&socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let request = encode_ng(&NgFrame {
        id: 42,
        kind: bits::JAIL,
        payload: b"printf jail-output".to_vec(),
    });
    // A byte at a time: the daemon takes the frame once whole.
    for byte in &request {
        stream.write_all(std::slice::from_ref(byte)).expect("write");
    }
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    while frames.last().is_none_or(|f: &NgFrame| f.kind != bits::EXIT) {
        match decode_ng(&buf).expect("a frame") {
            Some((frame, used)) => {
                buf.drain(..used);
                frames.push(frame);
            }
            None => {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).expect("read");
                assert!(n > 0, "closed");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    let output: Vec<u8> = frames
        .iter()
        .filter(|f| f.kind == bits::NONE)
        .flat_map(|f| f.payload.clone())
        .collect();
    assert_eq!(output, b"jail-output");
    assert!(frames.iter().all(|f| f.id == 42));
    assert_eq!(
        frames.last().map(|f| f.payload.clone()),
        Some(b"0".to_vec())
    );
    daemon.assert_serving();
}

#[test]
fn requests_split_at_every_boundary_and_joined_in_one_write_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, socket) = daemon(dir.path());
    // By hand with socat, a line may come in pieces; a script may write several at once.
    let request = b"command echo split\n";
    for cut in 1..request.len() {
        let mut client = Client::connect(&socket);
        client.send(&request[..cut]);
        // The daemon has read the first piece before the second is written.
        crate::helper::wait_until_read(&client.stream);
        client.send(&request[cut..]);
        let id = client.frame().id;
        assert_eq!(
            client.until_exit(id),
            [
                (kind::STDOUT, "split\n".to_owned()),
                (kind::EXIT, "0".to_owned())
            ],
            "cut at {cut}"
        );
    }
    let mut client = Client::connect(&socket);
    client.send(b"command echo one\ncommand echo two\n");
    // The first command's output may come before the second is accepted.
    let (first, second) = (client.accepted().id, client.accepted().id);
    assert_eq!(
        client.until_exit(first)[0],
        (kind::STDOUT, "one\n".to_owned())
    );
    assert_eq!(
        client.until_exit(second)[0],
        (kind::STDOUT, "two\n".to_owned())
    );
    daemon.assert_serving();
}
