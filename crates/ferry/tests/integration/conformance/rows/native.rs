//! The native protocol's rows: `ferry` over its Unix socket, TLS and TCP, with raw frames.

use ferry_wire::native::{decode_frame, encode_frame, ClientMessage, DaemonMessage, NoticeKind};

use crate::helper::run_message;
use std::io::Write;

use super::{split_answer, Interleaved, Requests, Row, GOING_DOWN, KICKED};
use crate::conformance::{Link, Matrix, Words};

/// `ferry` over its Unix socket, TLS or TCP.
pub struct Native(pub &'static str);

/// The native frames in `bytes`.
fn native_frames(bytes: &[u8]) -> Vec<DaemonMessage> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Ok(Some((frame, used))) = decode_frame::<DaemonMessage>(rest, usize::MAX) {
        frames.push(frame);
        rest = &rest[used..];
    }
    frames
}

/// Reads the next native frame.
fn native_next(link: &mut Link) -> DaemonMessage {
    let head = link.exact(4);
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut frame = head;
    frame.extend(link.exact(len));
    match decode_frame::<DaemonMessage>(&frame, usize::MAX) {
        Ok(Some((message, _))) => message,
        other => panic!("not a daemon frame: {other:?}"),
    }
}

fn native_bytes(message: &ClientMessage) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_frame(message, &mut bytes).expect("encode");
    bytes
}

/// Reads a job's frames up to its exit; its stdout.
fn native_stdout(link: &mut Link) -> Result<Vec<u8>, String> {
    let mut stdout = Vec::new();
    loop {
        match native_next(link) {
            DaemonMessage::Output {
                stream: ferry_wire::Stream::Stdout,
                data,
                ..
            } => stdout.extend(data),
            DaemonMessage::Exit { .. } => return Ok(stdout),
            DaemonMessage::Error { message, .. } => return Err(message),
            _ => {}
        }
    }
}

impl Native {
    fn token(&self, m: &Matrix) -> Option<String> {
        (self.0 != "ferry:unix").then(|| m.token.clone())
    }
}

/// A notice of `kind` saying `text` among the frames read.
fn native_notice(read: &[u8], kind: NoticeKind, text: &str) -> Result<(), String> {
    let frames = native_frames(read);
    frames
        .iter()
        .any(|f| matches!(f, DaemonMessage::Notice { kind: k, message } if *k == kind && message.contains(text)))
        .then_some(())
        .ok_or_else(|| format!("no {kind:?} notice saying {text:?} in {frames:?}"))
}

