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

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

use ferry_engine::{JobId, JobSpec, OutputEvent, PassedStdio};
use ferry_io::{FrameReader, ReadError};
use ferry_wire::fanos::{
    encode_netstring, parse_request, FanosReply, FanosRequest, NetstringDecoder, NetstringError,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::{unix, Hub};
use ferry_io::fdpass::{FdInbox, FdReadHalf};

/// Largest request accepted, in bytes.
const MAX_REQUEST: usize = 64 * 1024;

/// Serves one FANOS connection.
pub(crate) async fn serve(mut stream: UnixStream, hub: Arc<Hub>) {
    if !matches!(unix::peer_is_owner(&stream), Ok(true)) {
        let _ = reply(
            &mut stream,
            FanosReply::Error("this daemon serves only its owner".into()),
        )
        .await;
        return;
    }
    // Every read goes through recvmsg, one message at a time: fds belong to the request whose
    // bytes they rode on.
    let (read_half, mut write_half) = stream.into_split();
    let inbox = FdInbox::default();
    let mut reader = FrameReader::bounded(FdReadHalf::new(read_half, inbox.clone()));
    let mut decoder = NetstringDecoder { max: MAX_REQUEST };
    let mut session = ConnectionSession {
        hub: Arc::clone(&hub),
        id: None,
    };
    loop {
        let payload = match reader.next_with(&mut decoder).await {
            Ok(Some(payload)) => payload,
            Ok(None) => return,
            Err(e) => {
                let message = match e {
                    ReadError::Decode(e) => e.to_string(),
                    ReadError::Truncated(_) => NetstringError::UnexpectedEof.to_string(),
                    ReadError::Io(e) => e.to_string(),
                };
                tracing::info!("fanos: closing a connection: {message}");
                let _ = reply(&mut write_half, FanosReply::Error(message)).await;
                return;
            }
        };
        let span = reader.last_frame_span();
        let passed = inbox.claim(span);
        inbox.drop_unclaimable(span.1);
        let answer = handle(&payload, passed, &hub, &mut session).await;
        if reply(&mut write_half, answer).await.is_err() {
            return;
        }
    }
}

async fn reply(stream: &mut (impl AsyncWrite + Unpin), answer: FanosReply) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    encode_netstring(&answer.payload(), &mut bytes);
    stream.write_all(&bytes).await
}

/// A FANOS connection's session, made on first use and closed with the connection.
struct ConnectionSession {
    hub: Arc<Hub>,
    id: Option<String>,
}

impl ConnectionSession {
    async fn id(&mut self) -> Result<String, String> {
        if let Some(id) = &self.id {
            return Ok(id.clone());
        }
        let hub = Arc::clone(&self.hub);
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let id = tokio::task::spawn_blocking(move || hub.sessions.create(&cwd))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.id = Some(id.clone());
        Ok(id)
    }

    async fn eval(&mut self, code: Vec<u8>, stdio: PassedStdio) -> FanosReply {
        let id = match self.id().await {
            Ok(id) => id,
            Err(e) => return FanosReply::Error(e),
        };
        let hub = Arc::clone(&self.hub);
        let submitted = tokio::task::spawn_blocking(move || {
            hub.sessions.submit(
                &hub.engine,
                &id,
                &code,
                JobSpec {
                    stdio: Some(stdio),
                    origin: fanos_origin(),
                    ..JobSpec::default()
                },
            )
        })
        .await;
        match submitted {
            Ok(Ok((job, _))) => match wait(job, &self.hub).await {
                Ok(status) => FanosReply::Ok(status.to_string().into_bytes()),
                Err(error) => FanosReply::Error(error),
            },
            Ok(Err(e)) => FanosReply::Error(e.to_string()),
            Err(e) => FanosReply::Error(e.to_string()),
        }
    }

    async fn state(&mut self) -> FanosReply {
        let id = match self.id().await {
            Ok(id) => id,
            Err(e) => return FanosReply::Error(e),
        };
        let hub = Arc::clone(&self.hub);
        let state = tokio::task::spawn_blocking(move || hub.sessions.state(&hub.engine, &id)).await;
        match state {
            Ok(Ok(state)) => FanosReply::Ok(state.render()),
            Ok(Err(e)) => FanosReply::Error(e.to_string()),
            Err(e) => FanosReply::Error(e.to_string()),
        }
    }
}

impl Drop for ConnectionSession {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let hub = Arc::clone(&self.hub);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = hub.sessions.remove(&id) {
                    tracing::warn!("cannot remove FANOS session {id}: {e}");
                }
            });
        }
    }
}

/// The client's 3 fds, or why they are not usable.
fn three_fds(fds: Vec<OwnedFd>, verb: &str) -> Result<PassedStdio, FanosReply> {
    match <[OwnedFd; 3]>::try_from(fds) {
        Ok([stdin, stdout, stderr]) => Ok(PassedStdio {
            stdin,
            stdout,
            stderr,
        }),
        Err(fds) => Err(FanosReply::Error(format!(
            "{verb} needs 3 file descriptors (stdin, stdout, stderr), got {}",
            fds.len()
        ))),
    }
}

async fn handle(
    payload: &[u8],
    fds: Vec<OwnedFd>,
    hub: &Hub,
    session: &mut ConnectionSession,
) -> FanosReply {
    match parse_request(payload) {
        // Oils' own demo client sends its stdin, stdout and stderr with every request, GETPID
        // and STATE included: those three are taken (and closed) as none.
        FanosRequest::GetPid if fds.is_empty() || fds.len() == 3 => {
            FanosReply::Ok(std::process::id().to_string().into_bytes())
        }
        FanosRequest::Argv(argv) => match three_fds(fds, "ARGV") {
            Ok(stdio) => run(argv, stdio, hub).await,
            Err(refused) => refused,
        },
        FanosRequest::Eval(code) => match three_fds(fds, "EVAL") {
            Ok(stdio) => session.eval(code, stdio).await,
            Err(refused) => refused,
        },
        FanosRequest::State if fds.is_empty() || fds.len() == 3 => session.state().await,
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

/// Runs argv on the passed fds and waits for its status.
async fn run(argv: Vec<Vec<u8>>, stdio: PassedStdio, hub: &Hub) -> FanosReply {
    let spec = JobSpec {
        argv: argv.into_iter().map(OsString::from_vec).collect(),
        stdio: Some(stdio),
        origin: fanos_origin(),
        ..JobSpec::default()
    };
    match hub.engine.submit(spec) {
        Ok((job, _)) => match wait(job, hub).await {
            Ok(status) => FanosReply::Status(status),
            Err(error) => FanosReply::Error(error),
        },
        Err(e) => FanosReply::Error(e.to_string()),
    }
}

/// Jobs of this dialect are recorded as the owner's, through FANOS.
fn fanos_origin() -> ferry_engine::JobOrigin {
    ferry_engine::JobOrigin {
        owner: "unix".into(),
        dialect: "fanos".into(),
    }
}

/// Waits for a job's end; its shell status, or why it never ran.
async fn wait(job: JobId, hub: &Hub) -> Result<i32, String> {
    let mut reader = hub
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
