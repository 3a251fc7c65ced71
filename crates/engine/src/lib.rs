//! Ferry's engine: jobs, their output logs, limits and the run queue.
//!
//! The engine runs commands in their own process groups, pumps their stdout and stderr into an
//! append-only [`log`] per job, forwards stdin, enforces timeouts and the running-jobs limit
//! (further jobs wait in a queue), and reports exit status and run time. It knows nothing of any
//! wire format: the daemon's dialect adapters translate their frames into calls on [`Engine`].

mod control;
mod error;
pub mod files;
mod groups;
mod job;
pub mod log;
pub mod logfile;
mod memory;
mod orphans;
pub mod peers;
mod principal;
pub mod queue;
pub mod quota;
pub mod sessions;
pub mod signals;
mod spawn;
pub mod stats;
pub mod store;
pub mod tracking;
mod types;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use control::spec_of;
pub use error::EngineError;
pub use log::{LogError, LogLimits, LogReader, OutputEvent};
pub use logfile::{encode_record, parse_records, RecordKind};
pub use memory::limit_malloc_arenas;
pub use principal::{BadPrincipal, Principal};
pub use queue::{GroupInfo, DEFAULT_GROUP};
pub use store::{Pruned, Retention, StoreError};
pub use types::{
    ExitReport, JobId, JobOrigin, JobPhase, JobSnapshot, JobSpec, Load, OutputStream, PassedStdio,
};

use job::Job;

/// The longest label a job may have, in bytes.
pub const MAX_LABEL: usize = 256;

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
    /// Create a job's first process in its cgroup (`clone3` with `CLONE_INTO_CGROUP`) where the
    /// kernel can; off, it moves itself in after `fork`, as on kernels before 5.7.
    pub clone_into_cgroup: bool,
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
            clone_into_cgroup: true,
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
    /// What is counted for monitoring.
    stats: Arc<stats::JobStats>,
}

struct State {
    next_id: JobId,
    jobs: BTreeMap<JobId, Arc<Job>>,
    /// Which waiting job starts next, under which limits.
    runq: queue::RunQueue,
    finished: VecDeque<JobId>,
}

