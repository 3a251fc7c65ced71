//! One module per subcommand.

pub mod attach;
pub mod daemon;
pub mod fanos;
pub mod kill;
pub mod prune;
pub mod ps;
pub mod run;
pub mod session;
pub mod shutdown;
pub mod tls;
pub mod transfer;

use anyhow::{Context, Result};
use ferry_client::{Client, Endpoint};

/// Connects to a running daemon (these subcommands do not start one: a fresh daemon has no
/// jobs to show).
pub async fn connect(target: &Endpoint) -> Result<Client> {
    let client = Client::connect(target, crate::CLIENT_NAME).await;
    match target {
        Endpoint::Unix(_) => client.context("is the daemon running? `ferry run` starts it"),
        Endpoint::Tcp { .. } => Ok(client?),
    }
}
