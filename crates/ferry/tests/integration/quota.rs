//! Quotas on the file area: an anonymous principal's uploads (rake64, on loopback) and a
//! network principal's (`ferry put` over TLS) stop at their quota with a clear refusal, the
//! owner's do not, and an upload that stalls is dropped and gives its room back.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::helper::{wait_until, Daemon};

fn header(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(64, b' ');
    bytes
}

/// A rake64 client sending one requirement of `size` bytes (only `sent` of them); the
/// daemon's refusal, if it refused.
struct Requirement {
    stream: TcpStream,
}

impl Requirement {
    fn send(
        daemon: &Daemon,
        name: &str,
        size: usize,
        sent: usize,
    ) -> (Requirement, Option<String>) {
        let mut stream =
            TcpStream::connect(("127.0.0.1", daemon.listener_port("rake64:tcp"))).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream.write_all(&header("!R")).expect("write");
        stream.write_all(&header("!SSIF1")).expect("write");
        stream.write_all(b"1").expect("write");
        let size_text = size.to_string();
        for (asked, answer) in [(b"!N", name.as_bytes()), (b"!Z", size_text.as_bytes())] {
            let mut code = [0u8; 2];
            stream.read_exact(&mut code).expect("read");
            assert_eq!(&code, asked);
            stream
                .write_all(&header(&format!(
                    "!S{}F{}",
                    String::from_utf8_lossy(asked),
                    answer.len()
                )))
                .expect("write");
            stream.write_all(answer).expect("write");
        }
        let mut code = [0u8; 2];
        stream.read_exact(&mut code).expect("read");
        if &code == b"!T" {
            stream.write_all(&vec![b'x'; sent]).expect("write");
            return (Requirement { stream }, None);
        }
        let mut requirement = Requirement { stream };
        let refusal = requirement.failure(code);
        (requirement, Some(refusal))
    }

    /// The text of a `!F` whose first two bytes were read.
    fn failure(&mut self, code: [u8; 2]) -> String {
        assert_eq!(&code, b"!F", "expected a refusal");
        let mut rest = [0u8; 62];
        self.stream.read_exact(&mut rest).expect("read");
        let len: usize = String::from_utf8_lossy(&rest)
            .trim()
            .parse()
            .expect("a length");
        let mut text = vec![0u8; len];
        self.stream.read_exact(&mut text).expect("read");
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The refusal that comes next.
    fn refusal(&mut self) -> String {
        let mut code = [0u8; 2];
        self.stream.read_exact(&mut code).expect("read");
        self.failure(code)
    }

    fn close(mut self) {
        let _ = self.stream.write_all(&header("!D"));
    }
}

/// Temporary files of uploads in progress anywhere under `dir`.
fn in_flight(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            } else if name.starts_with(".ferry-part") {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn an_anonymous_principal_stops_at_its_quota_and_a_stalled_upload_gives_its_room_back() {
    let daemon = Daemon::start_networked(
        &["--quota-anonymous", "100000", "--upload-idle-timeout", "1s"],
        &["rake64:tcp:127.0.0.1:0"],
    );
    let (first, refused) = Requirement::send(&daemon, "a.bin", 60_000, 60_000);
    assert_eq!(refused, None);
    // The first connection's sandbox holds 60 000 bytes: 60 000 more do not fit.
    let (second, refused) = Requirement::send(&daemon, "b.bin", 60_000, 0);
    let refused = refused.expect("refused");
    assert!(
        refused.contains("b.bin") && refused.contains("quota of 100000 bytes"),
        "{refused}"
    );
    second.close();
    // Its sandbox goes with it: the room comes back.
    first.close();
    let (mut stalled, refused) = wait_until(
        "the first connection's room to come back",
        Duration::from_secs(20),
        || match Requirement::send(&daemon, "c.bin", 60_000, 1000) {
            (requirement, None) => Some((requirement, None::<String>)),
            (requirement, Some(_)) => {
                requirement.close();
                None
            }
        },
        || daemon.log(),
    );
    assert_eq!(refused, None);
    // 1000 of 60 000 bytes, then nothing: dropped after a second, its file and room gone.
    let said = stalled.refusal();
    assert!(
        said.contains("c.bin: no bytes came for 1s: the transfer was dropped"),
        "{said}"
    );
    let files = daemon.state_dir.join("files");
    wait_until(
        "the stalled upload's file to go",
        Duration::from_secs(20),
        || in_flight(&files).is_empty().then_some(()),
        || format!("{:?}", in_flight(&files)),
    );
    let (whole, refused) = Requirement::send(&daemon, "d.bin", 60_000, 60_000);
    assert_eq!(refused, None, "the stalled upload's room came back");
    whole.close();
    // The owner has no quota.
    let big = daemon.dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 300_000]).expect("write");
    let out = daemon.ferry().arg("put").arg(&big).output().expect("put");
    assert!(out.status.success(), "{out:?}");
    daemon.assert_serving();
}

#[test]
fn a_network_principal_stops_at_its_quota_with_a_clear_refusal() {
    let daemon =
        Daemon::start_networked(&["--quota-network", "100000"], &["ferry:tls:127.0.0.1:0"]);
    let file = daemon.dir.path().join("part.bin");
    std::fs::write(&file, vec![1u8; 60_000]).expect("write");
    let put = |remote: &str| {
        daemon
            .remote()
            .arg("put")
            .arg(&file)
            .arg(remote)
            .output()
            .expect("put")
    };
    let out = put("one.bin");
    assert!(out.status.success(), "{out:?}");
    let out = put("two.bin");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("two.bin: a file of 60000 bytes would take your file area past its quota of 100000 bytes (60000 in use)"),
        "{stderr}"
    );
    // Replacing what is there is counted as more (the old bytes go only once it lands): a
    // smaller file fits.
    std::fs::write(&file, vec![1u8; 30_000]).expect("write");
    let out = put("three.bin");
    assert!(out.status.success(), "{out:?}");
    daemon.assert_serving();
}
