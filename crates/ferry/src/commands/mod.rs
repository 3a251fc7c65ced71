//! One module per subcommand, and the connection every client subcommand opens.

pub mod attach;
pub mod c2;
pub mod chat;
pub mod completions;
pub mod cost;
pub mod daemon;
pub mod fanos;
pub mod files;
pub mod kill;
pub mod log_slice;
pub mod manage;
pub mod peers;
pub mod prune;
pub mod ps;
pub mod rake;
pub mod run;
pub mod session;
pub mod shutdown;
pub mod status;
pub mod terminal;
pub mod tls;
pub mod transfer;
pub mod wait;
pub mod web;

use std::path::Path;

use anyhow::{bail, Result};
use ferry_client::{
    open_or_start, spawn_background_daemon, Client, ClientError, Endpoint, RunRequest, Started,
};

/// Connects to the daemon the options name; a local one is started if none answers (a
/// command that needs the daemon starts it, as `ferry run` does).
pub async fn connect(target: &Endpoint) -> Result<Client> {
    Ok(open(target, None).await?.0)
}

/// Connects as [`connect`] does and, with `run`, submits that job in the same breath.
pub async fn open(
    target: &Endpoint,
    run: Option<&RunRequest<'_>>,
) -> Result<(Client, Option<Started>)> {
    let opened = match target {
        Endpoint::Unix(socket) => open_local(socket, run).await?,
        Endpoint::Tcp { .. } => Client::open(target, crate::CLIENT_NAME, run).await?,
    };
    // Said once, to the owner's first client after the daemon's start.
    if let Some(notice) = &opened.0.welcome().notice {
        eprintln!("ferry: {notice}");
    }
    Ok(opened)
}

/// Connects to the local daemon, starting one when none answers.
async fn open_local(
    socket: &Path,
    run: Option<&RunRequest<'_>>,
) -> Result<(Client, Option<Started>)> {
    let log_file = crate::state_dir_from_env().join("daemon.log");
    let opened = open_or_start(socket, crate::CLIENT_NAME, run, || {
        let program = crate::launch::daemon_program().map_err(std::io::Error::other)?;
        spawn_background_daemon(&program, socket, &log_file)
    })
    .await;
    match opened {
        Ok(opened) => Ok(opened),
        Err(e @ ClientError::Start(_)) => match last_line(&log_file) {
            Some(reason) => bail!("{e}: {reason} (log: {})", log_file.display()),
            None => bail!("{e} (log: {})", log_file.display()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The last non-empty line of a file, without the log's timestamp and level.
fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    // "2026-11-22T19:00:00.000000Z ERROR target: message" -> "message"
    let message = line.split_once(": ").map_or(line, |(_, m)| m);
    Some(message.trim().to_owned())
}
