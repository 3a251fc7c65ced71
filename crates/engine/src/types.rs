//! The engine's basic types, which every part of it and its callers share: a job's id, what
//! to run and who asked, where a job is in its life, how it ended, which stream its output
//! came on, how busy the engine is. They import nothing of the engine but the principal.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::principal::Principal;

/// A job id: unique and increasing, also across daemon restarts on the same log directory.
pub type JobId = u64;

/// Which output stream of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a job ended: the one description the engine, the job log's end record and the
/// history's records share. Stored as CBOR with the run time as `wall_us` (microseconds).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ExitReport {
    /// Exit code, when the job exited normally.
    pub code: Option<i32>,
    /// Signal number, when it was killed by a signal.
    pub signal: Option<i32>,
    /// Wall-clock time from spawn to exit.
    #[serde(rename = "wall_us", with = "micros")]
    pub wall: Duration,
    /// True when the timeout expired and the engine terminated the job.
    #[serde(default)]
    pub timed_out: bool,
    /// Set when the job never ran: spawn failure, or cancelled while queued; or, for a lost
    /// job, what happened.
    #[serde(default)]
    pub error: Option<String>,
    /// The signal that ended it was sent by a client (`kill`) or by a shutdown.
    #[serde(default)]
    pub killed: bool,
    /// It never ran because this job, which it waited for, did not succeed.
    #[serde(default)]
    pub dependency_failed: Option<JobId>,
    /// The daemon stopped while the job was queued or running: how it ended is unknown
    /// (never stored: a record says so by its state).
    #[serde(skip)]
    pub lost: bool,
}

impl ExitReport {
    /// The status a shell would report (see [`ferry_common::shell_status`]).
    pub fn shell_status(&self) -> i32 {
        ferry_common::shell_status(self.code, self.signal, self.error.is_some())
    }

    /// Whether the job ran and ended with status 0 (what a job waiting for it asks).
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.shell_status() == 0
    }

    /// The run time in microseconds, as records and the wire carry it.
    pub fn wall_us(&self) -> u64 {
        micros::of(self.wall)
    }
}

/// A duration as whole microseconds (u64), for serde.
mod micros {
    use std::time::Duration;

    /// Microseconds of `duration`, saturating.
    pub fn of(duration: Duration) -> u64 {
        u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
    }

    pub fn serialize<S: serde::Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(of(*duration))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_micros)
    }
}

/// File descriptors a job uses directly as its stdin, stdout and stderr: a client's own,
/// passed over its socket. The job's output then never goes through the daemon.
#[derive(Debug)]
pub struct PassedStdio {
    /// The job's stdin.
    pub stdin: std::os::fd::OwnedFd,
    /// The job's stdout.
    pub stdout: std::os::fd::OwnedFd,
    /// The job's stderr.
    pub stderr: std::os::fd::OwnedFd,
}

impl TryFrom<Vec<std::os::fd::OwnedFd>> for PassedStdio {
    /// How many fds came instead of 3 (they are closed).
    type Error = usize;

    /// The three fds a client passed, in the order stdin, stdout, stderr.
    fn try_from(fds: Vec<std::os::fd::OwnedFd>) -> Result<PassedStdio, usize> {
        match <[std::os::fd::OwnedFd; 3]>::try_from(fds) {
            Ok([stdin, stdout, stderr]) => Ok(PassedStdio {
                stdin,
                stdout,
                stderr,
            }),
            Err(fds) => Err(fds.len()),
        }
    }
}

