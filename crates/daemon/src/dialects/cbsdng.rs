//! The cbsdng dialect adapter (CBSD's later daemon, mekanix/cbsdng-cbsdngd): binary frames
//! (`ferry_wire::cbsdng`). A request frame's payload is a command line, run (no shell) as the
//! listener's command policy allows; its output returns as `(id, 0, chunk)` frames under the
//! request's id, and its end as `(id, 8, "<exit status>")`. Requests run together; a refused
//! one ends at once with its reason on an `(id, 8, "127")` after a `(id, 0, reason)`.

use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferry_engine::{JobOrigin, JobSpec, OutputEvent};
use ferry_wire::cbsdng::{bits, decode_frame, encode_frame, Frame};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Next, Requests};
use crate::conn::Conn;
use crate::policy::{Answer, RefusalKind};
use crate::server::Server;

/// Serves one admitted connection (the listener table's entry point).
pub(crate) fn serve(conn: Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_connection(conn))
}

/// A refusal of a connection that will not be served: a closing frame with the reason.
pub(crate) fn refusal(_kind: RefusalKind, message: &str) -> Vec<u8> {
    encode_frame(&Frame {
        id: 0,
        kind: bits::CONNECTION_CLOSED,
        payload: message.as_bytes().to_vec(),
    })
}

async fn serve_connection(mut conn: Conn) {
    let origin = super::origin(&conn, "cbsdng");
    let (out, writer) = super::frame_writer(conn.write);
    let mut running = JoinSet::new();
    let mut requests = Requests::new(
        &mut conn.read,
        &mut conn.peer.handle,
        &conn.server,
        conn.limits,
        64 * 1024,
        |bytes| decode_frame(bytes).map_err(|e| e.to_string()),
    );
    loop {
        let next = tokio::select! {
            next = requests.next(running.is_empty()) => next,
            Some(_) = running.join_next(), if !running.is_empty() => continue,
        };
        match next {
            Next::Request(frame) => {
                let line = String::from_utf8_lossy(&frame.payload).into_owned();
                let argv: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
                let allowed = if argv.is_empty() {
                    Err("an empty command".to_owned())
                } else {
                    conn.access
                        .allowed_command(&conn.server.catalog, argv)
                        .map_err(|refusal| refusal.message)
                };
                let server = Arc::clone(&conn.server);
                running.spawn(run(server, frame.id, allowed, origin.clone(), out.clone()));
            }
            Next::Malformed(why) => {
                let _ = out.send(refusal(RefusalKind::InvalidRequest, &why)).await;
                break;
            }
            Next::GoingDown => {
                let notice = refusal(RefusalKind::ShuttingDown, "the ferry daemon is going down");
                let _ = out.send(notice).await;
            }
            Next::Ended => break,
        }
    }
    running.abort_all();
    drop(out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
}

/// Runs one request and streams its frames.
async fn run(
    server: Arc<Server>,
    id: u32,
    allowed: Result<Vec<OsString>, String>,
    origin: JobOrigin,
    out: mpsc::Sender<Vec<u8>>,
) {
    let frame = |kind, payload: &[u8]| {
        encode_frame(&Frame {
            id,
            kind,
            payload: payload.to_vec(),
        })
    };
    let argv = match allowed {
        Ok(argv) => argv,
        Err(why) => return ended(&out, id, why).await,
    };
    let spec = JobSpec {
        argv,
        origin,
        ..JobSpec::default()
    };
    let job = match server.engine.submit(spec) {
        Ok((job, _)) => job,
        Err(e) => return ended(&out, id, e.refusal().message).await,
    };
    let mut reader = match server.engine.output(job, true, true, false) {
        Ok(reader) => reader,
        Err(e) => return ended(&out, id, e.to_string()).await,
    };
    loop {
        match reader.next().await {
            Ok(Some(OutputEvent::Chunk { data, .. })) => {
                if out.send(frame(bits::NONE, &data)).await.is_err() {
                    return;
                }
            }
            Ok(Some(OutputEvent::Exit(exit))) => {
                if let Some(error) = exit.error {
                    return ended(&out, id, error).await;
                }
                let status = exit.shell_status().to_string();
                let _ = out.send(frame(bits::EXIT, status.as_bytes())).await;
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => return ended(&out, id, e.to_string()).await,
        }
    }
}

/// Ends a request that could not run or finish: its reason as output, then status 127.
async fn ended(out: &mpsc::Sender<Vec<u8>>, id: u32, why: String) {
    for (kind, payload) in [
        (bits::NONE, why.into_bytes()),
        (bits::EXIT, b"127".to_vec()),
    ] {
        let _ = out.send(encode_frame(&Frame { id, kind, payload })).await;
    }
}
