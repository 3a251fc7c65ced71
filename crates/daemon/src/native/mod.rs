//! The native `ferry` dialect adapter: accepts connections, runs the handshake, maps each
//! [`ClientMessage`] to an engine call, and streams job output back as [`DaemonMessage`]s.
//!
//! Each connection has a reader (this task), a writer task fed by a bounded channel of encoded
//! frames, and one task per followed job that reads the job log at the client's pace.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferry_engine::files::{FileArea, FileError};
use ferry_engine::sessions::SessionError;
use ferry_engine::{
    EngineError, ExitReport, JobPhase, JobSnapshot, OutputEvent, OutputStream, PassedStdio,
};
use ferry_io::fdpass::{FdInbox, FdReadHalf};
use ferry_io::{frame, FrameError, FrameReader};
use ferry_wire::native::{
    encode_output_head, ClientMessage, DaemonMessage, ErrorCode, JobExit, JobId, JobInfo, JobState,
    NoticeKind, Stream, WireError, HANDSHAKE_MAX_FRAME, PROTOCOL_VERSION,
};
use serde_bytes::ByteBuf;
use std::collections::{HashMap, HashSet};
use std::io::IoSlice;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::{unix, Hub};

mod transfer;

use transfer::UploadPipe;

/// Encoded frames queued per connection before job readers wait for the client.
const OUTBOX_FRAMES: usize = 64;

/// How long a closing connection waits for its job readers to deliver their last frames.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// What a failed authentication costs the peer before it gets its answer.
const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// Capabilities announced in `Welcome`.
const CAPABILITIES: &[&str] = &[
    "jobs",
    "attach",
    "stdin",
    "signal",
    "timeout",
    "queue",
    "files",
    "sandbox",
    "sessions",
    "pass-stdio",
];

/// What a listener lets its connections do, and how they must authenticate.
#[derive(Clone, Debug)]
pub(crate) struct Access {
    /// The token a `Hello` must carry; `None` when the transport already proved who the peer
    /// is (the owner's uid on a Unix socket, or a verified client certificate).
    pub token: Option<Arc<str>>,
    /// Whether any command may run; otherwise only the daemon's catalog.
    pub any_command: bool,
    /// The owner's own socket: the client's working directory and environment are used, and
    /// it may shut the daemon down. Otherwise jobs run in `files_dir` with the daemon's
    /// environment.
    pub owner: bool,
    /// Where remote clients' jobs run.
    pub files_dir: PathBuf,
}

impl Access {
    /// The owner's Unix socket: anything goes, as in the owner's shell.
    pub fn owner(files_dir: PathBuf) -> Access {
        Access {
            token: None,
            any_command: true,
            owner: true,
            files_dir,
        }
    }
}

/// A listener the accept loop takes connections from.
pub(crate) trait Accept: Send + 'static {
    /// What a new connection is handed over as.
    type Conn: Send + 'static;
    /// Waits for the next connection.
    fn next(&self) -> impl std::future::Future<Output = std::io::Result<Self::Conn>> + Send;
}

impl Accept for UnixListener {
    type Conn = UnixStream;
    async fn next(&self) -> std::io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Accept for TcpListener {
    type Conn = (TcpStream, SocketAddr);
    async fn next(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, addr))
    }
}

