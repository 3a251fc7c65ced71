//! The native `ferry` dialect adapter: the handshake, then each [`ClientMessage`] mapped to
//! engine calls, job output and events streamed back as [`DaemonMessage`]s.
//!
//! Each connection is served by this task over its one reader (which keeps the connection
//! layer's promises: the handshake's time limit, fds per frame, the kick, the going-down
//! notice, health checks for hub members), writes to its outbox, and has one task per
//! followed job (or file being sent) that works at the client's pace.
//! The requests are served by family: [`jobs`] (run, stdin, attach, list, signal), [`files`]
//! (put, get, sandboxes), [`sessions`], [`peers`] (list, kick) and [`admin`] (shutdown, prune).

mod admin;
mod files;
mod jobs;
mod manage;
mod peers;
mod sessions;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::files::FileArea;
use ferry_engine::peers::PeerEvent;
use ferry_io::{frame, FrameError, ReadError};
use ferry_wire::native::{
    ClientMessage, DaemonMessage, ErrorCode, JobId, NativeDecoder, NoticeKind, WireError,
    HANDSHAKE_MAX_FRAME, PROTOCOL_VERSION,
};
use tokio::task::JoinSet;

use crate::conn::Conn;
use crate::outbox::{Outbox, OUTBOX_ITEMS};
use crate::policy::{Access, Refusal, RefusalKind};
use crate::reader::{Next, Notice, Reader, Voice, GOING_DOWN};
use crate::spec::TransportKind;
use crate::state::Daemon;
use files::UploadPipe;

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

/// What the connection layer says in the native protocol: `Error` frames (with the code of
/// each refusal), `Notice`s for the daemon going down and a disconnection, `Ping`s.
struct NativeVoice {
    /// The handshake is done (errors say whether they came before it or after).
    handshaken: bool,
}

impl Voice<WireError> for NativeVoice {
    fn refused(&self, kind: RefusalKind, message: &str) -> Option<Vec<u8>> {
        Some(refusal(kind, message))
    }

    fn malformed(&self, fault: &ReadError<WireError>) -> Option<Vec<u8>> {
        let when = if self.handshaken {
            "after the handshake"
        } else {
            "before the handshake"
        };
        let fatal = frame_fatal(fault, when);
        frame(&DaemonMessage::Error {
            request: None,
            code: fatal.code,
            message: fatal.message,
        })
        .ok()
    }

    fn timed_out(&self, limit: Duration, first: bool) -> Option<Vec<u8>> {
        let (code, message) = if first {
            (
                ErrorCode::BadHandshake,
                format!("no Hello within {} ms", limit.as_millis()),
            )
        } else {
            (
                ErrorCode::InvalidRequest,
                format!("no whole request within {} ms", limit.as_millis()),
            )
        };
        frame(&DaemonMessage::Error {
            request: None,
            code,
            message,
        })
        .ok()
    }

    fn going_down(&self) -> Notice {
        let notice = DaemonMessage::Notice {
            kind: NoticeKind::ShuttingDown,
            message: GOING_DOWN.into(),
        };
        Notice {
            words: frame(&notice).ok(),
            closes: false,
        }
    }

    fn disconnected(&self, message: &str) -> Option<Vec<u8>> {
        frame(&DaemonMessage::Notice {
            kind: NoticeKind::Kicked,
            message: message.into(),
        })
        .ok()
    }

    fn ping(&self, nonce: u64) -> Option<Vec<u8>> {
        frame(&DaemonMessage::Ping { nonce }).ok()
    }
}

/// The reader of a native connection.
type NativeReader = Reader<NativeDecoder<ClientMessage>, NativeVoice>;

