//! How a job's processes are found, so that none escapes its end: a process that leaves the
//! job's process group (`setsid`, a daemonizing child) is still the job's.
//!
//! - **A cgroup per job** (cgroup v2, as systemd does for its units), where the daemon may
//!   make one: `ferry-jobs.PID/job-N` under the daemon's own cgroup. The job's first process
//!   is created there (`clone3` with `CLONE_INTO_CGROUP`, [`crate::spawn`]), or, where the
//!   kernel lacks that, moves itself there before it executes the command (a write of `0` to
//!   the cgroup's `cgroup.procs`), so every process it ever starts is inside;
//!   ending the job signals every process of the cgroup, and `cgroup.kill` ends what is left.
//! - **Otherwise** the process group, and a mark in every job's environment
//!   (`FERRY_JOB=INSTANCE.N`, inherited by whatever the job starts unless it clears its
//!   environment), found by a scan of `/proc`; the daemon is also its jobs' child subreaper, so
//!   that a job's orphaned descendants become the daemon's children (and are reaped by it)
//!   rather than init's.
//!
//! Each job's record keeps its cgroup and its mark, so that a daemon started after a crash
//! ends what a lost job left, by either.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// The environment variable that marks a job's processes.
pub const MARKER: &str = "FERRY_JOB";

/// How this daemon tracks its jobs' processes.
#[derive(Debug)]
pub struct Tracking {
    /// The directory holding one cgroup per job, when the daemon may make them.
    cgroups: Option<PathBuf>,
    /// Jobs' first processes are created in their cgroups (`clone3`), where the kernel can.
    clone_into: bool,
    /// This daemon's part of every job's mark.
    instance: String,
    /// The state directory's tracking file, once written (see [`Tracking::take_over`]).
    state_file: Mutex<Option<PathBuf>>,
    /// As a subreaper (without cgroups): the jobs' leaders, which their own threads reap; any
    /// other child of the daemon is a job's orphaned descendant, reaped by [`Tracking::reap`].
    /// Held while a job is spawned and its leader noted, so that a reap never takes a
    /// leader's exit.
    leaders: Arc<Mutex<HashSet<u32>>>,
}

/// Where one job's processes are tracked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobTrack {
    /// Its cgroup's directory, if it has one.
    pub cgroup: Option<PathBuf>,
    /// Its mark (`INSTANCE.N`, the value of [`MARKER`]); with `whole_instance`, the
    /// `INSTANCE.` every job of one daemon has.
    pub mark: String,
    /// The mark names all of one daemon's jobs.
    pub whole_instance: bool,
}

/// The file, in the state directory, that says how the daemon using it tracks its jobs, so
/// that the next one ends what it left even of jobs its history never recorded. A daemon that
/// stops cleanly removes it: found at start, it says the previous daemon stopped unexpectedly.
const TRACKING_FILE: &str = "tracking";

/// A cgroup made for a job, and its directory opened: the job's first process is created in
/// it (`clone3` with `CLONE_INTO_CGROUP`, see [`crate::spawn`]) or moves itself in through its
/// `cgroup.procs` ([`Placement::procs`]).
pub(crate) struct Placement {
    /// The job's track.
    pub track: JobTrack,
    /// Its cgroup's directory, when it has one.
    pub cgroup: Option<OwnedFd>,
    /// Whether the job's first process may be created in the cgroup (`clone3`), rather than
    /// move itself in.
    pub clone_into: bool,
}

impl Placement {
    /// The cgroup's `cgroup.procs`, opened for writing (close-on-exec), for a process to
    /// move itself in with a write of `0`.
    pub fn procs(&self) -> std::io::Result<Option<OwnedFd>> {
        let Some(dir) = &self.cgroup else {
            return Ok(None);
        };
        let procs = rustix::fs::openat(
            dir,
            "cgroup.procs",
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(Some(procs))
    }
}

impl Tracking {
    /// Tracks with cgroups when `cgroups_allowed` and the daemon may make them under its own
    /// cgroup; otherwise with process groups and marks (the daemon becomes a child
    /// subreaper).
    pub fn discover(cgroups_allowed: bool, clone_into: bool) -> Tracking {
        let instance = instance_id();
        let cgroups = if cgroups_allowed {
            match job_cgroups_dir() {
                Ok(dir) => Some(dir),
                Err(why) => {
                    tracing::info!("jobs are tracked by process group and environment mark: {why}");
                    None
                }
            }
        } else {
            None
        };
        if cgroups.is_none() {
            if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
                tracing::warn!("cannot become the jobs' child subreaper: {e}");
            }
        }
        Tracking {
            cgroups,
            clone_into,
            instance,
            state_file: Mutex::default(),
            leaders: Arc::default(),
        }
    }

