//! Jobs on a native connection: `Run` (plain, sandboxed, in a session, on passed fds),
//! `Stdin`, `CloseStdin`, `Attach`, `ListJobs` and `Signal`, and the tasks that stream a
//! followed job's output to the client.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::store::millis;
use ferry_engine::{
    ExitReport, JobOrigin, JobPhase, JobSnapshot, JobSpec, OutputEvent, OutputStream, PassedStdio,
};
use ferry_io::frame;
use ferry_wire::native::{
    encode_output_head, ClientMessage, DaemonMessage, ErrorCode, JobExit, JobId, JobInfo, JobState,
    Stream,
};
use serde_bytes::ByteBuf;

use super::Connection;
use crate::outbox::Outgoing;
use crate::policy::{blocking, Act, Answer, Refusal, RefusalKind};

/// Jobs in one `Jobs` message: a job's description takes a few hundred bytes (its command
/// line more), so a part stays well within the 16 MiB frame.
const JOBS_PER_MESSAGE: usize = 5000;

impl Connection {
    pub(super) async fn job_request(&mut self, request: ClientMessage) {
        let engine = self.server.engine.clone();
        match request {
            run @ ClientMessage::Run { .. } => self.run(run).await,
            ClientMessage::Stdin { job, data } => {
                let written = match self.check_job(Act::Touch, job) {
                    Ok(()) => engine.write_stdin(job, data).await.map_err(|e| e.refusal()),
                    Err(refusal) => Err(refusal),
                };
                if let Err(refusal) = written {
                    self.refuse(None, refusal).await;
                }
            }
            ClientMessage::Resize { job, size } => {
                let resized = self.check_job(Act::Touch, job).and_then(|()| {
                    engine
                        .resize(job, size.rows, size.cols)
                        .map_err(|e| e.refusal())
                });
                if let Err(refusal) = resized {
                    self.refuse(None, refusal).await;
                }
            }
            ClientMessage::CloseStdin { job } => {
                let closed = self
                    .check_job(Act::Touch, job)
                    .and_then(|()| engine.close_stdin(job).map_err(|e| e.refusal()));
                if let Err(refusal) = closed {
                    self.refuse(None, refusal).await;
                }
            }
            ClientMessage::Attach {
                request,
                job,
                replay,
                follow,
            } => {
                let attached = self
                    .check_job(Act::See, job)
                    .and_then(|()| engine.snapshot(job).map_err(|e| e.refusal()));
                match attached {
                    Ok(snapshot) => {
                        self.send(&DaemonMessage::Attached {
                            request,
                            info: job_info(&snapshot),
                        })
                        .await;
                        self.follow(job, replay, follow, false, request).await;
                    }
                    Err(refusal) => self.refuse(Some(request), refusal).await,
                }
            }
            ClientMessage::ListJobs { request, all } => {
                let listed = if all {
                    blocking(move || engine.history()).await
                } else {
                    Ok(engine.list())
                };
                // A principal sees its own jobs (the owner all, and whom a listener lets).
                let mut jobs: Vec<JobInfo> = match listed {
                    Ok(jobs) => jobs
                        .iter()
                        .filter(|job| self.access.may(Act::See, &job.principal))
                        .map(job_info)
                        .collect(),
                    Err(refusal) => return self.refuse(Some(request), refusal).await,
                };
                // In parts that each fit a frame (a long history is longer than one holds); an
                // empty list is one empty part.
                loop {
                    let rest = jobs.split_off(jobs.len().min(JOBS_PER_MESSAGE));
                    let more = !rest.is_empty();
                    self.send(&DaemonMessage::Jobs {
                        request,
                        jobs,
                        more,
                    })
                    .await;
                    if !more {
                        break;
                    }
                    jobs = rest;
                }
            }
            ClientMessage::Signal {
                request,
                job,
                signal,
            } => {
                let answer = self
                    .check_job(Act::Touch, job)
                    .and_then(|()| engine.signal(job, signal).map_err(|e| e.refusal()))
                    .map(|()| DaemonMessage::Done { request });
                self.answer(request, answer).await;
            }
            _ => {}
        }
    }

