//! Ferry's engine: jobs, their output logs, limits and the run queue.
//!
//! The engine runs commands in their own process groups, pumps their stdout and stderr into an
//! append-only [`log`] per job, forwards stdin, enforces timeouts and the running-jobs limit
//! (further jobs wait in a queue), and reports exit status and run time. It knows nothing of any
//! wire format: the daemon's dialect adapters translate their frames into calls on [`Engine`].

pub mod checksum;
pub mod files;
mod job;
pub mod log;
pub mod sessions;
pub mod signals;

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

pub use job::JobId;
pub use log::{encode_record, parse_records, LogError, LogLimits, LogReader, OutputEvent};

use job::Job;

/// Which output stream of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExitReport {
    /// Exit code, when the job exited normally.
    pub code: Option<i32>,
    /// Signal number, when it was killed by a signal.
    pub signal: Option<i32>,
    /// Wall-clock time from spawn to exit.
    pub wall: Duration,
    /// True when the timeout expired and the engine terminated the job.
    pub timed_out: bool,
    /// Set when the job never ran: spawn failure, or cancelled while queued.
    pub error: Option<String>,
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

impl ExitReport {
    /// The status a shell would report: the exit code, 128+N for signal N, 127 when the
    /// job never ran.
    pub fn shell_status(&self) -> i32 {
        match (self.code, self.signal, &self.error) {
            (Some(code), _, _) => code,
            (None, Some(signal), _) => 128 + signal,
            (None, None, Some(_)) => 127,
            (None, None, None) => 1,
        }
    }
}

/// What to run.
#[derive(Debug, Default)]
pub struct JobSpec {
    /// Program and arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<OsString>,
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
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory for job logs.
    pub log_dir: PathBuf,
    /// Jobs running at once; more wait in the queue. Each running job holds one thread of the
    /// tokio blocking pool, which must be larger than this.
    pub max_running: usize,
    /// Jobs waiting at once; more are refused.
    pub max_queued: usize,
    /// Finished jobs remembered (with their logs); the oldest are forgotten first.
    pub max_finished: usize,
    /// Time between TERM and KILL when a job is terminated.
    pub kill_grace: Duration,
    /// Stored output per job, and the in-memory window of recent output.
    pub log_limits: LogLimits,
}

impl EngineConfig {
    /// Defaults, with logs in `log_dir`.
    pub fn new(log_dir: PathBuf) -> EngineConfig {
        EngineConfig {
            log_dir,
            max_running: 64,
            max_queued: 10_000,
            max_finished: 1_000,
            kill_grace: Duration::from_secs(5),
            log_limits: LogLimits::default(),
        }
    }
}

/// Errors the engine answers with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No job has that id (or it was forgotten).
    #[error("no job {0}")]
    UnknownJob(JobId),
    /// The request is not valid.
    #[error("{0}")]
    Invalid(String),
    /// A limit was reached.
    #[error("{0}")]
    Limit(String),
    /// The engine is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The engine. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    state: Mutex<State>,
    shutting_down: AtomicBool,
    runtime: tokio::runtime::Handle,
}

#[derive(Default)]
struct State {
    next_id: JobId,
    jobs: BTreeMap<JobId, Arc<Job>>,
    queue: VecDeque<JobId>,
    running: usize,
    finished: VecDeque<JobId>,
}

