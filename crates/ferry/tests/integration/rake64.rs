//! The rake64 dialect over real TCP, byte for byte: cost, requirements in both the seed's and
//! the authors' forms (padded and two-byte filestream requests), a command with stdout and
//! files back, a failure's two `!F` frames, hostile names refused, `!D`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::helper::Daemon;

fn header(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(64, b' ');
    bytes
}

struct Peer(TcpStream);

/// An answer as the seed's reader takes it: 64 bytes of header, the code at 0..2, for an
/// `!S` answer its three option bytes at 2..5 and the length from 5, for any other the length
/// from 2; then the payload.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    code: String,
    options: String,
    payload: Vec<u8>,
}

impl Answer {
    fn success(options: &str, payload: &[u8]) -> Answer {
        Answer {
            code: "!S".into(),
            options: options.into(),
            payload: payload.to_vec(),
        }
    }

    fn other(code: &str, payload: &[u8]) -> Answer {
        Answer {
            code: code.into(),
            options: String::new(),
            payload: payload.to_vec(),
        }
    }
}

impl Peer {
    fn connect(daemon: &Daemon) -> Peer {
        let stream =
            TcpStream::connect(("127.0.0.1", daemon.listener_port("rake64:tcp"))).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Peer(stream)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).expect("write");
    }

    fn exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        self.0.read_exact(&mut buf).expect("read");
        buf
    }

    /// The next answer, read at the seed's fixed offsets (ASCII payloads: characters are
    /// bytes).
    fn answer(&mut self) -> Answer {
        let header = self.exact(64);
        let text = String::from_utf8(header).expect("a header is text");
        let code = text[..2].to_owned();
        let (options, length) = if code == "!S" {
            (text[2..5].to_owned(), &text[5..])
        } else {
            (String::new(), &text[2..])
        };
        let length: usize = length
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no length where the seed's reader looks: {text:?}"));
        let payload = self.exact(length);
        Answer {
            code,
            options,
            payload,
        }
    }
}

fn daemon() -> Daemon {
    Daemon::start_networked(&["--allow-any-command"], &["rake64:tcp:127.0.0.1:0"])
}

#[test]
fn cost_requirements_command_files_back_and_disconnect_byte_for_byte() {
    let daemon = daemon();
    let mut peer = Peer::connect(&daemon);
    peer.send(&header("!E"));
    assert_eq!(peer.answer(), Answer::other("!E", b"0"));
    // Requirements, the seed's form: the count as a payload; padded requests from us.
    peer.send(&header("!R"));
    peer.send(&header("!SSIF1"));
    peer.send(b"2");
    for (name, data) in [
        ("a.txt", b"alpha\n".as_slice()),
        ("sub/b.txt", b"beta\n".as_slice()),
    ] {
        assert_eq!(peer.exact(2), b"!N", "the daemon asks with two bytes");
        peer.send(&header(&format!("!S!NF{}", name.len())));
        peer.send(name.as_bytes());
        assert_eq!(peer.exact(2), b"!Z");
        let size = data.len().to_string();
        peer.send(&header(&format!("!S!ZF{}", size.len())));
        peer.send(size.as_bytes());
        assert_eq!(peer.exact(2), b"!T");
        peer.send(data);
    }
    let command = b"cat a.txt sub/b.txt";
    peer.send(&header(&format!("!C{}", command.len())));
    peer.send(command);
    assert_eq!(peer.answer(), Answer::success("S  ", b"alpha\nbeta\n"));
    // Text payloads count characters, as the authors' server does: six for "héllo\n".
    let command = "echo héllo".as_bytes();
    peer.send(&header(&format!("!C{}", "echo héllo".chars().count())));
    peer.send(command);
    assert_eq!(peer.exact(64), header("!SS  6"));
    assert_eq!(peer.exact(7), "héllo\n".as_bytes());
    // A command that makes a file: it comes back through the filestream (our requests padded),
    // its count in the header (the authors' form: no payload).
    let command = b"cp a.txt made.txt";
    peer.send(&header(&format!("!E{}", command.len())));
    peer.send(command);
    assert_eq!(peer.answer(), Answer::success("SI ", b""));
    assert_eq!(peer.exact(64), header("!SSIF1"));
    peer.send(&header("!N"));
    assert_eq!(peer.answer(), Answer::success("!NF", b"made.txt"));
    peer.send(&header("!Z"));
    assert_eq!(peer.answer(), Answer::success("!ZF", b"6"));
    peer.send(b"!T");
    assert_eq!(peer.exact(6), b"alpha\n");
    // A failure: stderr, then the status, each in a !F frame.
    let command = b"ls /nonexistent";
    peer.send(&header(&format!("!C{}", command.len())));
    peer.send(command);
    let failure = peer.answer();
    assert_eq!(failure.code, "!F");
    assert!(String::from_utf8_lossy(&failure.payload).contains("nonexistent"));
    assert_eq!(peer.answer(), Answer::other("!F", b"2"));
    peer.send(b"!D");
    let mut rest = Vec::new();
    let _ = peer.0.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed after !D");
    daemon.assert_serving();
}

