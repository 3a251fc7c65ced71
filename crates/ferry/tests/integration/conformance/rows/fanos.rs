//! The FANOS row: netstrings with the client's fds, as Oils' clients send them.

use std::os::fd::AsFd;

use ferry_io::fdpass::send_all_with_fds;

use super::{Requests, Row, GOING_DOWN, KICKED, TIMED_OUT};
use crate::conformance::{Link, Matrix, Words};

pub struct Fanos;

/// The netstring payloads in `bytes`.
fn netstrings(bytes: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = bytes;
    while let Ok(Some((range, used))) = ferry_wire::fanos::decode_netstring(rest, 1 << 26, false) {
        found.push(String::from_utf8_lossy(&rest[range]).into_owned());
        rest = &rest[used..];
    }
    found
}

fn fanos_error(read: &[u8], text: &str) -> Result<(), String> {
    let replies = netstrings(read);
    replies
        .iter()
        .any(|r| r.starts_with("ERROR ") && r.contains(text))
        .then_some(())
        .ok_or_else(|| format!("no ERROR saying {text:?} in {replies:?}"))
}

/// Sends an ARGV with stdin from /dev/null and stdout, stderr to `out`.
fn fanos_argv(link: &Link, argv: &[&str], out: std::os::fd::BorrowedFd<'_>) {
    let Link::Unix(stream) = link else {
        panic!("FANOS is served on Unix sockets");
    };
    let mut payload = b"ARGV".to_vec();
    for arg in argv {
        payload.push(0);
        payload.extend_from_slice(arg.as_bytes());
    }
    let mut message = Vec::new();
    ferry_wire::fanos::encode_netstring(&payload, &mut message);
    let null = std::fs::File::open("/dev/null").expect("null");
    send_all_with_fds(stream.as_fd(), &message, &[null.as_fd(), out, out]).expect("send");
}

impl Row for Fanos {
    fn form(&self) -> &'static str {
        "fanos:unix"
    }

    fn raw(&self, m: &Matrix) -> Link {
        Link::unix(&m.path("fanos.sock"))
    }

    fn start(&self, _m: &Matrix, link: &mut Link, argv: &[String]) -> bool {
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .expect("null");
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        fanos_argv(link, &argv, null.as_fd());
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.raw(m);
        let (read, write) = rustix::pipe::pipe().expect("pipe");
        fanos_argv(&link, argv, write.as_fd());
        drop(write);
        let reply = link.one_netstring().expect("a reply");
        assert_eq!(reply, "STATUS 0");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(read), &mut out).expect("read");
        Some(out)
    }

    fn kicked(&self) -> Words {
        Words::Check(|read| fanos_error(read, KICKED))
    }

    fn going_down(&self) -> Words {
        Words::Check(|read| fanos_error(read, GOING_DOWN))
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        Some((
            b"6:GETPID",
            Words::Check(|read| fanos_error(read, TIMED_OUT)),
        ))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        (
            b"x:GETPID,".to_vec(),
            Words::Check(|read| fanos_error(read, "Expected netstring length")),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(FanosRequests(m))
    }

    fn area(&self) -> Option<String> {
        Some(String::new())
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "other principal" => "the owner's socket: the owner may see and touch every job".into(),
            "output cap" => "output goes to the client's own fds: no answer holds it".into(),
            _ => "-".into(),
        }
    }
}

struct FanosRequests<'a>(&'a Matrix);

impl Requests for FanosRequests<'_> {
    fn link(&mut self) -> Link {
        Fanos.raw(self.0)
    }

    fn request(&self) -> Vec<u8> {
        b"6:GETPID,".to_vec()
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        let reply = link.one_netstring()?;
        reply
            .starts_with("OK ")
            .then_some(())
            .ok_or_else(|| format!("GETPID answered {reply:?}"))
    }
}

impl Link {
    /// One netstring reply, read to its end.
    fn one_netstring(&mut self) -> Result<String, String> {
        let mut buf = Vec::new();
        loop {
            if let Ok(Some((range, _))) = ferry_wire::fanos::decode_netstring(&buf, 1 << 20, false)
            {
                return Ok(String::from_utf8_lossy(&buf[range]).into_owned());
            }
            let byte = self.exact(1);
            buf.extend(byte);
        }
    }
}
