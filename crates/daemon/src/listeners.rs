//! The listener table: which dialect is served over which transports, by which adapter, with
//! which defaults, and what the connection layer must know of it (its [`Contract`]).
//! Parsing `--listen DIALECT:TRANSPORT:ADDRESS`, the list of forms in `ferry daemon --help`,
//! and the error for a form that is not served all come from it.
//!
//! Adding a dialect is a codec module in `ferry-wire` (its `Decoder`), an adapter module in
//! `dialects/`, one row here, and its fixture in the conformance matrix
//! (`crates/ferry/tests/integration/conformance.rs`), which runs every promise of the
//! connection layer against every row.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use ferry_engine::peers::hub::Accepts;

use crate::conn::{any_text, Conn, Contract, Pause};
use crate::dialects;
use crate::outbox::Writes;
use crate::policy::RefusalKind;
use crate::spec::{
    split_host_port_or_default, Dialect, ListenSpec, ListenSpecError, Transport, TransportKind,
};

/// What serves one admitted connection of a dialect.
pub(crate) type Serve = fn(Conn) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// One row of the table.
pub(crate) struct Row {
    /// What the connection layer keeps for it: its name, whether it authenticates, whether
    /// it takes fds, its pause, accept order, how it is written.
    pub contract: Contract,
    /// Where it comes from, for help texts.
    pub origin: &'static str,
    /// The transports it is meant to be served over.
    pub transports: &'static [TransportKind],
    /// The port a TCP or TLS address without one gets.
    pub default_port: Option<u16>,
    /// Its adapter; `None` for a dialect this build does not serve yet.
    pub serve: Option<Serve>,
    /// A refusal (of a connection that will not be served) in the dialect's own words.
    pub refusal: fn(RefusalKind, &str) -> Vec<u8>,
    /// Its listeners also take the daemon's web token, which acts for the owner from the
    /// owner's own uid on loopback (so the uid at the other end of a loopback connection is
    /// learnt, and a connection whose uid cannot be learnt is refused).
    pub owner_token: bool,
}

/// What a hub member of the dialect named `name` can be sent, from its row (any text for a
/// name the table does not have: a member of a newer daemon of a hub cluster).
pub(crate) fn hub_accepts(name: &str) -> Accepts {
    Dialect::named(name).map_or(any_text, |dialect| row(dialect).contract.hub_accepts)
}

/// The contract of a dialect read as it comes, with no pause, no order, batched writes.
const fn plain(name: &'static str) -> Contract {
    Contract {
        name,
        authenticates: false,
        takes_fds: false,
        pause: None,
        accept_order: false,
        writes: Writes::Batched,
        hub_accepts: any_text,
    }
}

