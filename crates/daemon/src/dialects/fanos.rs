//! The FANOS dialect adapter (seed 003): netstrings over a Unix socket, with the client's file
//! descriptors passed alongside (SCM_RIGHTS).
//!
//! Served: `GETPID` (`OK <pid>`); `ARGV` with 3 fds (the command runs statelessly on the
//! client's stdin, stdout and stderr; `STATUS <code>`); `EVAL <code>` with 3 fds (the code runs
//! on those fds in the connection's session, whose shell state persists from one `EVAL` to the
//! next; `OK <status>`); `STATE` (`OK` and the session's cwd, last status and changed
//! variables, one per line); and `ERROR <message>` for anything else. The session is made at
//! the connection's first `EVAL` or `STATE` and ends with the connection. A malformed
//! netstring gets `ERROR` with Oils' own text, and the connection is closed; other
//! connections go on.
//!
//! Commands and sessions start in the principal's file area. The first request must come
//! within the handshake time limit (the dialect has no handshake of its own); between
//! requests, within the daemon's idle limit (`--idle-timeout`; by default none: a shell waits
//! for its user as long as it likes). The daemon going down is said with an `ERROR` reply
//! (after the request in progress, if any), and so is a kick (at once; the job goes on); the
//! connection is then closed.

use std::ffi::OsString;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::pin::Pin;
use std::sync::Arc;

use ferry_engine::{JobId, JobOrigin, JobSpec, OutputEvent, PassedStdio};
use ferry_wire::fanos::{
    encode_netstring, parse_request, FanosReply, FanosRequest, NetstringDecoder,
};

use crate::conn::Conn;
use crate::policy::{blocking, Access, Refusal, RefusalKind};
use crate::reader::{Next, Reader, Refusals, Watched};
use crate::state::Daemon;

/// Largest request accepted, in bytes.
const MAX_REQUEST: usize = 64 * 1024;

/// Serves one admitted connection (the listener table's entry point).
pub(crate) fn serve(conn: Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_connection(conn))
}

/// A refusal of a connection that will not be served: one `ERROR` reply.
pub(crate) fn refusal(_: RefusalKind, message: &str) -> Vec<u8> {
    reply(FanosReply::Error(message.into()))
}

/// What the connection layer says in FANOS's words: an `ERROR` reply (Oils' own texts for a
/// malformed netstring); the daemon going down ends the connection after it.
const VOICE: Refusals = Refusals {
    refusal,
    closes_going_down: true,
};

async fn serve_connection(mut conn: Conn) {
    let decoder = NetstringDecoder { max: MAX_REQUEST };
    let Some((mut reader, out)) = Reader::new(&mut conn, decoder, VOICE) else {
        return;
    };
    let peer = reader.peer().id().to_owned();
    let mut session = ConnectionSession {
        daemon: Arc::clone(&conn.daemon),
        access: conn.access.clone(),
        id: None,
    };
    let origin = super::origin(&conn, &peer);
    while let Some(next) = reader.next(true).await {
        // Fds belong to the request whose bytes they rode on.
        let Next::Request(payload, fds) = next else {
            continue;
        };
        // The request runs to its end: the daemon going down meanwhile is said after its
        // reply (the engine ends its job), a kick at once (its job goes on).
        let handled = handle(&payload, fds, &origin, &mut session);
        tokio::pin!(handled);
        let answer = loop {
            match reader.watch(&mut handled).await {
                Watched::Done(answer) => break answer,
                Watched::Left => continue,
                Watched::Over => return,
            }
        };
        if !out.send(reply(answer)).await {
            return;
        }
    }
}

/// A reply's bytes.
fn reply(answer: FanosReply) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_netstring(&answer.payload(), &mut bytes);
    bytes
}

/// A FANOS connection's session, made on first use (as the connection's principal) and
/// closed with the connection.
struct ConnectionSession {
    daemon: Arc<Daemon>,
    access: Access,
    id: Option<String>,
}

impl ConnectionSession {
    async fn id(&mut self) -> Result<String, Refusal> {
        if let Some(id) = &self.id {
            return Ok(id.clone());
        }
        let server = Arc::clone(&self.daemon);
        let principal = self.access.principal().clone();
        let cwd = self.access.job_dir(None);
        let id = blocking(move || server.sessions.create(&cwd, &principal)).await?;
        self.id = Some(id.clone());
        Ok(id)
    }

