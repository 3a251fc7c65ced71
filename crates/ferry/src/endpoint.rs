//! Which daemon a client subcommand talks to: the local socket, or a remote daemon given by
//! --host with its TLS files and token.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ferry_client::Endpoint;

use crate::cli::Cli;

/// The endpoint the global options name.
pub fn from_cli(cli: &Cli, socket: &Path) -> Result<Endpoint> {
    let Some(host_port) = &cli.host else {
        return Ok(Endpoint::Unix(socket.to_owned()));
    };
    let (host, port) = ferry_daemon::listen::split_host_port(host_port)
        .map_err(|problem| anyhow::anyhow!("--host {problem}"))?;
    let from_dir = |name: &str| cli.tls_dir.as_ref().map(|dir| dir.join(name));
    let token = match cli.token_file.clone().or_else(|| from_dir("token")) {
        Some(path) => Some(read_token(&path)?),
        None => None,
    };
    let tls = if cli.no_tls {
        None
    } else {
        let Some(ca) = cli.ca.clone().or_else(|| from_dir("ca.pem")) else {
            bail!(
                "--host needs the daemon's CA: --tls-dir DIR (from `ferry tls init`) or --ca FILE (or --no-tls for a plaintext loopback daemon)"
            );
        };
        let client_cert = match (&cli.cert, &cli.key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
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
