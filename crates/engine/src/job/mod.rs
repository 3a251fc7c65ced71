//! One job: its spawn in a fresh process group (and its own cgroup where the daemon may make
//! one: see [`crate::tracking`]; how its first process starts is `start`), the output pump,
//! stdin feeding and timeout.
//!
//! Each running job has one pump (`pump`) that appends what the child writes to its stdout
//! and stderr pipes to the job log and reaps the child once both pipes reach EOF: a task of
//! the runtime while the job writes little, a thread of its blocking pool once it writes
//! much. Stdin is fed by a tokio task from a bounded channel; the timeout is a tokio task
//! too.

mod pump;
mod start;

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{kill_process_group, Pid, Signal};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::error::EngineError;
use crate::log::{JobLog, LogLimits};
use crate::logfile::LogHeader;
use crate::memory::OutputFlow;
use crate::queue::DEFAULT_GROUP;
use crate::store::{millis, JobRecord, Recipe, RecordState};
use crate::tracking::{self, JobTrack, Tracking};
use crate::types::{ExitReport, JobId, JobPhase, JobSnapshot, JobSpec, PassedStdio, StdinSender};
use serde_bytes::ByteBuf;
use start::{resolve_program, start_process};
use std::os::unix::ffi::OsStrExt;

/// Chunks of stdin buffered per job before the writer waits.
const STDIN_QUEUE: usize = 16;

/// Name of the file, in the log directory, that remembers the next job id.
const NEXT_ID_FILE: &str = "next-id";

pub(crate) struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub submitted: SystemTime,
    /// What its log file and its record say of it.
    identity: LogHeader,
    pub log: JobLog,
    status: Mutex<Status>,
    /// Held while a record of the job is taken and queued for the history, so that records
    /// reach the store in the order of the states they show: a job that ends at once must not
    /// have its `running` record queued after its `finished` one.
    recording: Mutex<()>,
}

struct Status {
    phase: JobPhase,
    started: Option<(SystemTime, Instant)>,
    pid: Option<u32>,
    /// The leader's start time (clock ticks since boot), to know it again after a crash.
    pid_start: Option<u64>,
    /// Where every process of the job is tracked (its cgroup, its mark).
    track: JobTrack,
    stdin_tx: Option<StdinSender>,
    stdin_rx: Option<mpsc::Receiver<Vec<u8>>>,
    /// Passed fds, until the spawn takes them.
    stdio: Option<PassedStdio>,
    timed_out: bool,
    /// Signals sent to the job by a client or the daemon.
    signalled: Vec<i32>,
    /// When it ended.
    finished: Option<SystemTime>,
    /// Output bytes its log did not keep.
    dropped: u64,
    /// Since when `pause` has it stopped.
    paused_since: Option<Instant>,
    /// Time it spent stopped before.
    paused_before: Duration,
    /// The master side of its pseudo-terminal, when it runs on one.
    tty_master: Option<Arc<OwnedFd>>,
}

impl Status {
    /// Time spent stopped by `pause`, until now.
    fn paused_time(&self) -> Duration {
        self.paused_before + self.paused_since.map_or(Duration::ZERO, |at| at.elapsed())
    }
}

/// Called once a job has ended, with its id.
pub(crate) type OnEnd = Box<dyn FnOnce(JobId) + Send>;

