//! How a daemon reaches its hub's cluster: the settings' checks and defaults (the settings
//! themselves are values of `crate::config`).

pub use crate::config::{ClusterConfig, Credentials};

/// The default cluster name.
pub const DEFAULT_CLUSTER_NAME: &str = "ferry";

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