/// The table.
static ROWS: [Row; 8] = [
    Row {
        contract: Contract {
            authenticates: true,
            takes_fds: true,
            ..plain("ferry")
        },
        origin: "the native protocol",
        transports: &[TransportKind::Unix, TransportKind::Tls, TransportKind::Tcp],
        default_port: Some(7070),
        serve: Some(dialects::native::serve),
        refusal: dialects::native::refusal,
        owner_token: false,
    },
    Row {
        contract: Contract {
            takes_fds: true,
            ..plain("fanos")
        },
        origin: "Oils' FANOS coprocess protocol",
        transports: &[TransportKind::Unix],
        default_port: None,
        serve: Some(dialects::fanos::serve),
        refusal: dialects::fanos::refusal,
        owner_token: false,
    },
    Row {
        contract: plain("cbsd"),
        origin: "the CBSD socket daemon's text protocol",
        transports: &[TransportKind::Unix],
        default_port: None,
        serve: Some(dialects::cbsd::serve),
        refusal: dialects::cbsd::refusal,
        owner_token: false,
    },
    Row {
        contract: plain("cbsdng"),
        origin: "CBSD's later daemon, binary frames",
        transports: &[TransportKind::Unix],
        default_port: None,
        serve: Some(dialects::cbsdng::serve),
        refusal: dialects::cbsdng::refusal,
        owner_token: false,
    },
    Row {
        contract: Contract {
            // A lone code (two bytes, no padding) or the authors' file count ends at a pause.
            pause: Some(Pause::Quiet(Duration::from_millis(50))),
            ..plain("rake64")
        },
        origin: "the distributed rake's 64-byte headers",
        transports: &[TransportKind::Tcp],
        default_port: Some(6238),
        serve: Some(dialects::rake64::serve),
        refusal: dialects::rake64::refusal,
        owner_token: false,
    },
    Row {
        contract: Contract {
            // A login, whose connection stays open, ends at a pause once its fields are in.
            pause: Some(Pause::Quiet(Duration::from_millis(50))),
            // TsockM's client sends each request on a connection of its own.
            accept_order: true,
            // It takes one read() as one message.
            writes: Writes::Paced {
                gap: Duration::from_millis(10),
                timeout: Duration::from_secs(10),
            },
            // Its client cuts at `::`, the byte 0xAA and 1024 bytes.
            hub_accepts: ferry_wire::tsockm::carries,
            ..plain("tsockm")
        },
        origin: "the TsockM chat server",
        transports: &[TransportKind::Tcp],
        default_port: Some(6969),
        serve: Some(dialects::tsockm::serve),
        refusal: dialects::tsockm::refusal,
        owner_token: false,
    },
    Row {
        contract: Contract {
            // A frame a dead client left partial is given up, so the next client's request
            // is read from a clean start.
            pause: Some(Pause::Partial(Duration::from_secs(2))),
            ..plain("c2")
        },
        origin: "KubOS's command and control daemon",
        transports: &[TransportKind::Fifo, TransportKind::Tcp],
        default_port: None,
        serve: Some(dialects::c2::serve),
        refusal: dialects::c2::refusal,
        owner_token: false,
    },
    Row {
        contract: Contract {
            // Every request carries its token (a header or the dashboard's cookie).
            authenticates: true,
            ..plain("http")
        },
        origin: "an HTTP/1.1 JSON API, event streams, Prometheus metrics and the dashboard",
        transports: &[TransportKind::Tcp, TransportKind::Tls],
        default_port: Some(8080),
        serve: Some(dialects::http::serve),
        refusal: dialects::http::refusal,
        owner_token: true,
    },
];

/// The row of a dialect (every [`Dialect`] is one of the table's).
pub(crate) fn row(dialect: Dialect) -> &'static Row {
    ROWS.iter()
        .find(|row| row.contract.name == dialect.name())
        .unwrap_or(&ROWS[0])
}

impl Dialect {
    /// The dialect named `name`, if the table has it.
    pub fn named(name: &str) -> Option<Dialect> {
        ROWS.iter()
            .find(|row| row.contract.name == name)
            .map(|row| Dialect::row_named(row.contract.name))
    }

    /// Whether this build serves it.
    pub fn is_served(self) -> bool {
        row(self).serve.is_some()
    }

    /// The transports it is served over.
    pub fn transports(self) -> &'static [TransportKind] {
        row(self).transports
    }
}

/// The name of every row of the table (served in this build or not), in its order.
pub fn dialect_names() -> Vec<&'static str> {
    ROWS.iter().map(|row| row.contract.name).collect()
}

/// Every form this build serves, `(dialect, transport)`, in the table's order: what the
/// conformance matrix runs its promises against.
pub fn served_forms() -> Vec<(Dialect, TransportKind)> {
    ROWS.iter()
        .filter(|row| row.serve.is_some())
        .flat_map(|row| {
            row.transports
                .iter()
                .map(|kind| (Dialect::row_named(row.contract.name), *kind))
        })
        .collect()
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
                row.contract.name,
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
            known: ROWS
                .iter()
                .map(|r| r.contract.name)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let row = row(dialect);
        let kind = TransportKind::ALL
            .into_iter()
            .find(|k| k.name() == transport)
            .filter(|k| row.transports.contains(k))
            .ok_or_else(|| ListenSpecError::Transport {
                spec: spec.into(),
                dialect: row.contract.name,
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
            "http:tcp:127.0.0.1:8080",
            "http:tls:[::1]:8443",
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
            "http:tcp:127.0.0.1",
            "http:tls:0.0.0.0",
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
            assert!(help.contains(&format!("{}:", row.contract.name)), "{help}");
        }
        assert!(!help.contains("not served by this build yet"), "{help}");
    }
}
