//! The C2 dialect adapter (seed 004, KubOS's command and control daemon), over TCP: CSP
//! frames (`ferry_wire::c2`) carrying CBOR requests; each names a catalog command and its
//! arguments, which run (no shell), and the answer is a result (`MSG_TYPE` 1: the true exit
//! status, the wall time in milliseconds, the stdout) or an error (`MSG_TYPE` 2).
//!
//! The daemon is CSP address 1; it answers the request's source address on port 11, where
//! KubOS's client listens, from the port the request went to. An output longer than one frame
//! continues in `MSG_TYPE` 3 frames (see `ferry_wire::c2::encode_result_continued`). Requests
//! on one connection are served one after another; connections, together.

use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use ferry_engine::{JobOrigin, JobSpec};
use ferry_wire::c2::{
    decode_frame, decode_request, encode_continuation, encode_error, encode_frame,
    encode_result_continued, split_output, CspId, MAX_FRAME_DATA,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::collect_output;
use crate::conn::{became_true, time_limit, Conn};
use crate::policy::{Access, Answer, RefusalKind};
use crate::server::Server;

/// The port KubOS's client listens on for answers.
const CLIENT_PORT: u8 = 11;

/// How long a frame may stay partial before its bytes are dropped (a client that died in the
/// middle of a frame must not wedge a FIFO pair for the next).
const PARTIAL_FRAME_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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

async fn serve_connection(mut conn: Conn) {
    let peer = conn.peer.id().to_owned();
    let origin = JobOrigin {
        owner: conn.peer.address.clone(),
        dialect: "c2".into(),
        peer: Some(peer.clone()),
        principal: conn.access.principal().clone(),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut first = true;
    // A FIFO pair waits for requests as long as it takes; a TCP connection has the time
    // limits of a dialect without a handshake.
    let fifo = conn.peer.address.starts_with("fifo ");
    let mut closing = conn.server.closing.subscribe();
    loop {
        let mut partial_since: Option<tokio::time::Instant> = None;
        let frame = loop {
            if let Some((id, range, used)) = decode_frame(&buf) {
                let data = buf[range].to_vec();
                buf.drain(..used);
                break Some((id, data));
            }
            let limit = match partial_since {
                Some(since) => Some((since + PARTIAL_FRAME_WAIT, PARTIAL_FRAME_WAIT)),
                None if fifo => None,
                None => conn.limits.next_request(first),
            };
            tokio::select! {
                () = became_true(&mut closing) => break None,
                // C2 has no word for the daemon going down: the connection just ends with it.
                Some(_) = conn.peer.handle.next_event() => {
                    conn.peer.handle.shutdown_told();
                }
                read = conn.read.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        partial_since.get_or_insert_with(tokio::time::Instant::now);
                    }
                },
                limit = time_limit(limit) => {
                    if partial_since.is_some() {
                        // A client that died mid-frame: drop what it sent, and read the next
                        // request from a clean start.
                        tracing::warn!(peer, bytes = buf.len(), "c2: a partial frame stood for {} ms: dropped, resynchronising", limit.as_millis());
                        buf.clear();
                        partial_since = None;
                        continue;
                    }
                    tracing::info!(peer, "c2: closing a connection: no request within {} ms", limit.as_millis());
                    break None;
                }
            }
        };
        first = false;
        let Some((id, data)) = frame else { return };
        let answer_id = id.answer(id.destination_port, CLIENT_PORT);
        let answer_id = CspId {
            source: DAEMON_ADDRESS,
            ..answer_id
        };
        let frames = answer(&conn.server, &conn.access, &origin, &data).await;
        for cbor in frames {
            let Ok(bytes) = encode_frame(answer_id, &cbor) else {
                continue;
            };
            if conn.write.write_all(&bytes).await.is_err() {
                return;
            }
        }
        if conn.write.flush().await.is_err() {
            return;
        }
    }
}

/// The CBOR of the answer frames to one request.
async fn answer(server: &Server, access: &Access, origin: &JobOrigin, data: &[u8]) -> Vec<Vec<u8>> {
    let request = match decode_request(data) {
        Ok(request) => request,
        Err(e) => return vec![encode_error(&e.to_string())],
    };
    let mut argv: Vec<OsString> = Vec::with_capacity(request.args.len() + 1);
    argv.push(request.command.clone().unwrap_or_default().into());
    argv.extend(request.args.iter().map(OsString::from));
    let argv = match access.allowed_command(&server.catalog, argv) {
        Ok(argv) => argv,
        Err(refusal) => return vec![encode_error(&refusal.message)],
    };
    let spec = JobSpec {
        argv,
        origin: origin.clone(),
        ..JobSpec::default()
    };
    let started = Instant::now();
    let job = match server.engine.submit(spec) {
        Ok((job, _)) => job,
        Err(e) => return vec![encode_error(&e.refusal().message)],
    };
    let (status, stdout, _stderr) = match collect_output(server, job).await {
        Ok(ran) => ran,
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
