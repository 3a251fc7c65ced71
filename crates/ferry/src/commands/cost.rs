//! `ferry cost`: how busy the daemon is, and what one more job costs there.

use anyhow::Result;
use ferry_client::Endpoint;

/// Prints the daemon's cost and load.
pub fn run(target: &Endpoint) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let cost = client.cost().await?;
        println!(
            "cost {} ({} running, {} queued, {} job slots)",
            cost.cost, cost.running, cost.queued, cost.slots
        );
        Ok(0)
    })
}
