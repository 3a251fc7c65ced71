//! How a daemon reaches its hub's cluster: the NATS server, its credentials and TLS, the
//! cluster's name and this daemon's name in it.

use std::path::PathBuf;

/// The default cluster name.
pub const DEFAULT_CLUSTER_NAME: &str = "ferry";

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

/// Checks a name used in NATS subjects and stream names (a cluster's, a daemon's).
pub fn check_subject_token(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the {what} '{name}' must be 1 to 64 letters, digits, '-' or '_'"
        ))
    }
}

/// This machine's host name, as a daemon name (its first label, made a valid subject token).
pub fn default_node() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let first = host.split('.').next().unwrap_or_default();
    let node: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if node.is_empty() {
        "ferry-daemon".into()
    } else {
        node
    }
}
