//! A running job's pump: copies its stdout and stderr (or its terminal) into its log, reaps
//! it, and ends what it left behind.
//!
//! The pump starts as a task of the runtime: it waits for the job's pipes and for its exit
//! (a pidfd) on the runtime's event loop, so that a job that writes little (`true`, a
//! compiler, a server's occasional line) costs no thread and no hand-off between threads:
//! the worker that sees the job end tells its clients. Once a job has written
//! [`LIGHT_BYTES`], the pump moves to a thread of the runtime's blocking pool, which polls the
//! pipes and writes the log there; a log append may wait for a slow reader there (see
//! [`crate::log`]), which a runtime worker must never do.

use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustix::buffer::spare_capacity;
use rustix::event::{poll, PollFd, PollFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{Job, OnEnd};
use crate::log::LogWriter;
use crate::logfile::MAX_RECORD_DATA;
use crate::memory::OutputFlow;
use crate::spawn::Process;
use crate::tracking::{self, Tracking};
use crate::types::OutputStream;

/// Capacity asked for the job's output pipes (the kernel may grant less): a larger pipe lets
/// a fast writer run ahead while the pump handles the previous chunk, so chunks come bigger.
const PIPE_CAPACITY: usize = 1024 * 1024;

/// Output bytes the pump copies on the runtime before it moves to a blocking thread. Well
/// under the log's window, so that no append on the runtime waits for a reader.
const LIGHT_BYTES: usize = 64 * 1024;

/// One of the job's output pipes, non-blocking.
struct OutputPipe {
    fd: OwnedFd,
    stream: OutputStream,
}

/// What the pump needs besides the job and its process.
pub(super) struct PumpParts {
    pub flow: Arc<OutputFlow>,
    pub tracking: Arc<Tracking>,
    pub grace: Duration,
    pub on_end: OnEnd,
}

/// The pump: copies the job's output into its log until every pipe ends, reaps the job,
/// tells whoever waits for it, then ends what the job left running.
pub(super) async fn pump(job: Arc<Job>, mut process: Process, parts: PumpParts) {
    let PumpParts {
        flow,
        tracking,
        grace,
        on_end,
    } = parts;
    let mut writer = job.log.writer();
    let pipes = output_pipes(&job, &mut process);
    let exit = match copy_light(&job, pipes, &mut writer, &flow).await {
        Ok(()) => wait_for_exit(process).await,
        Err(pipes) => {
            // A job that writes much: on a thread that may block on the disk or a reader.
            let (pumped, flowing, pid) = (Arc::clone(&job), Arc::clone(&flow), process.pid);
            tokio::task::spawn_blocking(move || {
                copy_blocking(&pumped, pipes, &mut writer, &flowing);
                process.wait()
            })
            .await
            // A pump thread that failed still ends the job and frees its slot.
            .map_or_else(|e| (pid, Err(std::io::Error::other(e))), |exit| (pid, exit))
        }
    };
    // A job's end leaves free memory in the arena of the thread that ran it, as output does.
    flow.add(crate::memory::JOB_END_WEIGHT);
    let (pid, exit) = exit;
    match exit {
        Ok(exit) => job.finish(exit),
        Err(e) => job.finish_without_running(format!("cannot reap job: {e}"), None),
    }
    tracking.leaders().remove(&pid);
    tracing::debug!(job = job.id, "ended");
    // The job's clients, woken by its end, write it out before the rest is done here.
    tokio::task::yield_now().await;
    let track = job.status().track.clone();
    on_end(job.id);
    // A job leaves nothing behind: what it started and left running (a process that left
    // its group, one that closed its output) ends now, TERM then KILL after the grace; its
    // cgroup goes. A cgroup says what is left in a small read, and an empty one goes at
    // once; the rest (waiting out the grace, or finding the job's marked processes without a
    // cgroup, which reads every process's environment) is done off the runtime.
    let id = job.id;
    if track.cgroup.is_some() && !tracking::any_left(&track) {
        tracking::end_leftovers(&track, Duration::ZERO);
        return;
    }
    let ended = tokio::task::spawn_blocking(move || {
        if tracking::any_left(&track) {
            let ended = tracking::end_leftovers(&track, grace);
            tracing::info!(job = id, "ended {ended} process(es) the job left running");
        } else {
            tracking::end_leftovers(&track, Duration::ZERO);
        }
        tracking.reap();
    })
    .await;
    if let Err(e) = ended {
        tracing::warn!(job = id, "cannot end what the job left running: {e}");
    }
}

/// The job's output pipes (or its terminal), non-blocking, with room to run ahead.
fn output_pipes(job: &Job, process: &mut Process) -> Vec<OutputPipe> {
    let outputs = [
        (process.stdout.take(), OutputStream::Stdout),
        (process.stderr.take(), OutputStream::Stderr),
    ];
    let master = job.status().tty_master.as_ref().map(|m| m.try_clone());
    let outputs = match master {
        Some(Ok(master)) => [
            (Some(master), OutputStream::Stdout),
            (None, OutputStream::Stderr),
        ],
        Some(Err(e)) => {
            tracing::error!(job = job.id, "cannot read the job's terminal: {e}");
            outputs
        }
        None => outputs,
    };
    let mut pipes = Vec::with_capacity(2);
    for (fd, stream) in outputs {
        let Some(fd) = fd else { continue };
        // A smaller pipe only costs speed.
        let _ = rustix::pipe::fcntl_setpipe_size(&fd, PIPE_CAPACITY);
        if let Err(e) = rustix::io::ioctl_fionbio(&fd, true) {
            tracing::error!(job = job.id, "cannot make job output non-blocking: {e}");
        }
        pipes.push(OutputPipe { fd, stream });
    }
    pipes
}

/// Appends one chunk to the log, counting it; the first failure to store is said once.
fn append(job: &Job, writer: &mut LogWriter, flow: &OutputFlow, stream: OutputStream, data: Bytes) {
    flow.add(data.len());
    if let Err(e) = writer.append(stream, data) {
        tracing::error!(job = job.id, "cannot write job log: {e}");
    }
}

/// Copies output on the runtime until every pipe has ended (`Ok`), or until the job has
/// written [`LIGHT_BYTES`]: then the pipes come back for [`copy_blocking`] (`Err`).
async fn copy_light(
    job: &Job,
    pipes: Vec<OutputPipe>,
    writer: &mut LogWriter,
    flow: &OutputFlow,
) -> Result<(), Vec<OutputPipe>> {
    let mut watched: Vec<(AsyncFd<OwnedFd>, OutputStream)> = Vec::with_capacity(pipes.len());
    let mut pipes = pipes.into_iter();
    while let Some(pipe) = pipes.next() {
        match watch(pipe.fd) {
            Ok(fd) => watched.push((fd, pipe.stream)),
            Err((fd, e)) => {
                // Not pollable here (it should always be): the blocking pump copies it all.
                tracing::debug!(job = job.id, "job output not watched on the runtime: {e}");
                let back = OutputPipe {
                    fd,
                    stream: pipe.stream,
                };
                return Err(unwatch(watched)
                    .chain(std::iter::once(back))
                    .chain(pipes)
                    .collect());
            }
        }
    }
    let mut copied = 0;
    while !watched.is_empty() {
        let ready = match watched.as_slice() {
            [(a, _)] => a.readable().await.map(|guard| (0, guard)),
            // Stdout first when both are ready, as the blocking pump's poll does.
            [(a, _), (b, _), ..] => tokio::select! {
                biased;
                ready = a.readable() => ready.map(|guard| (0, guard)),
                ready = b.readable() => ready.map(|guard| (1, guard)),
            },
            [] => break,
        };
        let (index, mut guard) = match ready {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(job = job.id, "cannot watch job output: {e}");
                return Err(unwatch(watched).collect());
            }
        };
        let stream = watched[index].1;
        let open = match read_available(guard.get_inner()) {
            Ok((data, open)) => {
                if data.is_empty() && open {
                    guard.clear_ready();
                    continue;
                }
                copied += data.len();
                if !data.is_empty() {
                    append(job, writer, flow, stream, data);
                }
                open
            }
            // A terminal's master reads EIO once every process closed the slave side.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => false,
            Err(e) => {
                tracing::error!(job = job.id, "cannot read job output: {e}");
                false
            }
        };
        drop(guard);
        if !open {
            watched.remove(index);
        }
        if copied >= LIGHT_BYTES && !watched.is_empty() {
            return Err(unwatch(watched).collect());
        }
    }
    Ok(())
}