    /// The jobs' leaders (see the field), locked: a job is spawned and its leader noted under
    /// it.
    pub(crate) fn leaders(&self) -> MutexGuard<'_, HashSet<u32>> {
        // A set of pids: nothing a panic could leave half-changed.
        self.leaders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// As a subreaper: reaps the daemon's children that are not jobs' leaders and have ended
    /// (a job's orphaned descendants, which the kernel gave the daemon); how many.
    pub fn reap(&self) -> usize {
        if self.cgroups.is_some() {
            return 0;
        }
        let leaders = self.leaders();
        orphaned_children(&leaders, true)
            .into_iter()
            .filter(|pid| {
                rustix::process::waitpid(Some(*pid), rustix::process::WaitOptions::NOHANG)
                    .is_ok_and(|status| status.is_some())
            })
            .count()
    }

    /// How jobs are tracked, in words.
    pub fn describe(&self) -> String {
        match &self.cgroups {
            Some(dir) => format!("a cgroup per job under {}", dir.display()),
            None => format!("process groups and the {MARKER} environment mark"),
        }
    }

    /// Whether jobs get cgroups of their own.
    pub fn uses_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Makes what job `job` will be tracked by.
    pub(crate) fn place(&self, job: u64) -> Placement {
        let mark = format!("{}.{job}", self.instance);
        let Some(dir) = &self.cgroups else {
            return Placement {
                track: JobTrack {
                    cgroup: None,
                    mark,
                    whole_instance: false,
                },
                cgroup: None,
                clone_into: false,
            };
        };
        let cgroup = dir.join(format!("job-{job}"));
        let made = match std::fs::create_dir(&cgroup) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        };
        let opened = made.and_then(|()| {
            rustix::fs::open(
                &cgroup,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(std::io::Error::from)
        });
        match opened {
            Ok(dir) => Placement {
                track: JobTrack {
                    cgroup: Some(cgroup),
                    mark,
                    whole_instance: false,
                },
                cgroup: Some(dir),
                clone_into: self.clone_into,
            },
            Err(e) => {
                tracing::warn!(
                    job,
                    "cannot make the job's cgroup {}: {e}; tracking it by its group and mark",
                    cgroup.display()
                );
                Placement {
                    track: JobTrack {
                        cgroup: None,
                        mark,
                        whole_instance: false,
                    },
                    cgroup: None,
                    clone_into: false,
                }
            }
        }
    }

