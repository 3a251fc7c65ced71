//! `ferry status`: whether the daemon runs, where (socket, listeners, state directory), where
//! its log goes, and how busy it is. It never starts a daemon.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ferry_client::{Client, ClientError, Endpoint};
use serde::Serialize;

use crate::cli::StatusArgs;

/// What `ferry status` found.
#[derive(Debug, Default, Serialize)]
struct Status {
    running: bool,
    /// Where it was looked for.
    address: String,
    version: Option<String>,
    pid: Option<u32>,
    listening: Option<String>,
    state_dir: Option<PathBuf>,
    /// Its log file, when its stderr is a file.
    log: Option<PathBuf>,
    /// Where its log goes when not to a file (a terminal, a pipe).
    log_elsewhere: Option<String>,
    running_jobs: Option<u64>,
    queued_jobs: Option<u64>,
    job_slots: Option<u64>,
}

/// Prints the daemon's status; exits 1 when no daemon runs.
pub fn run(target: &Endpoint, args: StatusArgs) -> Result<i32> {
    let status = crate::client_runtime()?.block_on(gather(target))?;
    if args.log {
        return match (&status.log, &status.log_elsewhere) {
            (Some(log), _) => {
                println!("{}", log.display());
                Ok(0)
            }
            (None, Some(elsewhere)) => bail!("the daemon logs to {elsewhere}, not to a file"),
            (None, None) if !status.running => bail!("no daemon is running at {}", status.address),
            (None, None) => bail!("where the daemon logs is not known from here"),
        };
    }
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        print!("{}", text(&status));
    }
    Ok(if status.running { 0 } else { 1 })
}

async fn gather(target: &Endpoint) -> Result<Status> {
    let mut status = Status {
        address: target.to_string(),
        ..Status::default()
    };
    if let Endpoint::Unix(_) = target {
        let state = crate::state_dir_from_env();
        if let Some((pid, listening)) = ferry_daemon::state_dir_holder(&state) {
            status.pid = Some(pid);
            status.listening = Some(listening);
            status.state_dir = Some(state);
            match log_of(pid) {
                Ok(file) => status.log = Some(file),
                Err(elsewhere) => status.log_elsewhere = elsewhere,
            }
        }
    }
    let mut client = match Client::connect(target, crate::CLIENT_NAME).await {
        Ok(client) => client,
        Err(ClientError::NoDaemon { .. }) => return Ok(status),
        Err(e) => return Err(e.into()),
    };
    status.running = true;
    status.version = Some(client.welcome().daemon.clone());
    let cost = client.cost().await?;
    status.running_jobs = Some(cost.running);
    status.queued_jobs = Some(cost.queued);
    status.job_slots = Some(cost.slots);
    Ok(status)
}

/// Where process `pid` writes its log (its stderr): a file, or what it is instead.
fn log_of(pid: u32) -> Result<PathBuf, Option<String>> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/2")).map_err(|_| None)?;
    let shown = target.to_string_lossy();
    if shown.starts_with("/dev/pts/") || shown.starts_with("/dev/tty") {
        Err(Some(format!("the terminal {shown}")))
    } else if shown == "/dev/null" {
        Err(Some("/dev/null (it keeps no log)".into()))
    } else if !target.is_absolute() || !Path::new(&target).is_file() {
        Err(Some(format!("{shown} (its stderr)")))
    } else {
        Ok(target)
    }
}

fn text(status: &Status) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: String| out.push_str(&format!("{name:<10}{value}\n"));
    if !status.running {
        line("daemon", format!("not running at {}", status.address));
        if let Some(pid) = status.pid {
            line(
                "",
                format!(
                    "(pid {pid} holds the state directory but does not answer there: it listens on {})",
                    status.listening.as_deref().unwrap_or("?")
                ),
            );
        }
        return out;
    }
    let version = status.version.as_deref().unwrap_or("ferry");
    match status.pid {
        Some(pid) => line("daemon", format!("running, pid {pid} ({version})")),
        None => line("daemon", format!("running ({version})")),
    }
    line("address", status.address.clone());
    if let Some(listening) = &status.listening {
        line("listening", listening.clone());
    }
    if let Some(state) = &status.state_dir {
        line("state", state.display().to_string());
    }
    match (&status.log, &status.log_elsewhere) {
        (Some(log), _) => line("log", log.display().to_string()),
        (None, Some(elsewhere)) => line("log", elsewhere.clone()),
        (None, None) => {}
    }
    if let (Some(running), Some(queued), Some(slots)) =
        (status.running_jobs, status.queued_jobs, status.job_slots)
    {
        line(
            "jobs",
            format!("{running} running, {queued} queued, {slots} slots"),
        );
    }
    out
}
