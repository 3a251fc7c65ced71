//! `ferry wait`: waits until jobs end (the ones named, or every job queued or running now),
//! following each on one connection, as `pueue wait` does.

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Result};
use ferry_client::{Endpoint, Event, JobExit, JobState};

use crate::cli::WaitArgs;

/// Waits; 0 when every job waited for exited 0, 1 otherwise. Each job that did not succeed
/// is named on stderr with how it ended; `--json` prints one line per job.
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
        let mut ended: BTreeMap<u64, JobExit> = BTreeMap::new();
        for id in &targets {
            // Follow from now: the output is not wanted, only the end.
            let job = client.attach(*id, false, true).await?;
            match (job.state, job.exit) {
                (JobState::Queued | JobState::Running, _) | (_, None) => {
                    pending.insert(*id);
                }
                (_, Some(exit)) => {
                    ended.insert(*id, exit);
                }
            }
        }
        while !pending.is_empty() {
            match client.next_event().await? {
                Some(Event::Exit { job, exit }) if pending.remove(&job) => {
                    ended.insert(job, exit);
                }
                Some(_) => {}
                None => bail!(
                    "the daemon closed the connection with {} job(s) still running",
                    pending.len()
                ),
            }
        }
        let failed = ended.values().filter(|exit| exit.code != Some(0)).count();
        if args.json {
            for (id, exit) in &ended {
                println!("{}", json_line(*id, exit));
            }
        }
        if !args.quiet {
            for (id, exit) in ended.iter().filter(|(_, exit)| exit.code != Some(0)) {
                eprintln!("ferry: job {id} {}", how_it_ended(exit));
            }
            eprintln!(
                "ferry: {} job(s) ended, {failed} of them without success",
                targets.len()
            );
        }
        Ok(if failed == 0 { 0 } else { 1 })
    })
}

/// How a job that did not succeed ended, after "job N".
fn how_it_ended(exit: &JobExit) -> String {
    if exit.lost {
        return "was lost (the daemon stopped while it ran)".into();
    }
    if exit.timed_out {
        return "timed out and was terminated".into();
    }
    if let Some(error) = &exit.error {
        return format!("failed: {error}");
    }
    match (exit.code, exit.signal) {
        (Some(code), _) => format!("exited with {code}"),
        (None, Some(signal)) => format!(
            "was killed by {}",
            ferry_common::signals::signal_name(signal)
                .map(|name| format!("SIG{name}"))
                .unwrap_or_else(|| format!("signal {signal}"))
        ),
        (None, None) => "ended without a status".into(),
    }
}

/// One job's end as a line of `ferry wait --json`.
fn json_line(id: u64, exit: &JobExit) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "success": exit.code == Some(0),
        "exit_code": exit.code,
        "signal": exit.signal,
        "timed_out": exit.timed_out,
        "lost": exit.lost,
        "error": exit.error,
    })
}