impl Job {
    /// A job submitted at `submitted`; its log file is created now when `durable`.
    pub fn new(
        id: JobId,
        mut spec: JobSpec,
        submitted: SystemTime,
        log_path: &Path,
        limits: LogLimits,
        durable: bool,
    ) -> std::io::Result<Job> {
        let identity = LogHeader {
            id,
            argv: spec
                .shown
                .as_ref()
                .unwrap_or(&spec.argv)
                .iter()
                .map(|a| ByteBuf::from(a.as_bytes().to_vec()))
                .collect(),
            cwd: spec
                .cwd
                .as_ref()
                .map(|c| ByteBuf::from(c.as_os_str().as_bytes().to_vec())),
            owner: spec.origin.owner.clone(),
            principal: spec.origin.principal.clone(),
            dialect: spec.origin.dialect.clone(),
            submitted_ms: millis(submitted),
            on_client_fds: spec.stdio.is_some(),
        };
        let log = JobLog::new(log_path, &identity, limits, durable)?;
        let stdio = spec.stdio.take();
        let (stdin_tx, stdin_rx) = if spec.stdin {
            let (tx, rx) = mpsc::channel(STDIN_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        Ok(Job {
            id,
            spec,
            submitted,
            identity,
            log,
            recording: Mutex::new(()),
            status: Mutex::new(Status {
                phase: JobPhase::Queued,
                started: None,
                pid: None,
                pid_start: None,
                track: JobTrack::default(),
                stdin_tx,
                stdin_rx,
                stdio,
                timed_out: false,
                signalled: Vec::new(),
                finished: None,
                dropped: 0,
                paused_since: None,
                paused_before: Duration::ZERO,
                tty_master: None,
            }),
        })
    }

    /// Takes the job's record and hands it to `queue`, in order with the job's other records
    /// (see `recording`).
    pub fn record_in_order(&self, queue: impl FnOnce(JobRecord)) {
        let _in_order = self
            .recording
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        queue(self.record());
    }

    /// The job's record for the history store.
    pub fn record(&self) -> JobRecord {
        let status = self.status();
        let (state, exit) = match &status.phase {
            JobPhase::Queued => (RecordState::Queued, None),
            JobPhase::Running { .. } => (RecordState::Running, None),
            JobPhase::Finished(report) => (RecordState::Finished, Some(report.clone())),
        };
        let (stdout_bytes, stderr_bytes) = self.log.lengths();
        // The log's size matters once it is complete (retention); no disk access before.
        let log_bytes = if exit.is_some() {
            std::fs::metadata(self.log.path()).map_or(0, |m| m.len())
        } else {
            0
        };
        JobRecord {
            started_ms: status.started.map(|(wall, _)| millis(wall)),
            pid: status.pid,
            pid_start: status.pid_start,
            cgroup: status
                .track
                .cgroup
                .as_ref()
                .map(|c| ByteBuf::from(c.as_os_str().as_bytes().to_vec())),
            mark: (!status.track.mark.is_empty()).then(|| status.track.mark.clone()),
            finished_ms: status.finished.map(millis),
            exit,
            stdout_bytes,
            stderr_bytes,
            log_bytes,
            dropped_bytes: status.dropped,
            paused_ms: u64::try_from(status.paused_time().as_millis()).unwrap_or(u64::MAX),
            recipe: Some(self.recipe()),
            ..JobRecord::from_header(&self.identity, state)
        }
    }

    /// How the job runs again.
    fn recipe(&self) -> Recipe {
        let bytes = |s: &std::ffi::OsString| ByteBuf::from(s.as_bytes().to_vec());
        let spec = &self.spec;
        Recipe {
            command: spec
                .shown
                .is_some()
                .then(|| spec.argv.iter().map(bytes).collect()),
            env: spec
                .env
                .as_ref()
                .map(|env| env.iter().map(|(k, v)| (bytes(k), bytes(v))).collect()),
            timeout_ms: spec
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            group: spec.group.clone(),
            label: spec.label.clone(),
            after: spec.after.clone(),
            after_any: spec.after_any,
            session: spec.session.clone(),
            stdin: spec.stdin,
        }
    }

    /// The job's group.
    pub fn group(&self) -> &str {
        self.spec.group.as_deref().unwrap_or(DEFAULT_GROUP)
    }

    /// Whether it ended with status 0 (`None` while it has not ended).
    pub fn succeeded(&self) -> Option<bool> {
        match &self.status().phase {
            JobPhase::Finished(report) => Some(report.succeeded()),
            _ => None,
        }
    }

    /// Stops the running job's processes (SIGSTOP); `Ok(false)` when it was stopped already.
    pub fn pause(&self) -> Result<bool, EngineError> {
        if self.status().paused_since.is_some() {
            return Ok(false);
        }
        self.signal_group(libc::SIGSTOP)?;
        let mut status = self.status();
        if matches!(status.phase, JobPhase::Running { .. }) && status.paused_since.is_none() {
            status.paused_since = Some(Instant::now());
        }
        Ok(true)
    }

    /// Sets the size of the job's pseudo-terminal (its processes get SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), EngineError> {
        let Some(master) = self.status().tty_master.clone() else {
            return Err(EngineError::Invalid(format!(
                "job {} does not run on a terminal of the daemon's",
                self.id
            )));
        };
        set_size(&master, rows, cols).map_err(|source| EngineError::Io {
            context: format!("cannot resize job {}'s terminal", self.id),
            source,
        })
    }

    /// Continues a job `pause` stopped (SIGCONT); `Ok(false)` when it was not stopped.
    pub fn resume(&self) -> Result<bool, EngineError> {
        let Some(since) = self.status().paused_since.take() else {
            return Ok(false);
        };
        self.status().paused_before += since.elapsed();
        self.signal_group(libc::SIGCONT)?;
        Ok(true)
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> JobSnapshot {
        let status = self.status();
        let run_time = match (&status.phase, status.started) {
            (JobPhase::Finished(report), _) => report.wall,
            (JobPhase::Running { .. }, Some((_, at))) => at.elapsed(),
            _ => Duration::ZERO,
        };
        JobSnapshot {
            id: self.id,
            principal: self.spec.origin.principal.clone(),
            argv: self
                .spec
                .shown
                .clone()
                .unwrap_or_else(|| self.spec.argv.clone()),
            phase: status.phase.clone(),
            submitted: self.submitted,
            started: status.started.map(|(wall, _)| wall),
            run_time,
            pid: status.pid,
            unstored_bytes: self.log.unstored(),
            on_client_fds: self.identity.on_client_fds,
            group: self.group().to_owned(),
            label: self.spec.label.clone(),
            after: self.spec.after.clone(),
            paused: status.paused_since.is_some(),
            paused_time: status.paused_time(),
            finished: status.finished,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.status().phase, JobPhase::Running { .. })
    }

    /// The stdin sender: `Ok(None)` once stdin was closed or the job ended.
    pub fn stdin_sender(&self) -> Result<Option<StdinSender>, EngineError> {
        if !self.spec.stdin {
            return Err(EngineError::Invalid(format!(
                "job {} was started without stdin",
                self.id
            )));
        }
        Ok(self.status().stdin_tx.clone())
    }

    pub fn close_stdin(&self) {
        self.status().stdin_tx = None;
    }

    /// Sends `signal` to the job: its process group, and every other process of it its
    /// cgroup or mark finds (one that left the group).
    pub fn signal_group(&self, signal: i32) -> Result<(), EngineError> {
        let status = self.status();
        let pid = match status.phase {
            JobPhase::Running { pid } => pid,
            JobPhase::Queued => {
                return Err(EngineError::Invalid(format!("job {} is queued", self.id)))
            }
            JobPhase::Finished(_) => {
                return Err(EngineError::Invalid(format!(
                    "job {} has already finished",
                    self.id
                )))
            }
        };
        let track = status.track.clone();
        // A stopped job takes a signal that ends it only once continued, as a shell's
        // `kill %N` does it: the pause ends.
        let continue_it = status.paused_since.is_some()
            && ![libc::SIGSTOP, libc::SIGCONT, libc::SIGTSTP].contains(&signal);
        drop(status);
        self.status().signalled.push(signal);
        if let Some(named) = Signal::from_named_raw(signal) {
            tracking::signal(&track, named);
        }
        let sent = send_to_group(pid, signal).map_err(|e| match e {
            SignalError::Unknown => EngineError::Invalid(format!("unknown signal {signal}")),
            SignalError::Os(source) => EngineError::Io {
                context: format!("cannot signal job {}", self.id),
                source,
            },
        });
        if sent.is_ok() && continue_it {
            let _ = self.resume();
        }
        sent
    }

    /// Ends a job that never ran.
    pub fn finish_without_running(&self, error: String, signal: Option<i32>) {
        self.finish_unrun(ExitReport {
            signal,
            error: Some(error),
            killed: signal.is_some(),
            ..ExitReport::default()
        });
    }

    /// Ends a job that will never run because job `because_of`, which it waits for, did not
    /// succeed.
    pub fn finish_dependency_failed(&self, because_of: JobId) {
        self.finish_unrun(ExitReport {
            error: Some(format!(
                "dependency failed: job {because_of}, which it waits for, did not succeed"
            )),
            dependency_failed: Some(because_of),
            ..ExitReport::default()
        });
    }

    fn finish_unrun(&self, report: ExitReport) {
        {
            let mut status = self.status();
            status.phase = JobPhase::Finished(report.clone());
            status.stdin_tx = None;
            status.stdin_rx = None;
            // Passed fds belong to a client: give them back (close our copies) at once.
            status.stdio = None;
            status.finished = Some(SystemTime::now());
        }
        let dropped = self.log.finish(report);
        self.status().dropped = dropped;
    }

    fn finish(&self, exit: std::process::ExitStatus) {
        let report = {
            let mut status = self.status();
            let wall = status
                .started
                .map(|(_, at)| at.elapsed())
                .unwrap_or_default();
            if let Some(since) = status.paused_since.take() {
                status.paused_before += since.elapsed();
            }
            let report = ExitReport {
                code: exit.code(),
                signal: exit.signal(),
                wall,
                timed_out: status.timed_out,
                error: None,
                killed: exit
                    .signal()
                    .is_some_and(|signal| status.signalled.contains(&signal)),
                dependency_failed: None,
                lost: false,
            };
            status.phase = JobPhase::Finished(report.clone());
            status.stdin_tx = None;
            status.finished = Some(SystemTime::now());
            report
        };
        let dropped = self.log.finish(report);
        self.status().dropped = dropped;
    }
}

enum SignalError {
    Unknown,
    Os(std::io::Error),
}

fn send_to_group(pid: u32, signal: i32) -> Result<(), SignalError> {
    let signal = Signal::from_named_raw(signal).ok_or(SignalError::Unknown)?;
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Err(SignalError::Unknown);
    };
    match kill_process_group(pid, signal) {
        // The group is already gone: the job is ending; nothing to do.
        Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(SignalError::Os(e.into())),
        Ok(()) => Ok(()),
    }
}

/// Spawns the job and its pump thread, stdin task and timeout task. On failure the job is
/// finished with the error and `on_end` is called at once.
pub(crate) fn spawn(
    job: Arc<Job>,
    runtime: &tokio::runtime::Handle,
    kill_grace: Duration,
    tracking: &Arc<Tracking>,
    flow: Arc<OutputFlow>,
    on_end: OnEnd,
) {
    let spec = &job.spec;
    let program = spec.argv[0].clone();
    let resolved = match resolve_program(&program, spec) {
        Ok(path) => path,
        Err(message) => {
            job.finish_without_running(message, None);
            on_end(job.id);
            return;
        }
    };
    let placement = tracking.place(job.id);
    let passed = job.status().stdio.take();
    // Spawned and noted as a leader under one lock, so that the subreaper's reaps never take
    // a leader's exit (see tracking::Tracking::reap).
    let mut leaders = tracking.leaders();
    let mut process = match start_process(&job, &resolved, &placement, passed) {
        Ok(process) => process,
        Err(message) => {
            drop(leaders);
            job.finish_without_running(message, None);
            tracking::end_leftovers(&placement.track, Duration::ZERO);
            on_end(job.id);
            return;
        }
    };
    let pid = process.pid;
    leaders.insert(pid);
    drop(leaders);
    // Read before the job is recorded as running: a later daemon ends its group only if this
    // pid still started at this tick.
    let pid_start = crate::orphans::start_time(pid);
    let stdin_rx = {
        let mut status = job.status();
        status.phase = JobPhase::Running { pid };
        status.pid = Some(pid);
        status.pid_start = pid_start;
        status.track = placement.track;
        status.started = Some((SystemTime::now(), Instant::now()));
        status.stdin_rx.take()
    };
    tracing::debug!(job = job.id, pid, "spawned {:?}", spec.argv);
    let tty_master = job.status().tty_master.clone();
    match (process.stdin.take(), stdin_rx, tty_master) {
        (Some(stdin), Some(rx), _) => {
            runtime.spawn(feed_stdin(stdin, rx));
        }
        (None, Some(rx), Some(master)) => {
            let fed = std::thread::Builder::new()
                .name("ferry-tty-input".into())
                .spawn(move || feed_terminal(&master, rx));
            if let Err(e) = fed {
                tracing::error!(job = job.id, "cannot feed the job's terminal: {e}");
            }
        }
        _ => {}
    }
    if let Some(timeout) = spec.timeout {
        runtime.spawn(enforce_timeout(Arc::clone(&job), pid, timeout, kill_grace));
    }
    // The pump is a task of the runtime while the job writes little, and moves to the
    // runtime's blocking pool (whose threads are reused from job to job; the daemon sizes it
    // above the running-jobs limit) once it writes much: see `pump`.
    let parts = pump::PumpParts {
        flow,
        tracking: Arc::clone(tracking),
        grace: kill_grace,
        on_end,
    };
    runtime.spawn(pump::pump(job, process, parts));
}

/// Sets a terminal's size.
fn set_size(master: &OwnedFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(master, size)?)
}

