//! Which daemon a client subcommand talks to: the local socket, or a remote daemon given by
//! --host, with its TLS files and token from the command line or the client configuration
//! file's entry for that host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ferry_client::Endpoint;
use serde::Deserialize;

use crate::cli::Cli;

/// The client configuration file: `$XDG_CONFIG_HOME/ferry/client.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    /// Remote daemons by name (`[hosts.NAME]`).
    #[serde(default)]
    hosts: BTreeMap<String, HostEntry>,
}

/// One `[hosts.NAME]` entry.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    /// `HOST:PORT`.
    address: String,
    tls_dir: Option<PathBuf>,
    ca: Option<PathBuf>,
    token_file: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    no_tls: bool,
}

/// The client configuration file's path.
pub fn client_config_path() -> Option<PathBuf> {
    crate::config::default_path().map(|daemon| daemon.with_file_name("client.toml"))
}

fn load_client_config() -> Result<ClientConfig> {
    let Some(path) = client_config_path().filter(|p| p.exists()) else {
        return Ok(ClientConfig::default());
    };
    Ok(crate::config::read_toml(&path)?.1)
}

/// The options that say how to reach a remote daemon (the global `--tls-dir`, `--ca`,
/// `--token-file`, `--cert`, `--key`, `--no-tls`), for `--host` and for `ferry rake`'s hosts.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    tls_dir: Option<PathBuf>,
    ca: Option<PathBuf>,
    token_file: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    no_tls: bool,
}

impl RemoteOptions {
    /// The options of the command line.
    pub fn from_cli(cli: &Cli) -> RemoteOptions {
        RemoteOptions {
            tls_dir: cli.globals.tls_dir.clone(),
            ca: cli.globals.ca.clone(),
            token_file: cli.globals.token_file.clone(),
            cert: cli.globals.cert.clone(),
            key: cli.globals.key.clone(),
            no_tls: cli.globals.no_tls,
        }
    }
}

/// The endpoint the global options name. `--host` takes `HOST:PORT` or the name of an entry
/// of the client configuration file; options given on the command line win over the entry's.
pub fn from_cli(cli: &Cli, socket: &Path) -> Result<Endpoint> {
    match &cli.globals.host {
        None => Ok(Endpoint::Unix(socket.to_owned())),
        Some(host) => {
            for_host(&RemoteOptions::from_cli(cli), host).map_err(|e| anyhow!("--host {e}"))
        }
    }
}

/// The endpoint of a remote daemon: `host_arg` is `HOST:PORT` or the name of an entry of the
/// client configuration file; `options` win over the entry's.
pub fn for_host(options: &RemoteOptions, host_arg: &str) -> Result<Endpoint> {
    let config = load_client_config()?;
    let entry = config.hosts.get(host_arg).cloned().or_else(|| {
        config
            .hosts
            .values()
            .find(|entry| entry.address == *host_arg)
            .cloned()
    });
    let entry = entry.unwrap_or_default();
    let address = if entry.address.is_empty() {
        host_arg
    } else {
        entry.address.as_str()
    };
    let (host, port) = ferry_daemon::spec::split_host_port(address).map_err(|problem| {
        anyhow!("{problem} (give HOST:PORT, or a host named in the client configuration file)")
    })?;
    let tls_dir = options.tls_dir.clone().or(entry.tls_dir);
    let from_dir = |name: &str| tls_dir.as_ref().map(|dir| dir.join(name));
    let token_file = options
        .token_file
        .clone()
        .or(entry.token_file)
        .or_else(|| from_dir("token").filter(|path| path.exists()));
    let token = match token_file {
        Some(path) => Some(read_token(&path)?),
        None => None,
    };
    let tls = if options.no_tls || entry.no_tls {
        None
    } else {
        let Some(ca) = options
            .ca
            .clone()
            .or(entry.ca)
            .or_else(|| from_dir("ca.pem"))
        else {
            bail!(
                "{host_arg}: needs the daemon's CA: --tls-dir DIR (from `ferry tls init`) or --ca FILE (or --no-tls for a plaintext loopback daemon)"
            );
        };
        let cert = options.cert.clone().or(entry.cert);
        let key = options.key.clone().or(entry.key);
        let client_cert = match (&cert, &key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => bail!("a client certificate needs both cert and key"),
        };
        Some(ferry_client::tls::client_config(&ca, client_cert)?)
    };
    Ok(Endpoint::Tcp {
        host,
        port,
        tls,
        token,
    })
}

/// The endpoint of a Rakefile's host: the client configuration file's entry of that name if
/// there is one, else `NAME:PORT` (as for `--host`).
pub fn for_named_host(options: &RemoteOptions, name: &str, port: u16) -> Result<Endpoint> {
    if load_client_config()?.hosts.contains_key(name) {
        return for_host(options, name);
    }
    let address = if name.contains(':') {
        format!("[{name}]:{port}")
    } else {
        format!("{name}:{port}")
    };
    for_host(options, &address)
}

/// Reads a token file (surrounding white space is not part of the token).
pub fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(token.to_owned())
}
