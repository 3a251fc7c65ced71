//! The job history: one record per job in an embedded store (redb, `STATE/history.redb`), the
//! job's output in its log file beside it (`STATE/jobs/ID.log`, see [`crate::logfile`]).
//!
//! Durability, in order of events:
//! - At submit, the job's log file is created with a header naming the job (plain writes: a
//!   `kill -9` of the daemon loses nothing written, as the kernel holds it), and its record is
//!   queued for the store.
//! - At exit, the log gets an end record (the exit status) before any client hears of the
//!   exit; then the store thread fsyncs the log and commits the finished record.
//! - The store thread commits every queued record in one transaction with
//!   `Durability::Immediate` (group commit): a power cut leaves the previous committed state,
//!   never a torn one, and a record the store says is finished has its whole log on disk.
//! - At start, [`Store::recover`] reconciles the store with the log files: a log whose job the
//!   store does not know as ended is read; with an end record the job is recorded finished,
//!   without one it is recorded lost (the daemon died while it ran), with what output it had.
//!
//! The store has a schema version (`meta.schema`); records are CBOR maps whose later fields
//! default when absent, so a store written by an older version reads as is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// redb's page cache. Its default, 1 GiB, is a ceiling that a daemon's history fills over
/// time (every page a write or a retention pass touches stays cached): the daemon's memory
/// grew by megabytes with every thousand jobs. The history's records are small and read in
/// order; a small cache keeps the tree's inner pages and costs no measurable time. (After a
/// burst of 1000 jobs, a 2 MiB cache held 1.4 MiB more of the daemon's memory than this one,
/// full of leaf pages no one reads again; `ferry run -- true` took the same time with both.)
const STORE_CACHE_BYTES: usize = 512 * 1024;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::logfile::{log_path, summarize, LogHeader};
use crate::principal::Principal;
use crate::types::{ExitReport, JobId};

/// The schema this build writes. Version 1 is the first.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");

/// The store's file name in the state directory.
pub const STORE_FILE: &str = "history.redb";

/// How a recorded job stands.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    /// Waiting for a running slot.
    Queued,
    /// Running.
    Running,
    /// Ended (see `exit`).
    Finished,
    /// The daemon stopped (crashed) while the job was queued or running.
    Lost,
}

/// What a lost job's report says.
pub const LOST: &str = "lost: the daemon stopped while the job was queued or running";

/// One job, as the store keeps it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The job id.
    pub id: JobId,
    /// Program and arguments.
    pub argv: Vec<ByteBuf>,
    /// Working directory, if one was given.
    #[serde(default)]
    pub cwd: Option<ByteBuf>,
    /// Where the request came from (the connection, e.g. `unix, pid 12` or an address).
    #[serde(default)]
    pub owner: String,
    /// Who it belongs to (absent in records written before principals: the owner's).
    #[serde(default)]
    pub principal: Principal,
    /// The dialect it came through (`ferry`, `fanos`).
    #[serde(default)]
    pub dialect: String,
    /// When it was submitted (ms since the Unix epoch).
    pub submitted_ms: u64,
    /// When it started, if it did.
    #[serde(default)]
    pub started_ms: Option<u64>,
    /// Its process (and process group) id, if it started.
    #[serde(default)]
    pub pid: Option<u32>,
    /// That process's start time (clock ticks since boot, from `/proc/PID/stat`), so that a
    /// later daemon ends the group of a lost job only if the pid is still that process.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// Its cgroup's directory, where it had one (see `crate::tracking`).
    #[serde(default)]
    pub cgroup: Option<ByteBuf>,
    /// The mark in its processes' environment (`FERRY_JOB`).
    #[serde(default)]
    pub mark: Option<String>,
    /// When it ended, if it did.
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// How it stands.
    pub state: RecordState,
    /// How it ended, once finished.
    #[serde(default)]
    pub exit: Option<ExitReport>,
    /// Bytes of stdout and stderr it wrote.
    #[serde(default)]
    pub stdout_bytes: u64,
    /// See `stdout_bytes`.
    #[serde(default)]
    pub stderr_bytes: u64,
    /// Bytes its log file takes.
    #[serde(default)]
    pub log_bytes: u64,
    /// Output bytes not kept in the log (between its head and tail, past the cap).
    #[serde(default)]
    pub dropped_bytes: u64,
    /// It ran on its client's own fds: no log of its output was kept.
    #[serde(default)]
    pub on_client_fds: bool,
    /// How it is run again (`restart`, a re-queue after a crash); absent in records written
    /// before restarts.
    #[serde(default)]
    pub recipe: Option<Recipe>,
    /// Time it spent stopped by `pause`, in milliseconds.
    #[serde(default)]
    pub paused_ms: u64,
}

