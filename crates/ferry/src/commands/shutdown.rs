//! `ferry shutdown`: asks the daemon to stop and waits until it has.

use ferry_client::Endpoint;
use std::time::Duration;

use anyhow::{bail, Result};
use ferry_wire::native::{ClientMessage, DaemonMessage};

/// Longest wait for the daemon to finish going down (its kill grace period plus a margin).
const WAIT: Duration = Duration::from_secs(30);

/// Sends `Shutdown` and waits for the daemon to close the connection.
pub fn run(target: &Endpoint) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let request = client.request_id();
        client.send(&ClientMessage::Shutdown { request }).await?;
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                match client.recv().await {
                    Ok(Some(DaemonMessage::Error { message, .. })) => bail!("{message}"),
                    Ok(Some(_)) => {}
                    // Closed (or reset) by the daemon as it exits.
                    Ok(None) | Err(_) => return Ok(0),
                }
            }
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => bail!("the daemon did not stop within {} s", WAIT.as_secs()),
        }
    })
}
