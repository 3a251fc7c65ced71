//! The native `ferry` dialect adapter: accepts connections, runs the handshake, maps each
//! [`ClientMessage`] to an engine call, and streams job output back as [`DaemonMessage`]s.
//!
//! Each connection has a reader (this task), a writer task fed by a bounded channel of encoded
//! frames, and one task per followed job that reads the job log at the client's pace.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferry_engine::{EngineError, ExitReport, JobPhase, JobSnapshot, OutputEvent, OutputStream};
use ferry_io::{frame, FrameError, FrameReader};
use ferry_wire::native::{
    encode_output_head, ClientMessage, DaemonMessage, ErrorCode, JobExit, JobId, JobInfo, JobState,
    NoticeKind, Stream, WireError, HANDSHAKE_MAX_FRAME, PROTOCOL_VERSION,
};
use serde_bytes::ByteBuf;
use std::io::IoSlice;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::{unix, Hub};

/// Encoded frames queued per connection before job readers wait for the client.
const OUTBOX_FRAMES: usize = 64;

/// How long a closing connection waits for its job readers to deliver their last frames.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Capabilities announced in `Welcome`.
const CAPABILITIES: &[&str] = &["jobs", "attach", "stdin", "signal", "timeout", "queue"];

/// Accepts connections until the daemon closes, then waits for them to finish.
pub(crate) async fn accept_loop(listener: UnixListener, hub: Arc<Hub>) {
    let mut connections = JoinSet::new();
    let mut closing = hub.closing.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(handle(stream, Arc::clone(&hub)));
                }
                Err(e) => {
                    // Out of fds or similar: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = became_true(&mut closing) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn handle(mut stream: UnixStream, hub: Arc<Hub>) {
    match unix::peer_is_owner(&stream) {
        Ok(true) => {}
        Ok(false) => {
            let cred = stream.peer_cred().ok().map(|c| c.uid());
            tracing::warn!(uid = ?cred, "refused a connection from another user");
            refuse(
                &mut stream,
                ErrorCode::PermissionDenied,
                "this daemon serves only its owner",
            )
            .await;
            return;
        }
        Err(e) => {
            tracing::warn!("cannot read peer credentials: {e}");
            return;
        }
    }
    let Ok(_permit) = Arc::clone(&hub.connections).try_acquire_owned() else {
        tracing::warn!("refused a connection: connection limit reached");
        let message = format!(
            "too many connections (the limit is {})",
            hub.config.max_connections
        );
        refuse(&mut stream, ErrorCode::LimitReached, &message).await;
        return;
    };
    let peer = hub.next_peer_id();
    tracing::debug!(peer, "connected");
    Connection::serve(stream, hub, peer).await;
    tracing::debug!(peer, "disconnected");
}

/// Sends one error frame on a connection that will not be served, then closes it.
async fn refuse(stream: &mut UnixStream, code: ErrorCode, message: &str) {
    let error = DaemonMessage::Error {
        request: None,
        code,
        message: message.into(),
    };
    if let Ok(bytes) = frame(&error) {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&bytes)).await;
    }
    let _ = stream.shutdown().await;
}

/// Why a connection must be closed.
struct Fatal {
    code: ErrorCode,
    message: String,
}

impl Fatal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Fatal {
        Fatal {
            code,
            message: message.into(),
        }
    }
}

/// One item of a connection's outbox.
enum Outgoing {
    /// A whole encoded frame.
    Frame(Vec<u8>),
    /// An output frame: its encoded head, then the data from where it already lies.
    Output { head: Vec<u8>, data: Bytes },
}

