//! Managing jobs on a native connection: `Restart`, `Pause`, `Resume`, `Show`, `Group` and
//! `ListGroups`. Groups are the daemon's: making, changing, removing and pausing them is
//! its owner's; a job is paused, resumed, shown or restarted by whoever may touch it.

use ferry_engine::store::JobRecord;
use ferry_engine::{Engine, JobSpec};
use ferry_wire::native::{ClientMessage, DaemonMessage, GroupAction, GroupInfo, JobDetails, JobId};
use serde_bytes::ByteBuf;

use super::jobs::job_info;
use super::Connection;
use crate::policy::{blocking, Act, Answer, Refusal, RefusalKind};

impl Connection {
    pub(super) async fn manage_request(&mut self, request: ClientMessage) {
        let engine = self.server.engine.clone();
        let pause = matches!(request, ClientMessage::Pause { .. });
        match request {
            ClientMessage::Restart {
                request,
                job,
                follow,
            } => self.restart(request, job, follow).await,
            ClientMessage::Pause {
                request,
                job,
                group,
            }
            | ClientMessage::Resume {
                request,
                job,
                group,
            } => {
                let done = self.pause_or_resume(job, group, pause);
                self.answer(request, done.map(|()| DaemonMessage::Done { request }))
                    .await;
            }
            ClientMessage::Show { request, job, env } => {
                if let Err(refusal) = self.check_job(Act::See, job) {
                    return self.refuse(Some(request), refusal).await;
                }
                let details =
                    blocking(move || engine.details(job))
                        .await
                        .map(|(snapshot, record)| DaemonMessage::Details {
                            request,
                            info: job_info(&snapshot),
                            details: details_of(&record, env),
                        });
                self.answer(request, details).await;
            }
            ClientMessage::Group {
                request,
                name,
                action,
            } => {
                if let Err(refusal) = self.access.owner_only("manage its groups") {
                    return self.refuse(Some(request), refusal).await;
                }
                let done = blocking(move || {
                    let parallel = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
                    match action {
                        GroupAction::Add { parallel: n } => engine.add_group(&name, parallel(n)),
                        GroupAction::Set { parallel: n } => engine.set_group(&name, parallel(n)),
                        GroupAction::Remove => engine.remove_group(&name),
                    }
                })
                .await
                .map(|()| DaemonMessage::Done { request });
                self.answer(request, done).await;
            }
            ClientMessage::ListGroups { request } => {
                let groups = engine
                    .groups()
                    .into_iter()
                    .map(|g| GroupInfo {
                        name: g.name,
                        parallel: g.parallel as u64,
                        running: g.running as u64,
                        queued: g.queued as u64,
                        paused: g.paused,
                    })
                    .collect();
                self.send(&DaemonMessage::Groups { request, groups }).await;
            }
            _ => {}
        }
    }

    /// `Pause` (`pause`) or `Resume` of one job, or of a group (the owner's).
    fn pause_or_resume(
        &self,
        job: Option<JobId>,
        group: Option<String>,
        pause: bool,
    ) -> Result<(), Refusal> {
        let engine: &Engine = &self.server.engine;
        let answer = |e: ferry_engine::EngineError| e.refusal();
        match (job, group) {
            (Some(job), None) => {
                self.check_job(Act::Touch, job)?;
                if pause {
                    engine.pause(job).map_err(answer)
                } else {
                    engine.resume(job).map_err(answer)
                }
            }
            (None, Some(group)) => {
                self.access.owner_only(if pause {
                    "pause a group"
                } else {
                    "resume a group"
                })?;
                let counted = if pause {
                    engine.pause_group(&group)
                } else {
                    engine.resume_group(&group)
                };
                counted.map(|_| ()).map_err(answer)
            }
            _ => Err(Refusal::new(
                RefusalKind::InvalidRequest,
                "name a job or a group, one of the two",
            )),
        }
    }

    /// `Restart`: the ended job's record runs again as a new job of the same principal,
    /// submitted by this connection.
    async fn restart(&mut self, request: u64, job: JobId, follow: bool) {
        if let Err(refusal) = self.check_job(Act::Touch, job) {
            return self.refuse(Some(request), refusal).await;
        }
        let engine = self.server.engine.clone();
        let details = blocking(move || engine.details(job)).await;
        let (snapshot, record) = match details {
            Ok(found) => found,
            Err(refusal) => return self.refuse(Some(request), refusal).await,
        };
        if !matches!(snapshot.phase, ferry_engine::JobPhase::Finished(_)) {
            let refusal = Refusal::new(
                RefusalKind::InvalidRequest,
                format!("job {job} has not ended: only an ended job is restarted"),
            );
            return self.refuse(Some(request), refusal).await;
        }
        let mut spec = ferry_engine::spec_of(&record, false);
        let origin = self.origin();
        spec.origin.owner = origin.owner;
        spec.origin.dialect = origin.dialect;
        spec.origin.peer = origin.peer;
        let submitted = match spec.session.take() {
            Some(session) => {
                let line: Vec<ByteBuf> = record.argv.clone();
                let queueing = JobSpec {
                    timeout: spec.timeout,
                    group: spec.group.take(),
                    label: spec.label.take(),
                    ..JobSpec::default()
                };
                self.session_job(&session, &line, queueing).await
            }
            None => self.server.engine.submit(spec).map_err(|e| e.refusal()),
        };
        match submitted {
            Ok((new, queued)) => {
                tracing::debug!(peer = self.peer_id(), job, new, "job restarted");
                self.send(&DaemonMessage::Accepted {
                    request,
                    job: new,
                    queued,
                })
                .await;
                if follow {
                    self.follow(new, true, true, true, request).await;
                }
            }
            Err(refusal) => self.refuse(Some(request), refusal).await,
        }
    }
}

/// What `Details` says of a job beyond its `JobInfo`.
fn details_of(record: &JobRecord, with_values: bool) -> JobDetails {
    let recipe = record.recipe.clone().unwrap_or_default();
    JobDetails {
        command: recipe.command,
        cwd: record.cwd.clone(),
        env: recipe.env.map(|env| {
            env.into_iter()
                .map(|(name, value)| (name, with_values.then_some(value)))
                .collect()
        }),
        connection: record.owner.clone(),
        dialect: record.dialect.clone(),
        after_any: recipe.after_any,
        timeout_ms: recipe.timeout_ms,
        session: recipe.session,
        stdin: recipe.stdin,
        stdout_bytes: record.stdout_bytes,
        stderr_bytes: record.stderr_bytes,
        log_bytes: record.log_bytes,
    }
}