/// Types what comes for the job's stdin at its terminal; at the end of it (the client's
/// stdin ended), an end-of-file character, as a terminal's Ctrl-D.
fn feed_terminal(master: &OwnedFd, mut rx: mpsc::Receiver<Vec<u8>>) {
    let write_all = |mut data: &[u8]| -> bool {
        while !data.is_empty() {
            match rustix::io::write(master, data) {
                Ok(n) => data = &data[n..],
                Err(rustix::io::Errno::INTR) => {}
                // The master is non-blocking (the pump reads it): wait for room.
                Err(rustix::io::Errno::AGAIN) => {
                    let mut fds = [PollFd::new(master, PollFlags::OUT)];
                    let _ = poll(&mut fds, None);
                }
                Err(_) => return false,
            }
        }
        true
    };
    while let Some(data) = rx.blocking_recv() {
        if !write_all(&data) {
            return;
        }
    }
    write_all(b"\x04");
}

async fn feed_stdin(fd: OwnedFd, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut pipe = match tokio::net::unix::pipe::Sender::from_owned_fd(fd) {
        Ok(pipe) => pipe,
        Err(e) => {
            tracing::error!("cannot use job stdin pipe: {e}");
            return;
        }
    };
    while let Some(data) = rx.recv().await {
        if pipe.write_all(&data).await.is_err() {
            break; // the job closed its stdin
        }
    }
}

