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

    /// A padded header, as text without its padding.
    fn header(&mut self) -> String {
        let bytes = self.exact(64);
        String::from_utf8(bytes)
            .expect("utf-8")
            .trim_end()
            .to_owned()
    }

    /// A header and the payload its last digits announce.
    fn framed(&mut self) -> (String, Vec<u8>) {
        let header = self.header();
        let digits = header.len() - header.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let len: usize = header[header.len() - digits..]
            .parse()
            .unwrap_or_else(|_| panic!("a length at the end of {header:?}"));
        let payload = self.exact(len);
        (header, payload)
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
    assert_eq!(peer.framed(), ("!E1".to_owned(), b"0".to_vec()));
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
    assert_eq!(
        peer.framed(),
        ("!SS11".to_owned(), b"alpha\nbeta\n".to_vec())
    );
    // Text payloads count characters, as the authors' server does: six for "héllo\n".
    let command = "echo héllo".as_bytes();
    peer.send(&header(&format!("!C{}", "echo héllo".chars().count())));
    peer.send(command);
    assert_eq!(peer.header(), "!SS6");
    assert_eq!(peer.exact(7), "héllo\n".as_bytes());
    // A command that makes a file: it comes back through the filestream (our requests padded).
    let command = b"cp a.txt made.txt";
    peer.send(&header(&format!("!E{}", command.len())));
    peer.send(command);
    assert_eq!(peer.header(), "!SI0");
    assert_eq!(peer.framed(), ("!SSIF1".to_owned(), b"1".to_vec()));
    peer.send(&header("!N"));
    assert_eq!(peer.framed(), ("!S!NF8".to_owned(), b"made.txt".to_vec()));
    peer.send(&header("!Z"));
    assert_eq!(peer.framed(), ("!S!ZF1".to_owned(), b"6".to_vec()));
    peer.send(b"!T");
    assert_eq!(peer.exact(6), b"alpha\n");
    // A failure: stderr, then the status, each in a !F frame.
    let command = b"ls /nonexistent";
    peer.send(&header(&format!("!C{}", command.len())));
    peer.send(command);
    let (first, stderr) = peer.framed();
    assert!(first.starts_with("!F"), "{first}");
    assert!(String::from_utf8_lossy(&stderr).contains("nonexistent"));
    assert_eq!(peer.framed(), ("!F1".to_owned(), b"2".to_vec()));
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
    let (cost, _) = peer.framed();
    assert_eq!(cost, "!E1");
    let command = b"cat x";
    peer.send(&header(&format!("!C{}", command.len())));
    peer.send(command);
    assert_eq!(peer.framed(), ("!SS3".to_owned(), b"ok\n".to_vec()));
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
        let (first, why) = peer.framed();
        assert!(first.starts_with("!F"), "{name}: {first}");
        assert!(!why.is_empty(), "{name}");
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
            peer.framed(),
            ("!SS6".to_owned(), b"split\n".to_vec()),
            "cut at {cut}"
        );
        // A header and the next one's first bytes in one write. (The cost is a number; the
        // job just run may not be reaped yet, so it is 0 or more.)
        let mut joined = header("!E");
        joined.extend_from_slice(b"!D");
        peer.send(&joined);
        let (code, cost) = peer.framed();
        let cost = String::from_utf8(cost).expect("text");
        assert_eq!(code, format!("!E{}", cost.len()), "cut at {cut}");
        assert!(cost.parse::<u64>().is_ok(), "cut at {cut}: {cost:?}");
    }
    daemon.assert_serving();
}