    /// Says in `state_dir` how this daemon tracks its jobs, and returns what the previous
    /// daemon of that directory said, if it did not stop cleanly: what it may have left
    /// running, each job's cgroup and all its marked processes (its jobs' records may not all
    /// have reached the history before it was killed). `None`: it stopped cleanly (or there
    /// was none).
    pub fn take_over(&self, state_dir: &Path) -> Option<Vec<JobTrack>> {
        let file = state_dir.join(TRACKING_FILE);
        let previous = std::fs::read(&file).ok();
        let mut line = self.instance.clone().into_bytes();
        if let Some(dir) = &self.cgroups {
            line.push(b' ');
            line.extend_from_slice(dir.as_os_str().as_encoded_bytes());
        }
        match std::fs::write(&file, &line) {
            Ok(()) => {
                *self.state_file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file.clone())
            }
            Err(e) => tracing::warn!("cannot write {}: {e}", file.display()),
        }
        let previous = previous?;
        let mut parts = previous.splitn(2, |b| *b == b' ');
        let instance = parts
            .next()
            .map(|i| String::from_utf8_lossy(i).trim().to_owned())
            .unwrap_or_default();
        if instance.is_empty() {
            return Some(Vec::new());
        }
        let mut left = vec![JobTrack {
            cgroup: None,
            mark: format!("{instance}."),
            whole_instance: true,
        }];
        if let Some(dir) = parts.next() {
            let dir = PathBuf::from(OsString::from_vec(dir.to_vec()));
            for cgroup in job_cgroups(&dir) {
                left.push(JobTrack {
                    cgroup: Some(cgroup),
                    ..JobTrack::default()
                });
            }
            left.push(JobTrack {
                cgroup: Some(dir),
                ..JobTrack::default()
            });
        }
        Some(left)
    }

    /// Ends what every job left (at the daemon's shutdown, once the jobs' leaders are gone):
    /// every process of every job cgroup, or every process marked by this daemon; then the
    /// cgroups go.
    pub fn end_all(&self) {
        if let Some(dir) = &self.cgroups {
            for cgroup in job_cgroups(dir) {
                let track = JobTrack {
                    cgroup: Some(cgroup),
                    ..JobTrack::default()
                };
                signal(&track, Signal::KILL);
                remove(&track, Duration::from_secs(1));
            }
            let _ = std::fs::remove_dir(dir);
        } else {
            let prefix = format!("{}.", self.instance);
            let mut pids = marked(|mark| mark.starts_with(&prefix));
            // Children the daemon inherited as subreaper, marked or not.
            pids.extend(orphaned_children(&self.leaders(), false));
            for pid in pids {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
            std::thread::sleep(Duration::from_millis(50));
            self.reap();
        }
        // A clean stop: the next daemon has nothing to take over.
        if let Some(file) = self
            .state_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        if let Some(dir) = &self.cgroups {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Sends `signal` to every process `track` finds: its cgroup's, or those with its mark (the
/// process group is signalled by the caller). How many.
pub fn signal(track: &JobTrack, signal: Signal) -> usize {
    let pids = pids_of(track);
    pids.iter()
        .filter(|pid| rustix::process::kill_process(**pid, signal).is_ok())
        .count()
}

/// Whether any process `track` finds is left.
pub fn any_left(track: &JobTrack) -> bool {
    !pids_of(track).is_empty()
}

/// The processes `track` finds.
fn pids_of(track: &JobTrack) -> Vec<Pid> {
    match &track.cgroup {
        Some(cgroup) => cgroup_pids(cgroup),
        None if track.mark.is_empty() => Vec::new(),
        None if track.whole_instance => marked(|mark| mark.starts_with(&track.mark)),
        None => marked(|mark| mark == track.mark),
    }
}

/// Ends what a job left: TERM to every process `track` finds, KILL to those left after
/// `grace`, then its cgroup goes. Blocking (it waits, when there was something to end); how
/// many processes there were.
pub fn end_leftovers(track: &JobTrack, grace: Duration) -> usize {
    let found = signal(track, Signal::TERM);
    if found > 0 {
        let deadline = Instant::now() + grace;
        while any_left(track) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if any_left(track) {
            kill(track);
        }
    }
    // Ended processes leave their cgroup a moment after they die.
    let patience = if found > 0 {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    remove(track, patience);
    found
}

/// KILLs every process `track` finds (`cgroup.kill` where the kernel has it).
fn kill(track: &JobTrack) {
    if let Some(cgroup) = &track.cgroup {
        if std::fs::write(cgroup.join("cgroup.kill"), b"1").is_ok() {
            return;
        }
    }
    signal(track, Signal::KILL);
}

/// Removes the job's cgroup once its last process is gone (waiting up to `patience`).
fn remove(track: &JobTrack, patience: Duration) {
    let Some(cgroup) = &track.cgroup else {
        return;
    };
    let deadline = Instant::now() + patience;
    loop {
        match std::fs::remove_dir(cgroup) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                tracing::warn!("cannot remove the job cgroup {}: {e}", cgroup.display());
                return;
            }
        }
    }
}

/// The job cgroups in a daemon's directory of them (its subdirectories; the rest are the
/// kernel's control files).
fn job_cgroups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .collect()
}

/// The processes of a cgroup.
fn cgroup_pids(cgroup: &Path) -> Vec<Pid> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse::<i32>().ok())
        .filter_map(Pid::from_raw)
        .collect()
}