impl Engine {
    /// Starts an engine; must be called inside a tokio runtime. Creates the log directory and
    /// picks the first job id after any id used before in it.
    pub fn new(config: EngineConfig) -> Result<Engine, EngineError> {
        let io = |context: &str| {
            let context = format!("{context} {}", config.log_dir.display());
            move |source| EngineError::Io { context, source }
        };
        std::fs::create_dir_all(&config.log_dir).map_err(io("cannot create log directory"))?;
        let next_id = job::next_id_after_previous_runs(&config.log_dir)
            .map_err(io("cannot read log directory"))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| EngineError::Io {
            context: "the engine needs a tokio runtime".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Engine {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State {
                    next_id,
                    ..State::default()
                }),
                shutting_down: AtomicBool::new(false),
                runtime,
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Submits a job: it starts now if a running slot is free, or waits in the queue.
    /// Returns its id and whether it was queued.
    pub fn submit(&self, spec: JobSpec) -> Result<(JobId, bool), EngineError> {
        if spec.argv.is_empty() {
            return Err(EngineError::Invalid("empty command".into()));
        }
        if spec.stdin && spec.stdio.is_some() {
            return Err(EngineError::Invalid(
                "a job on passed file descriptors takes no forwarded stdin".into(),
            ));
        }
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        let mut state = self.inner.lock();
        let start_now = state.running < self.inner.config.max_running;
        if !start_now && state.queue.len() >= self.inner.config.max_queued {
            return Err(EngineError::Limit(format!(
                "{} jobs are running and {} are queued (the limits); try again later",
                state.running,
                state.queue.len()
            )));
        }
        let id = state.next_id;
        let log_path = self.inner.config.log_dir.join(format!("{id}.log"));
        let job = Arc::new(Job::new(id, spec, &log_path, self.inner.config.log_limits));
        state.next_id += 1;
        state.jobs.insert(id, Arc::clone(&job));
        if start_now {
            state.running += 1;
            drop(state);
            self.inner.start(job);
        } else {
            state.queue.push_back(id);
        }
        Ok((id, !start_now))
    }

    /// Sends bytes to a job's stdin, waiting while its stdin buffer is full. Bytes for a job
    /// whose stdin is already gone (it exited or closed it) are dropped.
    pub async fn write_stdin(&self, id: JobId, data: Vec<u8>) -> Result<(), EngineError> {
        let sender = self.job(id)?.stdin_sender()?;
        if let Some(sender) = sender {
            // A closed receiver means the job no longer reads stdin: drop the bytes.
            let _ = sender.send(data).await;
        }
        Ok(())
    }

    /// Closes a job's stdin: the job reads EOF once earlier bytes are consumed.
    pub fn close_stdin(&self, id: JobId) -> Result<(), EngineError> {
        self.job(id)?.close_stdin();
        Ok(())
    }

    /// A reader of a job's output: from the start (`replay`) or from now, following it live
    /// until the job ends (`follow`) or stopping at the stored end. A `holding` reader (the
    /// job's own client) never misses output: past the stored-output cap the job waits for it
    /// rather than dropping what it has not read.
    pub fn output(
        &self,
        id: JobId,
        replay: bool,
        follow: bool,
        holding: bool,
    ) -> Result<LogReader, EngineError> {
        Ok(self.job(id)?.log.reader(replay, follow, holding))
    }

    /// A snapshot of one job.
    pub fn snapshot(&self, id: JobId) -> Result<JobSnapshot, EngineError> {
        Ok(self.job(id)?.snapshot())
    }

    /// Snapshots of every known job, oldest first.
    pub fn list(&self) -> Vec<JobSnapshot> {
        let jobs: Vec<Arc<Job>> = self.inner.lock().jobs.values().cloned().collect();
        jobs.iter().map(|job| job.snapshot()).collect()
    }

    /// Sends `signal` to a running job's whole process group, or cancels a queued job.
    pub fn signal(&self, id: JobId, signal: i32) -> Result<(), EngineError> {
        let job = self.job(id)?;
        {
            let mut state = self.inner.lock();
            if let Some(pos) = state.queue.iter().position(|&queued| queued == id) {
                state.queue.remove(pos);
                drop(state);
                job.finish_without_running(
                    format!("cancelled by signal {signal} while queued"),
                    Some(signal),
                );
                self.inner.forget_old(id);
                return Ok(());
            }
        }
        job.signal_group(signal)
    }

    /// Whether the engine is shutting down.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Shuts down: refuses new jobs, cancels queued ones, sends TERM to every running job's
    /// process group, then KILL to those still running after the grace period, and waits for
    /// them to be reaped (at most one more second).
    pub async fn shutdown(&self) {
        if self.inner.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let queued: Vec<JobId> = self.inner.lock().queue.drain(..).collect();
        for id in queued {
            if let Ok(job) = self.job(id) {
                job.finish_without_running("cancelled: the daemon shut down".into(), None);
            }
        }
        let running = |engine: &Engine| -> Vec<Arc<Job>> {
            let jobs: Vec<Arc<Job>> = engine.inner.lock().jobs.values().cloned().collect();
            jobs.into_iter().filter(|job| job.is_running()).collect()
        };
        for job in running(self) {
            let _ = job.signal_group(libc::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + self.inner.config.kill_grace;
        while tokio::time::Instant::now() < deadline && !running(self).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for job in running(self) {
            let _ = job.signal_group(libc::SIGKILL);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while tokio::time::Instant::now() < deadline && !running(self).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn job(&self, id: JobId) -> Result<Arc<Job>, EngineError> {
        self.inner
            .lock()
            .jobs
            .get(&id)
            .cloned()
            .ok_or(EngineError::UnknownJob(id))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state (no multi-step invariants
        // are broken mid-way), so a poisoned lock is taken over.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spawns `job` (its running slot is already counted).
    fn start(self: &Arc<Self>, job: Arc<Job>) {
        let inner = Arc::clone(self);
        job::spawn(
            job,
            &self.runtime,
            self.config.kill_grace,
            Box::new(move |id| inner.job_ended(id)),
        );
    }

    /// Called by a job's pump thread once the job has ended: frees its slot and starts the
    /// next queued job.
    fn job_ended(self: &Arc<Self>, id: JobId) {
        let next = {
            let mut state = self.lock();
            state.running = state.running.saturating_sub(1);
            if self.shutting_down.load(Ordering::SeqCst) {
                None
            } else {
                let next = state
                    .queue
                    .pop_front()
                    .and_then(|id| state.jobs.get(&id).cloned());
                if next.is_some() {
                    state.running += 1;
                }
                next
            }
        };
        self.forget_old(id);
        if let Some(job) = next {
            self.start(job);
        }
    }

    /// Records `id` as finished and forgets the oldest finished jobs past the limit.
    fn forget_old(&self, id: JobId) {
        let forgotten: Vec<Arc<Job>> = {
            let mut state = self.lock();
            state.finished.push_back(id);
            let mut forgotten = Vec::new();
            while state.finished.len() > self.config.max_finished {
                if let Some(old) = state.finished.pop_front() {
                    forgotten.extend(state.jobs.remove(&old));
                }
            }
            forgotten
        };
        for job in forgotten {
            job.log.remove();
        }
    }
}

/// A stdin channel's sending half, as handed out by a job.
pub(crate) type StdinSender = mpsc::Sender<Vec<u8>>;
