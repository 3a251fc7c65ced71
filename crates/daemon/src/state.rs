//! What every connection shares: the engine, the daemon's settings, its file area (and each
//! principal's use of it) and sessions, the count of connections per principal, and its shutdown signals. Made once by
//! `server::run` and handed to every connection.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_engine::files::FileArea;
use ferry_engine::quota::Quotas;
use ferry_engine::sessions::SessionStore;
use ferry_engine::Engine;
use tokio::sync::{watch, Notify};

use std::sync::atomic::{AtomicI64, AtomicU64};

use crate::admission::PrincipalCounts;
use crate::catalog::Catalog;
use crate::config::DaemonConfig;

/// What one listener counts: its connections admitted, refused and open now.
#[derive(Debug, Default)]
pub(crate) struct ListenerStats {
    /// Its dialect's name.
    pub dialect: &'static str,
    /// Its spec, as bound (a port 0 replaced by the port it got).
    pub listener: String,
    /// Connections admitted.
    pub accepted: AtomicU64,
    /// Connections refused at admission.
    pub refused: AtomicU64,
    /// Connections open now.
    pub open: AtomicI64,
}

/// Opens a listener while the daemon runs (set by `server::run`, which knows how to bind and
/// accept: the adapters above do not): the host and port it got.
pub(crate) type OpenListener = Box<
    dyn Fn(
            Arc<Daemon>,
            crate::config::Listener,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(String, u16), String>> + Send>,
        > + Send
        + Sync,
>;

/// The daemon, as every connection sees it.
pub(crate) struct Daemon {
    /// How a listener is opened while the daemon runs (`ferry web`'s).
    pub open_listener: std::sync::OnceLock<OpenListener>,
    /// The engine (jobs, history, peers).
    pub engine: Engine,
    /// The commands catalog-only listeners run.
    pub catalog: Catalog,
    /// The daemon's file area.
    pub files: Arc<FileArea>,
    /// What each principal's part of it holds, against its quota.
    pub quotas: Arc<Quotas>,
    /// Stateful shell sessions.
    pub sessions: Arc<SessionStore>,
    /// The settings.
    pub config: DaemonConfig,
    /// Authenticated connections per network principal, on every listener.
    pub principals: Arc<PrincipalCounts>,
    /// Becomes true when connections must close (jobs are all ended by then).
    pub closing: watch::Sender<bool>,
    /// Woken when the owner asks for shutdown.
    pub shutdown_requested: Notify,
    /// What each listener counts (for `/metrics`), and where `ferry web` finds an HTTP
    /// listener; listeners opened while the daemon runs join it.
    listeners: Mutex<Vec<Arc<ListenerStats>>>,
    /// What each dialect's adapter shares among its connections (see [`Daemon::state`]).
    dialect_state: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Daemon {
    /// The daemon's shared state over `engine`, its file area and sessions, with `config`.
    pub fn new(
        engine: Engine,
        files: FileArea,
        sessions: SessionStore,
        config: DaemonConfig,
    ) -> Daemon {
        Daemon {
            engine,
            catalog: config.catalog.clone(),
            files: Arc::new(files),
            quotas: Quotas::new(),
            sessions: Arc::new(sessions),
            principals: Arc::new(PrincipalCounts::new(config.connections.per_principal)),
            config,
            closing: watch::Sender::new(false),
            shutdown_requested: Notify::new(),
            listeners: Mutex::default(),
            open_listener: std::sync::OnceLock::new(),
            dialect_state: Mutex::default(),
        }
    }

    /// Counts a listener's connections from now on.
    pub fn add_listener(&self, stats: Arc<ListenerStats>) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stats);
    }

    /// What every listener counts.
    pub fn listener_stats(&self) -> Vec<Arc<ListenerStats>> {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The state of type `T` that one dialect's connections share (made on first use), so
    /// that an adapter keeps its own bookkeeping without the daemon knowing of it.
    pub fn state<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut states = self.dialect_state.lock().unwrap_or_else(|e| e.into_inner());
        let state = states
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        // The map holds a `T` under `T`'s TypeId, so the cast cannot fail; a fresh value
        // would do no harm if it did.
        Arc::clone(state).downcast::<T>().unwrap_or_default()
    }
}
