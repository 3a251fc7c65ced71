//! Async client library for ferry's native protocol.
//!
//! [`Client::open`] connects to an [`Endpoint`] (a Unix socket, or TCP with or without TLS),
//! performs the handshake and, if asked, submits a job in the same write; [`open_or_start`]
//! also starts a local daemon when none is listening. A client then makes typed calls (see
//! `calls` and `transfer`: run, attach, jobs, signal, put, get, sessions, peers, prune,
//! shutdown) that own their request ids and wait for their answers; whatever else arrives
//! meanwhile (job output, exits, notices) waits in the client's queue of [`Event`]s, read with
//! [`Client::next_event`]. A [`Sender`] (cloneable, usable from other tasks and threads)
//! forwards stdin and signals while the client reads.

mod calls;
mod manage;
pub mod tls;
mod transfer;

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_io::fdpass::send_all_with_fds;
use ferry_io::private::{check_peer_is_me, check_private_dir, ensure_private_dir, socket_dir};
use ferry_io::{FrameError, FrameReader};
use ferry_wire::native::{ClientMessage, DaemonMessage, JobId, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;

pub use calls::{Cost, Joined, Listing, Pruned, RunRequest, Said, Started};
pub use ferry_common::SessionState;
pub use ferry_wire::native::{
    ErrorCode, FileEntry, GroupAction, GroupInfo, HubCluster, HubClusterDaemon, HubCounters,
    HubMember, JobDetails, JobExit, JobInfo, JobState, NoticeKind, OtherEntry, PeerInfo, Stream,
    TtySize, Undelivered, DEFAULT_GROUP,
};
pub use manage::Target;
pub use transfer::FileMeta;

/// The reading half of a connection, whatever its transport.
type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;
/// The writing half of a connection, whatever its transport.
type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;

/// Where a daemon listens.
#[derive(Clone)]
pub enum Endpoint {
    /// A Unix socket: the owner's local daemon (no token; the daemon checks the uid).
    Unix(PathBuf),
    /// A TCP address: TLS with `tls`, or plaintext (served on loopback only) without.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// TLS settings (trusted CA, optional client certificate).
        tls: Option<Arc<rustls::ClientConfig>>,
        /// The daemon's token, sent in `Hello`.
        token: Option<String>,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp {
                host, port, tls, ..
            } => {
                let scheme = if tls.is_some() { "tls" } else { "tcp" };
                if host.contains(':') {
                    write!(f, "{scheme}://[{host}]:{port}")
                } else {
                    write!(f, "{scheme}://{host}:{port}")
                }
            }
        }
    }
}

/// Largest frame a client accepts from the daemon (an output chunk plus its envelope fits
/// easily; job listings can be large).
const CLIENT_MAX_FRAME: usize = 64 * 1024 * 1024;

/// How long [`open_or_start`] waits for a daemon it started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to keep trying after the daemon we started failed (a racing one may answer).
const RACE_GRACE: Duration = Duration::from_secs(1);

/// Messages queued toward the daemon before senders wait.
const SEND_QUEUE: usize = 32;

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the address.
    #[error("no ferry daemon is running at {path} ({source})")]
    NoDaemon {
        /// The socket path or address.
        path: String,
        /// Why the connection failed.
        source: std::io::Error,
    },
    /// The connection failed for another reason.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket path or address.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The daemon refused the handshake or answered something else.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The daemon is at a connection limit now (too many connections authenticating or
    /// connected): worth trying again shortly.
    #[error("the daemon is busy: {0}")]
    Busy(String),
    /// The daemon could not be started.
    #[error("cannot start the ferry daemon: {0}")]
    Start(String),
    /// A frame could not be read or written.
    #[error("connection to the daemon failed: {0}")]
    Frame(#[from] FrameError),
    /// The daemon closed the connection (saying why, if it did).
    #[error("the daemon closed the connection{}", .0.as_ref().map(|why| format!(": {why}")).unwrap_or_default())]
    Closed(Option<String>),
    /// The socket at the path is not one this user's daemon would serve: nothing was sent.
    #[error("refusing to talk to {path}: {reason}")]
    Untrusted {
        /// The socket's path.
        path: String,
        /// What was found.
        reason: ferry_io::private::Untrusted,
    },
    /// File descriptors can only be passed over the daemon's Unix socket.
    #[error("file descriptors can be passed to a daemon on its Unix socket only")]
    NoFdPassing,
    /// The daemon refused a request.
    #[error("{message}")]
    Refused {
        /// Its kind.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The daemon answered something this client cannot make sense of.
    #[error("unexpected answer from the daemon: {0}")]
    Unexpected(String),
    /// A file transfer failed on this side, or did not arrive whole.
    #[error("{0}")]
    Transfer(String),
}

/// The socket a client uses when none is given: `$XDG_RUNTIME_DIR/ferry/ferry.sock`, or
/// `/tmp/ferry-$UID/ferry.sock` without a runtime directory. (Its directory is made private
/// by [`open_or_start`] before anything connects there.)
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("ferry").join("ferry.sock"),
        None => {
            let uid = rustix::process::getuid().as_raw();
            PathBuf::from(format!("/tmp/ferry-{uid}")).join("ferry.sock")
        }
    }
}

