//! The cbsdng dialect adapter (CBSD's later daemon, mekanix/cbsdng-cbsdngd): binary frames
//! (`ferry_wire::cbsdng`). A request frame's payload is a command line, run (no shell) as the
//! listener's command policy allows; its output returns as `(id, 0, chunk)` frames under the
//! request's id, and its end as `(id, 8, "<exit status>")`. Requests run together, in the
//! principal's file area; a refused one ends at once with its reason on an `(id, 8, "127")`
//! after a `(id, 0, reason)`. The daemon going down, a kick and a malformed frame are said in
//! a `(0, 0x10, reason)` frame.

use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferry_engine::{JobOrigin, JobSpec, OutputEvent};
use ferry_wire::cbsdng::{bits, encode_frame, Frame, FrameDecoder};
use tokio::task::JoinSet;

use crate::conn::Conn;
use crate::outbox::Outbox;
use crate::policy::{Access, RefusalKind};
use crate::reader::{Next, Reader, Refusals};
use crate::state::Daemon;

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

/// What the connection layer says in cbsdng's words: a closing frame with the reason. The
/// connection goes on after the going-down notice: its commands' ends are still to come.
const VOICE: Refusals = Refusals {
    refusal,
    closes_going_down: false,
};

async fn serve_connection(mut conn: Conn) {
    let Some((mut reader, out)) = Reader::new(&mut conn, FrameDecoder, VOICE) else {
        return;
    };
    let origin = super::origin(&conn, reader.peer().id());
    let mut running = JoinSet::new();
    while let Some(next) = reader.next(true).await {
        while running.try_join_next().is_some() {}
        let Next::Request(frame, _) = next else {
            continue;
        };
        let line = String::from_utf8_lossy(&frame.payload).into_owned();
        let argv: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        let (daemon, access, origin, out) = (
            Arc::clone(&conn.daemon),
            conn.access.clone(),
            origin.clone(),
            out.clone(),
        );
        let busy = reader.busy().hold();
        running.spawn(async move {
            run(&daemon, &access, frame.id, argv, origin, out).await;
            drop(busy);
        });
    }
    super::finish_followers(&conn.daemon, &mut running).await;
}

/// Runs one request and streams its frames.
async fn run(
    server: &Daemon,
    access: &Access,
    id: u32,
    argv: Vec<OsString>,
    origin: JobOrigin,
    out: Outbox,
) {
    let frame = |kind, payload: &[u8]| {
        encode_frame(&Frame {
            id,
            kind,
            payload: payload.to_vec(),
        })
    };
    if argv.is_empty() {
        return ended(&out, id, "an empty command".into()).await;
    }
    let spec = JobSpec {
        origin,
        ..JobSpec::default()
    };
    let job = match super::submit(server, access, argv, spec) {
        Ok(job) => job,
        Err(refusal) => return ended(&out, id, refusal.message).await,
    };
    let mut reader = match server.engine.output(job, true, true, false) {
        Ok(reader) => reader,
        Err(e) => return ended(&out, id, e.to_string()).await,
    };
    loop {
        match reader.next().await {
            Ok(Some(OutputEvent::Chunk { data, .. })) => {
                if !out.send(frame(bits::NONE, &data)).await {
                    return;
                }
            }
            Ok(Some(OutputEvent::Exit(exit))) => {
                if let Some(error) = exit.error {
                    return ended(&out, id, error).await;
                }
                let status = exit.shell_status().to_string();
                out.send(frame(bits::EXIT, status.as_bytes())).await;
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => return ended(&out, id, e.to_string()).await,
        }
    }
}

/// Ends a request that could not run or finish: its reason as output, then status 127.
async fn ended(out: &Outbox, id: u32, why: String) {
    for (kind, payload) in [
        (bits::NONE, why.into_bytes()),
        (bits::EXIT, b"127".to_vec()),
    ] {
        out.send(encode_frame(&Frame { id, kind, payload })).await;
    }
}