/// Writes `head` then `data` with as few system calls as the socket allows.
async fn write_head_and_data(
    writer: &mut (impl AsyncWrite + Unpin),
    mut head: &[u8],
    mut data: &[u8],
) -> std::io::Result<()> {
    while !head.is_empty() {
        let n = writer
            .write_vectored(&[IoSlice::new(head), IoSlice::new(data)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if n >= head.len() {
            data = &data[n - head.len()..];
            head = &[];
        } else {
            head = &head[n..];
        }
    }
    writer.write_all(data).await
}

struct Connection {
    hub: Arc<Hub>,
    peer: u64,
    out: mpsc::Sender<Outgoing>,
    followers: JoinSet<()>,
    hangup_jobs: Vec<JobId>,
}

impl Connection {
    async fn serve(stream: UnixStream, hub: Arc<Hub>, peer: u64) {
        let (read_half, mut write_half) = stream.into_split();
        let (out, mut outbox) = mpsc::channel::<Outgoing>(OUTBOX_FRAMES);
        let writer = tokio::spawn(async move {
            while let Some(item) = outbox.recv().await {
                let written = match item {
                    Outgoing::Frame(bytes) => write_half.write_all(&bytes).await,
                    Outgoing::Output { head, data } => {
                        write_head_and_data(&mut write_half, &head, &data).await
                    }
                };
                if written.is_err() {
                    break;
                }
            }
            let _ = write_half.shutdown().await;
        });
        let mut connection = Connection {
            hub,
            peer,
            out,
            followers: JoinSet::new(),
            hangup_jobs: Vec::new(),
        };
        let mut reader = FrameReader::new(read_half);
        let outcome = match connection.handshake(&mut reader).await {
            Ok(true) => connection.serve_requests(&mut reader).await,
            Ok(false) => Ok(()),
            Err(fatal) => Err(fatal),
        };
        if let Err(fatal) = outcome {
            tracing::info!(peer, "closing connection: {}", fatal.message);
            connection
                .send(&DaemonMessage::Error {
                    request: None,
                    code: fatal.code,
                    message: fatal.message,
                })
                .await;
        }
        connection.close().await;
        drop(connection);
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, writer).await;
    }

    /// Reads the `Hello`; `Ok(false)` when the client left before sending one.
    async fn handshake(
        &mut self,
        reader: &mut FrameReader<tokio::net::unix::OwnedReadHalf>,
    ) -> Result<bool, Fatal> {
        let timeout = self.hub.config.handshake_timeout;
        let first = tokio::time::timeout(timeout, reader.next(HANDSHAKE_MAX_FRAME))
            .await
            .map_err(|_| {
                Fatal::new(
                    ErrorCode::BadHandshake,
                    format!("no Hello within {} ms", timeout.as_millis()),
                )
            })?
            .map_err(|e| frame_fatal(e, "before the handshake"))?;
        match first {
            None => Ok(false),
            Some(ClientMessage::Hello { version, .. }) if version == PROTOCOL_VERSION => {
                self.send(&DaemonMessage::Welcome {
                    version: PROTOCOL_VERSION,
                    peer: self.peer,
                    daemon: format!("ferry {}", env!("CARGO_PKG_VERSION")),
                    capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
                    max_frame: self.hub.config.max_frame as u64,
                })
                .await;
                Ok(true)
            }
            Some(ClientMessage::Hello { version, .. }) => Err(Fatal::new(
                ErrorCode::VersionMismatch,
                format!(
                    "client speaks protocol version {version}, this daemon speaks {PROTOCOL_VERSION}"
                ),
            )),
            Some(other) => Err(Fatal::new(
                ErrorCode::BadHandshake,
                format!(
                    "the first message must be Hello, not {}",
                    message_name(&other)
                ),
            )),
        }
    }

    async fn serve_requests(
        &mut self,
        reader: &mut FrameReader<tokio::net::unix::OwnedReadHalf>,
    ) -> Result<(), Fatal> {
        let mut going_down = self.hub.going_down.subscribe();
        let mut closing = self.hub.closing.subscribe();
        let mut notified = false;
        let max_frame = self.hub.config.max_frame;
        loop {
            tokio::select! {
                message = reader.next::<ClientMessage>(max_frame) => {
                    match message.map_err(|e| frame_fatal(e, "after the handshake"))? {
                        Some(message) => self.dispatch(message).await?,
                        None => return Ok(()),
                    }
                }
                () = became_true(&mut going_down), if !notified => {
                    notified = true;
                    self.send(&DaemonMessage::Notice {
                        kind: NoticeKind::ShuttingDown,
                        message: "the ferry daemon is going down; running jobs are being terminated".into(),
                    }).await;
                }
                () = became_true(&mut closing) => return Ok(()),
                Some(_) = self.followers.join_next(), if !self.followers.is_empty() => {}
            }
        }
    }

    /// Ends the connection: on a daemon shutdown, lets job readers deliver their last frames;
    /// on a client's departure, stops them and hangs up the jobs that asked for it.
    async fn close(&mut self) {
        let daemon_closing = *self.hub.closing.borrow();
        if daemon_closing {
            let followers = &mut self.followers;
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, async {
                while followers.join_next().await.is_some() {}
            })
            .await;
        }
        self.followers.abort_all();
        for job in self.hangup_jobs.drain(..) {
            // Jobs that already ended answer an error: nothing to hang up.
            if self.hub.engine.signal(job, libc::SIGHUP).is_ok() {
                tracing::info!(peer = self.peer, job, "client left: sent SIGHUP to job");
            }
        }
    }

    async fn send(&self, message: &DaemonMessage) {
        match frame(message) {
            Ok(bytes) => {
                // A closed outbox means the client is gone; the reader notices on its own.
                let _ = self.out.send(Outgoing::Frame(bytes)).await;
            }
            Err(e) => tracing::error!("cannot encode a message: {e}"),
        }
    }

    async fn send_error(&self, request: Option<u64>, error: EngineError) {
        self.send(&DaemonMessage::Error {
            request,
            code: engine_error_code(&error),
            message: error.to_string(),
        })
        .await;
    }

    async fn dispatch(&mut self, message: ClientMessage) -> Result<(), Fatal> {
        let engine = self.hub.engine.clone();
        match message {
            ClientMessage::Hello { .. } => {
                return Err(Fatal::new(
                    ErrorCode::BadHandshake,
                    "Hello sent twice on one connection",
                ))
            }
            ClientMessage::Run {
                request,
                argv,
                cwd,
                env,
                stdin,
                timeout_ms,
                hangup_on_disconnect,
                follow,
            } => {
                let spec = ferry_engine::JobSpec {
                    argv: argv.into_iter().map(os_string).collect(),
                    cwd: cwd.map(|c| PathBuf::from(os_string(c))),
                    env: env.map(|env| {
                        env.into_iter()
                            .map(|(k, v)| (os_string(k), os_string(v)))
                            .collect()
                    }),
                    stdin,
                    timeout: timeout_ms.map(Duration::from_millis),
                };
                match engine.submit(spec) {
                    Ok((job, queued)) => {
                        tracing::debug!(peer = self.peer, job, queued, "job accepted");
                        self.send(&DaemonMessage::Accepted {
                            request,
                            job,
                            queued,
                        })
                        .await;
                        if hangup_on_disconnect {
                            self.hangup_jobs.push(job);
                        }
                        if follow {
                            // The job's own client: it never misses output.
                            self.follow(job, true, true, true, request).await;
                        }
                    }
                    Err(e) => self.send_error(Some(request), e).await,
                }
            }
            ClientMessage::Stdin { job, data } => {
                if let Err(e) = engine.write_stdin(job, data).await {
                    self.send_error(None, e).await;
                }
            }
            ClientMessage::CloseStdin { job } => {
                if let Err(e) = engine.close_stdin(job) {
                    self.send_error(None, e).await;
                }
            }
            ClientMessage::Attach {
                request,
                job,
                replay,
                follow,
            } => match engine.snapshot(job) {
                Ok(snapshot) => {
                    self.send(&DaemonMessage::Attached {
                        request,
                        info: job_info(&snapshot),
                    })
                    .await;
                    self.follow(job, replay, follow, false, request).await;
                }
                Err(e) => self.send_error(Some(request), e).await,
            },
            ClientMessage::ListJobs { request } => {
                let jobs = engine.list().iter().map(job_info).collect();
                self.send(&DaemonMessage::Jobs { request, jobs }).await;
            }
            ClientMessage::Signal {
                request,
                job,
                signal,
            } => match engine.signal(job, signal) {
                Ok(()) => self.send(&DaemonMessage::Done { request }).await,
                Err(e) => self.send_error(Some(request), e).await,
            },
            ClientMessage::Shutdown { request } => {
                tracing::info!(peer = self.peer, "client asked for shutdown");
                self.send(&DaemonMessage::Done { request }).await;
                self.hub.shutdown_requested.notify_one();
            }
        }
        Ok(())
    }

    /// Starts a task that streams a job's output to this connection.
    async fn follow(
        &mut self,
        job: JobId,
        replay: bool,
        follow: bool,
        holding: bool,
        request: u64,
    ) {
        let mut reader = match self.hub.engine.output(job, replay, follow, holding) {
            Ok(reader) => reader,
            Err(e) => return self.send_error(Some(request), e).await,
        };
        let out = self.out.clone();
        self.followers.spawn(async move {
            loop {
                let message = match reader.next().await {
                    Ok(Some(OutputEvent::Chunk {
                        stream,
                        offset,
                        data,
                    })) => {
                        let stream = match stream {
                            OutputStream::Stdout => Stream::Stdout,
                            OutputStream::Stderr => Stream::Stderr,
                        };
                        let mut head = Vec::with_capacity(64);
                        if let Err(e) =
                            encode_output_head(job, stream, offset, data.len(), &mut head)
                        {
                            tracing::error!(job, "cannot encode output: {e}");
                            break;
                        }
                        if out.send(Outgoing::Output { head, data }).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Ok(Some(OutputEvent::Exit(report))) => DaemonMessage::Exit {
                        job,
                        exit: job_exit(&report),
                    },
                    Ok(Some(OutputEvent::End)) => DaemonMessage::LogEnd { request, job },
                    Ok(None) => break,
                    Err(e) => DaemonMessage::Error {
                        request: Some(request),
                        code: ErrorCode::Internal,
                        message: format!("job {job}: {e}"),
                    },
                };
                // Exit, end of log and errors are the last frame of this stream.
                if let Ok(bytes) = frame(&message) {
                    let _ = out.send(Outgoing::Frame(bytes)).await;
                }
                break;
            }
        });
    }
}

/// Resolves once the watched flag is true (or its sender is gone).
async fn became_true(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|value| *value).await;
}

