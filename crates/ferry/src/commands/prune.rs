//! `ferry prune`: removes ended jobs from the daemon's history.

use anyhow::{bail, Result};
use ferry_client::Endpoint;

use crate::cli::PruneArgs;

/// Asks the daemon to prune; prints what went.
pub fn run(target: &Endpoint, args: PruneArgs) -> Result<i32> {
    if args.older_than.is_none() && args.keep.is_none() {
        bail!("say what to remove: --older-than DURATION, --keep N, or both");
    }
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let pruned = client
            .prune(args.older_than.map(Into::into), args.keep)
            .await?;
        println!(
            "removed {} job(s), {} bytes of logs",
            pruned.jobs, pruned.bytes
        );
        Ok(0)
    })
}
