//! The dialect adapters: each maps its codec's requests onto engine calls and engine events
//! onto its frames, over a connection the connection layer admitted. An adapter reads only
//! through its connection's one [`crate::reader::Reader`] (which keeps the layer's promises
//! and says them in the adapter's [`crate::reader::Voice`]) and writes only to its outbox.
//! An adapter never calls another adapter; what several share is here.

pub(crate) mod c2;
pub(crate) mod cbsd;
pub(crate) mod cbsdng;
pub(crate) mod fanos;
pub(crate) mod http;
pub(crate) mod native;
pub(crate) mod rake64;
pub(crate) mod tsockm;

use std::ffi::OsString;
use std::path::Path;

use ferry_engine::files::{FileArea, FileError, Upload};
use ferry_engine::quota::Reservation;
use ferry_engine::{ExitReport, JobId, JobOrigin, JobSpec, OutputEvent, OutputStream, Principal};

use crate::conn::Conn;
use crate::policy::{Access, Answer, Refusal, RefusalKind};
use crate::state::Daemon;

/// Who the jobs a connection starts belong to, for their records: its address, dialect,
/// peer id and principal.
pub(crate) fn origin(conn: &Conn, peer: &str) -> JobOrigin {
    JobOrigin {
        owner: conn.ends.remote.clone(),
        dialect: conn.contract.name.into(),
        peer: Some(peer.to_owned()),
        principal: conn.access.principal().clone(),
    }
}

/// Whether a connection with `access` may `act` on job `job` (its owner looked up, from the
/// history when the job is no longer in memory): the one check every adapter's job requests
/// go through.
pub(crate) fn check_job(
    daemon: &Daemon,
    access: &Access,
    act: crate::policy::Act,
    job: JobId,
) -> Result<(), Refusal> {
    use crate::policy::Answer as _;
    let owner = daemon.engine.principal_of(job).map_err(|e| e.refusal())?;
    access.check(act, &owner, &format!("job {job}"))
}

/// Submits a command of a dialect with no working directory of its own: `argv` as the
/// connection's command policy allows it, run in its principal's file area (see
/// [`Access::job_dir`]); the job's id, or why it was refused.
pub(crate) fn submit(
    daemon: &Daemon,
    access: &Access,
    argv: Vec<OsString>,
    spec: JobSpec,
) -> Result<JobId, Refusal> {
    let argv = access.allowed_command(&daemon.catalog, argv)?;
    let cwd = match spec.cwd {
        Some(cwd) => cwd,
        None => {
            let dir = access.job_dir(None);
            // The principal's area is made on its first use (as `put` makes it).
            std::fs::create_dir_all(&dir).map_err(|e| {
                Refusal::new(
                    RefusalKind::Internal,
                    format!("cannot make the file area {}: {e}", dir.display()),
                )
            })?;
            dir
        }
    };
    let spec = JobSpec {
        argv,
        cwd: Some(cwd),
        ..spec
    };
    daemon
        .engine
        .submit(spec)
        .map(|(job, _)| job)
        .map_err(|e| e.refusal())
}

/// A file being received for a principal: the upload, and the room its quota reserved for it
/// (given back unless the upload finishes).
pub(crate) struct Receiving {
    upload: Upload,
    room: Option<Reservation>,
}

impl Receiving {
    /// Starts receiving `size` bytes as `name` in `area` (blocking: the quota may walk the
    /// area), for `principal`, within its quota.
    pub(crate) fn start(
        daemon: &Daemon,
        principal: &Principal,
        area: &FileArea,
        name: &Path,
        size: u64,
        mode: u32,
    ) -> Result<Receiving, Refusal> {
        let room = match daemon.config.quotas.of(principal) {
            Some(limit) => Some(
                daemon
                    .quotas
                    .reserve(area, limit, name, size)
                    .map_err(|e| Refusal::new(RefusalKind::LimitReached, e.to_string()))?,
            ),
            None => None,
        };
        let upload = area.upload(name, size, mode).map_err(|e| e.refusal())?;
        Ok(Receiving { upload, room })
    }

    /// Writes the next bytes.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), FileError> {
        self.upload.write(data)
    }

    /// Checks the whole file against `checksum` and gives it its name; its room is in use
    /// from now on.
    pub(crate) fn finish(self, checksum: &[u8]) -> Result<(), FileError> {
        self.upload.finish(checksum)?;
        if let Some(room) = self.room {
            room.finish();
        }
        Ok(())
    }
}

/// The most of each stream [`collect_output`] keeps: an answer is held whole in memory
/// before it is sent, so a command writing without end must not take the daemon's memory.
pub(crate) const MAX_COLLECTED: usize = 16 * 1024 * 1024;

/// One stream of a job's output as [`collect_output`] keeps it.
#[derive(Default)]
struct Collected {
    kept: Vec<u8>,
    /// Bytes past [`MAX_COLLECTED`], not kept.
    beyond: u64,
}

impl Collected {
    fn take(&mut self, data: &[u8]) {
        let room = MAX_COLLECTED
            .saturating_sub(self.kept.len())
            .min(data.len());
        self.kept.extend_from_slice(&data[..room]);
        self.beyond += (data.len() - room) as u64;
    }

    /// What was kept, and a note of what was not (in job `job`'s log).
    fn done(mut self, job: JobId) -> Vec<u8> {
        if self.beyond > 0 {
            let note = format!(
                "\n[ferry: {} bytes more were written; the whole output is in the job's log: ferry log {job}]\n",
                self.beyond
            );
            self.kept.extend_from_slice(note.as_bytes());
        }
        self.kept
    }
}

/// How a job ended and its stdout and stderr (each up to [`MAX_COLLECTED`] bytes, then a note
/// that says how much more there was and where it is), or why it never ran (for dialects
/// that answer with the output at the end: rake64, C2).
pub(crate) async fn collect_output(
    daemon: &Daemon,
    job: JobId,
) -> Result<(ExitReport, Vec<u8>, Vec<u8>), String> {
    let mut reader = daemon
        .engine
        .output(job, true, true, false)
        .map_err(|e| e.to_string())?;
    let (mut stdout, mut stderr) = (Collected::default(), Collected::default());
    loop {
        match reader.next().await {
            Ok(Some(OutputEvent::Chunk { stream, data, .. })) => match stream {
                OutputStream::Stdout => stdout.take(&data),
                OutputStream::Stderr => stderr.take(&data),
            },
            Ok(Some(OutputEvent::Exit(exit))) => {
                if let Some(error) = exit.error {
                    return Err(error);
                }
                return Ok((exit, stdout.done(job), stderr.done(job)));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("the job ended without a status".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// How long a closing connection's followers may take to deliver their jobs' last frames
/// when the daemon goes down.
const FOLLOWERS_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// Ends a connection's followers (the tasks streaming its jobs' output): when the daemon is
/// going down, they first deliver their jobs' ends (within a limit); when the peer left or
/// was kicked, they stop at once (the jobs go on).
pub(crate) async fn finish_followers(daemon: &Daemon, followers: &mut tokio::task::JoinSet<()>) {
    if *daemon.closing.borrow() {
        let _ = tokio::time::timeout(FOLLOWERS_FLUSH, async {
            while followers.join_next().await.is_some() {}
        })
        .await;
    }
    followers.abort_all();
}
