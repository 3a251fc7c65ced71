//! `ferry wait`: waits until jobs end (the ones named, or every job queued or running now),
//! following each on one connection, as `pueue wait` does.

use std::collections::HashSet;

use anyhow::{bail, Result};
use ferry_client::{Endpoint, Event, JobState};

use crate::cli::WaitArgs;

/// Waits; 0 when every job waited for exited 0, 1 otherwise.
pub fn run(target: &Endpoint, args: WaitArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let targets: Vec<u64> = if args.jobs.is_empty() {
            client
                .jobs(false)
                .await?
                .into_iter()
                .filter(|job| matches!(job.state, JobState::Queued | JobState::Running))
                .map(|job| job.id)
                .collect()
        } else {
            args.jobs.clone()
        };
        let mut pending = HashSet::new();
        let mut failed = 0usize;
        for id in &targets {
            // Follow from now: the output is not wanted, only the end.
            let job = client.attach(*id, false, true).await?;
            match job.state {
                JobState::Queued | JobState::Running => {
                    pending.insert(*id);
                }
                _ => failed += usize::from(job.exit.is_none_or(|e| e.code != Some(0))),
            }
        }
        while !pending.is_empty() {
            match client.next_event().await? {
                Some(Event::Exit { job, exit }) if pending.remove(&job) => {
                    failed += usize::from(exit.code != Some(0));
                }
                Some(_) => {}
                None => bail!(
                    "the daemon closed the connection with {} job(s) still running",
                    pending.len()
                ),
            }
        }
        if !args.quiet {
            eprintln!(
                "ferry: {} job(s) ended, {} of them without success",
                targets.len(),
                failed
            );
        }
        Ok(if failed == 0 { 0 } else { 1 })
    })
}