struct Connection {
    server: Arc<Daemon>,
    /// Its one reader (and its place in the daemon).
    reader: NativeReader,
    access: Access,
    /// Where the peer connects from.
    address: String,
    /// This client's file area.
    files: Arc<FileArea>,
    out: Outbox,
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
    /// It came by a Unix socket (where fds can be passed).
    on_unix: bool,
    /// The fds that came with the request being dispatched (taken by the request that uses
    /// them; any left are closed, and the client told).
    fds: Vec<OwnedFd>,
    /// It joined the hub.
    member: bool,
    /// What it can be sent as a member (its contract's).
    hub_accepts: ferry_engine::peers::hub::Accepts,
}

impl Connection {
    async fn serve(mut conn: Conn) {
        let decoder = NativeDecoder::new(HANDSHAKE_MAX_FRAME);
        let voice = NativeVoice { handshaken: false };
        let Some((reader, out)) = Reader::new(&mut conn, decoder, voice) else {
            return;
        };
        let server = conn.daemon;
        // The principal's own part of the file area is opened once the handshake says who it is.
        let files = Arc::clone(&server.files);
        let mut connection = Connection {
            server,
            reader,
            access: conn.access,
            address: conn.ends.remote,
            files,
            out,
            followers: JoinSet::new(),
            hangup_jobs: Vec::new(),
            uploads: HashMap::new(),
            failed_uploads: HashSet::new(),
            sandboxes: Vec::new(),
            on_unix: conn.transport == TransportKind::Unix,
            fds: Vec::new(),
            member: false,
            hub_accepts: conn.contract.hub_accepts,
        };
        let outcome = match connection.handshake().await {
            Ok(true) => match connection.open_files_area().await {
                Ok(()) => {
                    connection.serve_requests().await;
                    Ok(())
                }
                Err(fatal) => Err(fatal),
            },
            Ok(false) => Ok(()),
            Err(fatal) => Err(fatal),
        };
        if let Err(fatal) = outcome {
            tracing::info!(
                peer = connection.peer_id(),
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
    }

    /// The peer's id.
    fn peer_id(&self) -> &str {
        self.reader.peer().id()
    }

    /// Reads the `Hello`; `Ok(false)` when the client left before sending one (or was told
    /// why it is closed: a time limit, a bad frame).
    async fn handshake(&mut self) -> Result<bool, Fatal> {
        let first = match self.reader.next(true).await {
            Some(Next::Request(message, fds)) => {
                self.fds = fds;
                message
            }
            Some(Next::Event(_)) | None => return Ok(false),
        };
        match first {
            ClientMessage::Hello { version, token, .. } if version == PROTOCOL_VERSION => {
                if self.access.principal.is_none() {
                    self.authenticate(token.as_deref()).await?;
                }
                self.reader.voice().handshaken = true;
                self.reader.decoder().max = self.server.config.max_frame;
                self.send(&DaemonMessage::Welcome {
                    version: PROTOCOL_VERSION,
                    peer: self.peer_id().to_owned(),
                    daemon: format!("ferry {}", env!("CARGO_PKG_VERSION")),
                    capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
                    max_frame: self.server.config.max_frame as u64,
                    notice: self
                        .access
                        .is_owner()
                        .then(|| self.server.engine.take_start_notice())
                        .flatten(),
                })
                .await;
                Ok(true)
            }
            ClientMessage::Hello { version, .. } => Err(Fatal::new(
                ErrorCode::VersionMismatch,
                format!(
                    "client speaks protocol version {version}, this daemon (ferry {}, pid {}) speaks {PROTOCOL_VERSION}: use the ferry of the daemon's version, or stop this daemon (`kill {}`) and let your ferry start its own",
                    env!("CARGO_PKG_VERSION"),
                    std::process::id(),
                    std::process::id()
                ),
            )),
            other => Err(Fatal::new(
                ErrorCode::BadHandshake,
                format!("the first message must be Hello, not {}", other.name()),
            )),
        }
    }

    /// Learns the principal from the token the `Hello` showed (see
    /// `Access::token_principal`).
    async fn authenticate(&mut self, token: Option<&str>) -> Result<(), Fatal> {
        let Some(principal) = self.access.token_principal(token) else {
            // Logged without the token; the delay makes guessing slow.
            tracing::warn!(
                from = self.address,
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
        tracing::info!(peer = self.peer_id(), %principal, "authenticated by token");
        self.reader
            .peer_mut()
            .authenticated(&principal)
            .map_err(|refusal| {
                tracing::warn!("refused: {}", refusal.message);
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

    /// Serves requests and hub events until the connection is over.
    async fn serve_requests(&mut self) {
        loop {
            let upload_limit = self.server.config.upload_idle_timeout;
            let next = tokio::select! {
                next = self.reader.next(true) => next,
                Some(_) = self.followers.join_next(), if !self.followers.is_empty() => continue,
                request = files::stalled(&self.uploads, upload_limit) => {
                    self.drop_stalled(request).await;
                    continue;
                }
            };
            match next {
                None => return,
                Some(Next::Request(message, fds)) => {
                    self.fds = fds;
                    let name = message.name();
                    if let Err(fatal) = self.dispatch(message).await {
                        tracing::info!(
                            peer = self.peer_id(),
                            "closing connection: {}",
                            fatal.message
                        );
                        self.send(&DaemonMessage::Error {
                            request: None,
                            code: fatal.code,
                            message: fatal.message,
                        })
                        .await;
                        return;
                    }
                    self.refuse_stray_fds(name).await;
                }
                Some(Next::Event(event)) => self.push_event(event).await,
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
                PeerEvent::Message(message) => self.push_message(&message).await,
                PeerEvent::Presence(presence) => self.push_presence(&presence).await,
                PeerEvent::Missed(missed) => self.push_missed(&missed).await,
                // Said by the reader.
                PeerEvent::ShuttingDown => {}
            }
            batch += 1;
            if batch < OUTBOX_ITEMS && self.out.capacity() > 0 {
                next = self.reader.peer_mut().handle.try_next_event();
            }
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
            | ClientMessage::Resize { .. }
            | ClientMessage::Attach { .. }
            | ClientMessage::ListJobs { .. }
            | ClientMessage::Signal { .. }) => self.job_request(request).await,
            request @ (ClientMessage::PutStart { .. }
            | ClientMessage::PutData { .. }
            | ClientMessage::PutEnd { .. }
            | ClientMessage::Get { .. }
            | ClientMessage::Sandbox { .. }
            | ClientMessage::List { .. }
            | ClientMessage::Link { .. }
            | ClientMessage::Remove { .. }) => self.file_request(request).await,
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
            request @ (ClientMessage::Restart { .. }
            | ClientMessage::Pause { .. }
            | ClientMessage::Resume { .. }
            | ClientMessage::Show { .. }
            | ClientMessage::Group { .. }
            | ClientMessage::ListGroups { .. }) => self.manage_request(request).await,
            request @ (ClientMessage::Shutdown { .. }
            | ClientMessage::Web { .. }
            | ClientMessage::Prune { .. }
            | ClientMessage::Cost { .. }) => self.admin_request(request).await,
        }
        Ok(())
    }

    /// Ends the connection: on a daemon shutdown, lets job readers deliver their last frames;
    /// on a client's departure (or a kick), stops them and hangs up the jobs that asked for it.
    async fn close(&mut self) {
        super::finish_followers(&self.server, &mut self.followers).await;
        self.remove_sandboxes().await;
        let peer = self.peer_id().to_owned();
        for job in std::mem::take(&mut self.hangup_jobs) {
            // Jobs that already ended answer an error: nothing to hang up.
            if self.server.engine.signal(job, libc::SIGHUP).is_ok() {
                tracing::info!(peer, job, "client left: sent SIGHUP to job");
            }
        }
    }

    /// Closes fds that came with frames that take none, and tells the client.
    async fn refuse_stray_fds(&mut self, frame_name: &str) {
        let stray = std::mem::take(&mut self.fds).len();
        if stray > 0 {
            tracing::info!(
                peer = self.peer_id(),
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
                self.out.send(bytes).await;
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

fn frame_fatal(error: &FrameError, when: &str) -> Fatal {
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
