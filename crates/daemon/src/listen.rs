//! Listener specifications: `DIALECT:TRANSPORT:ADDRESS`, as given to `ferry daemon --listen`.
//!
//! The parser knows every form ferry is meant to serve; [`ListenSpec::check_served`] says
//! whether this build serves it yet.

use std::fmt;
use std::path::PathBuf;

/// A wire dialect a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The native protocol.
    Ferry,
    /// CBSD socket daemon text frames (seed 000).
    Cbsd,
    /// The distributed rake 64-byte headers (seed 001).
    Rake64,
    /// TsockM chat fields (seed 002).
    Tsockm,
    /// Oils FANOS netstrings with fd passing (seed 003).
    Fanos,
    /// KubOS C2 CSP+CBOR (seed 004).
    C2,
}

impl Dialect {
    const ALL: [(&'static str, Dialect); 6] = [
        ("ferry", Dialect::Ferry),
        ("cbsd", Dialect::Cbsd),
        ("rake64", Dialect::Rake64),
        ("tsockm", Dialect::Tsockm),
        ("fanos", Dialect::Fanos),
        ("c2", Dialect::C2),
    ];

    /// The dialect's name in a listener spec.
    pub fn name(self) -> &'static str {
        Dialect::ALL
            .iter()
            .find(|(_, d)| *d == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// The transports this dialect is served on.
    fn transports(self) -> &'static [&'static str] {
        match self {
            Dialect::Ferry => &["unix", "tls", "tcp"],
            Dialect::Cbsd | Dialect::Fanos => &["unix"],
            Dialect::Rake64 | Dialect::Tsockm => &["tcp"],
            Dialect::C2 => &["fifo", "tcp"],
        }
    }
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
    /// A pair of named pipes in a directory (`client-to-server`, `server-to-client`).
    Fifo(PathBuf),
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
    #[error("listener '{spec}': unknown dialect '{dialect}' (known: ferry, cbsd, rake64, tsockm, fanos, c2)")]
    UnknownDialect {
        /// The whole spec.
        spec: String,
        /// The dialect given.
        dialect: String,
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
    #[error("listener '{0}' is a valid form, but this build of ferry does not serve it yet (served: ferry:unix:PATH, ferry:tls:HOST:PORT, ferry:tcp:HOST:PORT on loopback, fanos:unix:PATH)")]
    NotServed(String),
}

impl ListenSpec {
    /// Parses `DIALECT:TRANSPORT:ADDRESS`.
    pub fn parse(spec: &str) -> Result<ListenSpec, ListenSpecError> {
        let mut parts = spec.splitn(3, ':');
        let (Some(dialect), Some(transport), Some(address)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(ListenSpecError::Form(spec.into()));
        };
        let dialect = Dialect::ALL
            .iter()
            .find(|(name, _)| *name == dialect)
            .map(|(_, d)| *d)
            .ok_or_else(|| ListenSpecError::UnknownDialect {
                spec: spec.into(),
                dialect: dialect.into(),
            })?;
        if !dialect.transports().contains(&transport) {
            return Err(ListenSpecError::Transport {
                spec: spec.into(),
                dialect: dialect.name(),
                transport: transport.into(),
                allowed: dialect.transports().join(", "),
            });
        }
        let address_error = |problem: &str| ListenSpecError::Address {
            spec: spec.into(),
            problem: problem.into(),
        };
        if address.is_empty() {
            return Err(address_error("the address is empty"));
        }
        let transport = match transport {
            "unix" => Transport::Unix(PathBuf::from(address)),
            "fifo" => Transport::Fifo(PathBuf::from(address)),
            tcp_or_tls => {
                let (host, port) = split_host_port(address).map_err(|p| address_error(&p))?;
                if tcp_or_tls == "tls" {
                    Transport::Tls { host, port }
                } else {
                    Transport::Tcp { host, port }
                }
            }
        };
        Ok(ListenSpec { dialect, transport })
    }

    /// Whether this build serves the spec.
    pub fn check_served(&self) -> Result<(), ListenSpecError> {
        match (self.dialect, &self.transport) {
            (
                Dialect::Ferry,
                Transport::Unix(_) | Transport::Tcp { .. } | Transport::Tls { .. },
            )
            | (Dialect::Fanos, Transport::Unix(_)) => Ok(()),
            _ => Err(ListenSpecError::NotServed(self.to_string())),
        }
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

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dialect = self.dialect.name();
        match &self.transport {
            Transport::Unix(path) => write!(f, "{dialect}:unix:{}", path.display()),
            Transport::Fifo(path) => write!(f, "{dialect}:fifo:{}", path.display()),
            Transport::Tcp { host, port } | Transport::Tls { host, port } => {
                let kind = if matches!(self.transport, Transport::Tls { .. }) {
                    "tls"
                } else {
                    "tcp"
                };
                if host.contains(':') {
                    write!(f, "{dialect}:{kind}:[{host}]:{port}")
                } else {
                    write!(f, "{dialect}:{kind}:{host}:{port}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_form_parses() {
        for spec in [
            "ferry:unix:/tmp/f.sock",
            "ferry:tls:0.0.0.0:7070",
            "ferry:tcp:127.0.0.1:7070",
            "ferry:tcp:[::1]:7070",
            "cbsd:unix:/tmp/cbsd.sock",
            "rake64:tcp:127.0.0.1:6238",
            "tsockm:tcp:127.0.0.1:6969",
            "fanos:unix:/tmp/fanos.sock",
            "c2:fifo:/tmp/c2",
            "c2:tcp:127.0.0.1:8011",
        ] {
            let parsed = ListenSpec::parse(spec).expect(spec);
            assert_eq!(parsed.to_string(), spec);
        }
    }

    #[test]
    fn only_the_served_forms_pass() {
        assert!(ListenSpec::parse("ferry:unix:/x")
            .unwrap()
            .check_served()
            .is_ok());
        let err = ListenSpec::parse("tsockm:tcp:127.0.0.1:1")
            .unwrap()
            .check_served()
            .unwrap_err();
        assert!(err.to_string().contains("does not serve it yet"), "{err}");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let msg = |s: &str| ListenSpec::parse(s).unwrap_err().to_string();
        assert!(msg("ferry").contains("DIALECT:TRANSPORT:ADDRESS"));
        assert!(msg("gopher:unix:/x").contains("unknown dialect 'gopher'"));
        assert!(msg("fanos:tcp:127.0.0.1:1").contains("served over: unix"));
        assert!(msg("ferry:tcp:localhost").contains("not HOST:PORT"));
        assert!(msg("ferry:tcp:localhost:99999").contains("not a port number"));
        assert!(msg("ferry:tcp:::1:80").contains("brackets"));
        assert!(msg("ferry:unix:").contains("empty"));
    }
}