async fn enforce_timeout(job: Arc<Job>, pid: u32, timeout: Duration, grace: Duration) {
    tokio::time::sleep(timeout).await;
    {
        let mut status = job.status();
        if status.phase != (JobPhase::Running { pid }) {
            return;
        }
        status.timed_out = true;
    }
    tracing::info!(job = job.id, "timed out after {timeout:?}: terminating");
    let _ = job.signal_group(libc::SIGTERM);
    tokio::time::sleep(grace).await;
    if job.is_running() {
        let _ = job.signal_group(libc::SIGKILL);
    }
}

/// The next id an earlier daemon without the history wrote down (1 if none).
pub(crate) fn next_id_from_file(log_dir: &Path) -> JobId {
    std::fs::read_to_string(log_dir.join(NEXT_ID_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<JobId>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Finds the first job id to use in `log_dir`: after every id used by an earlier daemon there.
/// Earlier runs' logs are removed (their records do not survive a restart yet).
pub(crate) fn next_id_after_previous_runs(log_dir: &Path) -> std::io::Result<JobId> {
    let mut next = std::fs::read_to_string(log_dir.join(NEXT_ID_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<JobId>().ok())
        .unwrap_or(1)
        .max(1);
    for entry in std::fs::read_dir(log_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<JobId>().ok())
        else {
            continue;
        };
        next = next.max(id + 1);
        std::fs::remove_file(entry.path())?;
    }
    let tmp = log_dir.join(format!("{NEXT_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{next}\n"))?;
    std::fs::rename(&tmp, log_dir.join(NEXT_ID_FILE))?;
    Ok(next)
}