/// What the daemon said in its `Welcome`.
#[derive(Debug, Clone)]
pub struct Welcome {
    /// The peer id the daemon gave this connection.
    pub peer: String,
    /// Daemon name and version.
    pub daemon: String,
    /// Capabilities announced.
    pub capabilities: Vec<String>,
    /// Largest frame the daemon accepts.
    pub max_frame: u64,
    /// What the daemon's owner should know (see `DaemonMessage::Welcome`).
    pub notice: Option<String>,
}

/// Something the daemon sent that answers no call: job output and exits, notices, warnings.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A chunk of a followed job's output.
    Output {
        /// The job.
        job: JobId,
        /// Its stream.
        stream: Stream,
        /// Where the chunk lies in that stream (a jump means bytes were not stored).
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A followed job ended.
    Exit {
        /// The job.
        job: JobId,
        /// How.
        exit: JobExit,
    },
    /// The stored output of a job attached without following has all been sent.
    LogEnd {
        /// The job.
        job: JobId,
    },
    /// A notice not tied to a job: the daemon is going down, this client was kicked.
    Notice {
        /// Which.
        kind: NoticeKind,
        /// Its text.
        message: String,
    },
    /// An error not tied to a request: a job's output can no longer be stored, a forwarded
    /// signal failed, fds came with the wrong frame. The connection goes on.
    Warning {
        /// Its text.
        message: String,
    },
    /// A message from a member of the hub (after `join`; `from` is `server` for the daemon).
    Message {
        /// The sender's id.
        from: String,
        /// The sender's name.
        name: String,
        /// When it was sent, in milliseconds since the Unix epoch.
        sent_ms: u64,
        /// The text.
        text: String,
        /// It was sent to this client alone.
        direct: bool,
        /// In a hub cluster, its position in the cluster's stream (0 outside one): what
        /// [`Client::rejoin`] takes as `seen`.
        seq: u64,
    },
    /// Events were dropped for this member (its outbox, or one sender's share of it, was
    /// full).
    Missed {
        /// How many, in all.
        total: u64,
        /// How many from whom.
        from: Vec<ferry_wire::native::MissedFrom>,
    },
    /// A member joined or left the hub.
    Presence {
        /// Its id.
        peer: String,
        /// Its name.
        name: String,
        /// Its dialect.
        dialect: String,
        /// Joined (`true`) or left.
        joined: bool,
        /// Why it left.
        reason: String,
    },
    /// An error ending what an earlier request started (a followed job's output could not be
    /// read: its log is damaged, say).
    Failed {
        /// The request.
        request: u64,
        /// Its text.
        message: String,
    },
}

/// A message from the daemon: an event, or an answer to a request.
enum Incoming {
    Event(Event),
    Answer(Box<DaemonMessage>),
}

/// A message waiting for the connection's writer task.
enum Queued {
    /// Bytes already framed.
    Bytes(Vec<u8>),
    /// A message.
    Plain(ClientMessage),
    /// A message with fds riding on its first byte.
    WithFds(ClientMessage, Vec<OwnedFd>),
    /// A message whose sender waits until it is written (flushed to the socket).
    Written(ClientMessage, tokio::sync::oneshot::Sender<()>),
}

