//! The CBSD rows: its text lines, and cbsdng's binary frames.

use std::io::Write;

use super::{lossy, split_answer, Interleaved, Requests, Row, GOING_DOWN, KICKED, TIMED_OUT};
use crate::conformance::{Link, Matrix, Words};

pub struct Cbsd;

fn cbsd_frames(bytes: &[u8]) -> Vec<ferry_wire::cbsd::Frame> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Ok(Some((frame, used))) = ferry_wire::cbsd::decode_frame(rest) {
        frames.push(frame);
        rest = &rest[used..];
    }
    frames
}

fn cbsd_said(read: &[u8], kind: u32, text: &str) -> Result<(), String> {
    let frames = cbsd_frames(read);
    frames
        .iter()
        .any(|f| f.id == 0 && f.kind == kind && String::from_utf8_lossy(&f.payload).contains(text))
        .then_some(())
        .ok_or_else(|| format!("no frame `0 {kind} ...` saying {text:?} in {frames:?}"))
}

/// Reads CBSD frames until the exit of the command; its stdout.
fn cbsd_stdout(link: &mut Link) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut stdout = Vec::new();
    loop {
        while let Ok(Some((frame, used))) = ferry_wire::cbsd::decode_frame(&buf) {
            buf.drain(..used);
            match frame.kind {
                ferry_wire::cbsd::kind::STDOUT => stdout.extend(frame.payload),
                ferry_wire::cbsd::kind::EXIT => return Ok(stdout),
                ferry_wire::cbsd::kind::ERROR => {
                    return Err(String::from_utf8_lossy(&frame.payload).into_owned())
                }
                _ => {}
            }
        }
        buf.extend(link.exact(1));
    }
}

impl Row for Cbsd {
    fn form(&self) -> &'static str {
        "cbsd:unix"
    }

    fn raw(&self, m: &Matrix) -> Link {
        Link::unix(&m.path("cbsd.sock"))
    }

    fn start(&self, _m: &Matrix, link: &mut Link, argv: &[String]) -> bool {
        link.write_all(format!("command {}\n", argv.join(" ")).as_bytes())
            .expect("command");
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.raw(m);
        link.write_all(format!("command {}\n", argv.join(" ")).as_bytes())
            .expect("command");
        Some(cbsd_stdout(&mut link).expect("output"))
    }

    fn kicked(&self) -> Words {
        Words::Check(|read| cbsd_said(read, ferry_wire::cbsd::kind::NOTICE, KICKED))
    }

    fn going_down(&self) -> Words {
        Words::Says(b"0 5 ", GOING_DOWN)
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        Some((b"command sleep 1", Words::Says(b"0 4 ", TIMED_OUT)))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        (
            b"bogus request\n".to_vec(),
            Words::Says(b"0 4 ", "unknown request 'bogus'"),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(CbsdRequests {
            m,
            commands: Interleaved::default(),
            buf: Vec::new(),
        })
    }

    fn area(&self) -> Option<String> {
        Some(String::new())
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "other principal" => "the owner's socket: the owner may see and touch every job".into(),
            "output cap" => "output streams as it comes: no answer holds it".into(),
            _ => "-".into(),
        }
    }
}

/// CBSD requests for the split test.
struct CbsdRequests<'a> {
    m: &'a Matrix,
    commands: Interleaved,
    buf: Vec<u8>,
}