fn os_string(bytes: ByteBuf) -> OsString {
    OsString::from_vec(bytes.into_vec())
}

fn frame_fatal(error: FrameError, when: &str) -> Fatal {
    match error {
        FrameError::Wire(WireError::FrameTooLarge { len, max }) => Fatal::new(
            ErrorCode::FrameTooLarge,
            format!("frame of {len} bytes {when} is over the limit of {max} bytes"),
        ),
        FrameError::Wire(e) => Fatal::new(ErrorCode::BadFrame, format!("{e} ({when})")),
        FrameError::Truncated(n) => Fatal::new(
            ErrorCode::BadFrame,
            format!("connection closed in the middle of a frame ({n} bytes)"),
        ),
        FrameError::Io(e) => Fatal::new(ErrorCode::Internal, format!("read failed: {e}")),
    }
}

fn message_name(message: &ClientMessage) -> &'static str {
    match message {
        ClientMessage::Hello { .. } => "Hello",
        ClientMessage::Run { .. } => "Run",
        ClientMessage::Stdin { .. } => "Stdin",
        ClientMessage::CloseStdin { .. } => "CloseStdin",
        ClientMessage::Attach { .. } => "Attach",
        ClientMessage::ListJobs { .. } => "ListJobs",
        ClientMessage::Signal { .. } => "Signal",
        ClientMessage::Shutdown { .. } => "Shutdown",
    }
}

