//! The daemon's configuration file (TOML): listeners, TLS, token, catalog and limits.
//!
//! Every value can also be given on the command line, which wins. Errors name the file, the
//! line and the key. docs/configuration.md shows a commented example.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory for job logs and state.
    pub state_dir: Option<PathBuf>,
    /// The file area (default: `state_dir/files`).
    pub files_dir: Option<PathBuf>,
    /// Let network listeners run any command.
    pub allow_any_command: Option<bool>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// TLS files and token.
    #[serde(default)]
    pub tls: TlsSection,
    /// Listeners (`[[listener]]` tables).
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerSection>,
    /// The command catalog (`[catalog.NAME]` tables).
    #[serde(default)]
    pub catalog: BTreeMap<String, CatalogSection>,
    /// The job history.
    #[serde(default)]
    pub history: HistorySection,
    /// More tokens network clients may show, by label (`[tokens]`: `LABEL = "FILE"`); a client
    /// that shows one acts as `token:LABEL`. The token of `[tls]` (or `--token-file`) is
    /// labelled `default`.
    #[serde(default)]
    pub tokens: BTreeMap<String, PathBuf>,
    /// The peer hub.
    #[serde(default)]
    pub hub: HubSection,
}

/// `[hub]`: the peer hub's outboxes, grace, slow consumers and pings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    pub outbox: Option<usize>,
    pub grace: Option<Spanned<String>>,
    /// `"disconnect"` or `"drop"`.
    pub slow_consumer: Option<String>,
    pub slow_consumer_after: Option<Spanned<String>>,
    pub ping_interval: Option<Spanned<String>>,
    pub ping_misses: Option<u32>,
    pub presence_max: Option<usize>,
    /// The NATS URL of the hub's cluster.
    pub cluster: Option<String>,
    pub cluster_name: Option<String>,
    /// This daemon's name in the cluster.
    pub node: Option<String>,
    /// NATS credentials: a user and password, a `.creds` file or an nkey seed file.
    pub user: Option<String>,
    pub password: Option<String>,
    pub creds: Option<PathBuf>,
    pub nkey: Option<PathBuf>,
    /// The CA certificate of the NATS server's TLS.
    pub ca: Option<PathBuf>,
}

/// `[history]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySection {
    /// Keep the history at all (default true).
    pub enabled: Option<bool>,
    /// Ended jobs kept at most.
    pub max_jobs: Option<usize>,
    /// Bytes of logs kept at most.
    pub max_output: Option<u64>,
    /// Ended jobs older than this are removed (e.g. "30d"; "0" keeps them forever).
    pub max_age: Option<Spanned<String>>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_frame_size: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_handshakes: Option<usize>,
    pub max_connections_per_principal: Option<usize>,
    pub max_jobs: Option<usize>,
    pub max_queued: Option<usize>,
    pub max_finished: Option<usize>,
    pub max_log_size: Option<u64>,
    pub max_file_size: Option<u64>,
    /// Bytes each anonymous principal's part of the file area may hold (0: no limit).
    pub quota_anonymous: Option<u64>,
    /// Bytes each token's or client certificate's part may hold (0: no limit).
    pub quota_network: Option<u64>,
    /// `"1m"`: how long an upload may go without a byte (`"0"`: as long as it likes).
    pub upload_idle_timeout: Option<Spanned<String>>,
    pub kill_grace: Option<Spanned<String>>,
    pub handshake_timeout: Option<Spanned<String>>,
    /// `"10m"`: the idle limit of dialects without a handshake (`"0"`: none).
    pub idle_timeout: Option<Spanned<String>>,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub dir: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    /// `DIALECT:TRANSPORT:ADDRESS`.
    pub spec: Spanned<String>,
    /// `"any"` or `"catalog"`.
    pub commands: Option<Spanned<String>>,
    /// For TLS: client certificates from this CA authenticate on this listener.
    pub client_ca: Option<PathBuf>,
    /// For plaintext TCP: serve addresses beyond loopback too (anyone who can reach them can
    /// then use the listener, unencrypted).
    #[serde(default)]
    pub allow_non_loopback: bool,
    /// Its clients may see every job, not only their own (an operators' listener).
    #[serde(default)]
    pub see_all_jobs: bool,
    /// Its own pool of authenticated connections (default: `limits.max_connections`).
    pub max_connections: Option<usize>,
    /// Its own pool of connections still authenticating (default: `limits.max_handshakes`).
    pub max_handshakes: Option<usize>,
}

