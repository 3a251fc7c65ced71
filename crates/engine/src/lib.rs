//! Ferry's engine: jobs, their output logs, limits and the run queue.
//!
//! The engine runs commands in their own process groups, pumps their stdout and stderr into an
//! append-only [`log`] per job, forwards stdin, enforces timeouts and the running-jobs limit
//! (further jobs wait in a queue), and reports exit status and run time. It knows nothing of any
//! wire format: the daemon's dialect adapters translate their frames into calls on [`Engine`].

mod error;
pub mod files;
mod job;
pub mod log;
pub mod logfile;
mod memory;
mod orphans;
pub mod peers;
mod principal;
pub mod quota;
pub mod sessions;
pub mod signals;
pub mod store;
pub mod tracking;
mod types;

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

pub use error::EngineError;
pub use log::{LogError, LogLimits, LogReader, OutputEvent};
pub use logfile::{encode_record, parse_records, RecordKind};
pub use memory::limit_malloc_arenas;
pub use principal::{BadPrincipal, Principal};
pub use store::{Pruned, Retention, StoreError};
pub use types::{
    ExitReport, JobId, JobOrigin, JobPhase, JobSnapshot, JobSpec, Load, OutputStream, PassedStdio,
};

use job::Job;

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
    /// Keep the job history (records in a store beside the log directory, logs kept across
    /// restarts); off, jobs live in memory only and earlier logs are removed at start.
    pub history: bool,
    /// What the history keeps.
    pub retention: Retention,
    /// The peer hub's settings (outboxes, grace, slow consumers, pings).
    pub hub: peers::HubConfig,
    /// Put each job in a cgroup of its own where the daemon may make one (see [`tracking`]);
    /// off, jobs are tracked by process group and environment mark.
    pub job_cgroups: bool,
}

impl EngineConfig {
    /// The state directory: the log directory's parent, where the history store lives.
    pub fn state_dir(&self) -> &std::path::Path {
        self.log_dir.parent().unwrap_or(&self.log_dir)
    }

