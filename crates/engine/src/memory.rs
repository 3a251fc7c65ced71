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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Output bytes after which a pause is worth a trim.
const TRIM_AFTER: u64 = 4 * 1024 * 1024;

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
        loop {
            tokio::time::sleep(QUIET).await;
            let Some(flow) = flow.upgrade() else { return };
            let flowed = flow.0.swap(0, Ordering::Relaxed);
            drop(flow);
            since_trim = since_trim.saturating_add(flowed);
            if flowed == 0 && since_trim >= TRIM_AFTER {
                since_trim = 0;
                let _ = tokio::task::spawn_blocking(return_free_memory).await;
            }
        }
    });
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
