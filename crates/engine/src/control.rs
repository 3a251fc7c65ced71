//! Managing jobs beyond running them: groups with limits of their own, pausing and resuming a
//! job or a group, a job's whole record (for `show` and `restart`), and the spec that runs
//! a recorded job again.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::EngineError;
use crate::groups::{self, GroupRecord};
use crate::job::Job;
use crate::queue::{GroupInfo, DEFAULT_GROUP};
use crate::store::JobRecord;
use crate::types::{JobId, JobOrigin, JobSnapshot, JobSpec};
use crate::Engine;

/// The most jobs a group may run at once (the daemon-wide limit applies too).
pub const MAX_PARALLEL: usize = 100_000;

impl Engine {
    /// Every group: its limit, its running and waiting jobs, whether it is paused.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.inner.lock().runq.groups()
    }

    /// Makes a group whose jobs run at most `parallel` at once. Writes the history: call it
    /// off the async threads.
    pub fn add_group(&self, name: &str, parallel: usize) -> Result<(), EngineError> {
        check_group_name(name)?;
        check_parallel(parallel)?;
        {
            let mut state = self.inner.lock();
            if state.runq.group(name).is_some() {
                return Err(EngineError::Invalid(format!(
                    "group '{name}' exists already (`ferry group set {name} --parallel N` changes it)"
                )));
            }
            state.runq.set_group(name, parallel, false);
        }
        self.save_group(name)
    }

    /// Changes a group's limit; more of its jobs start at once if it grew.
    pub fn set_group(&self, name: &str, parallel: usize) -> Result<(), EngineError> {
        check_parallel(parallel)?;
        {
            let mut state = self.inner.lock();
            let paused = group_exists(&state.runq, name)?.paused;
            state.runq.set_group(name, parallel, paused);
        }
        self.save_group(name)?;
        self.inner.settle(Vec::new());
        Ok(())
    }

    /// Removes a group that has no job running or waiting (never the default group).
    pub fn remove_group(&self, name: &str) -> Result<(), EngineError> {
        if name == DEFAULT_GROUP {
            return Err(EngineError::Invalid(
                "the default group is always there".into(),
            ));
        }
        {
            let mut state = self.inner.lock();
            group_exists(&state.runq, name)?;
            if let Err((running, queued)) = state.runq.remove_group(name) {
                return Err(EngineError::Invalid(format!(
                    "group '{name}' has {running} running and {queued} queued job(s): wait for them, or kill them, first"
                )));
            }
        }
        if let Some(store) = &self.inner.store {
            groups::save(store.database(), name, None)?;
        }
        Ok(())
    }

    /// Stops a running job's processes (SIGSTOP) until [`Engine::resume`].
    pub fn pause(&self, id: JobId) -> Result<(), EngineError> {
        let job = self.job(id)?;
        if self.inner.lock().runq.is_waiting(id) {
            return Err(EngineError::Invalid(format!(
                "job {id} is queued, not running: pause its group (`ferry pause --group {}`) to keep it waiting",
                job.group()
            )));
        }
        if !job.pause()? {
            return Err(EngineError::Invalid(format!("job {id} is paused already")));
        }
        self.inner.record(&job, false);
        Ok(())
    }

    /// Sets the size of a job's pseudo-terminal (see `JobSpec::tty`).
    pub fn resize(&self, id: JobId, rows: u16, cols: u16) -> Result<(), EngineError> {
        self.job(id)?.resize(rows, cols)
    }

    /// Continues a job [`Engine::pause`] stopped.
    pub fn resume(&self, id: JobId) -> Result<(), EngineError> {
        let job = self.job(id)?;
        if !job.is_running() {
            return Err(EngineError::Invalid(format!("job {id} is not running")));
        }
        if !job.resume()? {
            return Err(EngineError::Invalid(format!("job {id} is not paused")));
        }
        self.inner.record(&job, false);
        Ok(())
    }

    /// Pauses a group: its running jobs are stopped and its waiting jobs do not start.
    /// Returns how many running jobs were stopped.
    pub fn pause_group(&self, name: &str) -> Result<usize, EngineError> {
        let running = self.mark_group_paused(name, true)?;
        let mut stopped = 0;
        for job in running {
            if job.pause().unwrap_or(false) {
                self.inner.record(&job, false);
                stopped += 1;
            }
        }
        Ok(stopped)
    }

    /// Resumes a group: its stopped jobs continue and its waiting jobs may start. Returns
    /// how many jobs were continued.
    pub fn resume_group(&self, name: &str) -> Result<usize, EngineError> {
        let running = self.mark_group_paused(name, false)?;
        let mut continued = 0;
        for job in running {
            if job.resume().unwrap_or(false) {
                self.inner.record(&job, false);
                continued += 1;
            }
        }
        self.inner.settle(Vec::new());
        Ok(continued)
    }

    /// A job's snapshot and its whole record (from the history when it is not in memory).
    /// Reads the store: call it off the async threads.
    pub fn details(&self, id: JobId) -> Result<(JobSnapshot, JobRecord), EngineError> {
        match self.job(id) {
            Ok(job) => Ok((job.snapshot(), job.record())),
            Err(unknown) => {
                let record = self.record(id)?.ok_or(unknown)?;
                Ok((crate::snapshot_of(&record), record))
            }
        }
    }

    /// Marks a group paused or not (stored), and returns its running jobs.
    fn mark_group_paused(&self, name: &str, paused: bool) -> Result<Vec<Arc<Job>>, EngineError> {
        let running = {
            let mut state = self.inner.lock();
            let parallel = group_exists(&state.runq, name)?.parallel;
            state.runq.set_group(name, parallel, paused);
            state
                .jobs
                .values()
                .filter(|job| job.group() == name && job.is_running())
                .cloned()
                .collect()
        };
        self.save_group(name)?;
        Ok(running)
    }

    /// Stores a group as it stands now.
    fn save_group(&self, name: &str) -> Result<(), EngineError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let record = self.inner.lock().runq.group(name).map(|g| GroupRecord {
            parallel: g.parallel as u64,
            paused: g.paused,
        });
        Ok(groups::save(store.database(), name, record)?)
    }
}