/// Watches `fd` for reading on the runtime's event loop (called on the runtime); on failure,
/// the fd comes back with the error.
fn watch(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>, (OwnedFd, std::io::Error)> {
    // SAFETY: an `OwnedFd` owns its open file descriptor and always gives that one; the
    // `AsyncFd` owns it until it is dropped or `into_inner` gives it back.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts())
}

/// The pipes back from the runtime's watch.
fn unwatch(watched: Vec<(AsyncFd<OwnedFd>, OutputStream)>) -> impl Iterator<Item = OutputPipe> {
    watched.into_iter().map(|(fd, stream)| OutputPipe {
        fd: fd.into_inner(),
        stream,
    })
}

/// Copies output on a blocking thread until every pipe has ended.
fn copy_blocking(job: &Job, mut pipes: Vec<OutputPipe>, writer: &mut LogWriter, flow: &OutputFlow) {
    while !pipes.is_empty() {
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = pipes
                .iter()
                .map(|pipe| PollFd::new(&pipe.fd, PollFlags::IN))
                .collect();
            match poll(&mut fds, None) {
                Ok(_) => fds.iter().map(|fd| !fd.revents().is_empty()).collect(),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(job = job.id, "poll on job output failed: {e}");
                    return;
                }
            }
        };
        let mut ready = ready.into_iter();
        pipes.retain(|pipe| {
            if !ready.next().unwrap_or(false) {
                return true;
            }
            let (data, open) = match read_available(&pipe.fd) {
                Ok(read) => read,
                // A terminal's master reads EIO once every process closed the slave side.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => return false,
                Err(e) => {
                    tracing::error!(job = job.id, "cannot read job output: {e}");
                    return false;
                }
            };
            if !data.is_empty() {
                append(job, writer, flow, pipe.stream, data);
            }
            open
        });
    }
}

