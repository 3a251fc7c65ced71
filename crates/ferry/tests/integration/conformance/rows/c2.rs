//! The C2 rows: CSP frames of CBOR, on a FIFO pair and over TCP.

use std::io::Write;

use super::{split_answer, Requests, Row, TIMED_OUT};
use crate::conformance::{Link, Matrix, Words};

/// C2 on a FIFO pair or over TCP.
pub struct C2(pub &'static str);

/// A CSP id from address 2, port 40, to the daemon (address 1, port 10).
const C2_REQUEST_ID: u32 = (2 << 30) | (2 << 25) | (1 << 20) | (10 << 14) | (40 << 8);

fn c2_frame(data: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(data.len())
        .expect("a frame")
        .to_le_bytes()
        .to_vec();
    out.extend_from_slice(&C2_REQUEST_ID.to_le_bytes());
    out.extend_from_slice(data);
    out
}

fn c2_request(argv: &[&str]) -> Vec<u8> {
    let args: Vec<String> = argv[1..].iter().map(|a| a.to_string()).collect();
    c2_frame(&ferry_wire::c2::encode_request(argv[0], &args))
}

/// Reads one answer frame's data.
fn c2_read(link: &mut Link) -> Vec<u8> {
    let head = link.exact(6);
    let len = usize::from(u16::from_le_bytes([head[0], head[1]]));
    link.exact(len)
}

/// Reads a command's answer (its result and continuations); its output.
fn c2_output(link: &mut Link) -> Result<Vec<u8>, String> {
    match ferry_wire::c2::decode_response(&c2_read(link)) {
        Ok(ferry_wire::c2::Response::Result { output, more, .. }) => {
            let mut out = output.into_bytes();
            for _ in 0..more {
                match ferry_wire::c2::decode_response(&c2_read(link)) {
                    Ok(ferry_wire::c2::Response::Continuation { output }) => {
                        out.extend(output.into_bytes())
                    }
                    other => return Err(format!("expected a continuation, got {other:?}")),
                }
            }
            Ok(out)
        }
        other => Err(format!("expected a result, got {other:?}")),
    }
}

impl Row for C2 {
    fn form(&self) -> &'static str {
        self.0
    }

    fn raw(&self, m: &Matrix) -> Link {
        if self.0 == "c2:fifo" {
            Link::fifo(&m.path("c2.in"), &m.path("c2.out"))
        } else {
            Link::tcp(m.port("c2:tcp"))
        }
    }

    fn closes(&self) -> bool {
        self.0 != "c2:fifo"
    }

    fn start(&self, _m: &Matrix, link: &mut Link, argv: &[String]) -> bool {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        link.write_all(&c2_request(&argv)).expect("request");
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.raw(m);
        link.write_all(&c2_request(argv)).expect("request");
        Some(c2_output(&mut link).expect("output"))
    }

    fn kicked(&self) -> Words {
        Words::Nothing("C2 answers requests only: the connection just ends")
    }

    fn going_down(&self) -> Words {
        Words::Nothing("C2 answers requests only: the connection just ends")
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        if self.0 == "c2:fifo" {
            return None;
        }
        Some((
            &[0x20, 0x00, 0x00],
            Words::Check(|read| {
                match ferry_wire::c2::decode_response(&read[6.min(read.len())..]) {
                    Ok(ferry_wire::c2::Response::Error { message })
                        if message.contains(TIMED_OUT) =>
                    {
                        Ok(())
                    }
                    other => Err(format!("expected an error response, got {other:?}")),
                }
            }),
        ))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        (
            c2_frame(&[0xff, 0x00]),
            Words::Check(|read| {
                match ferry_wire::c2::decode_response(&read[6.min(read.len())..]) {
                    Ok(ferry_wire::c2::Response::Error { .. }) => Ok(()),
                    other => Err(format!("expected an error response, got {other:?}")),
                }
            }),
            // C2 answers an error and serves the connection on.
            false,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(C2Requests { row: C2(self.0), m })
    }

    fn area(&self) -> Option<String> {
        // A loopback (or FIFO) peer is the user at the other end: this test's.
        Some(format!(
            "anonymous/c2/{}",
            rustix::process::getuid().as_raw()
        ))
    }

    fn answers_with_output(&self) -> bool {
        true
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "other principal" => "no request lists or touches jobs".into(),
            "first-request limit" => "the pair is the daemon's own".into(),
            _ => "-".into(),
        }
    }
}

struct C2Requests<'a> {
    row: C2,
    m: &'a Matrix,
}

impl Requests for C2Requests<'_> {
    fn link(&mut self) -> Link {
        self.row.raw(self.m)
    }

    fn request(&self) -> Vec<u8> {
        c2_request(&["echo", "split"])
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        split_answer(&c2_output(link)?)
    }
}
