//! `ferry kill`: signals a job's whole process group.

use anyhow::{anyhow, Result};
use ferry_client::Endpoint;

use crate::cli::KillArgs;

/// Sends the signal; exits 0 once the daemon has delivered it.
pub fn run(target: &Endpoint, args: KillArgs) -> Result<i32> {
    let signal = ferry_common::signals::parse_signal(&args.signal).ok_or_else(|| {
        anyhow!(
            "unknown signal '{}' (try TERM, KILL, INT, HUP or a number)",
            args.signal
        )
    })?;
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        client.signal(args.job, signal).await?;
        Ok(0)
    })
}