/// What a record keeps to run its job again: what it ran, where, with what, in which group.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Recipe {
    /// The program and arguments it ran, where they differ from the record's `argv` (what
    /// it is shown as: a session's command line).
    #[serde(default)]
    pub command: Option<Vec<ByteBuf>>,
    /// Its whole environment (the daemon's when absent).
    #[serde(default)]
    pub env: Option<Vec<(ByteBuf, ByteBuf)>>,
    /// Its time limit.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Its group (the default when absent).
    #[serde(default)]
    pub group: Option<String>,
    /// Its label.
    #[serde(default)]
    pub label: Option<String>,
    /// The jobs it waits for.
    #[serde(default)]
    pub after: Vec<JobId>,
    /// It runs whatever their outcome.
    #[serde(default)]
    pub after_any: bool,
    /// The session it ran in.
    #[serde(default)]
    pub session: Option<String>,
    /// Its stdin came from its client (so it cannot run again without one).
    #[serde(default)]
    pub stdin: bool,
}

impl JobRecord {
    /// A record of the job its log header names, in `state`, with nothing else known yet.
    pub fn from_header(header: &LogHeader, state: RecordState) -> JobRecord {
        JobRecord {
            id: header.id,
            argv: header.argv.clone(),
            cwd: header.cwd.clone(),
            owner: header.owner.clone(),
            principal: header.principal.clone(),
            dialect: header.dialect.clone(),
            submitted_ms: header.submitted_ms,
            started_ms: None,
            pid: None,
            pid_start: None,
            cgroup: None,
            mark: None,
            finished_ms: None,
            state,
            exit: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            log_bytes: 0,
            dropped_bytes: 0,
            on_client_fds: header.on_client_fds,
            recipe: None,
            paused_ms: 0,
        }
    }

    /// Whether the job was waiting when its daemon stopped and can be queued again: it needs
    /// no client (no forwarded stdin, no passed fds) and no session, and its record says how
    /// to run it.
    pub fn may_queue_again(&self) -> bool {
        self.state == RecordState::Queued
            && !self.on_client_fds
            && self
                .recipe
                .as_ref()
                .is_some_and(|recipe| !recipe.stdin && recipe.session.is_none())
    }

    /// Whether its log holds anything this record does not: output, or (a job not finished)
    /// how far it came. A finished job that wrote nothing has a log of a header and an end,
    /// both in its record: that log is neither flushed nor read.
    pub fn needs_log(&self) -> bool {
        self.state != RecordState::Finished
            || self.stdout_bytes > 0
            || self.stderr_bytes > 0
            || self.dropped_bytes > 0
    }

    /// Whether the job is over (finished or lost).
    pub fn ended(&self) -> bool {
        matches!(self.state, RecordState::Finished | RecordState::Lost)
    }

    /// How it ended, as a report (a lost job's says so).
    pub fn report(&self) -> ExitReport {
        match (&self.state, &self.exit) {
            (RecordState::Finished, Some(exit)) => exit.clone(),
            _ => ExitReport {
                error: Some(LOST.into()),
                lost: true,
                ..ExitReport::default()
            },
        }
    }

    /// The record as the store keeps it (CBOR).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        // Serializing plain data into a Vec cannot fail.
        let _ = ciborium::ser::into_writer(self, &mut bytes);
        bytes
    }

    /// A record from the store's bytes.
    pub fn decode(bytes: &[u8]) -> Result<JobRecord, StoreError> {
        ciborium::de::from_reader(bytes).map_err(|e| StoreError::Damaged(e.to_string()))
    }
}

