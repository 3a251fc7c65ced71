//! The native `ferry` dialect adapter: the handshake, then each [`ClientMessage`] mapped to
//! engine calls, job output and events streamed back as [`DaemonMessage`]s.
//!
//! Each connection has a reader (this task), a writer task fed by a bounded channel of encoded
//! frames, and one task per followed job (or file being sent) that works at the client's pace.
//! The requests are served by family: [`jobs`] (run, stdin, attach, list, signal), [`files`]
//! (put, get, sandboxes), [`sessions`], [`peers`] (list, kick) and [`admin`] (shutdown, prune).

mod admin;
mod files;
mod jobs;
mod peers;
mod sessions;

use std::future::Future;
use std::io::IoSlice;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_engine::files::FileArea;
use ferry_engine::peers::{Kick, PeerEvent};
use ferry_io::fdpass::FdInbox;
use ferry_io::{frame, FrameError, FrameReader};
use ferry_wire::native::{
    ClientMessage, DaemonMessage, ErrorCode, JobId, NoticeKind, WireError, HANDSHAKE_MAX_FRAME,
    PROTOCOL_VERSION,
};
use std::collections::{HashMap, HashSet};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::conn::{became_true, BoxRead, BoxWrite, Conn, Limits, Peer};
use crate::policy::{Access, Refusal, RefusalKind};
use crate::server::Server;
use files::UploadPipe;

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
    "peers",
    "hub",
    "cost",
    "link",
];

/// Serves one admitted connection (the listener table's entry point).
pub(crate) fn serve(conn: Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(Connection::serve(conn))
}

/// A refusal of a connection that will not be served: one `Error` frame.
pub(crate) fn refusal(kind: RefusalKind, message: &str) -> Vec<u8> {
    frame(&DaemonMessage::Error {
        request: None,
        code: error_code(kind),
        message: message.into(),
    })
    .unwrap_or_default()
}

/// The wire code of a refusal.
fn error_code(kind: RefusalKind) -> ErrorCode {
    match kind {
        RefusalKind::PermissionDenied => ErrorCode::PermissionDenied,
        RefusalKind::InvalidRequest => ErrorCode::InvalidRequest,
        RefusalKind::UnknownJob => ErrorCode::UnknownJob,
        RefusalKind::LimitReached => ErrorCode::LimitReached,
        RefusalKind::ShuttingDown => ErrorCode::ShuttingDown,
        RefusalKind::Internal => ErrorCode::Internal,
    }
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
    /// An output frame: its encoded head, then the data from where it already lies (boxed,
    /// so that every queue slot stays small: an idle connection's queues cost little).
    Output(Box<(Vec<u8>, Bytes)>),
    /// A whole frame shared with other connections (a broadcast message).
    Shared(Bytes),
}

/// Frames written together at most, and about how many bytes.
const BATCH_ITEMS: usize = 64;
const BATCH_BYTES: usize = 256 * 1024;

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Frame(bytes) => bytes.len(),
            Outgoing::Output(output) => output.0.len() + output.1.len(),
            Outgoing::Shared(bytes) => bytes.len(),
        }
    }
}