/// Group `name`, or the error that says there is none.
fn group_exists<'a>(
    runq: &'a crate::queue::RunQueue,
    name: &str,
) -> Result<&'a crate::queue::Group, EngineError> {
    runq.group(name).ok_or_else(|| {
        EngineError::Invalid(format!(
            "there is no group '{name}' (`ferry group list` shows them)"
        ))
    })
}

/// A group's name: 1 to 64 letters, digits, `-`, `_` or `.`.
fn check_group_name(name: &str) -> Result<(), EngineError> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if fine {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "a group's name is 1 to 64 letters, digits, '-', '_' or '.', not {name:?}"
        )))
    }
}

fn check_parallel(parallel: usize) -> Result<(), EngineError> {
    if (1..=MAX_PARALLEL).contains(&parallel) {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "--parallel is 1 to {MAX_PARALLEL}, not {parallel}"
        )))
    }
}

/// The spec that runs a recorded job again, as its record says: its command, directory,
/// environment, limit, group, label, and (`with_dependencies`) the jobs it waits for. No
/// stdin and no passed fds: it runs without a client, its output kept.
pub fn spec_of(record: &JobRecord, with_dependencies: bool) -> JobSpec {
    let os = |b: &serde_bytes::ByteBuf| OsString::from_vec(b.to_vec());
    let recipe = record.recipe.clone().unwrap_or_default();
    let shown: Vec<OsString> = record.argv.iter().map(os).collect();
    let (argv, shown) = match &recipe.command {
        Some(command) => (command.iter().map(os).collect(), Some(shown)),
        None => (shown, None),
    };
    JobSpec {
        argv,
        shown,
        cwd: record.cwd.as_ref().map(|c| PathBuf::from(os(c))),
        env: recipe
            .env
            .map(|env| env.iter().map(|(k, v)| (os(k), os(v))).collect()),
        stdin: false,
        timeout: recipe.timeout_ms.map(Duration::from_millis),
        stdio: None,
        origin: JobOrigin {
            owner: record.owner.clone(),
            dialect: record.dialect.clone(),
            peer: None,
            principal: record.principal.clone(),
        },
        group: recipe.group,
        label: recipe.label,
        after: if with_dependencies {
            recipe.after
        } else {
            Vec::new()
        },
        after_any: with_dependencies && recipe.after_any,
        session: recipe.session,
        // It runs again without a client: no terminal.
        tty: None,
        term: None,
    }
}