/// A connected, handshaken client.
pub struct Client {
    reader: FrameReader<ReadHalf>,
    sender: Sender,
    /// What arrived while a call waited for its answer.
    events: VecDeque<Event>,
    /// The last connection-level error, in case the daemon closes next.
    last_warning: Option<String>,
    welcome: Welcome,
}

/// The sending side of a [`Client`]: a handle on its writer task, for stdin and signals from
/// other tasks or threads. Clone it freely.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Queued>,
    /// The connection's request ids, shared with the client's calls.
    requests: Arc<AtomicU64>,
    fd_passing: bool,
}

impl Sender {
    fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    async fn queue(&self, queued: Queued) -> Result<(), ClientError> {
        self.tx
            .send(queued)
            .await
            .map_err(|_| ClientError::Closed(None))
    }

    /// Queues a message carrying `fds` (duplicated here; the caller keeps its own).
    async fn queue_with_fds(
        &self,
        message: ClientMessage,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ClientError> {
        if !self.fd_passing {
            return Err(ClientError::NoFdPassing);
        }
        let owned = fds
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| ClientError::Frame(e.into()))?;
        self.queue(Queued::WithFds(message, owned)).await
    }

    /// Sends bytes to job `job`'s stdin (from a thread outside the runtime; waits while the
    /// connection's queue is full).
    pub fn blocking_stdin(&self, job: JobId, data: Vec<u8>) -> Result<(), ClientError> {
        self.tx
            .blocking_send(Queued::Plain(ClientMessage::Stdin { job, data }))
            .map_err(|_| ClientError::Closed(None))
    }

    /// Closes job `job`'s stdin (from a thread outside the runtime).
    pub fn blocking_close_stdin(&self, job: JobId) -> Result<(), ClientError> {
        self.tx
            .blocking_send(Queued::Plain(ClientMessage::CloseStdin { job }))
            .map_err(|_| ClientError::Closed(None))
    }

    /// Sends a hub message without waiting for its answer (from another task, while the
    /// client reads): a refusal comes back as an [`Event::Failed`].
    pub async fn say(&self, to: Option<&str>, text: &str) -> Result<(), ClientError> {
        let message = ClientMessage::Say {
            request: self.next_request(),
            to: to.map(str::to_owned),
            text: text.to_owned(),
            as_daemon: false,
        };
        self.queue(Queued::Plain(message)).await
    }

    /// Forwards `signal` to job `job`'s process group without waiting for the answer (an
    /// error comes back as an [`Event::Warning`]).
    pub async fn signal(&self, job: JobId, signal: i32) -> Result<(), ClientError> {
        let message = ClientMessage::Signal {
            request: 0,
            job,
            signal,
        };
        self.queue(Queued::Plain(message)).await
    }

    /// Tells the daemon the new size of job `job`'s terminal (a job run with a tty).
    pub async fn resize(&self, job: JobId, rows: u16, cols: u16) -> Result<(), ClientError> {
        let size = TtySize {
            rows,
            cols,
            term: None,
        };
        self.queue(Queued::Plain(ClientMessage::Resize { job, size }))
            .await
    }

    /// As [`Sender::signal`], returning once the request is written to the daemon (for a
    /// client about to stop itself: `ferry run` on Ctrl-Z).
    pub async fn signal_written(&self, job: JobId, signal: i32) -> Result<(), ClientError> {
        let message = ClientMessage::Signal {
            request: 0,
            job,
            signal,
        };
        let (written, done) = tokio::sync::oneshot::channel();
        self.queue(Queued::Written(message, written)).await?;
        done.await.map_err(|_| ClientError::Closed(None))
    }
}