/// Waits for the job's first process to end and reaps it: on the runtime with a pidfd, or on
/// a blocking thread where the kernel gives none. Its pid, and its exit status.
async fn wait_for_exit(process: Process) -> (u32, std::io::Result<ExitStatus>) {
    let pid = process.pid;
    let pidfd = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("no such pid"))
        .and_then(|pid| {
            Ok(rustix::process::pidfd_open(
                pid,
                rustix::process::PidfdFlags::empty(),
            )?)
        })
        .and_then(|fd| watch(fd).map_err(|(_, e)| e));
    let pidfd = match pidfd {
        Ok(pidfd) => pidfd,
        Err(e) => {
            tracing::debug!(pid, "no pidfd ({e}): waiting on a thread");
            return match tokio::task::spawn_blocking(move || process.wait()).await {
                Ok(exit) => (pid, exit),
                Err(e) => (pid, Err(std::io::Error::other(e))),
            };
        }
    };
    loop {
        // The pidfd reads ready once the process has ended: reaping it then does not wait.
        let mut guard = match pidfd.readable().await {
            Ok(guard) => guard,
            Err(e) => return (pid, Err(e)),
        };
        match process.try_wait() {
            Ok(Some(exit)) => return (pid, Ok(exit)),
            Ok(None) => guard.clear_ready(),
            Err(e) => return (pid, Err(e)),
        }
    }
}

/// Reads what a non-blocking pipe holds, up to one record ([`MAX_RECORD_DATA`] bytes).
/// Returns the bytes and whether the pipe is still open.
fn read_available(fd: &OwnedFd) -> std::io::Result<(Bytes, bool)> {
    let mut buf = Vec::with_capacity(MAX_RECORD_DATA);
    loop {
        match rustix::io::read(fd, spare_capacity(&mut buf)) {
            Ok(0) => return Ok((shrink(buf), false)),
            Ok(_) if buf.len() == MAX_RECORD_DATA => return Ok((shrink(buf), true)),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return Ok((shrink(buf), true)),
            Err(e) if buf.is_empty() => return Err(e.into()),
            // Keep what was read; the error comes back on the next read.
            Err(_) => return Ok((shrink(buf), true)),
        }
    }
}

/// Reads under a quarter of the buffer get an allocation of their own size, so that the
/// window's memory is at most four times the data it holds.
fn shrink(buf: Vec<u8>) -> Bytes {
    if buf.len() < buf.capacity() / 4 {
        Bytes::copy_from_slice(&buf)
    } else {
        Bytes::from(buf)
    }
}
