//! Giving memory back to the system after bursts of job output (and of hub traffic).
//!
//! Job output passes through the daemon in 64 KiB buffers allocated by each job's pump
//! thread, so glibc serves them from that thread's arena. When a job that wrote much ends, its
//! window and tail (up to 12 MiB) are freed, but the free space lies below live allocations,
//! where glibc never trims an arena by itself: without help, the daemon's RSS grew by 15-25 MB
//! per such job and stayed there. So the engine counts the output bytes that flow, and once
//! output has flowed and then paused for a second, it asks glibc to return free pages of
//! every arena (`malloc_trim`). During a stream the memory is in use anyway; nothing is
//! trimmed then.
//!
//! Many short jobs leave the same kind of free memory behind: each job's pump thread takes an
//! arena of its own while it runs (glibc keeps up to eight per core), and what the job's
//! record, log and buffers used stays free in it. So every job's end counts as
//! [`JOB_END_WEIGHT`] bytes of output: after a burst of about 64 jobs and a pause, the arenas
//! are trimmed too (1000 `true` jobs had grown the daemon's RSS by 4 MB, kept for good).
//!
//! Connections leave the same behind when they end (their buffers, a TLS session's state): each
//! counts as [`CONNECTION_END_WEIGHT`] (400 slowloris peers closed at their time limit had left
//! the daemon 9.5 MB larger).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Output bytes after which a pause is worth a trim.
const TRIM_AFTER: u64 = 4 * 1024 * 1024;

/// What one job's end counts for, in output bytes.
pub(crate) const JOB_END_WEIGHT: usize = 64 * 1024;

/// What one connection's end counts for, in output bytes.
pub(crate) const CONNECTION_END_WEIGHT: usize = 64 * 1024;

/// How long output must pause before the trim.
const QUIET: Duration = Duration::from_secs(1);

/// Output bytes that flowed through the daemon since the trimmer last looked.
#[derive(Debug, Default)]
pub(crate) struct OutputFlow(AtomicU64);

impl OutputFlow {
    /// Counts `bytes` of output.
    pub fn add(&self, bytes: usize) {
        self.0.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Starts the task that trims after output pauses; it ends when `flow` is dropped.
pub(crate) fn spawn_trimmer(runtime: &tokio::runtime::Handle, flow: &Arc<OutputFlow>) {
    let flow: Weak<OutputFlow> = Arc::downgrade(flow);
    runtime.spawn(async move {
        let mut since_trim = 0u64;
        // What ends after a burst (connections closing, jobs' records and windows freed)
        // may come just after the trim the burst's pause brought: one more trim follows the
        // next pause after anything at all has flowed, so that it is given back too.
        let mut follow_up = false;
        loop {
            tokio::time::sleep(QUIET).await;
            let Some(flow) = flow.upgrade() else { return };
            let flowed = flow.0.swap(0, Ordering::Relaxed);
            drop(flow);
            since_trim = since_trim.saturating_add(flowed);
            let due = since_trim >= TRIM_AFTER || (follow_up && since_trim > 0);
            if flowed == 0 && due {
                follow_up = since_trim >= TRIM_AFTER;
                since_trim = 0;
                let _ = tokio::task::spawn_blocking(return_free_memory).await;
            }
        }
    });
}

/// Limits glibc to two malloc arenas, before the daemon starts its threads. By default glibc
/// gives threads up to eight arenas per core; the daemon's short-lived pump threads spread
/// small long-lived allocations (job records, log windows) over all of them, and each arena
/// keeps its fragments: after 3000 short jobs the anonymous memory was 6.0 MB with the
/// default, 3.8 MB with two arenas (measured with `xargs -P4 ferry run -- true`), at no cost
/// that the benchmarks show.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes no pointers; M_ARENA_MAX only bounds how many arenas malloc
    // creates from now on.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the free pages of every malloc arena to the system.
fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only releases memory malloc holds free; it
    // locks each arena itself, so it is safe to call while other threads allocate.
    unsafe {
        libc::malloc_trim(0);
    }
}
