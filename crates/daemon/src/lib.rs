//! Ferry's daemon: listeners, one task per connection, and the dialect adapters that map each
//! wire format onto the engine.
//!
//! [`run`] binds every configured listener, serves until the shutdown future resolves (or a
//! client asks for shutdown), then tells every client, terminates running jobs, removes its
//! sockets and returns. Tests start it in-process or through the `ferry daemon` binary.

pub mod catalog;
mod fanos;
pub mod listen;
mod native;
pub mod tls;
pub mod unix;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::files::FileArea;
use ferry_engine::sessions::SessionStore;
use ferry_engine::{Engine, EngineConfig, EngineError};

/// Default largest file a client may put (64 GiB).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 30;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

pub use catalog::{Catalog, CatalogEntry};
pub use listen::{Dialect, ListenSpec, ListenSpecError, Transport};
pub use tls::TlsFiles;

use native::Access;

/// Longest wait for connections to queue the going-down notice.
const NOTICE_WAIT: Duration = Duration::from_secs(1);

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where to listen.
    pub listeners: Vec<Listener>,
    /// Engine settings (log directory, job limits).
    pub engine: EngineConfig,
    /// Largest frame accepted after the handshake.
    pub max_frame: usize,
    /// Connections served at once; more are refused with an error.
    pub max_connections: usize,
    /// Time a new connection has to complete its handshake.
    pub handshake_timeout: Duration,
    /// Certificate and key for TLS listeners.
    pub tls: Option<TlsFiles>,
    /// The token TCP and TLS clients must present (unless a client certificate vouches).
    pub token: Option<String>,
    /// Let TCP and TLS listeners run any command, not only the catalog's.
    pub allow_any_command: bool,
    /// The commands catalog-only listeners run.
    pub catalog: Catalog,
    /// The file area: where `put` writes and `get` reads, and where remote clients' jobs run.
    pub files_dir: PathBuf,
    /// Largest file a client may put.
    pub max_file_size: u64,
    /// Where stateful shell sessions keep their state.
    pub sessions_dir: PathBuf,
}

impl DaemonConfig {
    /// Defaults: one native listener on `socket`, logs in `log_dir`.
    pub fn new(socket: PathBuf, log_dir: PathBuf) -> DaemonConfig {
        DaemonConfig {
            listeners: vec![Listener::new(ListenSpec {
                dialect: Dialect::Ferry,
                transport: Transport::Unix(socket),
            })],
            engine: EngineConfig::new(log_dir.clone()),
            max_frame: ferry_wire::DEFAULT_MAX_FRAME,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(5),
            tls: None,
            token: None,
            allow_any_command: false,
            catalog: Catalog::default(),
            files_dir: log_dir.with_file_name("files"),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            sessions_dir: log_dir.with_file_name("sessions"),
        }
    }
}

/// Which commands a listener's clients may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandPolicy {
    /// Any command, as in the owner's shell.
    Any,
    /// Only the names in the daemon's catalog.
    Catalog,
}

/// One listener and its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Where it listens.
    pub spec: ListenSpec,
    /// Which commands it runs; `None` takes the default: any on a Unix socket, the catalog
    /// on the network unless `allow_any_command`.
    pub commands: Option<CommandPolicy>,
    /// For a TLS listener: client certificates from this CA authenticate (overrides the
    /// daemon-wide `TlsFiles::client_ca`).
    pub client_ca: Option<PathBuf>,
}