/// One `[catalog.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSection {
    /// The program to run.
    pub program: PathBuf,
    /// Arguments always passed first.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A loaded file: its path and text (for error positions) and its values.
pub struct Loaded {
    pub path: PathBuf,
    text: String,
    pub config: FileConfig,
}

impl Loaded {
    /// An error about the value at `span`, naming the file, line and key.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        problem: impl std::fmt::Display,
    ) -> anyhow::Error {
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        anyhow!("{}, line {line}, key {key}: {problem}", self.path.display())
    }

    /// A duration value (`"5s"`, `"300ms"`), or an error at its position.
    pub fn duration(&self, value: &Option<Spanned<String>>, key: &str) -> Result<Option<Duration>> {
        value
            .as_ref()
            .map(|v| {
                humantime::parse_duration(v.get_ref()).map_err(|e| {
                    self.error_at(
                        v.span(),
                        key,
                        format!(
                            "'{}' is not a duration ({e}); write e.g. 5s, 300ms, 1m",
                            v.get_ref()
                        ),
                    )
                })
            })
            .transpose()
    }
}

/// The default configuration file path.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(base.join("ferry").join("daemon.toml"))
}

/// Loads `explicit` (which must exist), or the default file if it exists.
pub fn load(explicit: Option<&Path>) -> Result<Option<Loaded>> {
    let path = match explicit {
        Some(path) => path.to_owned(),
        None => match default_path() {
            Some(path) if path.exists() => path,
            _ => return Ok(None),
        },
    };
    let (text, config) = read_toml(&path)?;
    Ok(Some(Loaded { path, text, config }))
}

/// Reads and parses a TOML file; an error names the file and the line.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(String, T)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    let value = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(line) => anyhow!("{}, line {line}: {}", path.display(), e.message()),
            None => anyhow!("{}: {}", path.display(), e.message()),
        }
    })?;
    Ok((text, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("daemon.toml");
        std::fs::write(&path, text)?;
        let loaded = load(Some(&path))?.expect("explicit file");
        Ok(loaded)
    }

    #[test]
    fn the_documented_example_is_a_valid_file() {
        let readme = include_str!("../../../docs/configuration.md");
        let start = readme
            .find("```toml\n# Where job logs live")
            .expect("docs/configuration.md's daemon.toml example");
        let example = &readme[start + "```toml\n".len()..];
        let example = &example[..example.find("```").expect("its end")];
        let loaded = parse(example).expect("the documented example parses");
        let config = &loaded.config;
        assert_eq!(config.limits.max_connections, Some(64));
        assert_eq!(config.limits.max_handshakes, Some(64));
        assert_eq!(config.limits.max_connections_per_principal, Some(16));
        assert_eq!(config.tokens.len(), 1);
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(config.catalog.len(), 2);
        assert_eq!(config.hub.slow_consumer.as_deref(), Some("disconnect"));
        assert_eq!(
            (config.hub.outbox, config.hub.ping_misses),
            (Some(1024), Some(3))
        );
    }

    #[test]
    fn a_full_file_parses() {
        let loaded = parse(
            r#"
state_dir = "/var/lib/ferry"
allow_any_command = false

[limits]
max_jobs = 8
kill_grace = "2s"

[tls]
dir = "/etc/ferry/tls"

[[listener]]
spec = "ferry:tls:0.0.0.0:7070"
commands = "catalog"

[catalog.uname]
program = "/bin/uname"
args = ["-a"]
"#,
        )
        .expect("parses");
        assert_eq!(loaded.config.limits.max_jobs, Some(8));
        assert_eq!(
            loaded
                .duration(&loaded.config.limits.kill_grace, "limits.kill_grace")
                .expect("duration"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(loaded.config.listeners.len(), 1);
        assert_eq!(loaded.config.catalog["uname"].args, vec!["-a"]);
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let err = parse("[limits]\nmax_jobs = 8\nmax_jbos = 9\n")
            .err()
            .expect("unknown key");
        let text = err.to_string();
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("max_jbos"), "{text}");
        let loaded = parse("[limits]\n\nkill_grace = \"soon\"\n").expect("parses");
        let err = loaded
            .duration(&loaded.config.limits.kill_grace, "limits.kill_grace")
            .expect_err("bad duration")
            .to_string();
        assert!(err.contains("line 3, key limits.kill_grace"), "{err}");
        let err = parse("[limits]\nmax_jobs = \"many\"\n")
            .err()
            .expect("type")
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