    async fn eval(&mut self, code: Vec<u8>, stdio: PassedStdio, origin: JobOrigin) -> FanosReply {
        let id = match self.id().await {
            Ok(id) => id,
            Err(refusal) => return FanosReply::Error(refusal.message),
        };
        let server = Arc::clone(&self.daemon);
        let job = JobSpec {
            stdio: Some(stdio),
            origin,
            ..JobSpec::default()
        };
        let submitted =
            blocking(move || server.sessions.submit(&server.engine, &id, &code, job)).await;
        match submitted {
            Ok((job, _)) => match wait(job, &self.daemon).await {
                Ok(status) => FanosReply::Ok(status.to_string().into_bytes()),
                Err(error) => FanosReply::Error(error),
            },
            Err(refusal) => FanosReply::Error(refusal.message),
        }
    }

    async fn state(&mut self) -> FanosReply {
        let id = match self.id().await {
            Ok(id) => id,
            Err(refusal) => return FanosReply::Error(refusal.message),
        };
        let server = Arc::clone(&self.daemon);
        match blocking(move || server.sessions.state(&server.engine, &id)).await {
            Ok(state) => FanosReply::Ok(state.render()),
            Err(refusal) => FanosReply::Error(refusal.message),
        }
    }
}

impl Drop for ConnectionSession {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let server = Arc::clone(&self.daemon);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = server.sessions.remove(&id) {
                    tracing::warn!("cannot remove FANOS session {id}: {e}");
                }
            });
        }
    }
}

/// The client's 3 fds, or why they are not usable.
fn three_fds(fds: Vec<OwnedFd>, verb: &str) -> Result<PassedStdio, FanosReply> {
    PassedStdio::try_from(fds).map_err(|count| {
        FanosReply::Error(format!(
            "{verb} needs 3 file descriptors (stdin, stdout, stderr), got {count}"
        ))
    })
}

async fn handle(
    payload: &[u8],
    fds: Vec<OwnedFd>,
    origin: &JobOrigin,
    session: &mut ConnectionSession,
) -> FanosReply {
    let (access, origin) = (session.access.clone(), origin.clone());
    match parse_request(payload) {
        // Oils' own demo client sends its stdin, stdout and stderr with every request, GETPID
        // and STATE included: those three are taken (and closed) as none.
        FanosRequest::GetPid if fds.is_empty() || fds.len() == 3 => {
            FanosReply::Ok(std::process::id().to_string().into_bytes())
        }
        FanosRequest::Argv(argv) => match three_fds(fds, "ARGV") {
            Ok(stdio) => run(argv, stdio, &access, origin, &session.daemon).await,
            Err(refused) => refused,
        },
        FanosRequest::Eval(code) => match (three_fds(fds, "EVAL"), access.sessions_allowed()) {
            (Ok(stdio), Ok(())) => session.eval(code, stdio, origin).await,
            (Err(refused), _) => refused,
            (_, Err(refusal)) => FanosReply::Error(refusal.message),
        },
        FanosRequest::State if fds.is_empty() || fds.len() == 3 => {
            match access.sessions_allowed() {
                Ok(()) => session.state().await,
                Err(refusal) => FanosReply::Error(refusal.message),
            }
        }
        // Only here with some other number of fds: GETPID and STATE take none (they are
        // closed when dropped).
        FanosRequest::GetPid => FanosReply::Error("GETPID takes no file descriptors".into()),
        FanosRequest::State => FanosReply::Error("STATE takes no file descriptors".into()),
        FanosRequest::Unknown(text) => FanosReply::Error(format!(
            "unknown request '{}' (known: GETPID, ARGV, EVAL, STATE)",
            String::from_utf8_lossy(text.split(|&b| b == b' ').next().unwrap_or_default())
        )),
    }
}

/// Runs argv on the passed fds, as the connection's policy allows, and waits for its status.
async fn run(
    argv: Vec<Vec<u8>>,
    stdio: PassedStdio,
    access: &Access,
    origin: JobOrigin,
    server: &Daemon,
) -> FanosReply {
    let argv = argv.into_iter().map(OsString::from_vec).collect();
    let spec = JobSpec {
        stdio: Some(stdio),
        origin,
        ..JobSpec::default()
    };
    match super::submit(server, access, argv, spec) {
        Ok(job) => match wait(job, server).await {
            Ok(status) => FanosReply::Status(status),
            Err(error) => FanosReply::Error(error),
        },
        Err(refusal) => FanosReply::Error(refusal.message),
    }
}

/// Waits for a job's end; its shell status, or why it never ran.
async fn wait(job: JobId, server: &Daemon) -> Result<i32, String> {
    let mut reader = server
        .engine
        .output(job, false, true, false)
        .map_err(|e| e.to_string())?;
    loop {
        match reader.next().await {
            Ok(Some(OutputEvent::Exit(exit))) => {
                return match &exit.error {
                    Some(error) => Err(error.clone()),
                    None => Ok(exit.shell_status()),
                };
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("the job ended without a status".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}
