//! The daemon's settings (what `ferry daemon` and its configuration file decide), and the
//! errors that stop it from starting. Everything else in the crate reads these; they read
//! nothing of it but the listener forms ([`crate::spec`]) and the catalog.

use std::path::PathBuf;
use std::time::Duration;

use ferry_engine::{EngineConfig, EngineError, Principal};

use crate::catalog::Catalog;
use crate::spec::{ListenSpec, ListenSpecError};

/// Which commands a listener's clients may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandPolicy {
    /// Any command, as in the owner's shell.
    Any,
    /// Only the names in the daemon's catalog.
    Catalog,
}

/// Connection limits: defaults for the daemon, or one listener's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Authenticated connections a listener serves at once.
    pub per_listener: usize,
    /// Connections a listener holds at once that have not finished authenticating; more are
    /// closed as they arrive.
    pub handshakes_per_listener: usize,
    /// Authenticated connections one network principal holds at once, on all listeners.
    pub per_principal: usize,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            per_listener: 256,
            handshakes_per_listener: 64,
            per_principal: 64,
        }
    }
}

/// The files a TLS listener is served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// A CA whose client certificates authenticate clients without a token (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Default largest file a client may put (64 GiB).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 30;

/// How many bytes each principal's part of the file area may hold (`None`: no limit). The
/// owner's is never limited: it is the whole area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileQuotas {
    /// Each anonymous principal's (one per dialect and local user): 1 GiB by default.
    pub anonymous: Option<u64>,
    /// Each token's and each client certificate's: 64 GiB by default.
    pub network: Option<u64>,
}

impl Default for FileQuotas {
    fn default() -> FileQuotas {
        FileQuotas {
            anonymous: Some(1 << 30),
            network: Some(64 << 30),
        }
    }
}

impl FileQuotas {
    /// The quota of `principal`'s part of the file area.
    pub fn of(&self, principal: &Principal) -> Option<u64> {
        match principal {
            Principal::Owner => None,
            Principal::Anonymous { .. } => self.anonymous,
            Principal::Token(_) | Principal::Certificate(_) => self.network,
        }
    }
}

/// Default time an upload may go without a byte before it is dropped.
pub const DEFAULT_UPLOAD_IDLE: Duration = Duration::from_secs(60);

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where to listen.
    pub listeners: Vec<Listener>,
    /// Engine settings (log directory, job limits).
    pub engine: EngineConfig,
    /// Largest frame accepted after the handshake.
    pub max_frame: usize,
    /// How many connections are served at once: per listener (authenticated, and still
    /// authenticating) and per network principal; a listener may have its own.
    pub connections: ConnectionLimits,
    /// Time a new connection has for its handshake (or, in a dialect without one, for its
    /// first message).
    pub handshake_timeout: Duration,
    /// Time a connection of a dialect without a handshake of its own may stay silent between
    /// requests before it is closed; `None`: as long as it likes.
    pub idle_timeout: Option<Duration>,
    /// Certificate and key for TLS listeners.
    pub tls: Option<TlsFiles>,
    /// The tokens TCP and TLS clients may present (unless a client certificate vouches), each
    /// with its label: a client that shows one acts as `token:LABEL`.
    pub tokens: Vec<NamedToken>,
    /// The daemon's web token: shown on its HTTP listeners from the owner's own uid on
    /// loopback, it acts for the owner (`ferry web` hands it to the browser). Empty until the
    /// daemon starts, which makes a fresh one for each run (see [`new_web_token`]).
    pub web_token: String,
    /// Let TCP and TLS listeners run any command, not only the catalog's.
    pub allow_any_command: bool,
    /// The commands catalog-only listeners run.
    pub catalog: Catalog,
    /// The file area: where `put` writes and `get` reads, and where remote clients' jobs run.
    pub files_dir: PathBuf,
    /// Largest file a client may put.
    pub max_file_size: u64,
    /// How much each principal's part of the file area may hold.
    pub quotas: FileQuotas,
    /// Time an upload may go without a byte before it is dropped and its room given back;
    /// `None`: as long as it likes.
    pub upload_idle_timeout: Option<Duration>,
    /// Where stateful shell sessions keep their state.
    pub sessions_dir: PathBuf,
    /// Read admin commands (`:list`, `:kill`, `:msg`...) on stdin and answer on stdout.
    pub console: bool,
    /// Record every byte each peer sends under this directory, in `DIALECT/PEER-ID` files (a
    /// debugging aid; recordings hold tokens).
    pub record_wire: Option<PathBuf>,
    /// The hub's cluster, if it joins one (`--hub-cluster`).
    pub cluster: Option<ClusterConfig>,
}

