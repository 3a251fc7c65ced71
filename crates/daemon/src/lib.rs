//! Ferry's daemon: the listener table, the connection layer every dialect shares, one adapter
//! per dialect mapping its requests onto the engine, and the daemon's start and shutdown.
//!
//! The crate reads bottom-up; each layer imports only those below it:
//!
//! - [`config`], [`spec`], [`catalog`]: settings and the forms of a listener, as values.
//! - `policy`: what a connection may do (its principal, its commands, its jobs' directory),
//!   and how the layers' errors answer a request; `admission`: the connection pools.
//! - `state`: what every connection shares (the engine, the file area, the sessions).
//! - `transport`: Unix sockets, TLS, FIFO pairs, as far as bytes go; `outbox`: the one
//!   writer of a connection; `order`: accept order.
//! - `conn`: an admitted connection ([`Conn`]: its dialect's contract, transport,
//!   principal, limits, I/O); `reader`: the one stream reader, which keeps the connection
//!   layer's promises (time limits, pauses, fds, the kick, the going-down notice, health
//!   checks, accept order) for every dialect.
//! - `dialects`: the adapters (a codec's requests to the engine's calls and back).
//! - [`listeners`]: the table; `accept`: binding and admission; `console`; [`run`] (in
//!   `server`): the whole daemon, which tests can start in-process.

mod accept;
mod admission;
pub mod catalog;
pub mod cluster;
pub mod config;
mod conn;
mod console;
mod dialects;
pub mod listeners;
mod order;
mod outbox;
mod policy;
mod reader;
mod server;
pub mod spec;
mod state;
mod transport;

pub use catalog::{Catalog, CatalogEntry};
pub use config::{
    CommandPolicy, ConnectionLimits, DaemonConfig, DaemonError, FileQuotas, Listener, NamedToken,
    TlsFiles, DEFAULT_MAX_FILE_SIZE, DEFAULT_UPLOAD_IDLE,
};
pub use ferry_engine::{limit_malloc_arenas, Principal};
pub use server::{run, state_dir_holder};
pub use spec::{Dialect, ListenSpec, ListenSpecError, Transport, TransportKind};

/// What the daemon's command line needs of the engine, without linking it: the engine's
/// settings, and the signal state jobs inherit.
pub mod engine {
    pub use ferry_engine::peers::{HubConfig, SlowConsumer};
    pub use ferry_engine::signals::reset_inherited_signal_state;
    pub use ferry_engine::{EngineConfig, LogLimits, Retention};
}