/// What to run.
#[derive(Debug, Default)]
pub struct JobSpec {
    /// Program and arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<OsString>,
    /// What listings and records show as its command (`argv` when `None`): a session's
    /// command is the user's command line, not the shell that runs it.
    pub shown: Option<Vec<OsString>>,
    /// Working directory (the daemon's when `None`).
    pub cwd: Option<PathBuf>,
    /// The job's whole environment (the daemon's when `None`).
    pub env: Option<Vec<(OsString, OsString)>>,
    /// Whether stdin will be fed through [`Engine::write_stdin`] (otherwise `/dev/null`).
    pub stdin: bool,
    /// Terminate the job (TERM, then KILL after the grace period) after this long.
    pub timeout: Option<Duration>,
    /// Run on these fds instead of pipes (then `stdin` must be false).
    pub stdio: Option<PassedStdio>,
    /// Who asked, through which dialect (recorded in the history).
    pub origin: JobOrigin,
    /// The group it runs in, under that group's limit (the default group when `None`).
    pub group: Option<String>,
    /// A label of the user's, for listings and filters.
    pub label: Option<String>,
    /// Jobs that must end before it starts: successfully, unless `after_any`.
    pub after: Vec<JobId>,
    /// Start once `after` have ended, whatever their outcome.
    pub after_any: bool,
    /// The session whose shell runs it (its `shown` words are the command line).
    pub session: Option<String>,
    /// Run on a pseudo-terminal of the daemon's of this size (rows, columns): its output
    /// comes as stdout, its stdin is typed at the terminal.
    pub tty: Option<(u16, u16)>,
    /// Its `TERM`, whatever its environment (a terminal's type, from its client).
    pub term: Option<String>,
}

/// Who submitted a job, for its record.
#[derive(Debug, Default, Clone)]
pub struct JobOrigin {
    /// The connection (e.g. `unix`, `127.0.0.1:50000`, a client certificate's name).
    pub owner: String,
    /// The dialect (`ferry`, `fanos`).
    pub dialect: String,
    /// The peer that asked (see [`peers`]), whose entry lists the job.
    pub peer: Option<String>,
    /// Who the job belongs to.
    pub principal: Principal,
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobPhase {
    /// Waiting for a running slot.
    Queued,
    /// Spawned; `pid` is also its process group id.
    Running {
        /// The leader's pid.
        pid: u32,
    },
    /// Ended.
    Finished(ExitReport),
}

/// A snapshot of one job, for listings.
#[derive(Debug, Clone)]
pub struct JobSnapshot {
    /// The job's id.
    pub id: JobId,
    /// Who it belongs to.
    pub principal: Principal,
    /// Program and arguments.
    pub argv: Vec<OsString>,
    /// Its phase.
    pub phase: JobPhase,
    /// When it was submitted.
    pub submitted: SystemTime,
    /// When it was spawned.
    pub started: Option<SystemTime>,
    /// Run time so far, or in all once finished.
    pub run_time: Duration,
    /// The pid of its leader, once spawned (kept after it ends).
    pub pid: Option<u32>,
    /// Output bytes delivered live but not stored (past the stored-output cap).
    pub unstored_bytes: u64,
    /// It ran on its client's own fds: no log of its output was kept.
    pub on_client_fds: bool,
    /// Its group.
    pub group: String,
    /// Its label.
    pub label: Option<String>,
    /// The jobs it waits or waited for.
    pub after: Vec<JobId>,
    /// Stopped by `pause` now.
    pub paused: bool,
    /// Time spent stopped by `pause` (counted in `run_time` too).
    pub paused_time: Duration,
    /// When it ended.
    pub finished: Option<SystemTime>,
}

/// How busy a daemon is (see [`Engine::load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Jobs running.
    pub running: u64,
    /// Jobs waiting for a slot.
    pub queued: u64,
    /// Jobs that may run at once.
    pub slots: u64,
}

impl Load {
    /// The cost of one more job here, in thousandths: the jobs it would come after (running
    /// and queued) for each job slot, so that an idle daemon costs 0, a daemon whose every
    /// slot is busy costs 1000, and a queue costs more; of two daemons equally busy, the one
    /// with more slots costs less.
    pub fn cost(&self) -> u64 {
        (self.running + self.queued).saturating_mul(1000) / self.slots.max(1)
    }
}

/// A stdin channel's sending half, as handed out by a job.
pub(crate) type StdinSender = mpsc::Sender<Vec<u8>>;
