//! `ferry ps`: lists jobs as a table or as JSON lines.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Result;
use ferry_client::{Endpoint, JobInfo, JobState, DEFAULT_GROUP};
use serde::Serialize;

use crate::cli::PsArgs;

/// A `--state` of `ferry ps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFilter {
    /// Waiting to start.
    Queued,
    /// Running (not paused).
    Running,
    /// Stopped by `ferry pause`.
    Paused,
    /// Ended on its own, whatever its status.
    Exited,
    /// Ended with a status other than 0 (non-zero, killed, timed out, never started,
    /// dependency failed).
    Failed,
    /// Lost: the daemon stopped while it was queued or running.
    Lost,
}

impl StateFilter {
    /// Whether `job` is in this state.
    fn matches(self, job: &JobInfo) -> bool {
        let failed = job
            .exit
            .as_ref()
            .is_some_and(|exit| exit.shell_status() != 0 || exit.error.is_some());
        match self {
            StateFilter::Queued => job.state == JobState::Queued,
            StateFilter::Running => job.state == JobState::Running,
            StateFilter::Paused => job.state == JobState::Paused,
            StateFilter::Exited => {
                job.state == JobState::Finished
                    && job.exit.as_ref().is_some_and(|e| e.code.is_some())
            }
            StateFilter::Failed => {
                matches!(job.state, JobState::Finished | JobState::DependencyFailed) && failed
            }
            StateFilter::Lost => job.state == JobState::Lost,
        }
    }
}

/// Whether `job` passes `ps`'s filters (each given one must hold; one of several states).
fn wanted(args: &PsArgs, job: &JobInfo) -> bool {
    (args.state.is_empty() || args.state.iter().any(|state| state.matches(job)))
        && args.group.as_ref().is_none_or(|group| &job.group == group)
        && args
            .label
            .as_ref()
            .is_none_or(|label| job.label.as_ref() == Some(label))
}

/// Prints the daemon's jobs.
pub fn run(target: &Endpoint, args: PsArgs) -> Result<i32> {
    let mut jobs = crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        anyhow::Ok(client.jobs(args.all).await?)
    })?;
    jobs.retain(|job| wanted(&args, job));
    let mut out = String::new();
    if args.json {
        for job in &jobs {
            out.push_str(&serde_json::to_string(&JsonJob::from(job))?);
            out.push('\n');
        }
    } else {
        out.push_str(&table(&jobs));
    }
    print!("{out}");
    Ok(0)
}

/// One line of `ferry ps --json`.
#[derive(Serialize)]
struct JsonJob {
    id: u64,
    state: &'static str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    killed: bool,
    error: Option<String>,
    pid: Option<u32>,
    submitted: String,
    started: Option<String>,
    run_time_us: u64,
    command: Vec<String>,
    principal: String,
    /// It ran on its client's terminal: no log of its output was kept.
    no_log: bool,
    group: String,
    label: Option<String>,
    after: Vec<u64>,
    paused_us: u64,
    ended: Option<String>,
}

impl From<&JobInfo> for JsonJob {
    fn from(job: &JobInfo) -> JsonJob {
        let exit = job.exit.as_ref();
        JsonJob {
            id: job.id,
            state: state_name(job),
            exit_code: exit.and_then(|e| e.code),
            signal: exit.and_then(|e| e.signal),
            timed_out: exit.is_some_and(|e| e.timed_out),
            killed: exit.is_some_and(|e| e.killed),
            error: exit.and_then(|e| e.error.clone()),
            pid: job.pid,
            submitted: timestamp(job.submitted_ms),
            started: job.started_ms.map(timestamp),
            run_time_us: job.run_us,
            command: job
                .argv
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
            principal: job.principal.clone(),
            no_log: job.no_log,
            group: job.group.clone(),
            label: job.label.clone(),
            after: job.after.clone(),
            paused_us: job.paused_us,
            ended: job.ended_ms.map(timestamp),
        }
    }
}

/// The state shown to people: finished jobs say how they ended.
pub(crate) fn state_name(job: &JobInfo) -> &'static str {
    match (job.state, &job.exit) {
        (JobState::Lost, _) => "lost",
        (JobState::Queued, _) => "queued",
        (JobState::Running, _) => "running",
        (JobState::Paused, _) => "paused",
        (JobState::DependencyFailed, _) => "dependency-failed",
        (JobState::Finished, Some(exit)) if exit.timed_out => "timeout",
        (JobState::Finished, Some(exit)) if exit.error.is_some() && exit.signal.is_some() => {
            "cancelled"
        }
        (JobState::Finished, Some(exit)) if exit.error.is_some() => "failed",
        (JobState::Finished, Some(exit)) if exit.signal.is_some() => "killed",
        (JobState::Finished, _) => "exited",
    }
}

fn exit_column(job: &JobInfo) -> String {
    match &job.exit {
        Some(exit) => match (exit.code, exit.signal) {
            (Some(code), _) => code.to_string(),
            (None, Some(signal)) => ferry_common::signals::signal_name(signal)
                .map(|name| format!("SIG{name}"))
                .unwrap_or_else(|| format!("signal {signal}")),
            (None, None) => "-".into(),
        },
        None => "-".into(),
    }
}

/// A time for people, to the second (UTC).
pub(crate) fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A run time for people: 0.012s, 4.5s, 3m07s, 2h05m.
fn run_time(us: u64) -> String {
    let secs = us / 1_000_000;
    match secs {
        0..=9 => format!("{:.3}s", us as f64 / 1e6),
        10..=59 => format!("{:.1}s", us as f64 / 1e6),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// Quotes an argument for display when a shell would need it.
fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The command as a shell would take it; a job that ran on its client's terminal says so (its
/// output went there, and `ferry log` has nothing of it).
fn command_column(job: &JobInfo) -> String {
    let command = job
        .argv
        .iter()
        .map(|a| shell_word(&String::from_utf8_lossy(a)))
        .collect::<Vec<_>>()
        .join(" ");
    if job.no_log {
        format!("{command}  (on its terminal: no log)")
    } else {
        command
    }
}

/// The table; GROUP and LABEL columns only when a job listed has one other than the default.
fn table(jobs: &[JobInfo]) -> String {
    let grouped = jobs
        .iter()
        .any(|job| job.group != DEFAULT_GROUP || job.label.is_some());
    let mut header = vec!["ID", "STATE", "EXIT", "STARTED", "TIME"];
    if grouped {
        header.extend(["GROUP", "LABEL"]);
    }
    header.push("COMMAND");
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let mut row = vec![
                job.id.to_string(),
                state_name(job).to_owned(),
                exit_column(job),
                job.started_ms.map(timestamp).unwrap_or_else(|| "-".into()),
                run_time(job.run_us),
            ];
            if grouped {
                row.push(job.group.clone());
                row.push(job.label.clone().unwrap_or_else(|| "-".into()));
            }
            row.push(command_column(job));
            row
        })
        .collect();
    crate::table::render(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_times_read_well() {
        assert_eq!(run_time(12_345), "0.012s");
        assert_eq!(run_time(12_345_678), "12.3s");
        assert_eq!(run_time(187_000_000), "3m07s");
        assert_eq!(run_time(7_500_000_000), "2h05m");
    }

    #[test]
    fn words_are_quoted_when_needed() {
        assert_eq!(shell_word("ls"), "ls");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
