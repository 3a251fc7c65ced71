//! Ferry's daemon: listeners, one task per connection, and the dialect adapters that map each
//! wire format onto the engine.
//!
//! [`run`] binds every configured listener, serves until the shutdown future resolves (or a
//! client asks for shutdown), then tells every client, terminates running jobs, removes its
//! sockets and returns. Tests start it in-process or through the `ferry daemon` binary.

pub mod listen;
mod native;
pub mod unix;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::{Engine, EngineConfig, EngineError};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

pub use listen::{Dialect, ListenSpec, ListenSpecError, Transport};

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where to listen.
    pub listeners: Vec<ListenSpec>,
    /// Engine settings (log directory, job limits).
    pub engine: EngineConfig,
    /// Largest frame accepted after the handshake.
    pub max_frame: usize,
    /// Connections served at once; more are refused with an error.
    pub max_connections: usize,
    /// Time a new connection has to complete its handshake.
    pub handshake_timeout: Duration,
}

impl DaemonConfig {
    /// Defaults: one native listener on `socket`, logs in `log_dir`.
    pub fn new(socket: PathBuf, log_dir: PathBuf) -> DaemonConfig {
        DaemonConfig {
            listeners: vec![ListenSpec {
                dialect: Dialect::Ferry,
                transport: Transport::Unix(socket),
            }],
            engine: EngineConfig::new(log_dir),
            max_frame: ferry_wire::DEFAULT_MAX_FRAME,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(5),
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
    pub config: DaemonConfig,
    next_peer: AtomicU64,
    pub connections: Arc<Semaphore>,
    /// Becomes true when the daemon starts going down (clients get a notice).
    pub going_down: watch::Sender<bool>,
    /// Becomes true when connections must close (jobs are all ended by then).
    pub closing: watch::Sender<bool>,
    /// Woken when a client asks for shutdown.
    pub shutdown_requested: Notify,
}

impl Hub {
    pub fn next_peer_id(&self) -> u64 {
        self.next_peer.fetch_add(1, Ordering::Relaxed)
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
    for spec in &config.listeners {
        spec.check_served()?;
    }
    let mut bound = Vec::new();
    for spec in &config.listeners {
        if let Transport::Unix(path) = &spec.transport {
            bound.push(unix::bind(path)?);
            tracing::info!("listening on {spec}");
        }
    }
    let engine = Engine::new(config.engine.clone())?;
    let hub = Arc::new(Hub {
        engine,
        connections: Arc::new(Semaphore::new(config.max_connections)),
        config,
        next_peer: AtomicU64::new(1),
        going_down: watch::Sender::new(false),
        closing: watch::Sender::new(false),
        shutdown_requested: Notify::new(),
    });
    let mut tasks = JoinSet::new();
    let mut guards = Vec::new();
    for (listener, guard) in bound {
        tasks.spawn(native::accept_loop(listener, Arc::clone(&hub)));
        guards.push(guard);
    }
    tokio::select! {
        () = shutdown => tracing::info!("shutdown signal received"),
        () = hub.shutdown_requested.notified() => tracing::info!("shutdown requested by a client"),
    }
    hub.going_down.send_replace(true);
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
