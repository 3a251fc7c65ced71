//! The dialect adapters: each maps its wire format's frames onto engine calls and engine
//! events onto its frames, over a connection the connection layer admitted. An adapter never
//! calls another adapter.

pub(crate) mod c2;
pub(crate) mod cbsd;
pub(crate) mod cbsdng;
pub(crate) mod fanos;
pub(crate) mod native;
pub(crate) mod rake64;
pub(crate) mod tsockm;

use ferry_engine::{JobId, JobOrigin, OutputEvent, OutputStream};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::conn::{BoxWrite, Conn};
use crate::server::Server;

/// A connection's writer task for dialects whose answers come from several tasks at once:
/// what is sent on the channel is written in order; the task ends when every sender is gone
/// (or the peer stops reading).
pub(crate) fn frame_writer(
    mut write: BoxWrite,
) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>) {
    let (out, mut frames) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = frames.recv().await {
            if write.write_all(&bytes).await.is_err() || write.flush().await.is_err() {
                break;
            }
        }
    });
    (out, writer)
}

/// Who the jobs a connection of `dialect` starts belong to, for their records.
pub(crate) fn origin(conn: &Conn, dialect: &str) -> JobOrigin {
    JobOrigin {
        owner: conn.peer.address.clone(),
        dialect: dialect.into(),
        peer: Some(conn.peer.id().to_owned()),
        principal: conn.access.principal().clone(),
    }
}

/// A job's whole stdout and stderr and its shell status, or why it never ran (for dialects
/// that answer with the output at the end: rake64, C2).
pub(crate) async fn collect_output(
    server: &Server,
    job: JobId,
) -> Result<(i32, Vec<u8>, Vec<u8>), String> {
    let mut reader = server
        .engine
        .output(job, true, true, false)
        .map_err(|e| e.to_string())?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        match reader.next().await {
            Ok(Some(OutputEvent::Chunk { stream, data, .. })) => match stream {
                OutputStream::Stdout => stdout.extend_from_slice(&data),
                OutputStream::Stderr => stderr.extend_from_slice(&data),
            },
            Ok(Some(OutputEvent::Exit(exit))) => {
                if let Some(error) = exit.error {
                    return Err(error);
                }
                return Ok((exit.shell_status(), stdout, stderr));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("the job ended without a status".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}
