//! The listener table: which dialect is served over which transports, by which adapter, with
//! which defaults. Parsing `--listen DIALECT:TRANSPORT:ADDRESS`, the list of forms in
//! `ferry daemon --help`, and the error for a form that is not served all come from it.
//!
//! Adding a dialect is a codec module in `ferry-wire`, an adapter module in `dialects/`, and
//! one row here.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::conn::Conn;
use crate::dialects;
use crate::policy::RefusalKind;

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
    fn address_form(self) -> &'static str {
        match self {
            TransportKind::Unix => "PATH",
            TransportKind::Tcp | TransportKind::Tls => "HOST:PORT",
            TransportKind::Fifo => "IN,OUT",
        }
    }

    const ALL: [TransportKind; 4] = [
        TransportKind::Unix,
        TransportKind::Tcp,
        TransportKind::Tls,
        TransportKind::Fifo,
    ];
}

/// What serves one admitted connection of a dialect.
pub(crate) type Serve = fn(Conn) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// One row of the table.
pub(crate) struct Row {
    /// The dialect's name in a listener spec.
    pub name: &'static str,
    /// Where it comes from, for help texts.
    pub origin: &'static str,
    /// The transports it is meant to be served over.
    pub transports: &'static [TransportKind],
    /// The port a TCP or TLS address without one gets.
    pub default_port: Option<u16>,
    /// It opens every connection with a handshake (which may carry credentials, a token): it
    /// may then be served with TLS beyond loopback. A dialect without one gets its first
    /// request within the handshake time limit, and the idle limit between requests.
    pub authenticates: bool,
    /// Its adapter; `None` for a dialect this build does not serve yet.
    pub serve: Option<Serve>,
    /// A refusal (of a connection that will not be served) in the dialect's own words.
    pub refusal: fn(RefusalKind, &str) -> Vec<u8>,
}

/// The table.
static ROWS: [Row; 7] = [
    Row {
        name: "ferry",
        origin: "the native protocol",
        transports: &[TransportKind::Unix, TransportKind::Tls, TransportKind::Tcp],
        default_port: Some(7070),
        authenticates: true,
        serve: Some(dialects::native::serve),
        refusal: dialects::native::refusal,
    },
    Row {
        name: "fanos",
        origin: "seed 003, Oils' FANOS",
        transports: &[TransportKind::Unix],
        default_port: None,
        authenticates: false,
        serve: Some(dialects::fanos::serve),
        refusal: dialects::fanos::refusal,
    },
    Row {
        name: "cbsd",
        origin: "seed 000, the CBSD socket daemon",
        transports: &[TransportKind::Unix],
        default_port: None,
        authenticates: false,
        serve: Some(dialects::cbsd::serve),
        refusal: dialects::cbsd::refusal,
    },
    Row {
        name: "cbsdng",
        origin: "CBSD's later daemon, binary frames",
        transports: &[TransportKind::Unix],
        default_port: None,
        authenticates: false,
        serve: Some(dialects::cbsdng::serve),
        refusal: dialects::cbsdng::refusal,
    },
    Row {
        name: "rake64",
        origin: "seed 001, distributed rake",
        transports: &[TransportKind::Tcp],
        default_port: Some(6238),
        authenticates: false,
        serve: Some(dialects::rake64::serve),
        refusal: dialects::rake64::refusal,
    },
    Row {
        name: "tsockm",
        origin: "seed 002, TsockM chat",
        transports: &[TransportKind::Tcp],
        default_port: Some(6969),
        authenticates: false,
        serve: Some(dialects::tsockm::serve),
        refusal: dialects::tsockm::refusal,
    },
    Row {
        name: "c2",
        origin: "seed 004, KubOS C2",
        transports: &[TransportKind::Fifo, TransportKind::Tcp],
        default_port: None,
        authenticates: false,
        serve: Some(dialects::c2::serve),
        refusal: dialects::c2::refusal,
    },
];