#[test]
fn the_authors_forms_lone_codes_and_the_count_in_the_header() {
    let daemon = daemon();
    let mut peer = Peer::connect(&daemon);
    // Two bytes alone, as the authors' client sends them (the next header's `!` ends the
    // code however the writes arrive).
    peer.send(b"!R");
    peer.send(&header("!SSIF1"));
    assert_eq!(peer.exact(2), b"!N");
    peer.send(&header("!S!NF1"));
    peer.send(b"x");
    assert_eq!(peer.exact(2), b"!Z");
    peer.send(&header("!S!ZF1"));
    peer.send(b"3");
    assert_eq!(peer.exact(2), b"!T");
    peer.send(b"ok\n");
    peer.send(b"!E");
    assert_eq!(peer.answer().code, "!E");
    let command = b"cat x";
    peer.send(&header(&format!("!C{}", command.len())));
    peer.send(command);
    assert_eq!(peer.answer(), Answer::success("S  ", b"ok\n"));
    peer.send(b"!D");
}

#[test]
fn hostile_names_are_refused_and_nothing_is_written_outside() {
    let daemon = daemon();
    for name in ["../escape.txt", "/tmp/ferry-rake64-abs.txt", "a/../../b"] {
        let mut peer = Peer::connect(&daemon);
        peer.send(&header("!R"));
        peer.send(&header("!SSIF1"));
        peer.send(b"1");
        assert_eq!(peer.exact(2), b"!N");
        peer.send(&header(&format!("!S!NF{}", name.len())));
        peer.send(name.as_bytes());
        // Refused: a failure naming the problem, then the close.
        let refused = peer.answer();
        assert_eq!(refused.code, "!F", "{name}");
        assert!(!refused.payload.is_empty(), "{name}");
    }
    assert!(!std::path::Path::new("/tmp/ferry-rake64-abs.txt").exists());
    assert!(!daemon
        .state_dir
        .join("files")
        .join("anonymous")
        .join("escape.txt")
        .exists());
    let escaped = walk(daemon.dir.path())
        .into_iter()
        .any(|p| p.ends_with("escape.txt") || p.ends_with("b"));
    assert!(!escaped, "nothing written");
    daemon.assert_serving();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn headers_and_payloads_split_at_any_boundary_are_one_request() {
    let daemon = daemon();
    let command = b"echo split";
    let mut request = header(&format!("!C{}", command.len()));
    request.extend_from_slice(command);
    for cut in [1, 2, 3, 5, 32, 63, 64, 65, request.len() - 1] {
        let mut peer = Peer::connect(&daemon);
        peer.0.set_nodelay(true).expect("nodelay");
        peer.send(&request[..cut]);
        peer.send(&request[cut..]);
        assert_eq!(
            peer.answer(),
            Answer::success("S  ", b"split\n"),
            "cut at {cut}"
        );
        // A header and the next one's first bytes in one write. (The cost is a number; the
        // job just run may not be reaped yet, so it is 0 or more.)
        let mut joined = header("!E");
        joined.extend_from_slice(b"!D");
        peer.send(&joined);
        let cost = peer.answer();
        assert_eq!(cost.code, "!E", "cut at {cut}");
        let cost = String::from_utf8(cost.payload).expect("text");
        assert!(cost.parse::<u64>().is_ok(), "cut at {cut}: {cost:?}");
    }
    daemon.assert_serving();
}

/// Every answer of the same exchange is, byte for byte, what the rake authors' final server
/// writes (read from its code: `!E<len>` and the cost; `!S`, three option bytes (`S` always,
/// `I` when files follow), the stdout's length; `!F<len>` and the stderr, then `!F<len>` and
/// the return code as Python gives it (a signal negated); `!SSIF<count>` with no payload;
/// `!S!NF<len>` + the name and `!S!ZF<len>` + the size, each in one write; `!N`, `!Z`, `!T`
/// as two bytes when it asks). The cost is 0 on an idle daemon.
#[test]
fn answers_are_byte_identical_to_the_authors_server() {
    let daemon = daemon();
    let mut peer = Peer::connect(&daemon);
    let expect = |peer: &mut Peer, bytes: Vec<u8>, what: &str| {
        let got = peer.exact(bytes.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&bytes),
            "{what}"
        );
    };
    let with = |head: &str, payload: &[u8]| {
        let mut bytes = header(head);
        bytes.extend_from_slice(payload);
        bytes
    };
    let command = |peer: &mut Peer, text: &str| {
        peer.send(&header(&format!("!C{}", text.len())));
        peer.send(text.as_bytes());
    };
    peer.send(&header("!E"));
    expect(&mut peer, with("!E1", b"0"), "the cost");
    // Stdout, and none.
    command(&mut peer, "echo hello world");
    expect(&mut peer, with("!SS  12", b"hello world\n"), "stdout");
    command(&mut peer, "true");
    expect(&mut peer, header("!SS  0"), "no stdout");
    // Requirements: the server asks for each part with two bytes.
    peer.send(&header("!R"));
    peer.send(&header("!SSIF2"));
    for (name, data) in [
        ("in.txt", b"data\n".as_slice()),
        ("die.sh", b"kill -9 $$\n"),
    ] {
        expect(&mut peer, b"!N".to_vec(), "asks the name");
        peer.send(&with(&format!("!S!NF{}", name.len()), name.as_bytes()));
        expect(&mut peer, b"!Z".to_vec(), "asks the size");
        let size = data.len().to_string();
        peer.send(&with(&format!("!S!ZF{}", size.len()), size.as_bytes()));
        expect(&mut peer, b"!T".to_vec(), "asks the bytes");
        peer.send(data);
    }
    // A file made: every file the client did not send comes back.
    command(&mut peer, "cp in.txt out.txt");
    expect(&mut peer, header("!SSI 0"), "files follow");
    expect(&mut peer, header("!SSIF1"), "the filestream's metadata");
    peer.send(&header("!N"));
    expect(&mut peer, with("!S!NF7", b"out.txt"), "the name");
    peer.send(b"!Z");
    expect(&mut peer, with("!S!ZF1", b"5"), "the size");
    peer.send(b"!T");
    expect(&mut peer, b"data\n".to_vec(), "the bytes");
    // A failure: its stderr, then its code.
    let stderr = std::process::Command::new("ls")
        .arg("/nonexistent-ferry-file")
        .output()
        .expect("ls")
        .stderr;
    command(&mut peer, "ls /nonexistent-ferry-file");
    expect(
        &mut peer,
        with(&format!("!F{}", stderr.len()), &stderr),
        "stderr",
    );
    expect(&mut peer, with("!F1", b"2"), "the code");
    // Killed by a signal: Python's return code is the signal, negated. (out.txt, made
    // before, comes back again after a success, as with the authors' server; a failure sends
    // no files.)
    command(&mut peer, "sh die.sh");
    expect(&mut peer, header("!F0"), "no stderr");
    expect(&mut peer, with("!F2", b"-9"), "the signal");
    peer.send(&header("!D"));
    let mut rest = Vec::new();
    let _ = peer.0.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed after !D: {rest:?}");
    daemon.assert_serving();
}