    /// A `Run`: the job is submitted (plain, sandboxed, in a session, on passed fds) and, with
    /// `follow`, streamed to this connection.
    async fn run(&mut self, run: ClientMessage) {
        let ClientMessage::Run {
            request,
            argv,
            cwd,
            env,
            stdin,
            timeout_ms,
            hangup_on_disconnect,
            follow,
            sandbox,
            pass_stdio,
            session,
            group,
            label,
            after,
            after_any,
            tty,
        } = run
        else {
            return;
        };
        if tty.is_some() && session.is_some() {
            let refusal = Refusal::new(
                RefusalKind::InvalidRequest,
                "a session command runs on no terminal of the daemon's: drop tty or session",
            );
            return self.refuse(Some(request), refusal).await;
        }
        let queueing = JobSpec {
            group,
            label,
            after,
            after_any,
            tty: tty.as_ref().map(|size| (size.rows, size.cols)),
            term: tty.and_then(|size| size.term).filter(|term| {
                term.len() <= 64
                    && term
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
            }),
            ..JobSpec::default()
        };
        // Fds are claimed first, so that a refused Run does not leave them behind.
        let stdio = if pass_stdio {
            match self.take_passed_stdio() {
                Ok(stdio) => Some(stdio),
                Err(refusal) => return self.refuse(Some(request), refusal).await,
            }
        } else {
            None
        };
        let timeout = timeout_ms.map(Duration::from_millis);
        let submitted = match session {
            Some(session) => {
                let spec = JobSpec {
                    stdio,
                    stdin,
                    timeout,
                    ..queueing
                };
                self.session_job(&session, &argv, spec).await
            }
            None => {
                let spec = JobSpec {
                    stdio,
                    stdin,
                    timeout,
                    ..queueing
                };
                self.plain_job(spec, argv, cwd, env, sandbox).await
            }
        };
        match submitted {
            Ok((job, queued)) => {
                tracing::debug!(peer = self.peer_id(), job, queued, "job accepted");
                self.send(&DaemonMessage::Accepted {
                    request,
                    job,
                    queued,
                })
                .await;
                if hangup_on_disconnect {
                    self.hangup_jobs.push(job);
                }
                if follow {
                    // The job's own client: it never misses output.
                    self.follow(job, true, true, true, request).await;
                }
            }
            Err(refusal) => self.refuse(Some(request), refusal).await,
        }
    }

    /// Submits a plain command (not in a session), as this connection may.
    async fn plain_job(
        &self,
        mut spec: JobSpec,
        argv: Vec<ByteBuf>,
        cwd: Option<ByteBuf>,
        env: Option<Vec<(ByteBuf, ByteBuf)>>,
        sandbox: Option<ByteBuf>,
    ) -> Result<(JobId, bool), Refusal> {
        let argv: Vec<OsString> = argv.into_iter().map(os_string).collect();
        spec.argv = self
            .access
            .allowed_command(&self.server.catalog, argv)
            .inspect_err(|refusal| {
                tracing::warn!(
                    from = self.address,
                    "refused a command: {}",
                    refusal.message
                );
            })?;
        // A remote client's directory means nothing here: its jobs run in its file area
        // (see `Access::job_dir`), as the owner's do when its client names none.
        spec.cwd = Some(
            self.access
                .job_dir(cwd.map(|c| PathBuf::from(os_string(c)))),
        );
        if self.access.is_owner() {
            spec.env = env.map(|env| {
                env.into_iter()
                    .map(|(k, v)| (os_string(k), os_string(v)))
                    .collect()
            });
        }
        // Otherwise the daemon's environment: a remote client's could inject code
        // (LD_PRELOAD).
        if let Some(sandbox) = sandbox {
            let dir = self
                .sandbox_dir(sandbox.into_vec())
                .await
                .map_err(|error| error.refusal())?;
            spec.cwd = Some(dir);
        }
        spec.origin = self.origin();
        self.server.engine.submit(spec).map_err(|e| e.refusal())
    }

