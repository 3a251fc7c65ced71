//! The forms of a listener: `DIALECT:TRANSPORT:ADDRESS` as values (which dialect, over which
//! transport, where), printed back as they are written. Which forms exist, and parsing them,
//! is the listener table's ([`crate::listeners`]); these are the plain values everything
//! else passes around.

use std::fmt;
use std::path::PathBuf;

/// A wire dialect a listener speaks: a row of the listener table, by its name. Only the
/// table makes one (`Dialect::named`), so every `Dialect` is a row it has.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dialect(&'static str);

impl Dialect {
    /// The native protocol.
    pub fn native() -> Dialect {
        Dialect("ferry")
    }

    /// The row of the table called `name` (the table's own rows only).
    pub(crate) const fn row_named(name: &'static str) -> Dialect {
        Dialect(name)
    }

    /// Its name in a listener spec.
    pub fn name(self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A transport a listener can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// A Unix stream socket at a path.
    Unix,
    /// Plain TCP: loopback addresses only, unless the configuration file opts a listener out.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// A pair of named pipes.
    Fifo,
}

impl TransportKind {
    /// Its name in a listener spec.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Unix => "unix",
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Fifo => "fifo",
        }
    }

    /// What its address looks like, for help texts.
    pub(crate) fn address_form(self) -> &'static str {
        match self {
            TransportKind::Unix => "PATH",
            TransportKind::Tcp | TransportKind::Tls => "HOST:PORT",
            TransportKind::Fifo => "IN,OUT",
        }
    }

    pub(crate) const ALL: [TransportKind; 4] = [
        TransportKind::Unix,
        TransportKind::Tcp,
        TransportKind::Tls,
        TransportKind::Fifo,
    ];
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A Unix stream socket at a path.
    Unix(PathBuf),
    /// Plain TCP (loopback only unless the operator opts out).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port (0 for any free port).
        port: u16,
    },
    /// TLS over TCP.
    Tls {
        /// Host name or address.
        host: String,
        /// Port (0 for any free port).
        port: u16,
    },
    /// A pair of named pipes: the client writes `input`, reads `output`.
    Fifo {
        /// The pipe the daemon reads.
        input: PathBuf,
        /// The pipe the daemon writes.
        output: PathBuf,
    },
}

impl Transport {
    /// Its kind.
    pub fn kind(&self) -> TransportKind {
        match self {
            Transport::Unix(_) => TransportKind::Unix,
            Transport::Tcp { .. } => TransportKind::Tcp,
            Transport::Tls { .. } => TransportKind::Tls,
            Transport::Fifo { .. } => TransportKind::Fifo,
        }
    }
}

/// One parsed `--listen` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The dialect.
    pub dialect: Dialect,
    /// The transport and address.
    pub transport: Transport,
}

/// Why a listener spec was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenSpecError {
    /// Not of the form `DIALECT:TRANSPORT:ADDRESS`.
    #[error("listener '{0}' is not of the form DIALECT:TRANSPORT:ADDRESS (e.g. ferry:unix:/run/user/1000/ferry/ferry.sock)")]
    Form(String),
    /// An unknown dialect.
    #[error("listener '{spec}': unknown dialect '{dialect}' (known: {known})")]
    UnknownDialect {
        /// The whole spec.
        spec: String,
        /// The dialect given.
        dialect: String,
        /// The dialects the table has.
        known: String,
    },
    /// A transport the dialect is not served on.
    #[error("listener '{spec}': dialect {dialect} is not served over '{transport}' (it is served over: {allowed})")]
    Transport {
        /// The whole spec.
        spec: String,
        /// The dialect.
        dialect: &'static str,
        /// The transport given.
        transport: String,
        /// The transports allowed.
        allowed: String,
    },
    /// A bad address.
    #[error("listener '{spec}': {problem}")]
    Address {
        /// The whole spec.
        spec: String,
        /// What is wrong.
        problem: String,
    },
    /// A valid form this build does not serve yet.
    #[error("listener '{spec}' is a valid form, but this build of ferry does not serve it yet (served: {served})")]
    NotServed {
        /// The whole spec.
        spec: String,
        /// The forms this build serves.
        served: String,
    },
}

/// Splits `HOST:PORT` or `[V6]:PORT`; a bare host takes `default_port` when there is one.
pub(crate) fn split_host_port_or_default(
    address: &str,
    default_port: Option<u16>,
) -> Result<(String, u16), String> {
    match (split_host_port(address), default_port) {
        (Ok(parsed), _) => Ok(parsed),
        (Err(_), Some(port))
            if !address.contains(':') || (address.starts_with('[') && address.ends_with(']')) =>
        {
            let host = address.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!("'{address}': the host is empty"));
            }
            Ok((host.to_owned(), port))
        }
        (Err(e), _) => Err(e),
    }
}

/// Splits `HOST:PORT` or `[V6]:PORT`.
pub fn split_host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("'{address}' is not HOST:PORT"))?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .ok_or_else(|| format!("'{address}': unclosed '['"))?,
        None if host.contains(':') => {
            return Err(format!(
                "'{address}': write an IPv6 host in brackets, as [::1]:PORT"
            ))
        }
        None => host,
    };
    if host.is_empty() {
        return Err(format!("'{address}': the host is empty"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("'{port}' is not a port number (0 to 65535)"))?;
    Ok((host.to_owned(), port))
}

impl ListenSpec {
    /// The native protocol on a Unix socket.
    pub fn native_unix(path: impl Into<PathBuf>) -> ListenSpec {
        ListenSpec {
            dialect: Dialect::native(),
            transport: Transport::Unix(path.into()),
        }
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dialect = self.dialect.name();
        let kind = self.transport.kind().name();
        match &self.transport {
            Transport::Unix(path) => write!(f, "{dialect}:{kind}:{}", path.display()),
            Transport::Fifo { input, output } => write!(
                f,
                "{dialect}:{kind}:{},{}",
                input.display(),
                output.display()
            ),
            Transport::Tcp { host, port } | Transport::Tls { host, port } => {
                if host.contains(':') {
                    write!(f, "{dialect}:{kind}:[{host}]:{port}")
                } else {
                    write!(f, "{dialect}:{kind}:{host}:{port}")
                }
            }
        }
    }
}