    /// Defaults, with logs in `log_dir`.
    pub fn new(log_dir: PathBuf) -> EngineConfig {
        EngineConfig {
            log_dir,
            max_running: 64,
            max_queued: 10_000,
            max_finished: 1_000,
            kill_grace: Duration::from_secs(5),
            log_limits: LogLimits::default(),
            history: true,
            retention: Retention::default(),
            hub: peers::HubConfig::default(),
            job_cgroups: true,
        }
    }
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
    /// The job history, unless it is off.
    store: Option<store::Store>,
    /// Output bytes flowing through the daemon (see [`memory`]).
    flow: Arc<memory::OutputFlow>,
    /// Every connected peer.
    peers: peers::PeerRegistry,
    /// How jobs' processes are found.
    tracking: Arc<tracking::Tracking>,
    /// What the owner's first client is told: the previous daemon stopped unexpectedly.
    start_notice: Mutex<Option<String>>,
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
        // Job output and commands are the owner's business: the log directory and the state
        // directory holding the history are private.
        {
            use std::os::unix::fs::PermissionsExt;
            for dir in [config.log_dir.as_path(), config.state_dir()] {
                let private = std::fs::Permissions::from_mode(0o700);
                if let Err(e) = std::fs::set_permissions(dir, private) {
                    tracing::warn!(dir = %dir.display(), "cannot make the directory private: {e}");
                }
            }
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| EngineError::Io {
            context: "the engine needs a tokio runtime".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let tracking = Arc::new(tracking::Tracking::discover(config.job_cgroups));
        // What the previous daemon of this state directory may have left running, whether or
        // not its history recorded the jobs.
        let unclean = tracking.take_over(config.state_dir());
        let stopped_unexpectedly = unclean.is_some();
        let previous: Vec<orphans::Orphan> = unclean
            .unwrap_or_default()
            .into_iter()
            .map(|track| orphans::Orphan {
                job: 0,
                leader: None,
                track,
            })
            .collect();
        // The store tells the engine which jobs retention removed, once the engine exists.
        let engine_slot: Arc<std::sync::OnceLock<std::sync::Weak<Inner>>> = Arc::default();
        let (store, next_id, lost) = if config.history {
            let slot = Arc::clone(&engine_slot);
            let forget = Box::new(move |ids: &[JobId]| {
                if let Some(inner) = slot.get().and_then(std::sync::Weak::upgrade) {
                    inner.forget(ids);
                }
            });
            let (store, next_id, mut orphans) = open_history(&config, forget)?;
            let lost = orphans.len();
            orphans.extend(previous);
            orphans::end(orphans, config.kill_grace);
            (Some(store), next_id, Some(lost))
        } else {
            orphans::end(previous, config.kill_grace);
            let next_id = job::next_id_after_previous_runs(&config.log_dir)
                .map_err(io("cannot read log directory"))?;
            (None, next_id, None)
        };
        let start_notice = stopped_unexpectedly.then(|| start_notice(lost));
        let flow: Arc<memory::OutputFlow> = Arc::default();
        let peers = peers::PeerRegistry::counting_traffic(config.hub.clone(), Arc::clone(&flow));
        let inner = Arc::new(Inner {
            config,
            state: Mutex::new(State {
                next_id,
                ..State::default()
            }),
            shutting_down: AtomicBool::new(false),
            flow,
            peers,
            runtime,
            store,
            tracking,
            start_notice: Mutex::new(start_notice),
        });
        memory::spawn_trimmer(&inner.runtime, &inner.flow);
        if !inner.tracking.uses_cgroups() {
            // As the jobs' subreaper, the daemon reaps their orphaned descendants as they end.
            let tracking = Arc::downgrade(&inner.tracking);
            inner.runtime.spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    let Some(tracking) = tracking.upgrade() else {
                        return;
                    };
                    let _ = tokio::task::spawn_blocking(move || tracking.reap()).await;
                }
            });
        }
        let _ = engine_slot.set(Arc::downgrade(&inner));
        Ok(Engine { inner })
    }

    /// What the owner's first client after the start is told, once: that the previous daemon
    /// stopped unexpectedly, and how many jobs it lost.
    pub fn take_start_notice(&self) -> Option<String> {
        self.inner
            .start_notice
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// How jobs' processes are tracked, in words.
    pub fn tracking(&self) -> String {
        self.inner.tracking.describe()
    }

    /// The settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// How busy the daemon is: its running and queued jobs and its job slots, and the cost
    /// `ferry rake` places remote actions by (see [`Load::cost`]).
    pub fn load(&self) -> Load {
        let state = self.inner.lock();
        Load {
            running: state.running as u64,
            queued: state.queue.len() as u64,
            slots: self.inner.config.max_running as u64,
        }
    }

    /// The registry of connected peers.
    pub fn peers(&self) -> &peers::PeerRegistry {
        &self.inner.peers
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
        state.next_id += 1;
        drop(state);
        // The log file (with the job's header) is made outside the lock: it is a file create.
        let log_path = logfile::log_path(&self.inner.config.log_dir, id);
        let durable = self.inner.store.is_some();
        let job = Job::new(id, spec, &log_path, self.inner.config.log_limits, durable).map_err(
            |source| EngineError::Io {
                context: format!("cannot create the log of job {id}"),
                source,
            },
        )?;
        let job = Arc::new(job);
        if let Some(peer) = &job.spec.origin.peer {
            self.inner.peers.started(peer, id);
        }
        // Decided again: slots may have freed or filled while the file was made.
        let mut state = self.inner.lock();
        let start_now = state.running < self.inner.config.max_running;
        state.jobs.insert(id, Arc::clone(&job));
        if start_now {
            state.running += 1;
        } else {
            state.queue.push_back(id);
        }
        drop(state);
        if start_now {
            self.inner.start(Arc::clone(&job));
        }
        self.inner.record(&job, false);
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
        match self.job(id) {
            // A finished job's log is read whole from its file: head, gap, tail.
            Ok(job) if replay && job.log.is_finished() => {
                let exit = match job.snapshot().phase {
                    JobPhase::Finished(report) => report,
                    _ => ExitReport::default(),
                };
                Ok(LogReader::stored(
                    job.log.path(),
                    exit,
                    self.inner.store.is_none(),
                ))
            }
            Ok(job) => Ok(job.log.reader(replay, follow, holding)),
            Err(unknown) => {
                let record = self.record(id)?.ok_or(unknown)?;
                let path = logfile::log_path(&self.inner.config.log_dir, id);
                if replay {
                    Ok(LogReader::stored(&path, record.report(), false))
                } else {
                    Ok(LogReader::exit_only(record.report()))
                }
            }
        }
    }

    /// A snapshot of one job (from the history when it is not in memory).
    pub fn snapshot(&self, id: JobId) -> Result<JobSnapshot, EngineError> {
        match self.job(id) {
            Ok(job) => Ok(job.snapshot()),
            Err(unknown) => Ok(snapshot_of(&self.record(id)?.ok_or(unknown)?)),
        }
    }

    /// Who a job belongs to (from the history when it is not in memory).
    pub fn principal_of(&self, id: JobId) -> Result<Principal, EngineError> {
        match self.job(id) {
            Ok(job) => Ok(job.spec.origin.principal.clone()),
            Err(unknown) => Ok(self.record(id)?.ok_or(unknown)?.principal),
        }
    }

    /// Counts a connection's end toward giving memory back (see `memory`).
    pub fn connection_ended(&self) {
        self.inner.flow.add(memory::CONNECTION_END_WEIGHT);
    }

    /// The history's record of a job, if the history is on and has it.
    fn record(&self, id: JobId) -> Result<Option<store::JobRecord>, EngineError> {
        let Some(store) = &self.inner.store else {
            return Ok(None);
        };
        match store.get(id)? {
            Some(record) if record.ended() => Ok(Some(record)),
            // A job forgotten from memory a moment ago may have its last record still queued
            // for the next commit: wait for it, then read again.
            _ => {
                store.flush();
                Ok(store.get(id)?)
            }
        }
    }

    /// Every job the history holds (with the jobs in memory, which are newer), oldest first.
    /// Reads the store: call it off the async threads.
    pub fn history(&self) -> Result<Vec<JobSnapshot>, EngineError> {
        let mut jobs: BTreeMap<JobId, JobSnapshot> = BTreeMap::new();
        // The jobs in memory first: one that ends and is forgotten meanwhile is then in the
        // store once what was queued is committed.
        let in_memory = self.list();
        if let Some(store) = &self.inner.store {
            store.flush();
            for (id, record) in store.all()? {
                jobs.insert(id, snapshot_of(&record));
            }
        }
        for snapshot in in_memory {
            jobs.insert(snapshot.id, snapshot);
        }
        Ok(jobs.into_values().collect())
    }

    /// Removes ended jobs (records and logs) submitted longer than `older_than` ago, and all
    /// but the newest `keep`. Blocks: call it off the async threads.
    pub fn prune(
        &self,
        older_than: Option<Duration>,
        keep: Option<usize>,
    ) -> Result<Pruned, EngineError> {
        match &self.inner.store {
            Some(store) => Ok(store.prune(older_than, keep)?),
            None => Err(EngineError::Invalid(
                "the job history is off in this daemon (--no-history): nothing to prune".into(),
            )),
        }
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
                self.inner.record(&job, true);
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
                self.inner.record(&job, true);
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
        // Whatever jobs left running (being ended after their leaders) ends with the daemon.
        let tracking = Arc::clone(&self.inner.tracking);
        let _ = tokio::task::spawn_blocking(move || tracking.end_all()).await;
        // The ended jobs' records are committed before the daemon goes.
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(store) = &inner.store {
                store.flush();
            }
        })
        .await;
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