/// A fresh web token: 256 random bits, in hex.
pub fn new_web_token() -> String {
    let mut bytes = [0u8; 32];
    // The kernel's random source does not fail for 32 bytes; were it to, the token would be
    // refused below rather than be predictable.
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) != Ok(32) {
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hub cluster's settings (`--hub-cluster`, `[hub] cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The NATS server(s): `nats://HOST:PORT` (`tls://` for TLS), comma-separated.
    pub url: String,
    /// The cluster's name: daemons with the same name on the same NATS share one hub.
    pub name: String,
    /// This daemon's name in the cluster (members show as `ann@NODE`).
    pub node: String,
    /// How the daemon proves itself to NATS.
    pub credentials: Credentials,
    /// CA certificate to trust for the NATS server's TLS (PEM).
    pub ca: Option<PathBuf>,
}

/// NATS credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// None (or those in the URL).
    #[default]
    None,
    /// A user and a password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A `.creds` file (a JWT and an nkey seed).
    CredsFile(PathBuf),
    /// A file holding an nkey seed.
    NkeySeedFile(PathBuf),
}

impl DaemonConfig {
    /// Defaults: one native listener on `socket`, logs in `log_dir`.
    pub fn new(socket: PathBuf, log_dir: PathBuf) -> DaemonConfig {
        DaemonConfig {
            listeners: vec![Listener::new(ListenSpec::native_unix(socket))],
            engine: EngineConfig::new(log_dir.clone()),
            max_frame: ferry_wire::DEFAULT_MAX_FRAME,
            connections: ConnectionLimits::default(),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: None,
            tls: None,
            tokens: Vec::new(),
            web_token: String::new(),
            allow_any_command: false,
            catalog: Catalog::default(),
            files_dir: log_dir.with_file_name("files"),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            quotas: FileQuotas::default(),
            upload_idle_timeout: Some(DEFAULT_UPLOAD_IDLE),
            sessions_dir: log_dir.with_file_name("sessions"),
            console: false,
            record_wire: None,
            cluster: None,
        }
    }
}

/// A token network clients may show, and the label they then act as (`token:LABEL`).
#[derive(Clone, PartialEq, Eq)]
pub struct NamedToken {
    /// Its label.
    pub label: String,
    /// The secret itself.
    pub secret: String,
}

impl std::fmt::Debug for NamedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in debug output.
        write!(f, "NamedToken({})", self.label)
    }
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
    /// For a plaintext TCP listener: serve addresses beyond loopback too (set in the
    /// configuration file only; a warning is logged).
    pub allow_non_loopback: bool,
    /// Its clients may see every job (`ps`, `log`, `attach`), not only their own: for an
    /// operators' listener (set in the configuration file).
    pub see_all_jobs: bool,
    /// Its own pool of authenticated connections, instead of the daemon's default size.
    pub max_connections: Option<usize>,
    /// Its own pool of connections still authenticating, instead of the daemon's default size.
    pub max_handshakes: Option<usize>,
}

impl Listener {
    /// A listener with the default policy.
    pub fn new(spec: ListenSpec) -> Listener {
        Listener {
            spec,
            commands: None,
            client_ca: None,
            allow_non_loopback: false,
            see_all_jobs: false,
            max_connections: None,
            max_handshakes: None,
        }
    }

    /// Its connection limits: its own where it has them, else the daemon's.
    pub fn limits(&self, daemon: &ConnectionLimits) -> ConnectionLimits {
        ConnectionLimits {
            per_listener: self.max_connections.unwrap_or(daemon.per_listener),
            handshakes_per_listener: self
                .max_handshakes
                .unwrap_or(daemon.handshakes_per_listener),
            per_principal: daemon.per_principal,
        }
    }
}

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon serves this socket.
    #[error("another ferry daemon is already serving {0}")]
    AlreadyRunning(PathBuf),
    /// Another daemon holds the state directory.
    #[error("the state directory {} is in use by another ferry daemon ({holder}); stop it (ferry shutdown), or give this daemon a state directory of its own with --state-dir DIR", dir.display())]
    StateDirInUse {
        /// The state directory.
        dir: PathBuf,
        /// What its lock file says of the daemon holding it (pid, listeners).
        holder: String,
    },
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