/// The processes whose environment holds a mark `wanted` takes (those of other users cannot
/// be read, and are not ours to end).
fn marked(wanted: impl Fn(&str) -> bool) -> Vec<Pid> {
    let me = std::process::id();
    let prefix = format!("{MARKER}=");
    processes(|pid, dir| {
        if pid == me {
            return false;
        }
        let Ok(environ) = std::fs::read(dir.join("environ")) else {
            return false;
        };
        environ
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(prefix.as_bytes()))
            .and_then(|mark| std::str::from_utf8(mark).ok())
            .is_some_and(&wanted)
    })
}

/// The processes of `/proc` that `take` takes (given each one's pid and directory).
fn processes(mut take: impl FnMut(u32, &Path) -> bool) -> Vec<Pid> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if take(pid, &entry.path()) {
            if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                found.push(pid);
            }
        }
    }
    found
}

/// The daemon's children that are not jobs' leaders (only those that ended, with `ended`).
fn orphaned_children(leaders: &HashSet<u32>, ended: bool) -> Vec<Pid> {
    let me = std::process::id();
    processes(|pid, dir| {
        if leaders.contains(&pid) {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            return false;
        };
        // After the command name (in parentheses, anything inside): state, then ppid.
        let Some(rest) = stat.rfind(')').map(|end| &stat[end + 1..]) else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let (Some(state), Some(ppid)) = (fields.next(), fields.next()) else {
            return false;
        };
        ppid.parse::<u32>().ok() == Some(me) && (!ended || state == "Z")
    })
}

/// A fresh id for this daemon's marks: 64 random bits, in hex.
fn instance_id() -> String {
    let mut bytes = [0u8; 8];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        bytes = u64::from(std::process::id()).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes the directory of this daemon's job cgroups under its own cgroup, or says why not.
fn job_cgroups_dir() -> Result<PathBuf, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let own = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or("the daemon is in no cgroup v2 hierarchy")?
        .trim()
        .to_owned();
    let mount = cgroup2_mount().ok_or("no cgroup v2 file system is mounted")?;
    let here = mount.join(own.trim_start_matches('/'));
    // Moving a process from the daemon's cgroup into a child needs write access to the
    // cgroup.procs of both (the child's is the daemon's own, once made).
    rustix::fs::access(here.join("cgroup.procs"), rustix::fs::Access::WRITE_OK).map_err(|e| {
        format!(
            "the daemon may not move processes out of its cgroup {} ({e})",
            here.display()
        )
    })?;
    remove_stale(&here);
    let dir = here.join(format!("ferry-jobs.{}", std::process::id()));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot make {}: {e}", dir.display())),
    }
    Ok(dir)
}

/// Removes the empty job cgroups of daemons that are gone (`ferry-jobs.PID` beside this
/// one's, PID no longer running): a daemon killed with -9 whose state directory no daemon
/// uses again leaves them. Only empty cgroups can be removed; others stay for their own
/// daemon's successor.
fn remove_stale(here: &Path) {
    for dir in job_cgroups(here) {
        let Some(pid) = dir
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("ferry-jobs."))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        for job in job_cgroups(&dir) {
            let _ = std::fs::remove_dir(job);
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Where the cgroup v2 file system is mounted (from `/proc/self/mountinfo`).
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read("/proc/self/mountinfo").ok()?;
    mounts.split(|b| *b == b'\n').find_map(|line| {
        let text = String::from_utf8_lossy(line);
        let (before, after) = text.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let point = before.split_whitespace().nth(4)?;
        Some(PathBuf::from(OsString::from_vec(unescape(point))))
    })
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let Some(digits) = octal {
            let value = digits
                .iter()
                .fold(0u32, |acc, digit| acc * 8 + u32::from(digit - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape("/sys/fs/cgroup"), b"/sys/fs/cgroup");
        assert_eq!(unescape("/a\\040b"), b"/a b");
        assert_eq!(unescape("/end\\"), b"/end\\");
    }
}