/// Writes queued messages in order until every sender is gone or the connection fails.
async fn write_queue(
    mut writer: WriteHalf,
    unix_socket: Option<Arc<OwnedFd>>,
    mut queue: mpsc::Receiver<Queued>,
) {
    while let Some(queued) = queue.recv().await {
        let sent = match queued {
            Queued::Bytes(bytes) => write_flushed(&mut writer, &bytes).await,
            Queued::Plain(message) => ferry_io::write_frame(&mut writer, &message).await.is_ok(),
            Queued::Written(message, written) => {
                let sent = match ferry_io::frame(&message) {
                    Ok(bytes) => write_flushed(&mut writer, &bytes).await,
                    Err(_) => false,
                };
                let _ = written.send(());
                sent
            }
            Queued::WithFds(message, fds) => match (&unix_socket, ferry_io::frame(&message)) {
                (Some(socket), Ok(bytes)) => {
                    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|fd| fd.as_fd()).collect();
                    // Everything queued before went out already: the writes above complete.
                    send_all_with_fds(socket.as_fd(), &bytes, &borrowed).is_ok()
                }
                _ => false,
            },
        };
        if !sent {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

async fn write_flushed(writer: &mut WriteHalf, bytes: &[u8]) -> bool {
    writer.write_all(bytes).await.is_ok() && writer.flush().await.is_ok()
}

impl Client {
    /// Connects to the daemon at `endpoint` and performs the handshake.
    pub async fn connect(endpoint: &Endpoint, client_name: &str) -> Result<Client, ClientError> {
        Ok(Client::open(endpoint, client_name, None).await?.0)
    }

    /// Connects, performs the handshake and, with `run`, submits that job in the same breath:
    /// the `Run` goes with the `Hello`, in the same write when it passes no fds, right behind
    /// it otherwise; no round trip is waited for in between. Returns the client and, with
    /// `run`, the job it started.
    pub async fn open(
        endpoint: &Endpoint,
        client_name: &str,
        run: Option<&RunRequest<'_>>,
    ) -> Result<(Client, Option<Started>), ClientError> {
        let (read_half, write_half, unix_socket, token) = dial(endpoint).await?;
        let (tx, queue) = mpsc::channel(SEND_QUEUE);
        tokio::spawn(write_queue(write_half, unix_socket.clone(), queue));
        let mut client = Client {
            reader: FrameReader::new(read_half),
            sender: Sender {
                tx,
                requests: Arc::new(AtomicU64::new(1)),
                fd_passing: unix_socket.is_some(),
            },
            events: VecDeque::new(),
            last_warning: None,
            welcome: Welcome {
                peer: String::new(),
                daemon: String::new(),
                capabilities: Vec::new(),
                max_frame: 0,
                notice: None,
            },
        };
        let mut opening = ferry_io::frame(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            client: client_name.into(),
            token,
        })
        .map_err(FrameError::from)?;
        let submitted = match run {
            Some(run) if run.pass_stdio.is_none() => {
                let (request, message) = run.message(&client.sender);
                opening.extend(ferry_io::frame(&message).map_err(FrameError::from)?);
                client.sender.queue(Queued::Bytes(opening)).await?;
                Some(request)
            }
            Some(run) => {
                client.sender.queue(Queued::Bytes(opening)).await?;
                Some(client.send_run(run).await?)
            }
            None => {
                client.sender.queue(Queued::Bytes(opening)).await?;
                None
            }
        };
        client.read_welcome().await?;
        let started = match submitted {
            Some(request) => Some(client.started(request).await?),
            None => None,
        };
        Ok((client, started))
    }

    async fn read_welcome(&mut self) -> Result<(), ClientError> {
        match self.recv().await {
            Ok(Some(DaemonMessage::Welcome {
                peer,
                daemon,
                capabilities,
                max_frame,
                notice,
                ..
            })) => {
                self.welcome = Welcome {
                    peer,
                    daemon,
                    capabilities,
                    max_frame,
                    notice,
                };
                Ok(())
            }
            Ok(Some(DaemonMessage::Error {
                code: ErrorCode::LimitReached,
                message,
                ..
            })) => Err(ClientError::Busy(message)),
            Ok(Some(DaemonMessage::Error { message, .. })) => Err(ClientError::Handshake(message)),
            Ok(Some(other)) => Err(ClientError::Handshake(format!(
                "expected Welcome, got {other:?}"
            ))),
            Ok(None) => Err(ClientError::Closed(None)),
            // A TLS record where a frame's length was expected: a TLS port spoken to in
            // plaintext.
            Err(ClientError::Frame(ferry_io::ReadError::Decode(
                ferry_wire::native::WireError::FrameTooLarge { len, .. },
            ))) if looks_like_tls(len) => Err(ClientError::Handshake(
                "that port speaks TLS, and this client spoke plaintext: drop --no-tls (the daemon's CA comes from --tls-dir DIR or --ca FILE)".into(),
            )),
            // A daemon that refuses us may reset the connection before we read: say so.
            Err(e) => Err(ClientError::Handshake(e.to_string())),
        }
    }

    /// The daemon's `Welcome`.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// A handle for sending stdin and signals from elsewhere.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Receives one message; `Ok(None)` when the daemon closed the connection.
    async fn recv(&mut self) -> Result<Option<DaemonMessage>, ClientError> {
        Ok(self.reader.next(CLIENT_MAX_FRAME).await?)
    }

    /// The next event: queued ones first, then what the daemon sends (answers to requests
    /// nobody waits for are dropped). `Ok(None)` once the daemon closed the connection.
    pub async fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            match self.recv().await? {
                Some(message) => match self.classify(message) {
                    Incoming::Event(event) => return Ok(Some(event)),
                    Incoming::Answer(answer) => {
                        if let DaemonMessage::Error {
                            request: Some(request),
                            message,
                            ..
                        } = *answer
                        {
                            return Ok(Some(Event::Failed { request, message }));
                        }
                    }
                },
                None => return Ok(None),
            }
        }
    }

    /// Whether a message is an event or an answer.
    fn classify(&mut self, message: DaemonMessage) -> Incoming {
        let event = match message {
            DaemonMessage::Output {
                job,
                stream,
                offset,
                data,
            } => Event::Output {
                job,
                stream,
                offset,
                data,
            },
            DaemonMessage::Exit { job, exit } => Event::Exit { job, exit },
            DaemonMessage::LogEnd { job, .. } => Event::LogEnd { job },
            DaemonMessage::Notice { kind, message } => Event::Notice { kind, message },
            DaemonMessage::Message {
                from,
                name,
                sent_ms,
                text,
                direct,
                seq,
            } => Event::Message {
                from,
                name,
                sent_ms,
                text,
                direct,
                seq,
            },
            DaemonMessage::Presence {
                peer,
                name,
                dialect,
                joined,
                reason,
            } => Event::Presence {
                peer,
                name,
                dialect,
                joined,
                reason,
            },
            DaemonMessage::Missed { total, from } => Event::Missed { total, from },
            DaemonMessage::Ping { nonce } => {
                // Answered at once, whoever reads: a member that reads is alive. A full
                // queue means the connection is busy sending, which the daemon hears too.
                let _ = self
                    .sender
                    .tx
                    .try_send(Queued::Plain(ClientMessage::Pong { nonce }));
                return Incoming::Answer(Box::new(DaemonMessage::Ping { nonce }));
            }
            DaemonMessage::Error {
                request: None | Some(0),
                message,
                ..
            } => {
                self.last_warning = Some(message.clone());
                Event::Warning { message }
            }
            answer => return Incoming::Answer(Box::new(answer)),
        };
        Incoming::Event(event)
    }

    /// Receives until the answer to `request`: `pick` takes the answers to it until it
    /// recognizes the one it waits for (and turns it into the result); an `Error` for the
    /// request fails. Events that come meanwhile are queued; answers to other requests are
    /// dropped.
    async fn answer<T>(
        &mut self,
        request: u64,
        mut pick: impl FnMut(DaemonMessage) -> Option<T>,
    ) -> Result<T, ClientError> {
        loop {
            let Some(message) = self.recv().await? else {
                return Err(ClientError::Closed(self.last_warning.take()));
            };
            let answer = match self.classify(message) {
                Incoming::Event(event) => {
                    self.events.push_back(event);
                    continue;
                }
                Incoming::Answer(answer) => *answer,
            };
            match answer {
                DaemonMessage::Error {
                    request: Some(r),
                    code,
                    message,
                } => {
                    if r == request {
                        return Err(ClientError::Refused { code, message });
                    }
                    self.events.push_back(Event::Failed {
                        request: r,
                        message,
                    });
                }
                answer if answer.request() == Some(request) => {
                    if let Some(answer) = pick(answer) {
                        return Ok(answer);
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends `message` (made with a fresh request id) and waits for the answer `pick` takes.
    async fn call<T>(
        &mut self,
        message: impl FnOnce(u64) -> ClientMessage,
        pick: impl FnMut(DaemonMessage) -> Option<T>,
    ) -> Result<T, ClientError> {
        let request = self.sender.next_request();
        self.sender.queue(Queued::Plain(message(request))).await?;
        self.answer(request, pick).await
    }

    /// Waits for a `Done` answering `request`.
    async fn done(&mut self, request: u64) -> Result<(), ClientError> {
        self.answer(request, |message| {
            matches!(message, DaemonMessage::Done { request: r } if r == request).then_some(())
        })
        .await
    }

    /// Waits until the daemon closes the connection (after `shutdown`), at most `limit`;
    /// whether it did.
    pub async fn wait_closed(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            // A reset or a read error also means the daemon is gone.
            while let Ok(Some(_)) = self.recv().await {}
        })
        .await
        .is_ok()
    }
}

/// Opens a connection to `endpoint`: its halves, a duplicate of a Unix socket for `sendmsg`,
/// and the token to send.
async fn dial(
    endpoint: &Endpoint,
) -> Result<(ReadHalf, WriteHalf, Option<Arc<OwnedFd>>, Option<String>), ClientError> {
    let where_ = endpoint.to_string();
    let refused = |source: std::io::Error| {
        use std::io::ErrorKind::{ConnectionRefused, NotFound};
        if matches!(source.kind(), NotFound | ConnectionRefused) {
            ClientError::NoDaemon {
                path: where_.clone(),
                source,
            }
        } else {
            ClientError::Connect {
                path: where_.clone(),
                source,
            }
        }
    };
    match endpoint {
        Endpoint::Unix(path) => {
            // Nothing goes to a socket another user could have put there, or that another
            // user serves.
            let untrusted = |reason| ClientError::Untrusted {
                path: where_.clone(),
                reason,
            };
            let dir = socket_dir(path);
            if dir.exists() {
                check_private_dir(dir).map_err(untrusted)?;
            }
            let stream = UnixStream::connect(path).await.map_err(refused)?;
            check_peer_is_me(&stream).map_err(untrusted)?;
            let dup =
                rustix::io::fcntl_dupfd_cloexec(&stream, 3).map_err(|e| ClientError::Connect {
                    path: where_.clone(),
                    source: e.into(),
                })?;
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write), Some(Arc::new(dup)), None))
        }
        Endpoint::Tcp {
            host,
            port,
            tls,
            token,
        } => {
            let stream = TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(refused)?;
            let _ = stream.set_nodelay(true);
            match tls {
                None => {
                    let (read, write) = stream.into_split();
                    Ok((Box::new(read), Box::new(write), None, token.clone()))
                }
                Some(config) => {
                    let stream = tls::connect(Arc::clone(config), host, stream)
                        .await
                        .map_err(|source| ClientError::Connect {
                            path: where_.clone(),
                            source: explain_tls_close(source),
                        })?;
                    let (read, write) = tokio::io::split(stream);
                    Ok((Box::new(read), Box::new(write), None, token.clone()))
                }
            }
        }
    }
}

