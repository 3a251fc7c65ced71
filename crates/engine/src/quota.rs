//! Quotas on the file area: how many bytes one principal's part of it may hold.
//!
//! A principal's use is what its directory holds (regular files, each inode once, uploads in
//! progress left out) as a walk of it found, plus what was reserved since: every upload
//! reserves its announced size before its first byte is written, and the reservation is
//! given back if the upload does not finish, or counted as used if it does. The walk is
//! redone when the last is older than [`WALK_EVERY`], so that files jobs made or removed
//! count too. An area's walks and reservations take turns under its own lock, so two uploads
//! never both fit in the same room.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::files::FileArea;

/// How old a walk of an area may be before a reservation walks it again.
pub const WALK_EVERY: Duration = Duration::from_secs(2);

/// A file that would take a principal's area past its quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name}: a file of {wanted} bytes would take your file area past its quota of {limit} bytes ({used} in use)"
)]
pub struct QuotaExceeded {
    /// The file's name.
    pub name: String,
    /// Its size.
    pub wanted: u64,
    /// The quota.
    pub limit: u64,
    /// What the area holds now (reservations included).
    pub used: u64,
}

#[derive(Default)]
struct Usage {
    /// What the last walk found.
    walked: u64,
    /// When it was made.
    walked_at: Option<Instant>,
    /// Reserved since then: finished uploads (until the next walk sees them) and uploads in
    /// progress.
    finished: u64,
    in_progress: u64,
}

impl Usage {
    fn used(&self) -> u64 {
        self.walked
            .saturating_add(self.finished)
            .saturating_add(self.in_progress)
    }
}

/// Every area's use, by its directory.
#[derive(Default)]
pub struct Quotas {
    areas: Mutex<HashMap<PathBuf, Arc<Mutex<Usage>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters only: nothing a panic could leave half-changed.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Quotas {
    /// No use recorded yet.
    pub fn new() -> Arc<Quotas> {
        Arc::new(Quotas::default())
    }

    /// Reserves `size` bytes for the file `name` in `area`, whose quota is `limit` (blocking:
    /// it may walk the area). The reservation is given back when dropped, unless committed.
    pub fn reserve(
        self: &Arc<Self>,
        area: &FileArea,
        limit: u64,
        name: &Path,
        size: u64,
    ) -> Result<Reservation, QuotaExceeded> {
        let usage = Arc::clone(lock(&self.areas).entry(area.path().to_owned()).or_default());
        let mut held = lock(&usage);
        if held.walked_at.is_none_or(|at| at.elapsed() >= WALK_EVERY) {
            held.walked = area.usage();
            held.walked_at = Some(Instant::now());
            held.finished = 0;
        }
        let used = held.used();
        if used.saturating_add(size) > limit {
            return Err(QuotaExceeded {
                name: name.display().to_string(),
                wanted: size,
                limit,
                used,
            });
        }
        held.in_progress += size;
        drop(held);
        Ok(Reservation {
            usage,
            size,
            finished: false,
        })
    }

    /// What `area` holds, as last counted (reservations included); `None` before any upload
    /// to it.
    pub fn used(&self, area: &Path) -> Option<u64> {
        let usage = lock(&self.areas).get(area).cloned()?;
        let used = lock(&usage).used();
        Some(used)
    }
}

/// Room reserved for one upload (see [`Quotas::reserve`]).
pub struct Reservation {
    usage: Arc<Mutex<Usage>>,
    size: u64,
    finished: bool,
}

impl Reservation {
    /// The upload finished: its bytes are in use now.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut usage = lock(&self.usage);
        usage.in_progress = usage.in_progress.saturating_sub(self.size);
        if self.finished {
            usage.finished = usage.finished.saturating_add(self.size);
        }
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reservation({} bytes)", self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_fit_until_the_quota_and_unfinished_ones_give_their_room_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("there"), vec![0u8; 400]).expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("dir");
        // A hard link is the same bytes: counted once.
        std::fs::hard_link(dir.path().join("there"), dir.path().join("sub/again")).expect("link");
        let area = FileArea::open(dir.path()).expect("area");
        let quotas = Quotas::new();
        let name = Path::new("x");
        let first = quotas.reserve(&area, 1000, name, 500).expect("fits");
        assert_eq!(quotas.used(dir.path()), Some(900));
        let refused = quotas.reserve(&area, 1000, name, 101).expect_err("over");
        assert_eq!((refused.used, refused.limit), (900, 1000));
        assert!(
            refused.to_string().contains("quota of 1000 bytes"),
            "{refused}"
        );
        drop(first);
        let second = quotas.reserve(&area, 1000, name, 600).expect("fits again");
        second.finish();
        assert_eq!(quotas.used(dir.path()), Some(1000));
        assert!(quotas.reserve(&area, 1000, name, 1).is_err());
    }
}
