//! `ferry shutdown`: asks the daemon to stop and waits until it has. With no daemon running,
//! it says so and succeeds (there is nothing to stop).

use std::time::Duration;

use anyhow::{bail, Result};
use ferry_client::{Client, ClientError, Endpoint};

/// Longest wait for the daemon to finish going down (its kill grace period plus a margin).
const WAIT: Duration = Duration::from_secs(30);

/// Sends `Shutdown` and waits for the daemon to close the connection.
pub fn run(target: &Endpoint) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = match Client::connect(target, crate::CLIENT_NAME).await {
            Ok(client) => client,
            Err(ClientError::NoDaemon { path, .. }) => {
                eprintln!("ferry: no daemon is running at {path}: nothing to stop");
                return Ok(0);
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
