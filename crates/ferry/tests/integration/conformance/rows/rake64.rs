//! The rake64 row: 64-byte headers, read at the seed's offsets.

use std::io::Write;

use super::{lossy, Requests, Row, GOING_DOWN, KICKED, TIMED_OUT};
use crate::conformance::{Link, Matrix, Words};

pub struct Rake64;

fn padded(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(64, b' ');
    bytes
}

fn rake64_command(text: &str) -> Vec<u8> {
    let mut bytes = padded(&format!("!C{}", text.chars().count()));
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// One answer read as the seed's reader does (see `rake64.rs`): its code and payload.
fn rake64_answer(link: &mut Link) -> (String, Vec<u8>) {
    let header = String::from_utf8(link.exact(64)).expect("text");
    let code = header[..2].to_owned();
    let length = if code == "!S" {
        &header[5..]
    } else {
        &header[2..]
    };
    let length: usize = length.trim().parse().expect("a length");
    (code, link.exact(length))
}

impl Row for Rake64 {
    fn form(&self) -> &'static str {
        "rake64:tcp"
    }

    fn raw(&self, m: &Matrix) -> Link {
        Link::tcp(m.port("rake64:tcp"))
    }

    fn start(&self, _m: &Matrix, link: &mut Link, argv: &[String]) -> bool {
        link.write_all(&rake64_command(&argv.join(" ")))
            .expect("command");
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.raw(m);
        link.write_all(&rake64_command(&argv.join(" ")))
            .expect("command");
        let (code, stdout) = rake64_answer(&mut link);
        assert_eq!(code, "!S", "{}", lossy(&stdout));
        Some(stdout)
    }

    fn kicked(&self) -> Words {
        Words::Says(b"!F", KICKED)
    }

    fn going_down(&self) -> Words {
        Words::Says(b"!F", GOING_DOWN)
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        Some((b"!C12", Words::Says(b"!F", TIMED_OUT)))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        (
            padded("?E"),
            Words::Says(b"!F", "a rake64 header starts with '!'"),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(Rake64Requests(m))
    }

    fn area(&self) -> Option<String> {
        // Each connection's sandbox, in the anonymous rake64 principal's area.
        Some(format!(
            "anonymous/rake64/{}",
            rustix::process::getuid().as_raw()
        ))
    }

    fn answers_with_output(&self) -> bool {
        true
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "other principal" => "no request lists or touches jobs".into(),
            _ => "-".into(),
        }
    }
}

struct Rake64Requests<'a>(&'a Matrix);

impl Requests for Rake64Requests<'_> {
    fn link(&mut self) -> Link {
        Rake64.raw(self.0)
    }

    fn request(&self) -> Vec<u8> {
        rake64_command("echo split")
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        match rake64_answer(link) {
            (code, stdout) if code == "!S" && stdout == b"split\n" => Ok(()),
            (code, payload) => Err(format!("{code} {:?}", lossy(&payload))),
        }
    }
}