/// Milliseconds since the Unix epoch.
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("job history store: {0}")]
    Db(#[from] redb::Error),
    /// The store was written by a newer ferry.
    #[error("the job history store has schema version {found}; this ferry reads up to {SCHEMA_VERSION} (use a newer ferry, or move the store away)")]
    TooNew {
        /// The version found.
        found: u64,
    },
    /// A record cannot be decoded.
    #[error("a job record is damaged: {0}")]
    Damaged(String),
    /// The store thread is gone.
    #[error("the job history store is closed")]
    Closed,
    /// The file system failed around the store.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

fn db_error(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

/// Limits on what the history keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Ended jobs kept at most.
    pub max_jobs: usize,
    /// Bytes of logs kept at most.
    pub max_output: u64,
    /// Ended jobs older than this are removed.
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            max_jobs: 10_000,
            max_output: 10 * 1024 * 1024 * 1024,
            max_age: Some(Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Jobs removed.
    pub jobs: u64,
    /// Log bytes freed.
    pub bytes: u64,
}

/// What a prune removed, and which jobs.
type PruneResult = Result<(Pruned, Vec<JobId>), StoreError>;

/// What the store thread is asked to do.
enum Op {
    /// Insert or replace a record; with a log to fsync first.
    Put(Box<JobRecord>, Option<PathBuf>),
    /// Remove ended jobs by these rules; answers what went.
    Prune(Rules, mpsc::Sender<PruneResult>),
    /// Answer once everything queued before is committed.
    Flush(mpsc::Sender<()>),
}

/// The job history store: read from any thread, written by its own thread.
pub struct Store {
    db: std::sync::Arc<Database>,
    ops: mpsc::Sender<Op>,
    retention: Retention,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Called by the store thread with the ids of jobs it removed (by retention or prune).
pub type OnRemoved = Box<dyn Fn(&[JobId]) + Send>;

impl Store {
    /// Opens (or creates) the store in `state_dir`, checks its schema, and starts its thread.
    /// `log_dir` holds the jobs' log files (removed with their records).
    pub fn open(
        state_dir: &Path,
        log_dir: &Path,
        retention: Retention,
        on_removed: OnRemoved,
        stats: std::sync::Arc<crate::stats::JobStats>,
    ) -> Result<Store, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(state_dir.join(STORE_FILE))
            .map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        {
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let found = meta.get("schema").map_err(db_error)?.map(|v| v.value());
            match found {
                None => {
                    meta.insert("schema", SCHEMA_VERSION).map_err(db_error)?;
                }
                Some(found) if found > SCHEMA_VERSION => return Err(StoreError::TooNew { found }),
                // Older versions would be migrated here; version 1 is the first.
                Some(_) => {}
            }
            txn.open_table(JOBS).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)?;
        let db = std::sync::Arc::new(db);
        let (ops, queue) = mpsc::channel();
        let writer = std::sync::Arc::clone(&db);
        let log_dir = log_dir.to_owned();
        std::thread::Builder::new()
            .name("ferry-store".into())
            .spawn(move || store_thread(&writer, &log_dir, queue, retention, on_removed, &stats))
            .map_err(|source| StoreError::Io {
                context: "cannot start the history store's thread".into(),
                source,
            })?;
        Ok(Store { db, ops, retention })
    }

    /// Queues a record for the next commit; `fsync_log` is synced before it.
    pub fn put(&self, record: JobRecord, fsync_log: Option<PathBuf>) {
        // A closed store thread means the daemon is going away: nothing left to record.
        let _ = self.ops.send(Op::Put(Box::new(record), fsync_log));
    }

    /// Waits until every record queued so far is committed (at shutdown).
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.ops.send(Op::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Every record, by id.
    pub fn all(&self) -> Result<BTreeMap<JobId, JobRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(JOBS).map_err(db_error)?;
        let mut records = BTreeMap::new();
        for entry in table.iter().map_err(db_error)? {
            let (id, bytes) = entry.map_err(db_error)?;
            match JobRecord::decode(bytes.value()) {
                Ok(record) => {
                    records.insert(id.value(), record);
                }
                Err(e) => tracing::warn!(job = id.value(), "skipping a damaged job record: {e}"),
            }
        }
        Ok(records)
    }

    /// The database, for the groups' table (see `crate::groups`).
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// One record.
    pub fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(JOBS).map_err(db_error)?;
        let bytes = table.get(id).map_err(db_error)?;
        bytes.map(|b| JobRecord::decode(b.value())).transpose()
    }

    /// Removes ended jobs older than `older_than`, and all but the newest `keep` ended jobs;
    /// waits for the removal.
    pub fn prune(
        &self,
        older_than: Option<Duration>,
        keep: Option<usize>,
    ) -> Result<Pruned, StoreError> {
        self.remove_and_wait(Rules {
            older_than,
            keep,
            max_output: None,
        })
    }

    /// Has the store thread remove the ended jobs `rules` select, and waits for it.
    fn remove_and_wait(&self, rules: Rules) -> Result<Pruned, StoreError> {
        let (answer, result) = mpsc::channel();
        self.ops
            .send(Op::Prune(rules, answer))
            .map_err(|_| StoreError::Closed)?;
        result
            .recv()
            .map_err(|_| StoreError::Closed)?
            .map(|(pruned, _)| pruned)
    }

    /// Writes records at once (recovery, before the daemon serves).
    pub fn put_now(&self, records: &[JobRecord]) -> Result<(), StoreError> {
        commit(&self.db, records.iter())
    }

    /// Applies the retention limits now and waits for it (at start, before serving).
    pub fn apply_retention(&self) -> Result<Pruned, StoreError> {
        self.remove_and_wait(Rules::from(self.retention))
    }
}

fn commit<'a>(
    db: &Database,
    records: impl Iterator<Item = &'a JobRecord>,
) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(db_error)?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(db_error)?;
    {
        let mut table = txn.open_table(JOBS).map_err(db_error)?;
        let mut highest = 0;
        for record in records {
            highest = highest.max(record.id);
            table
                .insert(record.id, record.encode().as_slice())
                .map_err(db_error)?;
        }
        // Ids are never reused, even after every record is pruned.
        let mut meta = txn.open_table(META).map_err(db_error)?;
        let next = meta
            .get("next_id")
            .map_err(db_error)?
            .map_or(1, |v| v.value());
        if highest + 1 > next {
            meta.insert("next_id", highest + 1).map_err(db_error)?;
        }
    }
    txn.commit().map_err(db_error)
}

