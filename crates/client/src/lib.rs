//! Async client library for ferry's native protocol.
//!
//! [`Client::connect`] opens a connection to an [`Endpoint`] (a Unix socket, or TCP with TLS)
//! and performs the handshake; [`connect_or_start`] also starts a local daemon when none is
//! listening. A connected client sends
//! [`ClientMessage`]s and receives [`DaemonMessage`]s; [`Client::split`] hands the sending side
//! to other tasks (stdin forwarding, signal forwarding) while one task reads.

pub mod tls;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ferry_io::fdpass::send_all_with_fds;
use ferry_io::{FrameError, FrameReader};
use ferry_wire::native::{ClientMessage, DaemonMessage, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;

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

/// How long [`connect_or_start`] waits for a daemon it started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to keep trying after the daemon we started failed (a racing one may answer).
const RACE_GRACE: Duration = Duration::from_secs(1);

/// Messages queued toward the daemon by a [`Sender`] before senders wait.
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
    /// The daemon could not be started.
    #[error("cannot start the ferry daemon: {0}")]
    Start(String),
    /// A frame could not be read or written.
    #[error("connection to the daemon failed: {0}")]
    Frame(#[from] FrameError),
    /// The daemon closed the connection.
    #[error("the daemon closed the connection")]
    Closed,
    /// File descriptors can only be passed over the daemon's Unix socket.
    #[error("file descriptors can be passed to a daemon on its Unix socket only")]
    NoFdPassing,
}

/// The socket a client uses when none is given: `$XDG_RUNTIME_DIR/ferry/ferry.sock`, or
/// `/tmp/ferry-$UID/ferry.sock` without a runtime directory.
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
}

/// A connected, handshaken client.
pub struct Client {
    reader: FrameReader<ReadHalf>,
    writer: WriteHalf,
    /// A second handle on the Unix socket, for `sendmsg` with fds.
    unix_socket: Option<Arc<OwnedFd>>,
    welcome: Welcome,
    next_request: u64,
}

impl Client {
    /// Connects to the daemon at `endpoint` and performs the handshake.
    pub async fn connect(endpoint: &Endpoint, client_name: &str) -> Result<Client, ClientError> {
        Client::connect_with(endpoint, client_name, None).await
    }