fn engine_error_code(error: &EngineError) -> ErrorCode {
    match error {
        EngineError::UnknownJob(_) => ErrorCode::UnknownJob,
        EngineError::Invalid(_) => ErrorCode::InvalidRequest,
        EngineError::Limit(_) => ErrorCode::LimitReached,
        EngineError::ShuttingDown => ErrorCode::ShuttingDown,
        EngineError::Io { .. } => ErrorCode::Internal,
    }
}

fn millis_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn job_exit(report: &ExitReport) -> JobExit {
    JobExit {
        code: report.code,
        signal: report.signal,
        wall_us: report.wall.as_micros() as u64,
        timed_out: report.timed_out,
        error: report.error.clone(),
    }
}

fn job_info(snapshot: &JobSnapshot) -> JobInfo {
    let (state, exit) = match &snapshot.phase {
        JobPhase::Queued => (JobState::Queued, None),
        JobPhase::Running { .. } => (JobState::Running, None),
        JobPhase::Finished(report) => (JobState::Finished, Some(job_exit(report))),
    };
    JobInfo {
        id: snapshot.id,
        state,
        argv: snapshot
            .argv
            .iter()
            .map(|a| ByteBuf::from(a.as_bytes().to_vec()))
            .collect(),
        pid: snapshot.pid,
        submitted_ms: millis_since_epoch(snapshot.submitted),
        started_ms: snapshot.started.map(millis_since_epoch),
        run_us: snapshot.run_time.as_micros() as u64,
        exit,
        unstored_bytes: snapshot.unstored_bytes,
    }
}
