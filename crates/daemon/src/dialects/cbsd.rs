//! The CBSD dialect adapter (seed 000): text request lines, `<id> <type> <size> <payload>`
//! frames back (`ferry_wire::cbsd`). A command's id is its ferry job id, so a client can
//! attach to, feed or kill another's command by id (as its principal allows), and the seed's
//! own case works: two clients each run a command, and one of them gets the output of both.
//!
//! `command NAME ARGS...` runs a catalog command (for CBSD, entries map names to `cbsd NAME`),
//! with its stdin open for `input`; the connection is answered `<id> 0 <len> <command line>`,
//! then the command's stdout (type 1) and stderr (type 2) frames, then `<id> 3 <len>
//! <status>`. Commands run in the principal's file area. A malformed request gets an error
//! frame (type 4, id 0) and the connection is closed; the daemon serves on. The daemon going
//! down, and a kick, are notices (type 5, id 0).

use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferry_engine::{JobId, JobOrigin, JobPhase, JobSpec, OutputEvent, OutputStream};
use ferry_wire::cbsd::{encode_frame, encode_output, kind, CbsdError, Request, RequestDecoder};
use tokio::task::JoinSet;

use crate::conn::Conn;
use crate::outbox::Outbox;
use crate::policy::{Access, Act, RefusalKind};
use crate::reader::{Busy, Next, Notice, Reader, Voice};
use crate::state::Daemon;

/// Serves one admitted connection (the listener table's entry point).
pub(crate) fn serve(conn: Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_connection(conn))
}

/// A refusal of a connection that will not be served: an error frame.
pub(crate) fn refusal(_kind: RefusalKind, message: &str) -> Vec<u8> {
    encode_frame(0, kind::ERROR, message.as_bytes())
}

/// What the connection layer says in CBSD's words: errors and notices with id 0.
struct CbsdVoice;

impl Voice<CbsdError> for CbsdVoice {
    fn refused(&self, kind: RefusalKind, message: &str) -> Option<Vec<u8>> {
        Some(refusal(kind, message))
    }

    fn going_down(&self) -> Notice {
        let notice = b"the ferry daemon is going down; running commands are being terminated";
        Notice {
            words: Some(encode_frame(0, kind::NOTICE, notice)),
            closes: false,
        }
    }

    fn disconnected(&self, message: &str) -> Option<Vec<u8>> {
        Some(encode_frame(0, kind::NOTICE, message.as_bytes()))
    }
}

async fn serve_connection(mut conn: Conn) {
    let Some((mut reader, out)) = Reader::new(&mut conn, RequestDecoder, CbsdVoice) else {
        return;
    };
    let origin = super::origin(&conn, reader.peer().id());
    let mut followers = JoinSet::new();
    while let Some(next) = reader.next(true).await {
        while followers.try_join_next().is_some() {}
        let Next::Request(request, _) = next else {
            continue;
        };
        let requester = Requester {
            daemon: &conn.daemon,
            access: &conn.access,
            origin: &origin,
            out: &out,
            busy: reader.busy(),
        };
        requester.handle(request, &mut followers).await;
    }
    super::finish_followers(&conn.daemon, &mut followers).await;
}

/// What a request is served with.
struct Requester<'a> {
    daemon: &'a Arc<Daemon>,
    access: &'a Access,
    origin: &'a JobOrigin,
    out: &'a Outbox,
    busy: Busy,
}

impl Requester<'_> {
    /// Starts following `job` on this connection (no idle limit while it runs).
    fn follow(&self, job: JobId, followers: &mut JoinSet<()>) {
        let busy = self.busy.hold();
        let (daemon, out) = (Arc::clone(self.daemon), self.out.clone());
        followers.spawn(async move {
            follow(daemon, job, out).await;
            drop(busy);
        });
    }

    /// Serves one request.
    async fn handle(&self, request: Request, followers: &mut JoinSet<()>) {
        let (server, access) = (self.daemon, self.access);
        let error = |id: u64, message: String| encode_frame(id, kind::ERROR, message.as_bytes());
        let answer = match request {
            Request::Command(words) => {
                let line = words.join(" ");
                let argv = words.into_iter().map(OsString::from).collect();
                let spec = JobSpec {
                    stdin: true,
                    origin: self.origin.clone(),
                    ..JobSpec::default()
                };
                match super::submit(server, access, argv, spec) {
                    Err(refusal) => error(0, refusal.message),
                    Ok(job) => {
                        self.follow(job, followers);
                        encode_frame(job, kind::ACCEPTED, line.as_bytes())
                    }
                }
            }
            Request::Attach(job) => match owned(server, access, Act::See, job) {
                Err(message) => error(job, message),
                Ok(()) => {
                    self.follow(job, followers);
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
        self.out.send(answer).await;
    }
}

/// Whether this client may `act` on command `job`: `Err` says why not.
fn owned(server: &Daemon, access: &Access, act: Act, job: JobId) -> Result<(), String> {
    let owner = server.engine.principal_of(job).map_err(|e| e.to_string())?;
    access
        .check(act, &owner, &format!("command {job}"))
        .map_err(|refusal| refusal.message)
}

/// Streams a command's output and its end to the connection, from its start.
async fn follow(server: Arc<Daemon>, job: JobId, out: Outbox) {
    let mut reader = match server.engine.output(job, true, true, false) {
        Ok(reader) => reader,
        Err(e) => {
            out.send(encode_frame(job, kind::ERROR, e.to_string().as_bytes()))
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
                out.send(frame).await;
                return;
            }
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(e) => encode_frame(job, kind::ERROR, e.to_string().as_bytes()),
        };
        if !out.send(frame).await {
            return;
        }
    }
}