impl Requests for CbsdRequests<'_> {
    fn link(&mut self) -> Link {
        Cbsd.raw(self.m)
    }

    fn request(&self) -> Vec<u8> {
        b"command echo split\n".to_vec()
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        use ferry_wire::cbsd::kind;
        loop {
            if let Some(out) = self.commands.next_done() {
                return split_answer(&out);
            }
            match ferry_wire::cbsd::decode_frame(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    match frame.kind {
                        kind::ACCEPTED => self.commands.accepted(frame.id),
                        kind::STDOUT => self.commands.stdout(frame.id, &frame.payload),
                        kind::EXIT => self.commands.ended(frame.id),
                        kind::ERROR => return Err(lossy(&frame.payload)),
                        _ => {}
                    }
                }
                Ok(None) => self.buf.extend(link.exact(1)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

pub struct Cbsdng;

fn cbsdng_frames(bytes: &[u8]) -> Vec<ferry_wire::cbsdng::Frame> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Ok(Some((frame, used))) = ferry_wire::cbsdng::decode_frame(rest) {
        frames.push(frame);
        rest = &rest[used..];
    }
    frames
}

fn cbsdng_closing(read: &[u8], text: &str) -> Result<(), String> {
    let frames = cbsdng_frames(read);
    frames
        .iter()
        .any(|f| {
            f.id == 0
                && f.kind == ferry_wire::cbsdng::bits::CONNECTION_CLOSED
                && String::from_utf8_lossy(&f.payload).contains(text)
        })
        .then_some(())
        .ok_or_else(|| format!("no closing frame saying {text:?} in {frames:?}"))
}

fn cbsdng_request(id: u32, line: &str) -> Vec<u8> {
    ferry_wire::cbsdng::encode_frame(&ferry_wire::cbsdng::Frame {
        id,
        kind: 0,
        payload: line.as_bytes().to_vec(),
    })
}

/// Reads cbsdng frames until request `id`'s end; its output.
fn cbsdng_output(link: &mut Link, id: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let head = link.exact(12);
        let size = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let mut bytes = head;
        bytes.extend(link.exact(size));
        let frames = cbsdng_frames(&bytes);
        let frame = frames.first().ok_or("not a frame")?;
        if frame.id != id {
            return Err(format!("a frame of request {}", frame.id));
        }
        if frame.kind & ferry_wire::cbsdng::bits::EXIT != 0 {
            return if frame.payload == b"0" {
                Ok(out)
            } else {
                Err(format!("status {}", lossy(&frame.payload)))
            };
        }
        out.extend_from_slice(&frame.payload);
    }
}

impl Row for Cbsdng {
    fn form(&self) -> &'static str {
        "cbsdng:unix"
    }

    fn raw(&self, m: &Matrix) -> Link {
        Link::unix(&m.path("cbsdng.sock"))
    }

    fn start(&self, _m: &Matrix, link: &mut Link, argv: &[String]) -> bool {
        link.write_all(&cbsdng_request(5, &argv.join(" ")))
            .expect("request");
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.raw(m);
        link.write_all(&cbsdng_request(9, &argv.join(" ")))
            .expect("request");
        Some(cbsdng_output(&mut link, 9).expect("output"))
    }

    fn kicked(&self) -> Words {
        Words::Check(|read| cbsdng_closing(read, KICKED))
    }

    fn going_down(&self) -> Words {
        Words::Check(|read| cbsdng_closing(read, GOING_DOWN))
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        Some((
            &[1, 0, 0, 0],
            Words::Check(|read| cbsdng_closing(read, TIMED_OUT)),
        ))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        // A frame announcing more than 1 MiB.
        (
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0],
            Words::Check(|read| cbsdng_closing(read, "over the limit")),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(CbsdngRequests {
            m,
            requests: Interleaved::default(),
        })
    }

    fn area(&self) -> Option<String> {
        Some(String::new())
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        Cbsd.not_applicable(guarantee)
    }
}

/// cbsdng requests for the split test (two in one write have ids of their own).
struct CbsdngRequests<'a> {
    m: &'a Matrix,
    requests: Interleaved,
}

impl Requests for CbsdngRequests<'_> {
    fn link(&mut self) -> Link {
        Cbsdng.raw(self.m)
    }

    fn request(&self) -> Vec<u8> {
        cbsdng_request(7, "echo split")
    }

    fn joined(&self) -> Vec<u8> {
        let mut both = cbsdng_request(7, "echo split");
        both.extend(cbsdng_request(8, "echo split"));
        both
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        loop {
            if let Some(out) = self.requests.next_done() {
                return split_answer(&out);
            }
            let head = link.exact(12);
            let size = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
            let mut bytes = head;
            bytes.extend(link.exact(size));
            let frame = cbsdng_frames(&bytes).pop().ok_or("not a frame")?;
            let id = u64::from(frame.id);
            if !self.requests.accepted.iter().any(|(of, ..)| *of == id) {
                self.requests.accepted(id);
            }
            if frame.kind & ferry_wire::cbsdng::bits::EXIT != 0 {
                if frame.payload != b"0" {
                    return Err(format!("status {}", lossy(&frame.payload)));
                }
                self.requests.ended(id);
            } else {
                self.requests.stdout(id, &frame.payload);
            }
        }
    }
}
