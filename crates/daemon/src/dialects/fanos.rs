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
//! The first request must come within the handshake time limit (the dialect has no handshake
//! of its own); between requests, within the daemon's idle limit (`--idle-timeout`; by
//! default none: a shell waits for its user as long as it likes). The daemon going down, or
//! the owner kicking the peer, is said with an `ERROR` reply (after the request in progress,
//! if any), and the connection is closed.

use std::ffi::OsString;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::pin::Pin;
use std::sync::Arc;

use ferry_engine::peers::PeerEvent;
use ferry_engine::{JobId, JobOrigin, JobSpec, OutputEvent, PassedStdio, Principal};
use ferry_io::{FrameReader, ReadError};
use ferry_wire::fanos::{
    encode_netstring, parse_request, FanosReply, FanosRequest, NetstringDecoder, NetstringError,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::conn::{became_true, time_limit, BoxRead, Conn};
use crate::policy::{blocking, Access, Answer, Refusal, RefusalKind};
use crate::server::Server;

/// Largest request accepted, in bytes.
const MAX_REQUEST: usize = 64 * 1024;

/// Serves one admitted connection (the listener table's entry point).
pub(crate) fn serve(conn: Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_connection(conn))
}

/// A refusal of a connection that will not be served: one `ERROR` reply.
pub(crate) fn refusal(_: RefusalKind, message: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_netstring(&FanosReply::Error(message.into()).payload(), &mut bytes);
    bytes
}

/// Why the connection ends, if the daemon ends it.
enum Ending {
    /// The daemon is going down.
    GoingDown,
    /// The owner kicked this peer.
    Kicked(String),
}

impl Ending {
    fn reply(&self) -> FanosReply {
        match self {
            Ending::GoingDown => FanosReply::Error(
                "the ferry daemon is going down; running jobs are being terminated".into(),
            ),
            Ending::Kicked(reason) => {
                FanosReply::Error(format!("disconnected {reason}; your jobs go on"))
            }
        }
    }
}

async fn serve_connection(mut conn: Conn) {
    let peer_id = conn.peer.id().to_owned();
    // Every read goes through recvmsg, one message at a time: fds belong to the request whose
    // bytes they rode on.
    let Some(inbox) = conn.fds.clone() else {
        return;
    };
    let mut reader: FrameReader<BoxRead> = FrameReader::bounded(conn.read);
    let mut decoder = NetstringDecoder { max: MAX_REQUEST };
    let mut session = ConnectionSession {
        server: Arc::clone(&conn.server),
        principal: conn.access.principal().clone(),
        id: None,
    };
    let mut closing = conn.server.closing.subscribe();
    let kick = conn.peer.handle.kick();
    let mut first = true;
    let mut ending = None;
    while ending.is_none() {
        let next = tokio::select! {
            next = reader.next_with(&mut decoder) => next,
            Some(PeerEvent::ShuttingDown) = conn.peer.handle.next_event() => {
                conn.peer.handle.shutdown_told();
                ending = Some(Ending::GoingDown);
                continue;
            }
            reason = kick.kicked() => {
                ending = Some(Ending::Kicked(reason));
                continue;
            }
            () = became_true(&mut closing) => return,
            limit = time_limit(conn.limits.next_request(first)) => {
                let message = format!("no request within {} ms", limit.as_millis());
                tracing::info!(peer = peer_id, "fanos: closing a connection: {message}");
                let _ = reply(&mut conn.write, FanosReply::Error(message)).await;
                return;
            }
        };
        first = false;
        let payload = match next {
            Ok(Some(payload)) => payload,
            Ok(None) => return,
            Err(e) => {
                let message = match e {
                    ReadError::Decode(e) => e.to_string(),
                    ReadError::Truncated(_) => NetstringError::UnexpectedEof.to_string(),
                    ReadError::Io(e) => e.to_string(),
                };
                tracing::info!(peer = peer_id, "fanos: closing a connection: {message}");
                let _ = reply(&mut conn.write, FanosReply::Error(message)).await;
                return;
            }
        };
        let span = reader.last_frame_span();
        let passed = inbox.claim(span);
        inbox.drop_unclaimable(span.1);
        // The request runs to its end; the daemon going down meanwhile is said after its
        // reply (the engine ends its job), a kick at once (its job goes on).
        let handled = handle(&payload, passed, &conn.access, &peer_id, &mut session);
        tokio::pin!(handled);
        let answer = loop {
            tokio::select! {
                answer = &mut handled => break Some(answer),
                Some(PeerEvent::ShuttingDown) = conn.peer.handle.next_event(), if ending.is_none() => {
                    conn.peer.handle.shutdown_told();
                    ending = Some(Ending::GoingDown);
                }
                reason = kick.kicked() => {
                    ending = Some(Ending::Kicked(reason));
                    break None;
                }
            }
        };
        if let Some(answer) = answer {
            if reply(&mut conn.write, answer).await.is_err() {
                return;
            }
        }
    }
    if let Some(ending) = ending {
        let _ = reply(&mut conn.write, ending.reply()).await;
    }
}

