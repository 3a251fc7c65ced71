//! The FANOS dialect adapter (seed 003): netstrings over a Unix socket, with the client's file
//! descriptors passed alongside (SCM_RIGHTS).
//!
//! Served: `GETPID` (`OK <pid>`), `ARGV` with 3 fds (the command runs statelessly on the
//! client's stdin, stdout and stderr; `STATUS <code>`), and `ERROR <message>` for anything else.
//! Stateful `EVAL` and `STATE` need sessions, which are not built yet: they are answered with
//! an error that says so. A malformed netstring gets `ERROR` with Oils' own text, and the
//! connection is closed; other connections go on.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

use ferry_engine::{JobSpec, OutputEvent, PassedStdio};
use ferry_wire::fanos::{
    decode_netstring, encode_netstring, parse_request, FanosReply, FanosRequest,
};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;

use crate::fdpass::{recv_with_fds, FdPassError};
use crate::{unix, Hub};

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
    let mut buf: Vec<u8> = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut eof = false;
    loop {
        match decode_netstring(&buf, MAX_REQUEST, eof) {
            Ok(Some((range, used))) => {
                let payload = buf[range].to_vec();
                buf.drain(..used);
                let passed = std::mem::take(&mut fds);
                let answer = handle(&payload, passed, &hub).await;
                if reply(&mut stream, answer).await.is_err() {
                    return;
                }
            }
            Ok(None) if eof => return,
            Ok(None) => {
                let mut chunk = [0u8; 16 * 1024];
                let read = loop {
                    if stream.readable().await.is_err() {
                        return;
                    }
                    let fd = stream.as_fd();
                    match stream.try_io(Interest::READABLE, || {
                        // Keep the error's kind: WouldBlock tells tokio to wait again.
                        recv_with_fds(fd, &mut chunk, &mut fds).map_err(|e| match e {
                            FdPassError::Io(e) => e,
                            truncated => std::io::Error::other(truncated),
                        })
                    }) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        other => break other,
                    }
                };
                match read {
                    Ok(0) => eof = true,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => {
                        let _ = reply(&mut stream, FanosReply::Error(e.to_string())).await;
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::info!("fanos: closing a connection: {e}");
                let _ = reply(&mut stream, FanosReply::Error(e.to_string())).await;
                return;
            }
        }
    }
}

async fn reply(stream: &mut UnixStream, answer: FanosReply) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    encode_netstring(&answer.payload(), &mut bytes);
    stream.write_all(&bytes).await
}

async fn handle(payload: &[u8], fds: Vec<OwnedFd>, hub: &Hub) -> FanosReply {
    match parse_request(payload) {
        FanosRequest::GetPid if fds.is_empty() => {
            FanosReply::Ok(std::process::id().to_string().into_bytes())
        }
        FanosRequest::Argv(argv) => match <[OwnedFd; 3]>::try_from(fds) {
            Ok([stdin, stdout, stderr]) => {
                run(
                    argv,
                    PassedStdio {
                        stdin,
                        stdout,
                        stderr,
                    },
                    hub,
                )
                .await
            }
            Err(fds) => FanosReply::Error(format!(
                "ARGV needs 3 file descriptors (stdin, stdout, stderr), got {}",
                fds.len()
            )),
        },
        FanosRequest::Eval(_) | FanosRequest::State => FanosReply::Error(
            "stateful sessions (EVAL, STATE) are not served by this build yet".into(),
        ),
        // Only here with fds attached: GETPID takes none (they are closed when dropped).
        FanosRequest::GetPid => FanosReply::Error("GETPID takes no file descriptors".into()),
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
        ..JobSpec::default()
    };
    let job = match hub.engine.submit(spec) {
        Ok((job, _)) => job,
        Err(e) => return FanosReply::Error(e.to_string()),
    };
    let mut reader = match hub.engine.output(job, false, true, false) {
        Ok(reader) => reader,
        Err(e) => return FanosReply::Error(e.to_string()),
    };
    loop {
        match reader.next().await {
            Ok(Some(OutputEvent::Exit(exit))) => {
                return match &exit.error {
                    Some(error) => FanosReply::Error(error.clone()),
                    None => FanosReply::Status(exit.shell_status()),
                };
            }
            Ok(Some(_)) => {}
            Ok(None) => return FanosReply::Error("the job ended without a status".into()),
            Err(e) => return FanosReply::Error(e.to_string()),
        }
    }
}
