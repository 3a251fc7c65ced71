//! `ferry prune`: removes ended jobs from the daemon's history.

use anyhow::{bail, Result};
use ferry_client::Endpoint;
use ferry_wire::native::{ClientMessage, DaemonMessage};

use crate::cli::PruneArgs;

/// Asks the daemon to prune; prints what went.
pub fn run(target: &Endpoint, args: PruneArgs) -> Result<i32> {
    if args.older_than.is_none() && args.keep.is_none() {
        bail!("say what to remove: --older-than DURATION, --keep N, or both");
    }
    let older_than_ms = args
        .older_than
        .map(|d| u64::try_from(std::time::Duration::from(d).as_millis()).unwrap_or(u64::MAX));
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let request = client.request_id();
        client
            .send(&ClientMessage::Prune {
                request,
                older_than_ms,
                keep: args.keep,
            })
            .await?;
        loop {
            match client.recv().await? {
                Some(DaemonMessage::Pruned { jobs, bytes, .. }) => {
                    println!("removed {jobs} job(s), {bytes} bytes of logs");
                    return Ok(0);
                }
                Some(DaemonMessage::Error { message, .. }) => bail!("{message}"),
                Some(_) => {}
                None => bail!("the daemon closed the connection"),
            }
        }
    })
}
