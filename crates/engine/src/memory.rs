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
//! the daemon 9.5 MB larger). So does each hub member's held place when its grace ends (its
//! outbox and what waits in it).
//!
//! Most of an idle daemon's resident memory is not its own data but the pages of its program
//! that start-up and the last requests touched (5.5 of 9 MB after one job: the kernel maps up
//! to 64 KiB around each page fault). Once anything has happened and the daemon has then been
//! quiet for a second, it drops its mappings of the program's read-only segments (code and
//! constants, `MADV_DONTNEED`, [`drop_program_mappings`]). The pages stay in the page cache,
//! shared and clean, for the kernel to keep or reclaim; the next request maps back what it
//! uses, with minor faults.

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

    /// What was counted since the trimmer (or this) last looked.
    #[cfg(test)]
    pub fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
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
        // Start-up touched the program's pages: the first pause drops them.
        let mut program_touched = true;
        loop {
            tokio::time::sleep(QUIET).await;
            let Some(flow) = flow.upgrade() else { return };
            let flowed = flow.0.swap(0, Ordering::Relaxed);
            drop(flow);
            if flowed > 0 {
                program_touched = true;
            } else if program_touched {
                program_touched = false;
                drop_program_mappings();
            }
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

/// The address ranges of the daemon's own program that are mapped read-only from its file:
/// the loadable segments without write permission (code, constants, unwind tables). Writable
/// segments are left alone, the relocated read-only data (RELRO) among them: its pages are
/// private copies, and dropping them would lose the relocations.
#[cfg(target_os = "linux")]
fn program_read_only_ranges() -> &'static [(usize, usize)] {
    use std::sync::OnceLock;
    static RANGES: OnceLock<Vec<(usize, usize)>> = OnceLock::new();
    RANGES.get_or_init(|| {
        unsafe extern "C" fn first_object(
            info: *mut libc::dl_phdr_info,
            _size: libc::size_t,
            ranges: *mut libc::c_void,
        ) -> libc::c_int {
            // SAFETY: the C library passes a valid `dl_phdr_info` for the duration of the
            // call, with `dlpi_phnum` program headers at `dlpi_phdr`; `ranges` is the vector
            // handed to `dl_iterate_phdr` below, borrowed by nothing else meanwhile.
            let (info, ranges) = unsafe { (&*info, &mut *ranges.cast::<Vec<(usize, usize)>>()) };
            let headers = if info.dlpi_phdr.is_null() {
                &[][..]
            } else {
                // SAFETY: as above: `dlpi_phnum` headers live at `dlpi_phdr`.
                unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
            };
            let page = rustix::param::page_size();
            for header in headers {
                if header.p_type == libc::PT_LOAD && header.p_flags & libc::PF_W == 0 {
                    let start = (info.dlpi_addr as usize).wrapping_add(header.p_vaddr as usize);
                    let end = start.wrapping_add(header.p_memsz as usize);
                    ranges.push((start & !(page - 1), end.next_multiple_of(page)));
                }
            }
            1 // the first object is the program itself: stop there
        }
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        // SAFETY: the callback only reads what the C library hands it and writes to `ranges`,
        // which outlives the call.
        unsafe {
            libc::dl_iterate_phdr(
                Some(first_object),
                (&mut ranges as *mut Vec<(usize, usize)>).cast(),
            );
        }
        ranges
    })
}

/// Drops the daemon's mappings of its program's read-only segments (see the module's notes):
/// its resident memory falls to what it uses from now on.
fn drop_program_mappings() {
    #[cfg(target_os = "linux")]
    for &(start, end) in program_read_only_ranges() {
        // SAFETY: the range is a read-only, file-backed private mapping of the program (a
        // loadable segment without write permission), so no page of it was ever modified:
        // MADV_DONTNEED only removes the mappings, and the next access maps the same file
        // pages again. Nothing in the process holds a reference into it that could change.
        let result =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if result != 0 {
            tracing::debug!(
                "madvise of the program's pages: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