impl Row for Native {
    fn form(&self) -> &'static str {
        self.0
    }

    fn raw(&self, m: &Matrix) -> Link {
        match self.0 {
            "ferry:unix" => Link::unix(&m.daemon.socket),
            _ => Link::tcp(m.port(self.0)),
        }
    }

    fn connect(&self, m: &Matrix) -> Link {
        let mut link = match self.0 {
            "ferry:tls" => Link::tls(m.port("ferry:tls"), &m.tls),
            _ => self.raw(m),
        };
        link.write_all(&native_bytes(&ClientMessage::Hello {
            version: ferry_wire::PROTOCOL_VERSION,
            client: "conformance".into(),
            token: self.token(m),
        }))
        .expect("hello");
        match native_next(&mut link) {
            DaemonMessage::Welcome { .. } => link,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    fn start(&self, _m: &Matrix, link: &mut Link, argv: &[String]) -> bool {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        link.write_all(&native_bytes(&run_message(1, &argv, false, None)))
            .expect("run");
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.connect(m);
        link.write_all(&native_bytes(&run_message(1, argv, false, None)))
            .expect("run");
        Some(native_stdout(&mut link).expect("job output"))
    }

    fn kicked(&self) -> Words {
        Words::Check(|read| native_notice(read, NoticeKind::Kicked, KICKED))
    }

    fn going_down(&self) -> Words {
        Words::Check(|read| native_notice(read, NoticeKind::ShuttingDown, GOING_DOWN))
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        if self.0 == "ferry:tls" {
            // The first bytes of a ClientHello: no words can reach a peer before its TLS
            // handshake.
            return Some((
                &[0x16, 0x03, 0x01],
                Words::Nothing("nothing can be said before the TLS handshake"),
            ));
        }
        Some((
            &[0, 0, 1, 0xa1],
            Words::Check(|read| {
                native_frames(read)
                    .iter()
                    .any(|f| matches!(f, DaemonMessage::Error { code: ferry_wire::ErrorCode::BadHandshake, message, .. } if message.contains("no Hello within 1500 ms")))
                    .then_some(())
                    .ok_or_else(|| format!("no BadHandshake error in {:?}", native_frames(read)))
            }),
        ))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        (
            vec![0, 0, 0, 2, 0xff, 0xff],
            Words::Check(|read| {
                native_frames(read)
                    .iter()
                    .any(|f| {
                        matches!(
                            f,
                            DaemonMessage::Error {
                                code: ferry_wire::ErrorCode::BadFrame,
                                ..
                            }
                        )
                    })
                    .then_some(())
                    .ok_or_else(|| format!("no BadFrame error in {:?}", native_frames(read)))
            }),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(NativeRequests {
            row: Native(self.0),
            m,
            jobs: Interleaved::default(),
        })
    }

    fn area(&self) -> Option<String> {
        // The owner's jobs run in the whole area when its client names no directory.
        Some(if self.0 == "ferry:unix" {
            String::new()
        } else {
            "tokens/default".into()
        })
    }

    fn other_principal(&self, m: &Matrix) -> Option<Result<String, String>> {
        if self.0 == "ferry:unix" {
            return None;
        }
        // A job of the owner's, then this row's token principal asking for it.
        let job = match m.owners_job() {
            Ok(job) => job,
            Err(why) => return Some(Err(why)),
        };
        let mut link = self.connect(m);
        link.write_all(&native_bytes(&ClientMessage::ListJobs {
            request: 1,
            all: false,
        }))
        .expect("list");
        let listed = match native_next(&mut link) {
            DaemonMessage::Jobs { jobs, .. } => jobs.iter().any(|j| j.id == job),
            other => return Some(Err(format!("ListJobs answered {other:?}"))),
        };
        if listed {
            return Some(Err(format!("the owner's job {job} is listed")));
        }
        link.write_all(&native_bytes(&ClientMessage::Signal {
            request: 2,
            job,
            signal: libc::SIGTERM,
        }))
        .expect("signal");
        let touched = match native_next(&mut link) {
            DaemonMessage::Error {
                code: ferry_wire::ErrorCode::PermissionDenied,
                ..
            } => false,
            other => return Some(Err(format!("Signal answered {other:?}"))),
        };
        let _ = m.daemon.run(&["kill", &job.to_string()]);
        Some(if touched {
            Err("signalled".into())
        } else {
            Ok("the owner's job neither listed nor signalled".into())
        })
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "other principal" => "the owner may see and touch every job".into(),
            "output cap" => "output streams as it comes: no answer holds it".into(),
            _ => "-".into(),
        }
    }
}

/// Native requests for the split test.
struct NativeRequests<'a> {
    row: Native,
    m: &'a Matrix,
    jobs: Interleaved,
}

impl Requests for NativeRequests<'_> {
    fn link(&mut self) -> Link {
        self.row.connect(self.m)
    }

    fn request(&self) -> Vec<u8> {
        native_bytes(&run_message(1, &["echo", "split"], false, None))
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        loop {
            if let Some(out) = self.jobs.next_done() {
                return split_answer(&out);
            }
            match native_next(link) {
                DaemonMessage::Accepted { job, .. } => self.jobs.accepted(job),
                DaemonMessage::Output {
                    job,
                    stream: ferry_wire::Stream::Stdout,
                    data,
                    ..
                } => self.jobs.stdout(job, &data),
                DaemonMessage::Exit { job, .. } => self.jobs.ended(job),
                DaemonMessage::Error { message, .. } => return Err(message),
                _ => {}
            }
        }
    }
}