/// A wire dialect a listener speaks: a row of the table.
#[derive(Clone, Copy)]
pub struct Dialect(&'static Row);

impl Dialect {
    /// The native protocol.
    pub fn native() -> Dialect {
        Dialect(&ROWS[0])
    }

    /// The dialect named `name`, if the table has it.
    pub fn named(name: &str) -> Option<Dialect> {
        ROWS.iter().find(|row| row.name == name).map(Dialect)
    }

    /// Its name in a listener spec.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// Whether this build serves it.
    pub fn is_served(self) -> bool {
        self.0.serve.is_some()
    }

    pub(crate) fn row(self) -> &'static Row {
        self.0
    }
}

impl PartialEq for Dialect {
    fn eq(&self, other: &Dialect) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Dialect {}

impl fmt::Debug for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
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

/// The forms of the rows `rows` picks, joined by ", ".
fn forms(pick: impl Fn(&Row) -> bool) -> String {
    let mut forms = Vec::new();
    for row in ROWS.iter().filter(|row| pick(row)) {
        for kind in row.transports {
            let loopback = if *kind == TransportKind::Tcp {
                " (loopback)"
            } else {
                ""
            };
            forms.push(format!(
                "{}:{}:{}{loopback}",
                row.name,
                kind.name(),
                kind.address_form()
            ));
        }
    }
    forms.join(", ")
}

/// The listener forms, one per line, for `ferry daemon --help`.
pub fn help() -> String {
    let mut text = String::from(
        "Listen on DIALECT:TRANSPORT:ADDRESS (repeatable). Replaces the configuration file's \
         listeners. Default: ferry:unix:<the client socket>. Plain TCP listens on loopback \
         addresses only. Forms:\n",
    );
    for row in &ROWS {
        let port = row
            .default_port
            .map(|p| format!("; default port {p}"))
            .unwrap_or_default();
        let status = if row.serve.is_some() {
            ""
        } else {
            " (not served by this build yet)"
        };
        text.push_str(&format!(
            "  {} ({}{port}){status}\n",
            forms(|r| std::ptr::eq(r, row)),
            row.origin
        ));
    }
    text
}

impl ListenSpec {
    /// Parses `DIALECT:TRANSPORT:ADDRESS` (a TCP or TLS address may leave out the port when
    /// the dialect has a default one).
    pub fn parse(spec: &str) -> Result<ListenSpec, ListenSpecError> {
        let mut parts = spec.splitn(3, ':');
        let (Some(dialect), Some(transport), Some(address)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(ListenSpecError::Form(spec.into()));
        };
        let dialect = Dialect::named(dialect).ok_or_else(|| ListenSpecError::UnknownDialect {
            spec: spec.into(),
            dialect: dialect.into(),
            known: ROWS.iter().map(|r| r.name).collect::<Vec<_>>().join(", "),
        })?;
        let row = dialect.row();
        let kind = TransportKind::ALL
            .into_iter()
            .find(|k| k.name() == transport)
            .filter(|k| row.transports.contains(k))
            .ok_or_else(|| ListenSpecError::Transport {
                spec: spec.into(),
                dialect: row.name,
                transport: transport.into(),
                allowed: row
                    .transports
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let address_error = |problem: &str| ListenSpecError::Address {
            spec: spec.into(),
            problem: problem.into(),
        };
        if address.is_empty() {
            return Err(address_error("the address is empty"));
        }
        let transport = match kind {
            TransportKind::Unix => Transport::Unix(PathBuf::from(address)),
            TransportKind::Fifo => {
                let (input, output) = address
                    .split_once(',')
                    .filter(|(i, o)| !i.is_empty() && !o.is_empty())
                    .ok_or_else(|| {
                        address_error("a FIFO pair is written IN,OUT (the pipe the daemon reads, then the one it writes)")
                    })?;
                Transport::Fifo {
                    input: input.into(),
                    output: output.into(),
                }
            }
            TransportKind::Tcp | TransportKind::Tls => {
                let (host, port) = split_host_port_or_default(address, row.default_port)
                    .map_err(|p| address_error(&p))?;
                if kind == TransportKind::Tls {
                    Transport::Tls { host, port }
                } else {
                    Transport::Tcp { host, port }
                }
            }
        };
        Ok(ListenSpec { dialect, transport })
    }

    /// The native protocol on a Unix socket.
    pub fn native_unix(path: impl Into<PathBuf>) -> ListenSpec {
        ListenSpec {
            dialect: Dialect::native(),
            transport: Transport::Unix(path.into()),
        }
    }

    /// Whether this build serves the spec.
    pub fn check_served(&self) -> Result<(), ListenSpecError> {
        if self.dialect.is_served() {
            Ok(())
        } else {
            Err(ListenSpecError::NotServed {
                spec: self.to_string(),
                served: forms(|row| row.serve.is_some()),
            })
        }
    }
}

/// Splits `HOST:PORT` or `[V6]:PORT`; a bare host takes `default_port` when there is one.
fn split_host_port_or_default(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_every_row_parses_and_prints_back() {
        for spec in [
            "ferry:unix:/tmp/f.sock",
            "ferry:tls:0.0.0.0:7070",
            "ferry:tcp:127.0.0.1:7070",
            "ferry:tcp:[::1]:7070",
            "cbsd:unix:/tmp/cbsd.sock",
            "rake64:tcp:127.0.0.1:6238",
            "tsockm:tcp:127.0.0.1:6969",
            "fanos:unix:/tmp/fanos.sock",
            "c2:fifo:/tmp/c2/in,/tmp/c2/out",
            "c2:tcp:127.0.0.1:8011",
        ] {
            let parsed = ListenSpec::parse(spec).expect(spec);
            assert_eq!(parsed.to_string(), spec);
        }
    }

    #[test]
    fn default_ports_fill_a_bare_host() {
        let spec = ListenSpec::parse("rake64:tcp:127.0.0.1").expect("spec");
        assert_eq!(spec.to_string(), "rake64:tcp:127.0.0.1:6238");
        let spec = ListenSpec::parse("ferry:tls:[::1]").expect("spec");
        assert_eq!(spec.to_string(), "ferry:tls:[::1]:7070");
        let err = ListenSpec::parse("c2:tcp:127.0.0.1").unwrap_err();
        assert!(err.to_string().contains("not HOST:PORT"), "{err}");
    }

    #[test]
    fn every_dialect_of_the_table_is_served() {
        for spec in [
            "ferry:unix:/x",
            "fanos:unix:/x",
            "cbsd:unix:/x",
            "cbsdng:unix:/x",
            "rake64:tcp:127.0.0.1",
            "tsockm:tcp:127.0.0.1",
            "c2:tcp:127.0.0.1:1",
            "c2:fifo:/a,/b",
        ] {
            assert!(
                ListenSpec::parse(spec).expect(spec).check_served().is_ok(),
                "{spec}"
            );
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let msg = |s: &str| ListenSpec::parse(s).unwrap_err().to_string();
        assert!(msg("ferry").contains("DIALECT:TRANSPORT:ADDRESS"));
        assert!(msg("gopher:unix:/x").contains("unknown dialect 'gopher'"));
        assert!(msg("gopher:unix:/x").contains("ferry, fanos, cbsd"));
        assert!(msg("fanos:tcp:127.0.0.1:1").contains("served over: unix"));
        assert!(msg("ferry:tcp:localhost:99999").contains("not a port number"));
        assert!(msg("ferry:tcp:::1:80").contains("brackets"));
        assert!(msg("ferry:unix:").contains("empty"));
        assert!(msg("c2:fifo:/only-one").contains("IN,OUT"));
    }

    #[test]
    fn the_help_names_every_row() {
        let help = help();
        for row in &ROWS {
            assert!(help.contains(&format!("{}:", row.name)), "{help}");
        }
        assert!(!help.contains("not served by this build yet"), "{help}");
    }
}
