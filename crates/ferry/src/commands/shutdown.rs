//! `ferry shutdown`: asks the daemon to stop and waits until it has. A daemon that holds the
//! state directory but does not listen on the socket (started with other listeners) is asked
//! with SIGTERM. With no daemon running, it says so and succeeds (there is nothing to stop).

use std::time::Duration;

use std::path::Path;

use anyhow::{bail, Context, Result};
use ferry_client::{Client, ClientError, Endpoint};

/// Longest wait for the daemon to finish going down (its kill grace period plus a margin).
const WAIT: Duration = Duration::from_secs(30);

/// Sends `Shutdown` and waits for the daemon to close the connection.
pub fn run(target: &Endpoint) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = match Client::connect(target, crate::CLIENT_NAME).await {
            Ok(client) => client,
            Err(ClientError::NoDaemon { path, .. }) => {
                let state = crate::state_dir_from_env();
                let Some((pid, listening)) = ferry_daemon::state_dir_holder(&state) else {
                    eprintln!("ferry: no daemon is running at {path}: nothing to stop");
                    return Ok(0);
                };
                eprintln!(
                    "ferry: the daemon holding {} (pid {pid}, listening on {listening}) does not listen on {path}: stopping it with SIGTERM",
                    state.display()
                );
                return stop_by_signal(&state, pid).await;
            }
            Err(e) => return Err(e.into()),
        };
        client.shutdown().await?;
        if !client.wait_closed(WAIT).await {
            bail!("the daemon did not stop within {} s", WAIT.as_secs());
        }
        Ok(0)
    })
}

/// Sends SIGTERM to the daemon `pid` holding `state`, and waits until it has let go of it.
async fn stop_by_signal(state: &Path, pid: u32) -> Result<i32> {
    let process = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .context("the state directory's lock names no valid pid")?;
    rustix::process::kill_process(process, rustix::process::Signal::TERM)
        .with_context(|| format!("cannot signal the daemon (pid {pid})"))?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while ferry_daemon::state_dir_holder(state).is_some() {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the daemon (pid {pid}) did not stop within {} s",
                WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(0)
}