/// A TLS handshake the daemon ended without a word: say what that usually means.
/// Whether a frame's declared length is the start of a TLS record (its content type, 20 to 23,
/// then version 3.x), as a TLS port's first bytes are.
fn looks_like_tls(len: usize) -> bool {
    let [kind, major, minor, _] = u32::try_from(len).unwrap_or(0).to_be_bytes();
    (20..=23).contains(&kind) && major == 3 && minor <= 4
}

fn explain_tls_close(error: std::io::Error) -> std::io::Error {
    // The daemon answered with something that is no TLS record: a plaintext port.
    let plaintext = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            )
        });
    if plaintext {
        return std::io::Error::new(
            error.kind(),
            "that port does not speak TLS (a plaintext listener, served on loopback only): add --no-tls",
        );
    }
    let closed = matches!(
        error.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
    );
    if !closed {
        return error;
    }
    std::io::Error::new(
        error.kind(),
        format!("the daemon closed the connection during the TLS handshake ({error}): it may have too many connections still authenticating (try again soon), or the port may not serve TLS"),
    )
}

/// How long a client of the local socket keeps trying while the daemon is busy (at its
/// handshake or connection limit: a burst of thousands of clients at once).
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// [`Client::open`] on the owner's own socket, trying again (after a growing, jittered pause)
/// while the daemon answers that it is busy: a burst of clients (`xargs -P1000 ferry run`)
/// waits its turn rather than failing. The daemon refuses before it reads a `Run`, so
/// nothing runs twice.
async fn open_patiently(
    endpoint: &Endpoint,
    client_name: &str,
    run: Option<&RunRequest<'_>>,
) -> Result<(Client, Option<Started>), ClientError> {
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    let mut delay = Duration::from_millis(5);
    loop {
        match Client::open(endpoint, client_name, run).await {
            Err(ClientError::Busy(message)) => {
                if tokio::time::Instant::now() + delay > deadline {
                    return Err(ClientError::Busy(message));
                }
                // Jitter: clients refused together should not all come back together.
                let jitter = u64::from(std::process::id() % 7) * delay.as_millis() as u64 / 7;
                tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// Connects to the daemon at `path` (as [`Client::open`]), starting one with `start` when
/// none is listening.
///
/// `start` must launch a daemon on `path` in the background. Two clients racing here may both
/// launch one; the daemon's locks let exactly one of them serve, and both clients connect to it.
pub async fn open_or_start(
    path: &Path,
    client_name: &str,
    run: Option<&RunRequest<'_>>,
    start: impl FnOnce() -> std::io::Result<Child>,
) -> Result<(Client, Option<Started>), ClientError> {
    let endpoint = Endpoint::Unix(path.to_owned());
    if path == default_socket_path() {
        // The default directory may lie in world-writable /tmp: it is made ours (0700) before
        // another user can, and refused if another user has.
        ensure_private_dir(socket_dir(path)).map_err(|reason| ClientError::Untrusted {
            path: path.display().to_string(),
            reason,
        })?;
    }
    match open_patiently(&endpoint, client_name, run).await {
        Err(ClientError::NoDaemon { .. }) => {}
        other => return other,
    }
    let mut child = start().map_err(|e| ClientError::Start(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut delay = Duration::from_millis(2);
    // When the daemon we started fails, another one (a racing client's) may still be on its
    // way: wait a little longer before giving up.
    let mut failed: Option<(tokio::time::Instant, std::process::ExitStatus)> = None;
    loop {
        match Client::open(&endpoint, client_name, run).await {
            Err(ClientError::NoDaemon { source, .. }) => {
                let now = tokio::time::Instant::now();
                if failed.is_none() {
                    if let Ok(Some(status)) = child.try_wait() {
                        if !status.success() {
                            failed = Some((now, status));
                        }
                    }
                }
                if let Some((at, status)) = failed {
                    if now.duration_since(at) > RACE_GRACE {
                        return Err(ClientError::Start(format!(
                            "the daemon it started exited ({status}) and none answers at {}",
                            path.display()
                        )));
                    }
                }
                if now >= deadline {
                    let _ = child.kill();
                    return Err(ClientError::Start(format!(
                        "no daemon answered at {} within {} s ({source})",
                        path.display(),
                        START_TIMEOUT.as_secs()
                    )));
                }
            }
            other => {
                // Reap the launcher if it already exited (it lost a start race, say).
                let _ = child.try_wait();
                return other;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// Launches the daemon program (`ferryd`) as `program --socket PATH --background`, detached,
/// with its log appended to `log_file`. Suitable as the `start` argument of [`open_or_start`].
pub fn spawn_background_daemon(
    program: &Path,
    socket: &Path,
    log_file: &Path,
) -> std::io::Result<Child> {
    if let Some(dir) = log_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)?;
    Command::new(program)
        .arg("--socket")
        .arg(socket)
        .arg("--background")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
}
