//! `ferry cost`: how busy the daemon is, and what one more job costs there.

use anyhow::Result;
use ferry_client::Endpoint;

use crate::cli::CostArgs;

/// Prints the daemon's cost and load.
pub fn run(target: &Endpoint, args: CostArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let cost = client.cost().await?;
        if args.json {
            let json = serde_json::json!({
                "cost": cost.cost,
                "running": cost.running,
                "queued": cost.queued,
                "slots": cost.slots,
            });
            println!("{json}");
        } else {
            println!(
                "cost {} ({} running, {} queued, {} job slots)",
                cost.cost, cost.running, cost.queued, cost.slots
            );
        }
        Ok(0)
    })
}