/// Accepts connections until the daemon closes, each served by a task running `serve`, then
/// waits for those tasks to finish.
pub(crate) async fn accept_loop<L, F, Fut>(listener: L, hub: Arc<Hub>, serve: F)
where
    L: Accept,
    F: Fn(L::Conn) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut closing = hub.closing.subscribe();
    loop {
        tokio::select! {
            accepted = listener.next() => match accepted {
                Ok(connection) => {
                    connections.spawn(serve(connection));
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

pub(crate) async fn handle_tcp(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    hub: Arc<Hub>,
    mut access: Access,
) {
    let Some(tls) = tls else {
        let (read, write) = stream.into_split();
        return serve_with_permit(read, write, hub, access, addr.to_string(), None).await;
    };
    let handshake = tokio::time::timeout(hub.config.handshake_timeout, tls.accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(%addr, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(%addr, "TLS handshake timed out");
            return;
        }
    };
    if let Some(certs) = stream.get_ref().1.peer_certificates() {
        // rustls verified it against the client CA: the peer is authenticated, and its files
        // live in an area of its own, named after the certificate's common name.
        let name = certs.first().and_then(|cert| common_name(cert));
        tracing::info!(%addr, client = ?name, "client certificate accepted");
        access.token = None;
        let area = name.unwrap_or_else(|| "unnamed".into());
        access.files_dir = access.files_dir.join("clients").join(area);
    }
    let (read, write) = tokio::io::split(stream);
    serve_with_permit(read, write, hub, access, addr.to_string(), None).await;
}

pub(crate) async fn handle_unix(mut stream: UnixStream, hub: Arc<Hub>, access: Access) {
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
    let (read, write) = stream.into_split();
    // Every read goes through recvmsg, so that fds passed with a frame are never lost.
    let inbox = FdInbox::default();
    let read = FdReadHalf::new(read, inbox.clone());
    serve_with_permit(read, write, hub, access, "unix".into(), Some(inbox)).await;
}

/// The common name of a certificate, if it is usable as a directory name.
fn common_name(cert: &rustls::pki_types::CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    let usable = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    usable.then_some(name)
}

/// Serves a connection if a connection slot is free; refuses it otherwise.
async fn serve_with_permit<R, W>(
    read: R,
    mut write: W,
    hub: Arc<Hub>,
    access: Access,
    from: String,
    fd_inbox: Option<FdInbox>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Ok(_permit) = Arc::clone(&hub.connections).try_acquire_owned() else {
        tracing::warn!(from, "refused a connection: connection limit reached");
        let message = format!(
            "too many connections (the limit is {})",
            hub.config.max_connections
        );
        refuse(&mut write, ErrorCode::LimitReached, &message).await;
        return;
    };
    let peer = hub.next_peer_id();
    tracing::debug!(peer, from, "connected");
    Connection::serve(read, write, hub, peer, access, from, fd_inbox).await;
    tracing::debug!(peer, "disconnected");
}

/// Sends one error frame on a connection that will not be served, then closes it.
async fn refuse(stream: &mut (impl AsyncWrite + Unpin), code: ErrorCode, message: &str) {
    let error = DaemonMessage::Error {
        request: None,
        code,
        message: message.into(),
    };
    if let Ok(bytes) = frame(&error) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        })
        .await;
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
    access: Access,
    /// This client's file area.
    files: Arc<FileArea>,
    /// Where the peer connects from, for logs.
    from: String,
    out: mpsc::Sender<Outgoing>,
    followers: JoinSet<()>,
    hangup_jobs: Vec<JobId>,
    /// Files being put on this connection, by request id (dropped unfinished on disconnect,
    /// which removes their temporary files).
    uploads: HashMap<u64, UploadPipe>,
    /// Puts that failed: their remaining `PutData` frames are dropped quietly.
    failed_uploads: HashSet<u64>,
    /// Sandboxes made on this connection that go when it closes.
    sandboxes: Vec<PathBuf>,
    /// Fds received with this connection's frames (Unix sockets only).
    fd_inbox: Option<FdInbox>,
    /// Stream offsets of the frame being dispatched.
    frame_span: (u64, u64),
}

impl Connection {
    async fn serve<R, W>(
        read_half: R,
        mut write_half: W,
        hub: Arc<Hub>,
        peer: u64,
        access: Access,
        from: String,
        fd_inbox: Option<FdInbox>,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
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
                // A TLS stream holds written bytes until flushed: flush whenever nothing else
                // is waiting to be written.
                if outbox.is_empty() && write_half.flush().await.is_err() {
                    break;
                }
            }
            let _ = write_half.shutdown().await;
        });
        let files = if access.files_dir == hub.config.files_dir {
            Arc::clone(&hub.files)
        } else {
            let dir = access.files_dir.clone();
            match tokio::task::spawn_blocking(move || FileArea::open(&dir)).await {
                Ok(Ok(area)) => Arc::new(area),
                Ok(Err(e)) => {
                    tracing::error!(peer, "cannot open the client's file area: {e}");
                    return;
                }
                Err(_) => return,
            }
        };
        let mut connection = Connection {
            hub,
            peer,
            access,
            files,
            from,
            out,
            followers: JoinSet::new(),
            hangup_jobs: Vec::new(),
            uploads: HashMap::new(),
            failed_uploads: HashSet::new(),
            sandboxes: Vec::new(),
            fd_inbox,
            frame_span: (0, 0),
        };
        // A connection that may carry fds is read one message at a time (see FdInbox).
        let mut reader = if connection.fd_inbox.is_some() {
            FrameReader::bounded(read_half)
        } else {
            FrameReader::new(read_half)
        };
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
    async fn handshake<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<R>,
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
            Some(ClientMessage::Hello { version, token, .. }) if version == PROTOCOL_VERSION => {
                if let Some(expected) = &self.access.token {
                    let given = token.as_deref().unwrap_or("");
                    let matches: bool = given.as_bytes().ct_eq(expected.as_bytes()).into();
                    if token.is_none() || !matches {
                        // Logged without the token; the delay makes guessing slow.
                        tracing::warn!(
                            from = self.from,
                            token_given = token.is_some(),
                            "authentication failed"
                        );
                        tokio::time::sleep(AUTH_FAILURE_DELAY).await;
                        let why = if token.is_none() { "no token given" } else { "wrong token" };
                        return Err(Fatal::new(
                            ErrorCode::PermissionDenied,
                            format!("authentication failed: {why}"),
                        ));
                    }
                }
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

    async fn serve_requests<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<R>,
    ) -> Result<(), Fatal> {
        let mut going_down = self.hub.going_down.subscribe();
        let mut closing = self.hub.closing.subscribe();
        let mut notified = false;
        let max_frame = self.hub.config.max_frame;
        let mut serving = Serving::enter(Arc::clone(&self.hub));
        loop {
            tokio::select! {
                message = reader.next::<ClientMessage>(max_frame) => {
                    match message.map_err(|e| frame_fatal(e, "after the handshake"))? {
                        Some(message) => {
                            self.frame_span = reader.last_frame_span();
                            let name = message_name(&message);
                            self.dispatch(message).await?;
                            self.refuse_stray_fds(name).await;
                        }
                        None => return Ok(()),
                    }
                }
                () = became_true(&mut going_down), if !notified => {
                    notified = true;
                    self.send(&DaemonMessage::Notice {
                        kind: NoticeKind::ShuttingDown,
                        message: "the ferry daemon is going down; running jobs are being terminated".into(),
                    }).await;
                    serving.notified();
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
        let area = Arc::clone(&self.files);
        let sandboxes = std::mem::take(&mut self.sandboxes);
        if !sandboxes.is_empty() {
            let _ = tokio::task::spawn_blocking(move || {
                for sandbox in sandboxes {
                    if let Err(e) = area.remove_sandbox(&sandbox) {
                        tracing::warn!("cannot remove sandbox: {e}");
                    }
                }
            })
            .await;
        }
        for job in self.hangup_jobs.drain(..) {
            // Jobs that already ended answer an error: nothing to hang up.
            if self.hub.engine.signal(job, libc::SIGHUP).is_ok() {
                tracing::info!(peer = self.peer, job, "client left: sent SIGHUP to job");
            }
        }
    }

    /// Closes fds that came with frames that take none, and tells the client.
    async fn refuse_stray_fds(&self, frame_name: &str) {
        let Some(inbox) = &self.fd_inbox else { return };
        let stray = inbox.drop_unclaimable(self.frame_span.1);
        if stray > 0 {
            tracing::info!(
                peer = self.peer,
                stray,
                "closed fds sent with a frame that takes none"
            );
            self.send(&DaemonMessage::Error {
                request: None,
                code: ErrorCode::InvalidRequest,
                message: format!(
                    "{stray} file descriptor(s) came with a {frame_name} frame, which takes none; they were closed (only Run with pass_stdio takes fds)"
                ),
            })
            .await;
        }
    }

    /// The client's stdin, stdout and stderr, passed with the `Run` being dispatched.
    fn take_passed_stdio(&self) -> Result<PassedStdio, String> {
        let Some(inbox) = &self.fd_inbox else {
            return Err("file descriptors can be passed on a Unix socket only".into());
        };
        let fds = inbox.claim(self.frame_span);
        if fds.is_empty() {
            return Err("Run asked to pass stdio, but no file descriptors came with it".into());
        }
        match <[OwnedFd; 3]>::try_from(fds) {
            Ok([stdin, stdout, stderr]) => Ok(PassedStdio {
                stdin,
                stdout,
                stderr,
            }),
            Err(fds) => Err(format!(
                "passing stdio takes exactly 3 file descriptors (stdin, stdout, stderr), {} came; they were closed",
                fds.len()
            )),
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
            code: error.code(),
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
                sandbox,
                pass_stdio,
                session,
            } => {
                // Fds are claimed first, so that a refused Run does not leave them behind.
                let stdio = if pass_stdio {
                    match self.take_passed_stdio() {
                        Ok(stdio) => Some(stdio),
                        Err(message) => {
                            self.send_code(request, ErrorCode::InvalidRequest, message)
                                .await;
                            return Ok(());
                        }
                    }
                } else {
                    None
                };
                let timeout = timeout_ms.map(Duration::from_millis);
                let submitted = match session {
                    Some(session) => {
                        self.session_job(&session, &argv, stdio, stdin, timeout)
                            .await
                    }
                    None => {
                        self.plain_job(argv, cwd, env, sandbox, stdio, stdin, timeout)
                            .await
                    }
                };
                match submitted {
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
                    Err((code, message)) => self.send_code(request, code, message).await,
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
            ClientMessage::ListJobs {
                request,
                all: false,
            } => {
                let jobs = engine.list().iter().map(job_info).collect();
                self.send(&DaemonMessage::Jobs { request, jobs }).await;
            }
            ClientMessage::ListJobs { request, all: true } => {
                let listed = blocking(move || engine.history()).await.map(|jobs| {
                    let jobs = jobs.iter().map(job_info).collect();
                    DaemonMessage::Jobs { request, jobs }
                });
                self.answer(request, listed).await;
            }
            ClientMessage::Prune { request, .. } if !self.access.owner => {
                let message = "only the daemon's owner, on its Unix socket, may prune its history";
                self.send_code(request, ErrorCode::PermissionDenied, message.into())
                    .await;
            }
            ClientMessage::Prune {
                request,
                older_than_ms,
                keep,
            } => {
                let older_than = older_than_ms.map(Duration::from_millis);
                let keep = keep.map(|k| usize::try_from(k).unwrap_or(usize::MAX));
                let pruned = blocking(move || engine.prune(older_than, keep))
                    .await
                    .map(|pruned| {
                        tracing::info!(jobs = pruned.jobs, bytes = pruned.bytes, "history pruned");
                        DaemonMessage::Pruned {
                            request,
                            jobs: pruned.jobs,
                            bytes: pruned.bytes,
                        }
                    });
                self.answer(request, pruned).await;
            }
            ClientMessage::Signal {
                request,
                job,
                signal,
            } => match engine.signal(job, signal) {
                Ok(()) => self.send(&DaemonMessage::Done { request }).await,
                Err(e) => self.send_error(Some(request), e).await,
            },
            ClientMessage::Shutdown { request } if !self.access.owner => {
                // Only the owner (on the Unix socket) may stop the daemon.
                tracing::warn!(from = self.from, "refused a remote shutdown request");
                let message = "only the daemon's owner, on its Unix socket, may shut it down";
                self.send_code(request, ErrorCode::PermissionDenied, message.into())
                    .await;
            }
            ClientMessage::Shutdown { request } => {
                tracing::info!(peer = self.peer, "client asked for shutdown");
                self.send(&DaemonMessage::Done { request }).await;
                self.hub.shutdown_requested.notify_one();
            }
            ClientMessage::PutStart {
                request,
                path,
                size,
                mode,
            } => self.put_start(request, path.into_vec(), size, mode).await,
            ClientMessage::PutData { request, data } => self.put_data(request, data).await,
            ClientMessage::PutEnd { request, checksum } => self.put_end(request, checksum).await,
            ClientMessage::Get { request, path } => self.get(request, path.into_vec()),
            ClientMessage::Sandbox { request, keep } => self.sandbox(request, keep).await,
            ClientMessage::List { request, path } => self.list(request, path.into_vec()).await,
            request @ (ClientMessage::SessionNew { .. }
            | ClientMessage::SessionState { .. }
            | ClientMessage::SessionClose { .. }) => self.session_request(request).await,
        }
        Ok(())
    }

    /// Submits a plain command (not in a session), as this listener allows it.
    #[allow(clippy::too_many_arguments)]
    async fn plain_job(
        &self,
        argv: Vec<ByteBuf>,
        cwd: Option<ByteBuf>,
        env: Option<Vec<(ByteBuf, ByteBuf)>>,
        sandbox: Option<ByteBuf>,
        stdio: Option<PassedStdio>,
        stdin: bool,
        timeout: Option<Duration>,
    ) -> Result<(JobId, bool), Refusal> {
        let argv: Vec<OsString> = argv.into_iter().map(os_string).collect();
        let argv = self.allowed_command(argv).map_err(|message| {
            tracing::warn!(from = self.from, "refused a command: {message}");
            (ErrorCode::PermissionDenied, message)
        })?;
        let (cwd, env) = if self.access.owner {
            let cwd = cwd.map(|c| PathBuf::from(os_string(c)));
            let env = env.map(|env| {
                env.into_iter()
                    .map(|(k, v)| (os_string(k), os_string(v)))
                    .collect()
            });
            (cwd, env)
        } else {
            // A remote client's directory and environment mean nothing here, and an
            // environment could inject code (LD_PRELOAD): use the daemon's.
            (Some(self.access.files_dir.clone()), None)
        };
        let cwd = match sandbox {
            None => cwd,
            Some(sandbox) => Some(
                self.sandbox_dir(sandbox.into_vec())
                    .await
                    .map_err(|error| error.refusal())?,
            ),
        };
        let spec = ferry_engine::JobSpec {
            stdio,
            argv,
            cwd,
            env,
            stdin,
            timeout,
            origin: self.origin(),
        };
        self.hub.engine.submit(spec).map_err(|e| e.refusal())
    }

    /// Submits a command line to run in a session.
    async fn session_job(
        &self,
        session: &str,
        argv: &[ByteBuf],
        stdio: Option<PassedStdio>,
        stdin: bool,
        timeout: Option<Duration>,
    ) -> Result<(JobId, bool), Refusal> {
        self.sessions_allowed()?;
        let code = argv
            .iter()
            .map(|a| a.as_slice())
            .collect::<Vec<_>>()
            .join(&b' ');
        let hub = Arc::clone(&self.hub);
        let session = session.to_owned();
        let job = ferry_engine::JobSpec {
            stdio,
            stdin,
            timeout,
            origin: self.origin(),
            ..ferry_engine::JobSpec::default()
        };
        blocking(move || hub.sessions.submit(&hub.engine, &session, &code, job)).await
    }

    /// Who submits jobs on this connection, for their records.
    fn origin(&self) -> ferry_engine::JobOrigin {
        ferry_engine::JobOrigin {
            owner: self.from.clone(),
            dialect: "ferry".into(),
        }
    }

    /// Sessions run any shell code: only where any command may run.
    fn sessions_allowed(&self) -> Result<(), Refusal> {
        if self.access.any_command {
            Ok(())
        } else {
            Err((
                ErrorCode::PermissionDenied,
                "sessions run any shell code, and this listener runs catalog commands only (rule: commands = catalog)".into(),
            ))
        }
    }

    async fn session_request(&self, request: ClientMessage) {
        let hub = Arc::clone(&self.hub);
        let (id, answer) = match request {
            ClientMessage::SessionNew { request, cwd } => {
                let cwd = match (self.access.owner, cwd) {
                    (true, Some(cwd)) => PathBuf::from(os_string(cwd)),
                    (true, None) => std::env::current_dir().unwrap_or_else(|_| "/".into()),
                    (false, _) => self.access.files_dir.clone(),
                };
                let made = match self.sessions_allowed() {
                    Ok(()) => blocking(move || hub.sessions.create(&cwd)).await,
                    Err(refused) => Err(refused),
                };
                let ready = made.map(|session| DaemonMessage::SessionReady { request, session });
                (request, ready)
            }
            ClientMessage::SessionState { request, session } => {
                let state = blocking(move || hub.sessions.state(&hub.engine, &session)).await;
                let info = state.map(|state| DaemonMessage::SessionInfo {
                    request,
                    cwd: ByteBuf::from(state.cwd),
                    status: state.status,
                    changed: state.changed.into_iter().map(ByteBuf::from).collect(),
                    unset: state.unset.into_iter().map(ByteBuf::from).collect(),
                });
                (request, info)
            }
            ClientMessage::SessionClose { request, session } => {
                let removed = blocking(move || hub.sessions.remove(&session)).await;
                (request, removed.map(|()| DaemonMessage::Done { request }))
            }
            _ => return,
        };
        self.answer(id, answer).await;
    }

    /// Sends a request's answer, or its error.
    async fn answer(&self, request: u64, answer: Result<DaemonMessage, Refusal>) {
        match answer {
            Ok(message) => self.send(&message).await,
            Err((code, message)) => self.send_code(request, code, message).await,
        }
    }

    async fn send_code(&self, request: u64, code: ErrorCode, message: String) {
        self.send(&DaemonMessage::Error {
            request: Some(request),
            code,
            message,
        })
        .await;
    }

    /// The argv to run for a client's argv, as this listener allows it: unchanged where any
    /// command may run, otherwise resolved through the daemon's catalog.
    fn allowed_command(&self, argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
        if self.access.any_command {
            return Ok(argv);
        }
        let Some(name) = argv.first() else {
            return Ok(argv); // the engine answers an empty command
        };
        self.hub.catalog.resolve(name, &argv[1..]).ok_or_else(|| {
            format!(
                "'{}' is not in this daemon's command catalog, and this listener runs catalog commands only (rule: commands = catalog; the daemon's --allow-any-command lifts it)",
                name.to_string_lossy()
            )
        })
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
                    Ok(Some(OutputEvent::StoreFailed(error))) => {
                        let warning = DaemonMessage::Error {
                            request: None,
                            code: ErrorCode::Internal,
                            message: format!(
                                "job {job}: its output can no longer be stored ({error}); it still arrives here, but its log will lack it"
                            ),
                        };
                        if let Ok(bytes) = frame(&warning) {
                            if out.send(Outgoing::Frame(bytes)).await.is_err() {
                                break;
                            }
                        }
                        continue;
                    }
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

/// Counts a connection as serving while it lives, and whether it has queued the going-down
/// notice (the daemon waits for every serving connection's notice before ending jobs).
struct Serving {
    hub: Arc<Hub>,
    notified: bool,
}

impl Serving {
    fn enter(hub: Arc<Hub>) -> Serving {
        hub.serving.fetch_add(1, Ordering::SeqCst);
        Serving {
            hub,
            notified: false,
        }
    }

    fn notified(&mut self) {
        if !self.notified {
            self.notified = true;
            self.hub.notified.fetch_add(1, Ordering::SeqCst);
            self.hub.notice_queued.notify_waiters();
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.hub.serving.fetch_sub(1, Ordering::SeqCst);
        if self.notified {
            self.hub.notified.fetch_sub(1, Ordering::SeqCst);
        }
        // A connection that leaves no longer needs a notice.
        self.hub.notice_queued.notify_waiters();
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
        FrameError::Decode(WireError::FrameTooLarge { len, max }) => Fatal::new(
            ErrorCode::FrameTooLarge,
            format!("frame of {len} bytes {when} is over the limit of {max} bytes"),
        ),
        FrameError::Decode(e) => Fatal::new(ErrorCode::BadFrame, format!("{e} ({when})")),
        FrameError::Truncated(n) => Fatal::new(
            ErrorCode::BadFrame,
            format!("connection closed in the middle of a frame ({n} bytes)"),
        ),
        // Fds lost to a truncated control message: the stream is not to be trusted.
        FrameError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Fatal::new(ErrorCode::BadFrame, format!("{e} ({when})"))
        }
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
        ClientMessage::PutStart { .. } => "PutStart",
        ClientMessage::PutData { .. } => "PutData",
        ClientMessage::PutEnd { .. } => "PutEnd",
        ClientMessage::Get { .. } => "Get",
        ClientMessage::Sandbox { .. } => "Sandbox",
        ClientMessage::List { .. } => "List",
        ClientMessage::Prune { .. } => "Prune",
        ClientMessage::SessionNew { .. } => "SessionNew",
        ClientMessage::SessionState { .. } => "SessionState",
        ClientMessage::SessionClose { .. } => "SessionClose",
    }
}

/// A request's error answer: its code and its message.
type Refusal = (ErrorCode, String);

/// An error of the layers below that answers a request.
trait Answer: std::fmt::Display {
    /// Its machine-readable kind on the wire.
    fn code(&self) -> ErrorCode;

    /// Its answer.
    fn refusal(&self) -> Refusal {
        (self.code(), self.to_string())
    }
}

impl Answer for EngineError {
    fn code(&self) -> ErrorCode {
        match self {
            EngineError::UnknownJob(_) => ErrorCode::UnknownJob,
            EngineError::Invalid(_) => ErrorCode::InvalidRequest,
            EngineError::Limit(_) => ErrorCode::LimitReached,
            EngineError::ShuttingDown => ErrorCode::ShuttingDown,
            EngineError::Io { .. } | EngineError::Store(_) => ErrorCode::Internal,
        }
    }
}

impl Answer for SessionError {
    fn code(&self) -> ErrorCode {
        match self {
            SessionError::NotFound(_) | SessionError::Invalid(_) => ErrorCode::InvalidRequest,
            SessionError::Busy { .. } => ErrorCode::LimitReached,
            SessionError::Io { .. } => ErrorCode::Internal,
            SessionError::Engine(e) => e.code(),
        }
    }
}

impl Answer for FileError {
    fn code(&self) -> ErrorCode {
        match self {
            FileError::Io { .. } => ErrorCode::Internal,
            _ => ErrorCode::InvalidRequest,
        }
    }
}

/// Runs blocking work of the layers below (the history store, sessions' files) off the
/// async threads; its error as an answer.
async fn blocking<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, Refusal>
where
    T: Send + 'static,
    E: Answer + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?
        .map_err(|e| e.refusal())
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
        wall_us: report.wall_us(),
        timed_out: report.timed_out,
        error: report.error.clone(),
        killed: report.killed,
        lost: report.lost,
    }
}

fn job_info(snapshot: &JobSnapshot) -> JobInfo {
    let (state, exit) = match &snapshot.phase {
        JobPhase::Queued => (JobState::Queued, None),
        JobPhase::Running { .. } => (JobState::Running, None),
        JobPhase::Finished(report) if report.lost => (JobState::Lost, Some(job_exit(report))),
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