/// How long the store waits for more changes to commit together with the first.
const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(2);

fn store_thread(
    db: &Database,
    log_dir: &Path,
    queue: mpsc::Receiver<Op>,
    retention: Retention,
    on_removed: OnRemoved,
    stats: &crate::stats::JobStats,
) {
    let mut since_retention = 0usize;
    let mut ended = EndedJobs::default();
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        // Group commit: what arrives within a short window joins this transaction, so that a
        // burst of jobs costs a few commits (each an fdatasync), not two per job.
        let window = std::time::Instant::now() + GROUP_COMMIT_WINDOW;
        loop {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(mpsc::TryRecvError::Empty) => {
                    let left = window.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match queue.recv_timeout(left) {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
        let mut records: BTreeMap<JobId, JobRecord> = BTreeMap::new();
        let mut prunes = Vec::new();
        let mut flushes = Vec::new();
        for op in batch {
            match op {
                Op::Put(record, log) => {
                    // The log first: a record the store calls finished has its log on disk
                    // (when it needs one).
                    if let Some(log) = log.filter(|_| record.needs_log()) {
                        if let Err(e) = std::fs::File::open(&log).and_then(|f| f.sync_all()) {
                            if e.kind() != std::io::ErrorKind::NotFound {
                                tracing::warn!(job = record.id, "cannot sync job log: {e}");
                            }
                        }
                        since_retention += 1;
                    }
                    records.insert(record.id, *record);
                }
                Op::Flush(done) => flushes.push(done),
                Op::Prune(rules, answer) => prunes.push((rules, Some(answer))),
            }
        }
        if !records.is_empty() {
            let began = std::time::Instant::now();
            let committed = commit(db, records.values());
            stats.committed(began.elapsed());
            match committed {
                Ok(()) => ended.note(records.values()),
                Err(e) => {
                    tracing::error!("cannot record {} job(s) in the history: {e}", records.len())
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
        // Retention now and then (each pass reads every record).
        if since_retention >= 64 {
            since_retention = 0;
            prunes.push((Rules::from(retention), None));
        }
        for (rules, answer) in prunes {
            let result = remove(db, log_dir, rules, &mut ended);
            if let Ok((_, removed)) = &result {
                if !removed.is_empty() {
                    on_removed(removed);
                }
            }
            if let Some(answer) = answer {
                let _ = answer.send(result);
            }
        }
    }
}

/// Which ended jobs a removal selects (any rule suffices).
struct Rules {
    /// Submitted longer ago than this.
    older_than: Option<Duration>,
    /// All but the newest this many.
    keep: Option<usize>,
    /// The oldest, while the logs kept take more than this many bytes.
    max_output: Option<u64>,
}

impl From<Retention> for Rules {
    fn from(retention: Retention) -> Rules {
        Rules {
            older_than: retention.max_age,
            keep: Some(retention.max_jobs),
            max_output: Some(retention.max_output),
        }
    }
}

/// What retention reads of a record (see [`JobRecord`] for the fields).
#[derive(Deserialize)]
struct RetentionView {
    submitted_ms: u64,
    state: RecordState,
    #[serde(default)]
    log_bytes: u64,
}

/// The ended jobs of the history, as retention needs them (id, submitted, log bytes), kept by
/// the store thread: read from the whole history once, at the first retention pass, then
/// kept up to date as records are committed and removed, so that a pass (every 64 jobs)
/// decodes nothing. (Decoding every record each time cost a millisecond of CPU per job with
/// 10 000 jobs kept: `perf record` of the store thread.)
#[derive(Default)]
struct EndedJobs {
    /// `None` until read.
    jobs: Option<BTreeMap<JobId, (u64, u64)>>,
}

impl EndedJobs {
    /// Takes in records just committed.
    fn note<'a>(&mut self, records: impl Iterator<Item = &'a JobRecord>) {
        let Some(jobs) = &mut self.jobs else { return };
        for record in records {
            if record.ended() {
                jobs.insert(record.id, (record.submitted_ms, record.log_bytes));
            } else {
                jobs.remove(&record.id);
            }
        }
    }

    /// The ended jobs, oldest first, read from the history the first time.
    fn get(&mut self, db: &Database) -> Result<&mut BTreeMap<JobId, (u64, u64)>, StoreError> {
        if self.jobs.is_none() {
            self.jobs = Some(read_ended(db)?);
        }
        Ok(self.jobs.get_or_insert_with(BTreeMap::new))
    }
}

/// Every ended job of the history: its submission time and log size.
fn read_ended(db: &Database) -> Result<BTreeMap<JobId, (u64, u64)>, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let table = txn.open_table(JOBS).map_err(db_error)?;
    let mut ended = BTreeMap::new();
    for entry in table.iter().map_err(db_error)? {
        let (id, bytes) = entry.map_err(db_error)?;
        // Only the three fields retention needs: the rest (a command, an environment) is
        // skipped, not built.
        if let Ok(view) = ciborium::de::from_reader::<RetentionView, _>(bytes.value()) {
            if matches!(view.state, RecordState::Finished | RecordState::Lost) {
                ended.insert(id.value(), (view.submitted_ms, view.log_bytes));
            }
        }
    }
    Ok(ended)
}

/// Removes the ended jobs the rules select (oldest first), records and logs.
fn remove(db: &Database, log_dir: &Path, rules: Rules, known: &mut EndedJobs) -> PruneResult {
    let ended = known.get(db)?;
    // Oldest first (ids grow with time).
    let now = millis(SystemTime::now());
    let mut victims = Vec::new();
    let mut kept_bytes: u64 = ended.values().map(|(_, bytes)| bytes).sum();
    let mut left = ended.len();
    for (&id, &(submitted_ms, bytes)) in ended.iter() {
        let too_old = rules.older_than.is_some_and(|age| {
            now.saturating_sub(submitted_ms) > u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
        });
        let too_many = rules.keep.is_some_and(|keep| left > keep);
        let too_big = rules.max_output.is_some_and(|max| kept_bytes > max);
        if too_old || too_many || too_big {
            victims.push((id, bytes));
            left -= 1;
            kept_bytes -= bytes;
        }
    }
    if victims.is_empty() {
        return Ok((Pruned::default(), Vec::new()));
    }
    let mut txn = db.begin_write().map_err(db_error)?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(db_error)?;
    {
        let mut table = txn.open_table(JOBS).map_err(db_error)?;
        for &(id, _) in &victims {
            table.remove(id).map_err(db_error)?;
        }
    }
    txn.commit().map_err(db_error)?;
    for (id, _) in &victims {
        ended.remove(id);
    }
    // Records first, then logs: a crash in between leaves logs that recovery ignores.
    let mut pruned = Pruned::default();
    let mut removed = Vec::with_capacity(victims.len());
    for (id, bytes) in victims {
        let _ = std::fs::remove_file(log_path(log_dir, id));
        pruned.jobs += 1;
        pruned.bytes += bytes;
        removed.push(id);
    }
    Ok((pruned, removed))
}

/// What [`Store::recover`] found.
#[derive(Debug)]
pub struct Recovered {
    /// The first job id to use.
    pub next_id: JobId,
    /// The processes of the jobs found lost (they may still run).
    pub orphans: Vec<crate::orphans::Orphan>,
    /// The jobs an earlier daemon had queued that run again, oldest first.
    pub requeued: Vec<JobRecord>,
}

impl Store {
    /// Reconciles the store with the log files after a start (see the module documentation):
    /// jobs whose log has an end are recorded finished; jobs recorded queued that can run
    /// again without their client are handed back to be queued again; the others are lost.
    pub fn recover(&self, log_dir: &Path) -> Result<Recovered, StoreError> {
        let mut records = self.all()?;
        let mut requeued = Vec::new();
        let mut next = self.next_id()?;
        let mut changed: BTreeMap<JobId, JobRecord> = BTreeMap::new();
        let entries = std::fs::read_dir(log_dir).map_err(|source| StoreError::Io {
            context: format!("cannot read the log directory {}", log_dir.display()),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(id) = name
                .strip_suffix(".log")
                .and_then(|n| n.parse::<JobId>().ok())
            else {
                continue;
            };
            next = next.max(id + 1);
            if records.get(&id).is_some_and(JobRecord::ended) {
                continue;
            }
            let summary = match summarize(&entry.path()) {
                Ok(summary) => summary,
                Err(e) => {
                    tracing::warn!(job = id, "cannot read the log of an unfinished job: {e}");
                    continue;
                }
            };
            let mut record = records
                .remove(&id)
                .unwrap_or_else(|| JobRecord::from_header(&summary.header, RecordState::Lost));
            record.stdout_bytes = summary.stdout;
            record.stderr_bytes = summary.stderr;
            record.log_bytes = summary.bytes;
            match summary.end {
                Some(end) => {
                    record.state = RecordState::Finished;
                    record.exit = Some(end);
                    record.finished_ms = entry
                        .metadata()
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .map(millis);
                }
                None if record.may_queue_again() => {
                    requeued.push(record);
                    continue;
                }
                None => {
                    record.state = RecordState::Lost;
                    record.exit = None;
                }
            }
            changed.insert(id, record);
        }
        // Jobs the store saw queued or started whose log is gone: queued again, or lost
        // without output.
        for (id, mut record) in records {
            next = next.max(id + 1);
            if record.may_queue_again() {
                requeued.push(record);
            } else if !record.ended() {
                record.state = RecordState::Lost;
                changed.insert(id, record);
            }
        }
        requeued.sort_by_key(|record| record.id);
        if !changed.is_empty() {
            let lost = changed
                .values()
                .filter(|r| r.state == RecordState::Lost)
                .count();
            tracing::info!(
                recovered = changed.len(),
                lost,
                "recorded the jobs of an earlier daemon that had not been recorded as ended"
            );
        }
        let records: Vec<JobRecord> = changed.into_values().collect();
        commit(&self.db, records.iter())?;
        let orphans = records
            .iter()
            .filter(|r| r.state == RecordState::Lost)
            .map(|r| crate::orphans::Orphan {
                job: r.id,
                leader: r.pid.zip(r.pid_start),
                track: crate::tracking::JobTrack {
                    cgroup: r.cgroup.as_ref().map(|c| {
                        use std::os::unix::ffi::OsStrExt;
                        std::path::PathBuf::from(std::ffi::OsStr::from_bytes(c))
                    }),
                    mark: r.mark.clone().unwrap_or_default(),
                    whole_instance: false,
                },
            })
            .collect();
        Ok(Recovered {
            next_id: next.max(1),
            orphans,
            requeued,
        })
    }

    /// The first id never used, as the store remembers it.
    fn next_id(&self) -> Result<JobId, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let meta = txn.open_table(META).map_err(db_error)?;
        let next = meta
            .get("next_id")
            .map_err(db_error)?
            .map_or(1, |v| v.value());
        Ok(next)
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
