//! The C2 dialect adapter (KubOS's command and control daemon), over a FIFO pair or TCP: CSP
//! frames (`ferry_wire::c2`) carrying CBOR requests; each names a catalog command and its
//! arguments, which run (no shell), and the answer is a result (`MSG_TYPE` 1: the true exit
//! status, the wall time in milliseconds, the stdout) or an error (`MSG_TYPE` 2).
//!
//! The daemon is CSP address 1; it answers the request's source address on port 11, where
//! KubOS's client listens, from the port the request went to. An output longer than one frame
//! continues in `MSG_TYPE` 3 frames (see `ferry_wire::c2::encode_result_continued`). Requests
//! on one connection are served one after another; connections, together. Commands run in
//! the principal's file area (`anonymous/c2`, with no authentication of its own). A frame
//! left partial for 2 seconds (the listener table's pause) is given up.

use std::convert::Infallible;
use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use ferry_engine::{JobOrigin, JobSpec};
use ferry_wire::c2::{
    decode_request, encode_continuation, encode_error, encode_frame, encode_result_continued,
    split_output, CspId, Frame, FrameDecoder, MAX_FRAME_DATA,
};

use super::collect_output;
use crate::conn::Conn;
use crate::policy::{Access, RefusalKind};
use crate::reader::{Next, Notice, Reader, Voice, Watched};
use crate::state::Daemon;

/// The port KubOS's client listens on for answers.
const CLIENT_PORT: u8 = 11;

/// The daemon's CSP address.
const DAEMON_ADDRESS: u8 = 1;

/// Serves one admitted connection (the listener table's entry point).
pub(crate) fn serve(conn: Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_connection(conn))
}

/// A refusal of a connection that will not be served: an error response.
pub(crate) fn refusal(_kind: RefusalKind, message: &str) -> Vec<u8> {
    let id = CspId {
        source: DAEMON_ADDRESS,
        destination: 2,
        destination_port: CLIENT_PORT,
        source_port: CLIENT_PORT,
        ..CspId::default()
    };
    encode_frame(id, &encode_error(message)).unwrap_or_default()
}

/// What the connection layer says in C2's words. KubOS's client reads one answer per request
/// it sent, so nothing goes unasked: a refusal answers a request that was still coming (an
/// error response); the daemon going down and a kick are said by the connection ending.
struct C2Voice;

impl Voice<Infallible> for C2Voice {
    fn refused(&self, kind: RefusalKind, message: &str) -> Option<Vec<u8>> {
        Some(refusal(kind, message))
    }

    fn going_down(&self) -> Notice {
        Notice {
            words: None,
            closes: false,
        }
    }

    fn disconnected(&self, _message: &str) -> Option<Vec<u8>> {
        None
    }
}

async fn serve_connection(mut conn: Conn) {
    let Some((mut reader, out)) = Reader::new(&mut conn, FrameDecoder, C2Voice) else {
        return;
    };
    let origin = super::origin(&conn, reader.peer().id());
    while let Some(next) = reader.next(true).await {
        let Next::Request(Frame { id, data }, _) = next else {
            continue;
        };
        let answer_id = CspId {
            source: DAEMON_ADDRESS,
            ..id.answer(id.destination_port, CLIENT_PORT)
        };
        let work = answer(&conn.daemon, &conn.access, &origin, &data);
        tokio::pin!(work);
        let frames = loop {
            match reader.watch(&mut work).await {
                Watched::Done(frames) => break frames,
                // Its answer goes nowhere, but its command runs to its end.
                Watched::Left => continue,
                Watched::Over => return,
            }
        };
        for cbor in frames {
            let Ok(bytes) = encode_frame(answer_id, &cbor) else {
                continue;
            };
            if !out.send(bytes).await {
                return;
            }
        }
    }
}

/// The CBOR of the answer frames to one request.
async fn answer(server: &Daemon, access: &Access, origin: &JobOrigin, data: &[u8]) -> Vec<Vec<u8>> {
    let request = match decode_request(data) {
        Ok(request) => request,
        Err(e) => return vec![encode_error(&e.to_string())],
    };
    let mut argv: Vec<OsString> = Vec::with_capacity(request.args.len() + 1);
    argv.push(request.command.clone().unwrap_or_default().into());
    argv.extend(request.args.iter().map(OsString::from));
    let spec = JobSpec {
        origin: origin.clone(),
        ..JobSpec::default()
    };
    let started = Instant::now();
    let job = match super::submit(server, access, argv, spec) {
        Ok(job) => job,
        Err(refusal) => return vec![encode_error(&refusal.message)],
    };
    let (status, stdout) = match collect_output(server, job).await {
        Ok((exit, stdout, _stderr)) => (exit.shell_status(), stdout),
        Err(why) => return vec![encode_error(&why)],
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let output = String::from_utf8_lossy(&stdout);
    let pieces = split_output(&output);
    let code = u8::try_from(status.clamp(0, 255)).unwrap_or(u8::MAX);
    let mut frames = vec![encode_result_continued(
        code,
        ms,
        pieces[0],
        (pieces.len() - 1) as u64,
    )];
    frames.extend(pieces[1..].iter().map(|piece| encode_continuation(piece)));
    debug_assert!(frames.iter().all(|f| f.len() <= MAX_FRAME_DATA));
    frames
}
