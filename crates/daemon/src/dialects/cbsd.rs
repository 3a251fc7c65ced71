//! The CBSD dialect adapter (seed 000): text request lines, `<id> <type> <size> <payload>`
//! frames back (`ferry_wire::cbsd`). A command's id is its ferry job id, so a client can
//! attach to, feed or kill another's command by id (as its principal allows), and the seed's
//! own case works: two clients each run a command, and one of them gets the output of both.
//!
//! `command NAME ARGS...` runs a catalog command (for CBSD, entries map names to `cbsd NAME`),
//! with its stdin open for `input`; the connection is answered `<id> 0 <len> <command line>`,
//! then the command's stdout (type 1) and stderr (type 2) frames, then `<id> 3 <len>
//! <status>`. A malformed request gets an error frame (type 4, id 0) and the connection is
//! closed; the daemon serves on.

use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferry_engine::{JobId, JobOrigin, JobPhase, JobSpec, OutputEvent, OutputStream};
use ferry_wire::cbsd::{decode_request, encode_frame, encode_output, kind, Request};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Next, Requests};
use crate::conn::Conn;
use crate::policy::{Access, Act, Answer, RefusalKind};
use crate::server::Server;

/// Serves one admitted connection (the listener table's entry point).
pub(crate) fn serve(conn: Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_connection(conn))
}

/// A refusal of a connection that will not be served: an error frame.
pub(crate) fn refusal(_kind: RefusalKind, message: &str) -> Vec<u8> {
    encode_frame(0, kind::ERROR, message.as_bytes())
}

async fn serve_connection(mut conn: Conn) {
    let origin = super::origin(&conn, "cbsd");
    let (out, writer) = super::frame_writer(conn.write);
    let mut followers = JoinSet::new();
    let mut requests = Requests::new(
        &mut conn.read,
        &mut conn.peer.handle,
        &conn.server,
        conn.limits,
        16 * 1024,
        |bytes| decode_request(bytes).map_err(|e| e.to_string()),
    );
    loop {
        let next = tokio::select! {
            next = requests.next(followers.is_empty()) => next,
            Some(_) = followers.join_next(), if !followers.is_empty() => continue,
        };
        match next {
            Next::Request(request) => {
                handle(
                    &conn.server,
                    &conn.access,
                    &origin,
                    request,
                    &out,
                    &mut followers,
                )
                .await;
            }
            Next::Malformed(why) => {
                let _ = out.send(encode_frame(0, kind::ERROR, why.as_bytes())).await;
                break;
            }
            Next::GoingDown => {
                let notice =
                    b"the ferry daemon is going down; running commands are being terminated";
                let _ = out.send(encode_frame(0, kind::NOTICE, notice)).await;
            }
            Next::Ended => break,
        }
    }
    followers.abort_all();
    drop(out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
}

/// Serves one request.
async fn handle(
    server: &Arc<Server>,
    access: &Access,
    origin: &JobOrigin,
    request: Request,
    out: &mpsc::Sender<Vec<u8>>,
    followers: &mut JoinSet<()>,
) {
    let error = |id: u64, message: String| encode_frame(id, kind::ERROR, message.as_bytes());
    let answer = match request {
        Request::Command(words) => {
            let line = words.join(" ");
            let argv = words.into_iter().map(OsString::from).collect();
            match access.allowed_command(&server.catalog, argv) {
                Err(refusal) => error(0, refusal.message),
                Ok(argv) => {
                    let spec = JobSpec {
                        argv,
                        stdin: true,
                        origin: origin.clone(),
                        ..JobSpec::default()
                    };
                    match server.engine.submit(spec) {
                        Err(e) => error(0, e.refusal().message),
                        Ok((job, _)) => {
                            followers.spawn(follow(Arc::clone(server), job, out.clone()));
                            encode_frame(job, kind::ACCEPTED, line.as_bytes())
                        }
                    }
                }
            }
        }
        Request::Attach(job) => match owned(server, access, Act::See, job) {
            Err(message) => error(job, message),
            Ok(()) => {
                followers.spawn(follow(Arc::clone(server), job, out.clone()));
                return;
            }
        },
        Request::Input { id, data } => match owned(server, access, Act::Touch, id) {
            Err(message) => error(id, message),
            Ok(()) if data.is_empty() => match server.engine.close_stdin(id) {
                Ok(()) => return,
                Err(e) => error(id, e.to_string()),
            },
            Ok(()) => match server.engine.write_stdin(id, data).await {
                Ok(()) => return,
                Err(e) => error(id, e.to_string()),
            },
        },
        Request::Kill(id) => match owned(server, access, Act::Touch, id) {
            Err(message) => error(id, message),
            Ok(()) => match server.engine.signal(id, libc::SIGTERM) {
                Ok(()) => return,
                Err(e) => error(id, e.to_string()),
            },
        },
        Request::List => {
            let mut frames = Vec::new();
            for job in server.engine.list() {
                if !access.may(Act::See, &job.principal) {
                    continue;
                }
                let state = match job.phase {
                    JobPhase::Queued => "queued",
                    JobPhase::Running { .. } => "running",
                    JobPhase::Finished(_) => "finished",
                };
                let argv: Vec<String> = job
                    .argv
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                let line = format!("{} {state} {}", job.id, argv.join(" "));
                frames.extend_from_slice(&encode_frame(job.id, kind::LISTED, line.as_bytes()));
            }
            // The end of the list: an empty line with id 0.
            frames.extend_from_slice(&encode_frame(0, kind::LISTED, b""));
            frames
        }
    };
    let _ = out.send(answer).await;
}

/// Whether this client may `act` on command `job`: `Err` says why not.
fn owned(server: &Server, access: &Access, act: Act, job: JobId) -> Result<(), String> {
    let owner = server.engine.principal_of(job).map_err(|e| e.to_string())?;
    access
        .check(act, &owner, &format!("command {job}"))
        .map_err(|refusal| refusal.message)
}

/// Streams a command's output and its end to the connection, from its start.
async fn follow(server: Arc<Server>, job: JobId, out: mpsc::Sender<Vec<u8>>) {
    let mut reader = match server.engine.output(job, true, true, false) {
        Ok(reader) => reader,
        Err(e) => {
            let _ = out
                .send(encode_frame(job, kind::ERROR, e.to_string().as_bytes()))
                .await;
            return;
        }
    };
    loop {
        let frame = match reader.next().await {
            Ok(Some(OutputEvent::Chunk { stream, data, .. })) => {
                let kind = match stream {
                    OutputStream::Stdout => kind::STDOUT,
                    OutputStream::Stderr => kind::STDERR,
                };
                encode_output(job, kind, &data)
            }
            Ok(Some(OutputEvent::Exit(exit))) => {
                let frame = match exit.error {
                    Some(error) => encode_frame(job, kind::ERROR, error.as_bytes()),
                    None => {
                        encode_frame(job, kind::EXIT, exit.shell_status().to_string().as_bytes())
                    }
                };
                let _ = out.send(frame).await;
                return;
            }
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(e) => encode_frame(job, kind::ERROR, e.to_string().as_bytes()),
        };
        if out.send(frame).await.is_err() {
            return;
        }
    }
}