/// Opens the history, records what an earlier daemon left unrecorded, and applies retention;
/// the store, the first job id to use, and the process groups lost jobs left running.
fn open_history(
    config: &EngineConfig,
    on_removed: store::OnRemoved,
) -> Result<(store::Store, JobId, Vec<orphans::Orphan>), EngineError> {
    let store = store::Store::open(
        config.state_dir(),
        &config.log_dir,
        config.retention,
        on_removed,
    )?;
    let (next_id, orphans) = store.recover(&config.log_dir)?;
    let next_id = next_id.max(job::next_id_from_file(&config.log_dir));
    let pruned = store.apply_retention()?;
    if pruned.jobs > 0 {
        tracing::info!(
            jobs = pruned.jobs,
            bytes = pruned.bytes,
            "retention removed old jobs from the history"
        );
    }
    Ok((store, next_id, orphans))
}

/// What the owner is told when the previous daemon stopped unexpectedly; `lost`: the jobs it
/// lost, when the history knows.
fn start_notice(lost: Option<usize>) -> String {
    let said = "the daemon had stopped unexpectedly (killed, or the machine stopped) and was started again";
    match lost {
        Some(0) => format!("{said}; no job of it was lost"),
        Some(1) => format!("{said}; 1 job it ran was lost (`ferry ps --all` shows it)"),
        Some(n) => format!("{said}; {n} jobs it ran were lost (`ferry ps --all` shows them)"),
        None => format!("{said}; with the history off, what its jobs did is not known"),
    }
}

/// A snapshot of a job known only from its record.
fn snapshot_of(record: &store::JobRecord) -> JobSnapshot {
    let report = record.report();
    let submitted = UNIX_EPOCH + Duration::from_millis(record.submitted_ms);
    JobSnapshot {
        id: record.id,
        principal: record.principal.clone(),
        argv: record
            .argv
            .iter()
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect(),
        run_time: report.wall,
        phase: JobPhase::Finished(report),
        submitted,
        started: record
            .started_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        pid: record.pid,
        unstored_bytes: record.dropped_bytes,
        on_client_fds: record.on_client_fds,
    }
}

impl Inner {
    /// Queues `job`'s record for the history; `ended` syncs its log first.
    fn record(&self, job: &Job, ended: bool) {
        if let Some(store) = &self.store {
            let log = ended.then(|| job.log.path().to_owned());
            job.record_in_order(|record| store.put(record, log));
        }
    }

    /// Forgets jobs the history removed.
    fn forget(&self, ids: &[JobId]) {
        let mut state = self.lock();
        for id in ids {
            if state.jobs.get(id).is_some_and(|job| job.log.is_finished()) {
                state.jobs.remove(id);
                state.finished.retain(|f| f != id);
            }
        }
    }

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
            &self.tracking,
            Arc::clone(&self.flow),
            Box::new(move |id| inner.job_ended(id)),
        );
    }

    /// Called by a job's pump thread once the job has ended: frees its slot and starts the
    /// next queued job.
    fn job_ended(self: &Arc<Self>, id: JobId) {
        if let Some(job) = self.lock().jobs.get(&id).cloned() {
            self.record(&job, true);
        }
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
            self.start(Arc::clone(&job));
            self.record(&job, false);
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
        // With the history on, logs stay (retention removes them); off, they go with the job.
        if self.store.is_none() {
            for job in forgotten {
                job.log.remove();
            }
        }
    }
}
