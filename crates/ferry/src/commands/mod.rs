//! One module per subcommand.

pub mod attach;
pub mod daemon;
pub mod kill;
pub mod ps;
pub mod run;
pub mod shutdown;

use std::path::Path;

use anyhow::{Context, Result};
use ferry_client::Client;

/// Connects to a running daemon (these subcommands do not start one: a fresh daemon has no
/// jobs to show).
pub async fn connect(socket: &Path) -> Result<Client> {
    Client::connect(socket, crate::CLIENT_NAME)
        .await
        .context("is the daemon running? `ferry run` starts it")
}