impl Listener {
    /// A listener with the default policy.
    pub fn new(spec: ListenSpec) -> Listener {
        Listener {
            spec,
            commands: None,
            client_ca: None,
        }
    }
}

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon serves this socket.
    #[error("another ferry daemon is already serving {0}")]
    AlreadyRunning(PathBuf),
    /// The configuration cannot be served.
    #[error("{0}")]
    Config(String),
    /// A listener spec is not served.
    #[error(transparent)]
    Listen(#[from] ListenSpecError),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What every connection shares: the engine, limits, ids and the shutdown signals.
pub(crate) struct Hub {
    pub engine: Engine,
    pub catalog: Catalog,
    pub files: Arc<FileArea>,
    pub sessions: Arc<SessionStore>,
    pub config: DaemonConfig,
    next_peer: AtomicU64,
    pub connections: Arc<Semaphore>,
    /// Becomes true when the daemon starts going down (clients get a notice).
    pub going_down: watch::Sender<bool>,
    /// Becomes true when connections must close (jobs are all ended by then).
    pub closing: watch::Sender<bool>,
    /// Woken when a client asks for shutdown.
    pub shutdown_requested: Notify,
    /// Connections serving requests, and how many of them have queued the going-down
    /// notice: the daemon terminates jobs only once every client has its notice ahead of the
    /// jobs' exits.
    pub serving: AtomicUsize,
    pub notified: AtomicUsize,
    pub notice_queued: Notify,
}

impl Hub {
    pub fn next_peer_id(&self) -> u64 {
        self.next_peer.fetch_add(1, Ordering::Relaxed)
    }
}

/// Marks every fd above stderr close-on-exec: fds the daemon inherited from whoever started it
/// must not reach its jobs (its own fds are close-on-exec already).
fn keep_inherited_fds_from_jobs() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing and touches no memory; it
    // only sets a flag on fds this process owns.
    let result = unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if result != 0 {
        tracing::warn!(
            "cannot mark inherited fds close-on-exec: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A log write past a file-size limit (RLIMIT_FSIZE) must fail with EFBIG, not kill the
/// daemon with SIGXFSZ. Jobs get the default disposition back before they exec.
fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code and touches
    // no memory of ours.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Runs the daemon until `shutdown` resolves or a client asks it to stop.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    if config.listeners.is_empty() {
        return Err(DaemonError::Config("no listener configured".into()));
    }
    keep_inherited_fds_from_jobs();
    ignore_file_size_signal();
    for listener in &config.listeners {
        listener.spec.check_served()?;
    }
    let files = FileArea::open(&config.files_dir).map_err(|source| DaemonError::Io {
        context: format!("cannot open the file area {}", config.files_dir.display()),
        source,
    })?;
    let sessions = SessionStore::open(&config.sessions_dir).map_err(|e| DaemonError::Io {
        context: format!(
            "cannot open the sessions directory {}",
            config.sessions_dir.display()
        ),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut bound = Vec::new();
    for listener in &config.listeners {
        bound.push(bind(listener, &config).await?);
    }
    let engine = Engine::new(config.engine.clone())?;
    let hub = Arc::new(Hub {
        engine,
        catalog: config.catalog.clone(),
        files: Arc::new(files),
        sessions: Arc::new(sessions),
        connections: Arc::new(Semaphore::new(config.max_connections)),
        config,
        next_peer: AtomicU64::new(1),
        going_down: watch::Sender::new(false),
        closing: watch::Sender::new(false),
        shutdown_requested: Notify::new(),
        serving: AtomicUsize::new(0),
        notified: AtomicUsize::new(0),
        notice_queued: Notify::new(),
    });
    let mut tasks = JoinSet::new();
    let mut guards = Vec::new();
    for listener in bound {
        match listener {
            Bound::Unix(listener, guard, access) => {
                let serving = Arc::clone(&hub);
                tasks.spawn(native::accept_loop(
                    listener,
                    Arc::clone(&hub),
                    move |stream| native::handle_unix(stream, Arc::clone(&serving), access.clone()),
                ));
                guards.push(guard);
            }
            Bound::Fanos(listener, guard) => {
                let serving = Arc::clone(&hub);
                tasks.spawn(native::accept_loop(
                    listener,
                    Arc::clone(&hub),
                    move |stream| fanos::serve(stream, Arc::clone(&serving)),
                ));
                guards.push(guard);
            }
            Bound::Tcp(listener, tls, access) => {
                let serving = Arc::clone(&hub);
                tasks.spawn(native::accept_loop(
                    listener,
                    Arc::clone(&hub),
                    move |(stream, addr)| {
                        native::handle_tcp(
                            stream,
                            addr,
                            tls.clone(),
                            Arc::clone(&serving),
                            access.clone(),
                        )
                    },
                ));
            }
        }
    }
    tokio::select! {
        () = shutdown => tracing::info!("shutdown signal received"),
        () = hub.shutdown_requested.notified() => tracing::info!("shutdown requested by a client"),
    }
    hub.going_down.send_replace(true);
    // Let every client get the notice before its jobs' exits (bounded: a client that does
    // not read cannot hold the shutdown up).
    let _ = tokio::time::timeout(NOTICE_WAIT, async {
        loop {
            let queued = hub.notice_queued.notified();
            tokio::pin!(queued);
            // Registered before the check, so a notice queued in between is not missed.
            queued.as_mut().enable();
            if hub.notified.load(Ordering::SeqCst) >= hub.serving.load(Ordering::SeqCst) {
                break;
            }
            queued.await;
        }
    })
    .await;
    hub.engine.shutdown().await;
    hub.closing.send_replace(true);
    // Accept loops wait for their connections to flush (bounded) and then end.
    let flushed = tokio::time::timeout(Duration::from_secs(3), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if flushed.is_err() {
        tracing::warn!("some connections did not close in time");
    }
    drop(guards);
    tracing::info!("daemon stopped");
    Ok(())
}

/// A bound listener, ready to accept.
enum Bound {
    Unix(tokio::net::UnixListener, unix::UnixSocketGuard, Access),
    Fanos(tokio::net::UnixListener, unix::UnixSocketGuard),
    Tcp(
        tokio::net::TcpListener,
        Option<tokio_rustls::TlsAcceptor>,
        Access,
    ),
}

/// Binds one listener, enforcing the security rules: plaintext TCP on loopback only, TLS
/// with a certificate, and every network listener with a way to authenticate.
async fn bind(listener: &Listener, config: &DaemonConfig) -> Result<Bound, DaemonError> {
    let spec = &listener.spec;
    if spec.dialect == Dialect::Fanos {
        let Transport::Unix(path) = &spec.transport else {
            return Err(ListenSpecError::NotServed(spec.to_string()).into());
        };
        let (socket, guard) = unix::bind(path)?;
        tracing::info!("listening on {spec}");
        return Ok(Bound::Fanos(socket, guard));
    }
    let (host, port, tls) = match &spec.transport {
        Transport::Unix(path) => {
            let (socket, guard) = unix::bind(path)?;
            let mut access = Access::owner(config.files_dir.clone());
            access.any_command = listener.commands != Some(CommandPolicy::Catalog);
            tracing::info!(
                "listening on {spec} ({})",
                if access.any_command {
                    "any command"
                } else {
                    "catalog commands only"
                }
            );
            return Ok(Bound::Unix(socket, guard, access));
        }
        Transport::Tcp { host, port } => (host, *port, false),
        Transport::Tls { host, port } => (host, *port, true),
        Transport::Fifo(_) => return Err(ListenSpecError::NotServed(spec.to_string()).into()),
    };
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| DaemonError::Io {
            context: format!("listener {spec}: cannot resolve {host}"),
            source,
        })?
        .collect();
    let Some(&addr) = addrs.first() else {
        return Err(DaemonError::Config(format!(
            "listener {spec}: {host} has no address"
        )));
    };
    if !tls && !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(DaemonError::Config(format!(
            "listener {spec}: plaintext TCP is served on loopback addresses only (127.0.0.0/8, ::1); use ferry:tls:{host}:{port} with certificates from `ferry tls init`"
        )));
    }
    let listener_files = config.tls.as_ref().map(|files| TlsFiles {
        client_ca: listener
            .client_ca
            .clone()
            .or_else(|| files.client_ca.clone()),
        ..files.clone()
    });
    let acceptor = match (tls, &listener_files) {
        (true, Some(files)) => Some(tls::acceptor(files)?),
        (true, None) => {
            return Err(DaemonError::Config(format!(
                "listener {spec}: TLS needs a certificate and key (--tls-dir DIR from `ferry tls init`, or --tls-cert and --tls-key)"
            )))
        }
        (false, _) => None,
    };
    let client_certs = tls
        && listener_files
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
    if config.token.is_none() && !client_certs {
        return Err(DaemonError::Config(format!(
            "listener {spec}: a network listener needs a way to authenticate clients: a token (--token-file, or DIR/token with --tls-dir) or client certificates (--client-ca)"
        )));
    }
    let any_command = match listener.commands {
        Some(policy) => policy == CommandPolicy::Any,
        None => config.allow_any_command,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Io {
            context: format!("listener {spec}: cannot listen on {addr}"),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| DaemonError::Io {
        context: format!("listener {spec}"),
        source,
    })?;
    let bound_spec = ListenSpec {
        dialect: spec.dialect,
        transport: if tls {
            Transport::Tls {
                host: local.ip().to_string(),
                port: local.port(),
            }
        } else {
            Transport::Tcp {
                host: local.ip().to_string(),
                port: local.port(),
            }
        },
    };
    tracing::info!(
        "listening on {bound_spec} ({})",
        if any_command {
            "any command"
        } else {
            "catalog commands only"
        }
    );
    let access = Access {
        token: config.token.as_deref().map(Arc::from),
        any_command,
        owner: false,
        files_dir: config.files_dir.clone(),
    };
    Ok(Bound::Tcp(listener, acceptor, access))
}