/// A job a new job waits for, as found before the state lock is taken.
enum Dependency {
    /// In memory: whether it succeeded is asked under the lock.
    Known(Arc<Job>),
    /// Ended and known from the history: whether it succeeded.
    Ended(bool),
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
        let tracking = Arc::new(tracking::Tracking::discover(
            config.job_cgroups,
            config.clone_into_cgroup,
        ));
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
        let stats: Arc<stats::JobStats> = Arc::default();
        let (store, next_id, lost, requeued) = if config.history {
            let slot = Arc::clone(&engine_slot);
            let forget = Box::new(move |ids: &[JobId]| {
                if let Some(inner) = slot.get().and_then(std::sync::Weak::upgrade) {
                    inner.forget(ids);
                }
            });
            let (store, recovered) = open_history(&config, forget, Arc::clone(&stats))?;
            let mut orphans = recovered.orphans;
            let lost = orphans.len();
            orphans.extend(previous);
            orphans::end(orphans, config.kill_grace);
            (
                Some(store),
                recovered.next_id,
                Some(lost),
                recovered.requeued,
            )
        } else {
            orphans::end(previous, config.kill_grace);
            let next_id = job::next_id_after_previous_runs(&config.log_dir)
                .map_err(io("cannot read log directory"))?;
            (None, next_id, None, Vec::new())
        };
        let mut runq = queue::RunQueue::new(config.max_running);
        if let Some(store) = &store {
            for (name, group) in groups::load(store.database())? {
                let parallel = usize::try_from(group.parallel).unwrap_or(usize::MAX);
                runq.set_group(&name, parallel, group.paused);
            }
        }
        let start_notice = stopped_unexpectedly.then(|| start_notice(lost));
        let flow: Arc<memory::OutputFlow> = Arc::default();
        let peers = peers::PeerRegistry::counting_traffic(config.hub.clone(), Arc::clone(&flow));
        let inner = Arc::new(Inner {
            config,
            state: Mutex::new(State {
                next_id,
                jobs: BTreeMap::new(),
                runq,
                finished: VecDeque::new(),
            }),
            shutting_down: AtomicBool::new(false),
            flow,
            peers,
            runtime,
            store,
            tracking,
            start_notice: Mutex::new(start_notice),
            stats,
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
        let engine = Engine { inner };
        engine.queue_again(requeued);
        Ok(engine)
    }

    /// Queues again, in order and under their ids, the jobs an earlier daemon had queued.
    fn queue_again(&self, records: Vec<store::JobRecord>) {
        if !records.is_empty() {
            tracing::info!(
                jobs = records.len(),
                "queued again the jobs an earlier daemon had queued when it stopped"
            );
        }
        for record in records {
            let id = record.id;
            let submitted = UNIX_EPOCH + Duration::from_millis(record.submitted_ms);
            let spec = control::spec_of(&record, true);
            let dependencies = match self.dependencies(&spec, id) {
                Ok(dependencies) => dependencies,
                // A job it waited for is gone from the history: it cannot know the outcome.
                Err(_) => vec![Dependency::Ended(false)],
            };
            let log_path = logfile::log_path(&self.inner.config.log_dir, id);
            let durable = self.inner.store.is_some();
            match Job::new(
                id,
                spec,
                submitted,
                &log_path,
                self.inner.config.log_limits,
                durable,
            ) {
                Ok(job) => {
                    self.inner.admit(Arc::new(job), dependencies);
                }
                Err(e) => tracing::error!(job = id, "cannot queue the job again: {e}"),
            }
        }
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
            running: state.runq.running() as u64,
            queued: state.runq.queued() as u64,
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
        if spec.tty.is_some() && (spec.stdio.is_some() || !spec.stdin) {
            return Err(EngineError::Invalid(
                "a job on a terminal of the daemon's takes its stdin from its client, and no passed file descriptors".into(),
            ));
        }
        if spec.stdin && spec.stdio.is_some() {
            return Err(EngineError::Invalid(
                "a job on passed file descriptors takes no forwarded stdin".into(),
            ));
        }
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        if let Some(label) = &spec.label {
            if label.len() > MAX_LABEL {
                return Err(EngineError::Invalid(format!(
                    "a label is at most {MAX_LABEL} bytes"
                )));
            }
        }
        let mut state = self.inner.lock();
        let group = spec.group.as_deref().unwrap_or(DEFAULT_GROUP);
        if state.runq.group(group).is_none() {
            return Err(EngineError::Invalid(format!(
                "there is no group '{group}' (`ferry group add {group} --parallel N` makes one)"
            )));
        }
        if state.runq.queued() >= self.inner.config.max_queued {
            return Err(EngineError::Limit(format!(
                "{} jobs are running and {} are queued (the limits); try again later",
                state.runq.running(),
                state.runq.queued()
            )));
        }
        let id = state.next_id;
        state.next_id += 1;
        drop(state);
        let dependencies = self.dependencies(&spec, id)?;
        // The log file (with the job's header) is made outside the lock: it is a file create.
        let log_path = logfile::log_path(&self.inner.config.log_dir, id);
        let durable = self.inner.store.is_some();
        let job = Job::new(
            id,
            spec,
            SystemTime::now(),
            &log_path,
            self.inner.config.log_limits,
            durable,
        )
        .map_err(|source| EngineError::Io {
            context: format!("cannot create the log of job {id}"),
            source,
        })?;
        let job = Arc::new(job);
        if let Some(peer) = &job.spec.origin.peer {
            self.inner.peers.started(peer, id);
        }
        self.inner.stats.submitted();
        let queued = self.inner.admit(job, dependencies);
        Ok((id, queued))
    }

    /// The jobs `spec` waits for, checked: earlier than `id`, known, and of its principal.
    fn dependencies(&self, spec: &JobSpec, id: JobId) -> Result<Vec<Dependency>, EngineError> {
        let mut found = Vec::with_capacity(spec.after.len());
        for &after in &spec.after {
            if after >= id {
                return Err(EngineError::Invalid(format!(
                    "job {id} can wait only for an earlier job, not for job {after}"
                )));
            }
            let unknown = || EngineError::Invalid(format!("there is no job {after} to wait for"));
            let (principal, dependency) = match self.job(after) {
                Ok(job) => (job.spec.origin.principal.clone(), Dependency::Known(job)),
                Err(_) => {
                    let record = self.record(after)?.ok_or_else(unknown)?;
                    let succeeded = record.report().succeeded();
                    (record.principal, Dependency::Ended(succeeded))
                }
            };
            if principal != spec.origin.principal {
                return Err(EngineError::Invalid(format!(
                    "job {after} is not yours to wait for"
                )));
            }
            found.push(dependency);
        }
        Ok(found)
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
                // A finished job that wrote nothing: its record says all (its log was not
                // flushed, and a power cut may have left it empty).
                if replay && record.needs_log() {
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

    /// What the engine counts for monitoring.
    pub fn stats(&self) -> &stats::JobStats {
        &self.inner.stats
    }

    /// The bytes every job of this daemon run has written so far (stdout, stderr): the ended
    /// ones' as counted at their ends, the others' as their logs hold now.
    pub fn output_bytes(&self) -> (u64, u64) {
        let (mut stdout, mut stderr) = self.inner.stats.ended_output();
        let jobs: Vec<Arc<Job>> = self.inner.lock().jobs.values().cloned().collect();
        for job in jobs.iter().filter(|job| !job.log.is_finished()) {
            let (out, err) = job.log.lengths();
            stdout += out;
            stderr += err;
        }
        (stdout, stderr)
    }

    /// Sends `signal` to a running job's whole process group, or cancels a queued job.
    pub fn signal(&self, id: JobId, signal: i32) -> Result<(), EngineError> {
        let job = self.job(id)?;
        if self.inner.lock().runq.cancel(id) {
            job.finish_without_running(
                format!("cancelled by signal {signal} while queued"),
                Some(signal),
            );
            self.inner.record(&job, true);
            self.inner.count_end(&job);
            self.inner.forget_old(id);
            self.inner.settle(vec![(id, None, false)]);
            return Ok(());
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
        let queued: Vec<JobId> = self.inner.lock().runq.drain();
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
    stats: Arc<stats::JobStats>,
) -> Result<(store::Store, store::Recovered), EngineError> {
    let store = store::Store::open(
        config.state_dir(),
        &config.log_dir,
        config.retention,
        on_removed,
        stats,
    )?;
    let mut recovered = store.recover(&config.log_dir)?;
    recovered.next_id = recovered
        .next_id
        .max(job::next_id_from_file(&config.log_dir));
    let pruned = store.apply_retention()?;
    if pruned.jobs > 0 {
        tracing::info!(
            jobs = pruned.jobs,
            bytes = pruned.bytes,
            "retention removed old jobs from the history"
        );
    }
    Ok((store, recovered))
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
pub(crate) fn snapshot_of(record: &store::JobRecord) -> JobSnapshot {
    let report = record.report();
    let recipe = record.recipe.as_ref();
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
        group: recipe
            .and_then(|r| r.group.clone())
            .unwrap_or_else(|| DEFAULT_GROUP.to_owned()),
        label: recipe.and_then(|r| r.label.clone()),
        after: recipe.map(|r| r.after.clone()).unwrap_or_default(),
        paused: false,
        paused_time: Duration::from_millis(record.paused_ms),
        finished: record
            .finished_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
    }
}

impl Inner {
    /// Counts an ended job's outcome, run time and output.
    fn count_end(&self, job: &Job) {
        if let JobPhase::Finished(report) = job.snapshot().phase {
            self.stats.ended(&report, job.log.lengths());
        }
    }

    /// Queues `job`'s record for the history (`ended` syncs its log first), and tells live
    /// views that it changed: every change of a job's state comes through here.
    fn record(&self, job: &Job, ended: bool) {
        self.stats.changed();
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
        self.stats.started();
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
    /// jobs that may start now.
    fn job_ended(self: &Arc<Self>, id: JobId) {
        let job = self.lock().jobs.get(&id).cloned();
        let Some(job) = job else {
            return;
        };
        self.record(&job, true);
        self.count_end(&job);
        let succeeded = job.succeeded().unwrap_or(false);
        self.forget_old(id);
        self.settle(vec![(id, Some(job.group().to_owned()), succeeded)]);
    }

    /// Takes a new job into the run queue (or ends it at once when a job it waits for has
    /// failed), and starts it if it may start now. Returns whether it waits.
    fn admit(self: &Arc<Self>, job: Arc<Job>, dependencies: Vec<Dependency>) -> bool {
        let mut pending = BTreeSet::new();
        let mut failed = None;
        let start_now = {
            let mut state = self.lock();
            state.jobs.insert(job.id, Arc::clone(&job));
            for (dependency, &after) in dependencies.iter().zip(&job.spec.after) {
                let outcome = match dependency {
                    Dependency::Known(other) => other.succeeded(),
                    Dependency::Ended(succeeded) => Some(*succeeded),
                };
                match outcome {
                    None => {
                        pending.insert(after);
                    }
                    Some(false) if !job.spec.after_any => failed = failed.or(Some(after)),
                    Some(_) => {}
                }
            }
            if failed.is_some() || self.shutting_down.load(Ordering::SeqCst) {
                false
            } else {
                let max = self.config.max_running;
                let group = job.group().to_owned();
                state
                    .runq
                    .admit(job.id, &group, pending, job.spec.after_any, max)
            }
        };
        if let Some(because_of) = failed {
            job.finish_dependency_failed(because_of);
            self.record(&job, true);
            self.count_end(&job);
            self.forget_old(job.id);
            return false;
        }
        if start_now {
            self.start(Arc::clone(&job));
        }
        self.record(&job, false);
        !start_now
    }

    /// Takes the ends of jobs (id, the group whose slot it held, whether it succeeded) into
    /// the run queue, ends the waiting jobs that now never start (their dependency failed,
    /// and so on down the chain), and starts every job that may start now.
    fn settle(self: &Arc<Self>, mut ended: Vec<(JobId, Option<String>, bool)>) {
        let mut never = Vec::new();
        let startable: Vec<Arc<Job>> = {
            let mut state = self.lock();
            while let Some((id, group, succeeded)) = ended.pop() {
                for failed in state.runq.ended(id, group.as_deref(), succeeded) {
                    ended.push((failed.job, None, false));
                    if let Some(job) = state.jobs.get(&failed.job) {
                        never.push((Arc::clone(job), failed.because_of));
                    }
                }
            }
            if self.shutting_down.load(Ordering::SeqCst) {
                Vec::new()
            } else {
                let max = self.config.max_running;
                let ids = state.runq.startable(max);
                ids.iter()
                    .filter_map(|id| state.jobs.get(id).cloned())
                    .collect()
            }
        };
        for (job, because_of) in never {
            job.finish_dependency_failed(because_of);
            self.record(&job, true);
            self.count_end(&job);
            self.forget_old(job.id);
        }
        for job in startable {
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
