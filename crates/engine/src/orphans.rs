//! Processes that an earlier daemon left running. A daemon killed with -9 cannot end its
//! jobs: their processes go on, unowned. The job's record keeps its leader's pid and the
//! leader's start time (in clock ticks since boot, as `/proc/PID/stat` gives it), its cgroup
//! and its environment mark (see [`crate::tracking`]); the next daemon, finding the job lost,
//! ends them (TERM, then KILL after the grace period): the leader's process group only when a
//! process with that pid still exists and started at that very tick (so that a pid the
//! system has since given to another process is never signalled), and every process of the
//! job's cgroup, or with its mark, however it left the group.

use std::time::Duration;

use rustix::process::Signal;

use crate::tracking::{self, JobTrack};
use crate::types::JobId;

/// What a lost job may have left running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The job it ran.
    pub job: JobId,
    /// Its leader's pid (also the group's id) and the leader's start time, in clock ticks
    /// since boot, if it started.
    pub leader: Option<(u32, u64)>,
    /// Its cgroup and mark.
    pub track: JobTrack,
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    // Two reads where `read_to_string` makes seven (a `statx`, then a buffer grown from 32
    // bytes): this runs on every job's path. The line is a few hundred bytes, at most about
    // 1.1 KB (a 16-byte name and 52 numbers).
    let file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut stat = Vec::with_capacity(2048);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, 2048), &mut stat).ok()?;
    // The command name (field 2) is in parentheses and may hold any bytes: count from the
    // last closing one. Field 3 follows it; field 22 is the 20th after that.
    let name_end = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[name_end + 1..]).ok()?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Orphan {
    /// Whether its leader is still the process that started at its recorded tick.
    fn leader_there(&self) -> bool {
        self.leader
            .is_some_and(|(pid, started)| start_time(pid) == Some(started))
    }

    /// Whether anything of it is left.
    fn anything_left(&self) -> bool {
        self.leader_there() || tracking::any_left(&self.track)
    }

    /// Sends `signal` to what is left of it.
    fn signal(&self, signal: Signal) {
        if self.leader_there() {
            if let Some(pid) = self
                .leader
                .and_then(|(pid, _)| i32::try_from(pid).ok())
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process_group(pid, signal);
            }
        }
        tracking::signal(&self.track, signal);
    }
}

/// Ends what `orphans` left that is still there: TERM, then KILL to what is left after
/// `grace`; their cgroups go. Runs on a thread of its own (it waits). Each is logged.
pub fn end(orphans: Vec<Orphan>, grace: Duration) {
    let found: Vec<Orphan> = orphans
        .iter()
        .filter(|orphan| {
            let there = orphan.anything_left();
            if !there {
                tracing::debug!(
                    job = orphan.job,
                    "the lost job left nothing running (or its pid is another process's now)"
                );
            }
            there
        })
        .cloned()
        .collect();
    // Empty cgroups go, in order (a daemon's directory of job cgroups after them).
    let remove_all = move || {
        for orphan in &orphans {
            tracking::end_leftovers(&orphan.track, Duration::ZERO);
        }
    };
    if found.is_empty() {
        remove_all();
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("ferry-orphans".into())
        .spawn(move || {
            for orphan in &found {
                tracing::warn!(
                    job = orphan.job,
                    "ending the processes of a job an earlier daemon left running"
                );
                orphan.signal(Signal::TERM);
            }
            let deadline = std::time::Instant::now() + grace;
            let mut left: Vec<&Orphan> = found.iter().collect();
            while !left.is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                left.retain(|orphan| orphan.anything_left());
            }
            for orphan in left {
                // Checked again just before: the pid is still the job's leader.
                orphan.signal(Signal::KILL);
            }
            std::thread::sleep(Duration::from_millis(100));
            remove_all();
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
                leader: Some((pid, started + 1)),
                track: JobTrack::default(),
            }],
            Duration::from_millis(10),
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait().expect("wait").is_none(), "still running");
        // The true one: ended.
        end(
            vec![Orphan {
                job: 1,
                leader: Some((pid, started)),
                track: JobTrack::default(),
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
        // A program whose name holds parentheses, spaces and bytes that are not UTF-8.
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir
            .path()
            .join(std::ffi::OsStr::from_bytes(b"a) 1 2 (\xff"));
        std::fs::copy("/bin/sleep", &program).expect("copy sleep");
        let mut child = std::process::Command::new(&program)
            .arg("30")
            .spawn()
            .expect("spawn");
        let stat = std::fs::read(format!("/proc/{}/stat", child.id())).expect("stat");
        let started = start_time(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(stat.windows(3).any(|w| w == b"a) "), "{stat:?}");
        let expected = String::from_utf8_lossy(&stat)
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(19))
            .and_then(|field| field.parse().ok());
        assert_eq!(started, expected);
        assert!(started.is_some());
    }
}
