//! Process groups that an earlier daemon left running. A daemon killed with -9 cannot end its
//! jobs: their process groups go on, unowned. The job's record keeps its leader's pid and the
//! leader's start time (in clock ticks since boot, as `/proc/PID/stat` gives it); the next
//! daemon, finding the job lost, ends its group (TERM, then KILL after the grace period) only
//! when a process with that pid still exists and started at that very tick, so that a pid the
//! system has since given to another process is never signalled.

use std::time::Duration;

use crate::types::JobId;

/// A group to end: the job, its leader's pid and the leader's start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orphan {
    /// The job it ran.
    pub job: JobId,
    /// The leader's pid (also the group's id).
    pub pid: u32,
    /// The leader's start time, in clock ticks since boot.
    pub started: u64,
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: count from the
    // last closing one. Field 3 follows it; field 22 is the 20th after that.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `orphan`'s leader is still the process that started at its recorded tick.
fn still_there(orphan: &Orphan) -> bool {
    start_time(orphan.pid) == Some(orphan.started)
}

fn signal_group(orphan: &Orphan, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(orphan.pid as i32) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Ends the groups of `orphans` that are still there: TERM, then KILL to those left after
/// `grace`. Runs on a thread of its own (it waits). Each is logged.
pub fn end(orphans: Vec<Orphan>, grace: Duration) {
    let found: Vec<Orphan> = orphans
        .into_iter()
        .filter(|orphan| {
            let there = still_there(orphan);
            if !there {
                tracing::debug!(
                    job = orphan.job,
                    pid = orphan.pid,
                    "the lost job's process is gone (or its pid is another process's now)"
                );
            }
            there
        })
        .collect();
    if found.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("ferry-orphans".into())
        .spawn(move || {
            for orphan in &found {
                tracing::warn!(
                    job = orphan.job,
                    pid = orphan.pid,
                    "ending the process group of a job an earlier daemon left running"
                );
                signal_group(orphan, rustix::process::Signal::TERM);
            }
            let deadline = std::time::Instant::now() + grace;
            let mut left: Vec<&Orphan> = found.iter().collect();
            while !left.is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                left.retain(|orphan| still_there(orphan));
            }
            for orphan in left {
                // Checked again just before: the pid is still the job's leader.
                if still_there(orphan) {
                    signal_group(orphan, rustix::process::Signal::KILL);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the thread that ends lost jobs' processes: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_ended_only_when_its_start_time_matches() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let started = start_time(pid).expect("its start time");
        // A record whose start time differs (a reused pid): left alone.
        end(
            vec![Orphan {
                job: 1,
                pid,
                started: started + 1,
            }],
            Duration::from_millis(10),
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait().expect("wait").is_none(), "still running");
        // The true one: ended.
        end(
            vec![Orphan {
                job: 1,
                pid,
                started,
            }],
            Duration::from_secs(5),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "not ended");
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn start_times_come_from_after_the_command_name() {
        assert!(start_time(std::process::id()).is_some());
        assert_eq!(start_time(u32::MAX), None);
    }
}