async fn reply(stream: &mut (impl AsyncWrite + Unpin), answer: FanosReply) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    encode_netstring(&answer.payload(), &mut bytes);
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// A FANOS connection's session, made on first use (as the connection's principal) and
/// closed with the connection.
struct ConnectionSession {
    server: Arc<Server>,
    principal: Principal,
    id: Option<String>,
}

impl ConnectionSession {
    async fn id(&mut self) -> Result<String, Refusal> {
        if let Some(id) = &self.id {
            return Ok(id.clone());
        }
        let server = Arc::clone(&self.server);
        let principal = self.principal.clone();
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let id = blocking(move || server.sessions.create(&cwd, &principal)).await?;
        self.id = Some(id.clone());
        Ok(id)
    }

    async fn eval(&mut self, code: Vec<u8>, stdio: PassedStdio, origin: JobOrigin) -> FanosReply {
        let id = match self.id().await {
            Ok(id) => id,
            Err(refusal) => return FanosReply::Error(refusal.message),
        };
        let server = Arc::clone(&self.server);
        let job = JobSpec {
            stdio: Some(stdio),
            origin,
            ..JobSpec::default()
        };
        let submitted =
            blocking(move || server.sessions.submit(&server.engine, &id, &code, job)).await;
        match submitted {
            Ok((job, _)) => match wait(job, &self.server).await {
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
        let server = Arc::clone(&self.server);
        match blocking(move || server.sessions.state(&server.engine, &id)).await {
            Ok(state) => FanosReply::Ok(state.render()),
            Err(refusal) => FanosReply::Error(refusal.message),
        }
    }
}

impl Drop for ConnectionSession {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let server = Arc::clone(&self.server);
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
    access: &Access,
    peer: &str,
    session: &mut ConnectionSession,
) -> FanosReply {
    let origin = JobOrigin {
        owner: "unix".into(),
        dialect: "fanos".into(),
        peer: Some(peer.to_owned()),
        principal: access.principal().clone(),
    };
    match parse_request(payload) {
        // Oils' own demo client sends its stdin, stdout and stderr with every request, GETPID
        // and STATE included: those three are taken (and closed) as none.
        FanosRequest::GetPid if fds.is_empty() || fds.len() == 3 => {
            FanosReply::Ok(std::process::id().to_string().into_bytes())
        }
        FanosRequest::Argv(argv) => match three_fds(fds, "ARGV") {
            Ok(stdio) => run(argv, stdio, access, origin, &session.server).await,
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
    server: &Server,
) -> FanosReply {
    let argv = argv.into_iter().map(OsString::from_vec).collect();
    let argv = match access.allowed_command(&server.catalog, argv) {
        Ok(argv) => argv,
        Err(refusal) => return FanosReply::Error(refusal.message),
    };
    let spec = JobSpec {
        argv,
        stdio: Some(stdio),
        origin,
        ..JobSpec::default()
    };
    match server.engine.submit(spec) {
        Ok((job, _)) => match wait(job, server).await {
            Ok(status) => FanosReply::Status(status),
            Err(error) => FanosReply::Error(error),
        },
        Err(e) => FanosReply::Error(e.refusal().message),
    }
}

/// Waits for a job's end; its shell status, or why it never ran.
async fn wait(job: JobId, server: &Server) -> Result<i32, String> {
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