    /// Connects and performs the handshake, sending `first` right behind the `Hello` (in the
    /// same write, saving a round trip). `first` should use request id 1; the client's own
    /// request ids then start at 2.
    pub async fn connect_with(
        endpoint: &Endpoint,
        client_name: &str,
        first: Option<&ClientMessage>,
    ) -> Result<Client, ClientError> {
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
        let mut unix_socket = None;
        let (read_half, write_half, token): (ReadHalf, WriteHalf, Option<String>) = match endpoint {
            Endpoint::Unix(path) => {
                let stream = UnixStream::connect(path).await.map_err(refused)?;
                let dup = rustix::io::fcntl_dupfd_cloexec(&stream, 3).map_err(|e| {
                    ClientError::Connect {
                        path: where_.clone(),
                        source: e.into(),
                    }
                })?;
                unix_socket = Some(Arc::new(dup));
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write), None)
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
                        (Box::new(read), Box::new(write), token.clone())
                    }
                    Some(config) => {
                        let stream = tls::connect(Arc::clone(config), host, stream)
                            .await
                            .map_err(|source| ClientError::Connect {
                                path: where_.clone(),
                                source,
                            })?;
                        let (read, write) = tokio::io::split(stream);
                        (Box::new(read), Box::new(write), token.clone())
                    }
                }
            }
        };
        let mut client = Client {
            reader: FrameReader::new(read_half),
            writer: write_half,
            unix_socket,
            welcome: Welcome {
                peer: String::new(),
                daemon: String::new(),
                capabilities: Vec::new(),
                max_frame: 0,
            },
            next_request: if first.is_some() { 2 } else { 1 },
        };
        let mut opening = ferry_io::frame(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            client: client_name.into(),
            token,
        })
        .map_err(FrameError::from)?;
        if let Some(first) = first {
            opening.extend(ferry_io::frame(first).map_err(FrameError::from)?);
        }
        let written = async {
            client.writer.write_all(&opening).await?;
            client.writer.flush().await
        };
        if let Err(e) = written.await {
            // A daemon that refuses us says why, then closes: read the reason if it came.
            return match client.recv().await {
                Ok(Some(DaemonMessage::Error { message, .. })) => {
                    Err(ClientError::Handshake(message))
                }
                _ => Err(FrameError::from(e).into()),
            };
        }
        match client.recv().await? {
            Some(DaemonMessage::Welcome {
                peer,
                daemon,
                capabilities,
                max_frame,
                ..
            }) => {
                client.welcome = Welcome {
                    peer,
                    daemon,
                    capabilities,
                    max_frame,
                };
                Ok(client)
            }
            Some(DaemonMessage::Error { message, .. }) => Err(ClientError::Handshake(message)),
            Some(other) => Err(ClientError::Handshake(format!(
                "expected Welcome, got {other:?}"
            ))),
            None => Err(ClientError::Closed),
        }
    }

    /// The daemon's `Welcome`.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// A fresh request id.
    pub fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), ClientError> {
        ferry_io::write_frame(&mut self.writer, message).await?;
        Ok(())
    }

    /// Sends one message with `fds` riding on its first byte (SCM_RIGHTS; Unix sockets only),
    /// as `Run { pass_stdio: true }` needs.
    pub async fn send_with_fds(
        &mut self,
        message: &ClientMessage,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ClientError> {
        let socket = self.unix_socket.as_ref().ok_or(ClientError::NoFdPassing)?;
        let bytes = ferry_io::frame(message).map_err(FrameError::from)?;
        // Everything written before is out already: `send` completes its writes.
        send_all_with_fds(socket.as_fd(), &bytes, fds).map_err(|e| FrameError::from(e).into())
    }

    /// Receives one message; `Ok(None)` when the daemon closed the connection.
    pub async fn recv(&mut self) -> Result<Option<DaemonMessage>, ClientError> {
        Ok(self.reader.next(CLIENT_MAX_FRAME).await?)
    }

    /// Splits into a receiving half and a cloneable sending handle served by a writer task.
    pub fn split(self) -> (Receiver, Sender) {
        let (tx, mut rx) = mpsc::channel::<Queued>(SEND_QUEUE);
        let mut writer = self.writer;
        let unix_socket = self.unix_socket.clone();
        tokio::spawn(async move {
            while let Some(queued) = rx.recv().await {
                let sent = match queued {
                    Queued::Plain(message) => {
                        ferry_io::write_frame(&mut writer, &message).await.is_ok()
                    }
                    Queued::WithFds(message, fds) => {
                        match (&unix_socket, ferry_io::frame(&message)) {
                            (Some(socket), Ok(bytes)) => {
                                let borrowed: Vec<BorrowedFd<'_>> =
                                    fds.iter().map(|fd| fd.as_fd()).collect();
                                send_all_with_fds(socket.as_fd(), &bytes, &borrowed).is_ok()
                            }
                            _ => false,
                        }
                    }
                };
                if !sent {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        });
        (
            Receiver {
                reader: self.reader,
            },
            Sender {
                tx,
                fd_passing: self.unix_socket.is_some(),
            },
        )
    }
}

/// A message waiting for a split client's writer task.
enum Queued {
    Plain(ClientMessage),
    WithFds(ClientMessage, Vec<OwnedFd>),
}

/// The receiving half of a split [`Client`].
pub struct Receiver {
    reader: FrameReader<ReadHalf>,
}

impl Receiver {
    /// Receives one message; `Ok(None)` when the daemon closed the connection.
    pub async fn recv(&mut self) -> Result<Option<DaemonMessage>, ClientError> {
        Ok(self.reader.next(CLIENT_MAX_FRAME).await?)
    }
}

/// The sending half of a split [`Client`]; clone it freely.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Queued>,
    fd_passing: bool,
}

impl Sender {
    /// Queues a message; fails once the connection is gone.
    pub async fn send(&self, message: ClientMessage) -> Result<(), ClientError> {
        self.tx
            .send(Queued::Plain(message))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Queues a message that carries `fds` (see [`Client::send_with_fds`]).
    pub async fn send_with_fds(
        &self,
        message: ClientMessage,
        fds: Vec<OwnedFd>,
    ) -> Result<(), ClientError> {
        if !self.fd_passing {
            return Err(ClientError::NoFdPassing);
        }
        self.tx
            .send(Queued::WithFds(message, fds))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Forwards `signal` to job `job`'s process group, without waiting for the answer (a
    /// `Signal` with request id 0, whose answer, if an error, is printed as a notice).
    pub async fn signal(&self, job: u64, signal: i32) -> Result<(), ClientError> {
        self.send(ClientMessage::Signal {
            request: 0,
            job,
            signal,
        })
        .await
    }

    /// Queues a message from a thread outside the runtime.
    pub fn blocking_send(&self, message: ClientMessage) -> Result<(), ClientError> {
        self.tx
            .blocking_send(Queued::Plain(message))
            .map_err(|_| ClientError::Closed)
    }
}

/// Connects to the daemon at `path`, starting one with `start` when none is listening, and
/// sends `first` right behind the handshake (see [`Client::connect_with`]).
///
/// `start` must launch a daemon on `path` in the background. Two clients racing here may both
/// launch one; the daemon's lock on the socket lets exactly one of them serve, and both clients
/// connect to it.
pub async fn connect_or_start(
    path: &Path,
    client_name: &str,
    first: Option<&ClientMessage>,
    start: impl FnOnce() -> std::io::Result<Child>,
) -> Result<Client, ClientError> {
    let endpoint = Endpoint::Unix(path.to_owned());
    match Client::connect_with(&endpoint, client_name, first).await {
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
        let endpoint = Endpoint::Unix(path.to_owned());
        match Client::connect_with(&endpoint, client_name, first).await {
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

/// Launches `program daemon --socket PATH --background` detached, with its log appended to
/// `log_file`. Suitable as the `start` argument of [`connect_or_start`].
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
        .arg("daemon")
        .arg("--socket")
        .arg(socket)
        .arg("--background")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
}