    /// Submits a command line to run in a session; `job` gives the rest (stdio, stdin,
    /// timeout, group, label, dependencies).
    pub(super) async fn session_job(
        &self,
        session: &str,
        argv: &[ByteBuf],
        job: JobSpec,
    ) -> Result<(JobId, bool), Refusal> {
        self.access.sessions_allowed()?;
        self.check_session(Act::Touch, session).await?;
        let code = session_line(argv);
        let server = Arc::clone(&self.server);
        let session = session.to_owned();
        // A command's words are listed as given; a command line as bash running it.
        let shown = (argv.len() > 1).then(|| {
            argv.iter()
                .map(|word| std::ffi::OsString::from_vec(word.to_vec()))
                .collect()
        });
        let job = JobSpec {
            shown,
            origin: self.origin(),
            ..job
        };
        blocking(move || server.sessions.submit(&server.engine, &session, &code, job)).await
    }

    /// Who submits jobs on this connection, for their records and the peer registry.
    pub(super) fn origin(&self) -> JobOrigin {
        JobOrigin {
            owner: self.address.clone(),
            dialect: "ferry".into(),
            peer: Some(self.peer_id().to_owned()),
            principal: self.access.principal().clone(),
        }
    }

    /// Whether this connection may `act` on job `job` (see `Access::check`).
    pub(super) fn check_job(&self, act: Act, job: JobId) -> Result<(), Refusal> {
        if self.access.is_owner() {
            return Ok(()); // no lookup on the owner's path (each `Stdin` frame comes here)
        }
        crate::dialects::check_job(&self.server, &self.access, act, job)
    }

    /// The client's stdin, stdout and stderr, passed with the `Run` being dispatched.
    fn take_passed_stdio(&mut self) -> Result<PassedStdio, Refusal> {
        let invalid = |message: String| Refusal::new(RefusalKind::InvalidRequest, message);
        if !self.on_unix {
            return Err(invalid(
                "file descriptors can be passed on a Unix socket only".into(),
            ));
        }
        let fds = std::mem::take(&mut self.fds);
        if fds.is_empty() {
            return Err(invalid(
                "Run asked to pass stdio, but no file descriptors came with it".into(),
            ));
        }
        PassedStdio::try_from(fds).map_err(|count| {
            invalid(format!(
                "passing stdio takes exactly 3 file descriptors (stdin, stdout, stderr), {count} came; they were closed"
            ))
        })
    }