/// Writes a batch of frames with as few system calls as the socket allows (one vectored
/// write when it takes them all).
async fn write_batch(
    writer: &mut (impl AsyncWrite + Unpin),
    batch: &[Outgoing],
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(batch.len() * 2);
    for item in batch {
        match item {
            Outgoing::Frame(bytes) => slices.push(IoSlice::new(bytes)),
            Outgoing::Output(output) => {
                slices.push(IoSlice::new(&output.0));
                slices.push(IoSlice::new(&output.1));
            }
            Outgoing::Shared(bytes) => slices.push(IoSlice::new(bytes)),
        }
    }
    slices.retain(|s| !s.is_empty());
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = writer.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Drains the outbox into the socket until every sender is gone: what waits is written
/// together, so a burst of small frames (a hub's messages) costs few system calls.
async fn write_outbox(mut write_half: BoxWrite, mut outbox: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::new();
    while let Some(first) = outbox.recv().await {
        let mut bytes = first.len();
        batch.push(first);
        while batch.len() < BATCH_ITEMS && bytes < BATCH_BYTES {
            match outbox.try_recv() {
                Ok(item) => {
                    bytes += item.len();
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let written = write_batch(&mut write_half, &batch).await;
        batch.clear();
        if written.is_err() {
            break;
        }
        // A TLS stream holds written bytes until flushed: flush whenever nothing else is
        // waiting to be written.
        if outbox.is_empty() && write_half.flush().await.is_err() {
            break;
        }
    }
    let _ = write_half.shutdown().await;
}

struct Connection {
    server: Arc<Server>,
    peer: Peer,
    access: Access,
    /// This client's file area.
    files: Arc<FileArea>,
    out: mpsc::Sender<Outgoing>,
    /// Tasks that stream to this client at its pace: followed jobs, files being sent.
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
    /// Once it joined the hub: when the client was last heard from (for pings).
    hub: Option<Instant>,
    /// Its kick flag (a new one when it resumes a held place).
    kick: Kick,
    /// The last ping's nonce.
    pings: u64,
}

impl Connection {
    async fn serve(conn: Conn) {
        let (out, outbox) = mpsc::channel::<Outgoing>(OUTBOX_FRAMES);
        let writer = tokio::spawn(write_outbox(conn.write, outbox));
        let server = conn.server;
        // The principal's own part of the file area is opened once the handshake says who it is.
        let files = Arc::clone(&server.files);
        let mut connection = Connection {
            server,
            access: conn.access,
            files,
            out,
            followers: JoinSet::new(),
            hangup_jobs: Vec::new(),
            uploads: HashMap::new(),
            failed_uploads: HashSet::new(),
            sandboxes: Vec::new(),
            fd_inbox: conn.fds,
            frame_span: (0, 0),
            hub: None,
            kick: conn.peer.handle.kick(),
            pings: 0,
            peer: conn.peer,
        };
        // A connection that may carry fds is read one message at a time (see FdInbox).
        let mut reader: FrameReader<BoxRead> = if connection.fd_inbox.is_some() {
            FrameReader::bounded(conn.read)
        } else {
            FrameReader::new(conn.read)
        };
        let outcome = match connection.handshake(&mut reader, conn.limits).await {
            Ok(true) => match connection.open_files_area().await {
                Ok(()) => connection.serve_requests(&mut reader).await,
                Err(fatal) => Err(fatal),
            },
            Ok(false) => Ok(()),
            Err(fatal) => Err(fatal),
        };
        if let Err(fatal) = outcome {
            tracing::info!(
                peer = connection.peer.id(),
                "closing connection: {}",
                fatal.message
            );
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
        // A client that does not read cannot keep its writer (and its socket) forever.
        let stop_writer = writer.abort_handle();
        if tokio::time::timeout(FLUSH_TIMEOUT, writer).await.is_err() {
            stop_writer.abort();
        }
    }

    /// Reads the `Hello`; `Ok(false)` when the client left before sending one.
    /// The handshake time limit counts from the accept (a TLS handshake spent part of it).
    async fn handshake<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<R>,
        limits: Limits,
    ) -> Result<bool, Fatal> {
        let first =
            tokio::time::timeout_at(limits.handshake_deadline, reader.next(HANDSHAKE_MAX_FRAME))
                .await
                .map_err(|_| {
                    Fatal::new(
                        ErrorCode::BadHandshake,
                        format!("no Hello within {} ms", limits.handshake.as_millis()),
                    )
                })?
                .map_err(|e| frame_fatal(e, "before the handshake"))?;
        match first {
            None => Ok(false),
            Some(ClientMessage::Hello { version, token, .. }) if version == PROTOCOL_VERSION => {
                if self.access.principal.is_none() {
                    self.authenticate(token.as_deref()).await?;
                }
                self.send(&DaemonMessage::Welcome {
                    version: PROTOCOL_VERSION,
                    peer: self.peer.id().to_owned(),
                    daemon: format!("ferry {}", env!("CARGO_PKG_VERSION")),
                    capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
                    max_frame: self.server.config.max_frame as u64,
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
                    other.name()
                ),
            )),
        }
    }

    /// Learns the principal from the token the `Hello` showed (see
    /// `Access::token_principal`).
    async fn authenticate(&mut self, token: Option<&str>) -> Result<(), Fatal> {
        let Some(principal) = self.access.token_principal(token) else {
            // Logged without the token; the delay makes guessing slow.
            tracing::warn!(
                from = self.peer.address,
                token_given = token.is_some(),
                "authentication failed"
            );
            tokio::time::sleep(AUTH_FAILURE_DELAY).await;
            let why = if token.is_none() {
                "no token given"
            } else {
                "wrong token"
            };
            return Err(Fatal::new(
                ErrorCode::PermissionDenied,
                format!("authentication failed: {why}"),
            ));
        };
        tracing::info!(peer = self.peer.id(), %principal, "authenticated by token");
        self.peer.authenticated(&principal).map_err(|refusal| {
            tracing::warn!(peer = self.peer.id(), "refused: {}", refusal.message);
            Fatal::new(error_code(refusal.kind), refusal.message)
        })?;
        self.access.principal = Some(principal);
        Ok(())
    }

    /// Opens the principal's part of the file area (the owner works in all of it).
    async fn open_files_area(&mut self) -> Result<(), Fatal> {
        if self.access.is_owner() {
            return Ok(());
        }
        let dir = self.access.files_dir();
        match tokio::task::spawn_blocking(move || FileArea::open(&dir)).await {
            Ok(Ok(area)) => {
                self.files = Arc::new(area);
                Ok(())
            }
            Ok(Err(e)) => Err(Fatal::new(
                ErrorCode::Internal,
                format!("cannot open your file area: {e}"),
            )),
            Err(e) => Err(Fatal::new(ErrorCode::Internal, e.to_string())),
        }
    }

    async fn serve_requests<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<R>,
    ) -> Result<(), Fatal> {
        let mut closing = self.server.closing.subscribe();
        let max_frame = self.server.config.max_frame;
        let ping_every = self.server.engine.peers().config().ping_interval;
        let mut pings =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        loop {
            let kick = self.kick.clone();
            let (out, handle) = (&self.out, &mut self.peer.handle);
            // An event is taken from the hub's outbox only once there is room to frame it: a
            // client that does not read leaves its events there, where the slow-consumer
            // policy sees them; and room coming back wakes this loop.
            let hub_event = async move {
                let _room = out.reserve().await.ok()?;
                handle.next_event().await
            };
            tokio::select! {
                message = reader.next::<ClientMessage>(max_frame) => {
                    match message.map_err(|e| frame_fatal(e, "after the handshake"))? {
                        Some(message) => {
                            self.frame_span = reader.last_frame_span();
                            if self.hub.is_some() {
                                self.hub = Some(Instant::now());
                            }
                            let name = message.name();
                            self.dispatch(message).await?;
                            self.refuse_stray_fds(name).await;
                        }
                        None => return Ok(()),
                    }
                }
                Some(event) = hub_event => self.push_event(event).await,
                reason = kick.kicked() => {
                    // Told if there is room; a client that does not read is not waited for.
                    self.send_if_room(&DaemonMessage::Notice {
                        kind: NoticeKind::Kicked,
                        message: format!("disconnected {reason}; your jobs go on"),
                    });
                    return Ok(());
                }
                _ = pings.tick(), if self.hub.is_some() => {
                    if !self.ping().await {
                        return Ok(());
                    }
                }
                () = became_true(&mut closing) => return Ok(()),
                Some(_) = self.followers.join_next(), if !self.followers.is_empty() => {}
            }
        }
    }

    /// Turns an event of the peer's outbox into frames (with the events waiting behind it,
    /// so that a burst of messages goes out in few writes).
    async fn push_event(&mut self, event: PeerEvent) {
        let mut next = Some(event);
        let mut batch = 0;
        while let Some(event) = next.take() {
            match event {
                PeerEvent::ShuttingDown => {
                    self.send(&DaemonMessage::Notice {
                        kind: NoticeKind::ShuttingDown,
                        message:
                            "the ferry daemon is going down; running jobs are being terminated"
                                .into(),
                    })
                    .await;
                    self.peer.handle.shutdown_told();
                }
                PeerEvent::Message(message) => self.push_message(&message).await,
                PeerEvent::Presence(presence) => self.push_presence(&presence).await,
            }
            batch += 1;
            if batch < OUTBOX_FRAMES && self.out.capacity() > 0 {
                next = self.peer.handle.try_next_event();
            }
        }
    }

    /// Pings a silent member, or gives up on it; whether the connection goes on.
    async fn ping(&mut self) -> bool {
        let Some(heard) = self.hub else { return true };
        let config = self.server.engine.peers().config();
        let silent = heard.elapsed();
        if silent >= config.silence_limit() {
            let reason = format!(
                "no answer to {} pings in {:.1}s",
                config.ping_misses,
                silent.as_secs_f32()
            );
            tracing::info!(target: "ferry::presence", peer = self.peer.id(), "removed: {reason}");
            self.peer.handle.missed_pings(&reason);
            self.send_if_room(&DaemonMessage::Notice {
                kind: NoticeKind::Kicked,
                message: format!("disconnected: {reason}"),
            });
            return false;
        }
        if silent >= config.ping_interval {
            self.pings += 1;
            self.send_if_room(&DaemonMessage::Ping { nonce: self.pings });
        }
        true
    }

    /// Queues a message if the outbox has room: for what a client that does not read need
    /// not get (a ping, a last notice).
    fn send_if_room(&self, message: &DaemonMessage) {
        if let Ok(bytes) = frame(message) {
            let _ = self.out.try_send(Outgoing::Frame(bytes));
        }
    }

    async fn dispatch(&mut self, message: ClientMessage) -> Result<(), Fatal> {
        match message {
            ClientMessage::Hello { .. } => {
                return Err(Fatal::new(
                    ErrorCode::BadHandshake,
                    "Hello sent twice on one connection",
                ))
            }
            request @ (ClientMessage::Run { .. }
            | ClientMessage::Stdin { .. }
            | ClientMessage::CloseStdin { .. }
            | ClientMessage::Attach { .. }
            | ClientMessage::ListJobs { .. }
            | ClientMessage::Signal { .. }) => self.job_request(request).await,
            request @ (ClientMessage::PutStart { .. }
            | ClientMessage::PutData { .. }
            | ClientMessage::PutEnd { .. }
            | ClientMessage::Get { .. }
            | ClientMessage::Sandbox { .. }
            | ClientMessage::List { .. }
            | ClientMessage::Link { .. }) => self.file_request(request).await,
            request @ (ClientMessage::SessionNew { .. }
            | ClientMessage::SessionState { .. }
            | ClientMessage::SessionClose { .. }) => self.session_request(request).await,
            request @ (ClientMessage::ListPeers { .. }
            | ClientMessage::KickPeers { .. }
            | ClientMessage::Join { .. }
            | ClientMessage::Say { .. }
            | ClientMessage::Members { .. }
            | ClientMessage::Leave { .. }) => self.peer_request(request).await,
            // Hearing from the client is all a pong is for.
            ClientMessage::Pong { .. } => {}
            request @ (ClientMessage::Shutdown { .. }
            | ClientMessage::Prune { .. }
            | ClientMessage::Cost { .. }) => self.admin_request(request).await,
        }
        Ok(())
    }

    /// Ends the connection: on a daemon shutdown, lets job readers deliver their last frames;
    /// on a client's departure (or a kick), stops them and hangs up the jobs that asked for it.
    async fn close(&mut self) {
        let daemon_closing = *self.server.closing.borrow();
        if daemon_closing {
            let followers = &mut self.followers;
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, async {
                while followers.join_next().await.is_some() {}
            })
            .await;
        }
        self.followers.abort_all();
        self.remove_sandboxes().await;
        for job in self.hangup_jobs.drain(..) {
            // Jobs that already ended answer an error: nothing to hang up.
            if self.server.engine.signal(job, libc::SIGHUP).is_ok() {
                tracing::info!(
                    peer = self.peer.id(),
                    job,
                    "client left: sent SIGHUP to job"
                );
            }
        }
    }

    /// Closes fds that came with frames that take none, and tells the client.
    async fn refuse_stray_fds(&self, frame_name: &str) {
        let Some(inbox) = &self.fd_inbox else { return };
        let stray = inbox.drop_unclaimable(self.frame_span.1);
        if stray > 0 {
            tracing::info!(
                peer = self.peer.id(),
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

    async fn send(&self, message: &DaemonMessage) {
        match frame(message) {
            Ok(bytes) => {
                // A closed outbox means the client is gone; the reader notices on its own.
                let _ = self.out.send(Outgoing::Frame(bytes)).await;
            }
            Err(e) => tracing::error!("cannot encode a message: {e}"),
        }
    }

    /// Sends a request's refusal.
    async fn refuse(&self, request: Option<u64>, refusal: Refusal) {
        self.send(&DaemonMessage::Error {
            request,
            code: error_code(refusal.kind),
            message: refusal.message,
        })
        .await;
    }

    /// Sends a request's answer, or its refusal.
    async fn answer(&self, request: u64, answer: Result<DaemonMessage, Refusal>) {
        match answer {
            Ok(message) => self.send(&message).await,
            Err(refusal) => self.refuse(Some(request), refusal).await,
        }
    }
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