    /// Starts a task that streams a job's output to this connection.
    pub(super) async fn follow(
        &mut self,
        job: JobId,
        replay: bool,
        follow: bool,
        holding: bool,
        request: u64,
    ) {
        let mut reader = match self.server.engine.output(job, replay, follow, holding) {
            Ok(reader) => reader,
            Err(e) => return self.refuse(Some(request), e.refusal()).await,
        };
        let out = self.out.clone();
        self.followers.spawn(async move {
            loop {
                let message = match reader.next().await {
                    Ok(Some(OutputEvent::Chunk {
                        stream,
                        offset,
                        data,
                    })) => {
                        let stream = match stream {
                            OutputStream::Stdout => Stream::Stdout,
                            OutputStream::Stderr => Stream::Stderr,
                        };
                        let mut head = Vec::with_capacity(64);
                        if let Err(e) =
                            encode_output_head(job, stream, offset, data.len(), &mut head)
                        {
                            tracing::error!(job, "cannot encode output: {e}");
                            break;
                        }
                        if !out.send(Outgoing::Output(Box::new((head, data)))).await {
                            break;
                        }
                        continue;
                    }
                    Ok(Some(OutputEvent::Exit(report))) => DaemonMessage::Exit {
                        job,
                        exit: job_exit(&report),
                    },
                    Ok(Some(OutputEvent::End)) => DaemonMessage::LogEnd { request, job },
                    Ok(Some(OutputEvent::StoreFailed(error))) => {
                        let warning = DaemonMessage::Error {
                            request: None,
                            code: ErrorCode::Internal,
                            message: format!(
                                "job {job}: its output can no longer be stored ({error}); it still arrives here, but its log will lack it"
                            ),
                        };
                        if let Ok(bytes) = frame(&warning) {
                            if !out.send(Outgoing::Frame(bytes)).await {
                                break;
                            }
                        }
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => DaemonMessage::Error {
                        request: Some(request),
                        code: ErrorCode::Internal,
                        message: format!("job {job}: {e}"),
                    },
                };
                // Exit, end of log and errors are the last frame of this stream.
                if let Ok(bytes) = frame(&message) {
                    let _ = out.send(Outgoing::Frame(bytes)).await;
                }
                break;
            }
        });
    }
}

pub(super) fn os_string(bytes: ByteBuf) -> OsString {
    OsString::from_vec(bytes.into_vec())
}

/// A job's end, as the wire carries it.
pub(super) fn job_exit(report: &ExitReport) -> JobExit {
    JobExit {
        code: report.code,
        signal: report.signal,
        wall_us: report.wall_us(),
        timed_out: report.timed_out,
        error: report.error.clone(),
        killed: report.killed,
        lost: report.lost,
    }
}

/// A job, as the wire lists it.
pub(super) fn job_info(snapshot: &JobSnapshot) -> JobInfo {
    let (state, exit) = match &snapshot.phase {
        JobPhase::Queued => (JobState::Queued, None),
        JobPhase::Running { .. } if snapshot.paused => (JobState::Paused, None),
        JobPhase::Running { .. } => (JobState::Running, None),
        JobPhase::Finished(report) if report.lost => (JobState::Lost, Some(job_exit(report))),
        JobPhase::Finished(report) if report.dependency_failed.is_some() => {
            (JobState::DependencyFailed, Some(job_exit(report)))
        }
        JobPhase::Finished(report) => (JobState::Finished, Some(job_exit(report))),
    };
    JobInfo {
        id: snapshot.id,
        state,
        argv: snapshot
            .argv
            .iter()
            .map(|a| ByteBuf::from(a.as_bytes().to_vec()))
            .collect(),
        pid: snapshot.pid,
        submitted_ms: millis(snapshot.submitted),
        started_ms: snapshot.started.map(millis),
        run_us: u64::try_from(snapshot.run_time.as_micros()).unwrap_or(u64::MAX),
        exit,
        unstored_bytes: snapshot.unstored_bytes,
        principal: snapshot.principal.to_string(),
        no_log: snapshot.on_client_fds,
        group: snapshot.group.clone(),
        label: snapshot.label.clone(),
        after: snapshot.after.clone(),
        paused_us: u64::try_from(snapshot.paused_time.as_micros()).unwrap_or(u64::MAX),
        ended_ms: snapshot.finished.map(millis),
    }
}

/// The command line a session runs for `argv`: one word is a command line as a shell reads it
/// (`ferry sh`, `run --session S -- 'cd /tmp && ls'`); several are a command's words, each
/// quoted, so that they reach it as given, as a direct `ferry run` passes them.
fn session_line(argv: &[ByteBuf]) -> Vec<u8> {
    if let [line] = argv {
        return line.to_vec();
    }
    let mut line = Vec::new();
    for (n, word) in argv.iter().enumerate() {
        if n > 0 {
            line.push(b' ');
        }
        line.push(b'\'');
        for &byte in word.iter() {
            if byte == b'\'' {
                line.extend_from_slice(b"'\\''");
            } else {
                line.push(byte);
            }
        }
        line.push(b'\'');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_word_is_a_command_line_and_several_are_quoted_words() {
        let words = |w: &[&str]| -> Vec<ByteBuf> {
            w.iter()
                .map(|w| ByteBuf::from(w.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(session_line(&words(&["cd /tmp && ls"])), b"cd /tmp && ls");
        assert_eq!(
            session_line(&words(&["printf", "%s\\n", "a b", "it's"])),
            b"'printf' '%s\\n' 'a b' 'it'\\''s'"
        );
    }
}
