//! What the engine counts for monitoring: jobs submitted, started and ended by outcome, their
//! run times, their output, the history's commit times, and a generation number that moves
//! whenever a job is submitted, starts or ends (what a live view of the jobs waits on). Plain
//! atomics, read at a scrape; the exposition format is the daemon's business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::ExitReport;

/// How a job ended, as the counters tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Status 0.
    Succeeded,
    /// Another status.
    Failed,
    /// Ended by a signal (ferry's or another's).
    Killed,
    /// Ended at its time limit.
    TimedOut,
    /// Never ran (its program could not start).
    NotStarted,
    /// Never ran: a job it waited for failed.
    DependencyFailed,
}

impl Outcome {
    /// Every outcome, in the counters' order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Killed,
        Outcome::TimedOut,
        Outcome::NotStarted,
        Outcome::DependencyFailed,
    ];

    /// Its name, as a label value.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Killed => "killed",
            Outcome::TimedOut => "timed_out",
            Outcome::NotStarted => "not_started",
            Outcome::DependencyFailed => "dependency_failed",
        }
    }

    /// The outcome of an ended job's report.
    pub fn of(report: &ExitReport) -> Outcome {
        if report.dependency_failed.is_some() {
            Outcome::DependencyFailed
        } else if report.error.is_some() {
            Outcome::NotStarted
        } else if report.timed_out {
            Outcome::TimedOut
        } else if report.signal.is_some() {
            Outcome::Killed
        } else if report.code == Some(0) {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        }
    }

    fn index(self) -> usize {
        Outcome::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// A histogram of durations over fixed bounds (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, the last one past every bound.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// The sum of the observations, in seconds.
    pub sum: f64,
    /// How many there were.
    pub count: u64,
    /// Each bucket's upper bound (the last is `f64::MAX`, +Inf) and how many fell in it (not
    /// cumulative).
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// A histogram over `bounds` (increasing).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// What it holds now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(&self.counts)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

/// Run-time bounds: a millisecond to an hour.
const RUN_TIME_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0,
];

/// Commit-time bounds: 100 µs to 5 s.
const COMMIT_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// The engine's counters.
#[derive(Debug)]
pub struct JobStats {
    submitted: AtomicU64,
    started: AtomicU64,
    ended: [AtomicU64; Outcome::ALL.len()],
    /// Output of ended jobs (stdout, stderr); a running job's is read from its log.
    ended_output: [AtomicU64; 2],
    run_time: Histogram,
    commit_time: Histogram,
    changes: watch::Sender<u64>,
}

impl Default for JobStats {
    fn default() -> JobStats {
        JobStats {
            submitted: AtomicU64::new(0),
            started: AtomicU64::new(0),
            ended: Default::default(),
            ended_output: Default::default(),
            run_time: Histogram::new(RUN_TIME_BOUNDS),
            commit_time: Histogram::new(COMMIT_BOUNDS),
            changes: watch::channel(0).0,
        }
    }
}

/// The counters as read at one moment.
#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    /// Jobs submitted.
    pub submitted: u64,
    /// Jobs started.
    pub started: u64,
    /// Jobs ended, by outcome.
    pub ended: Vec<(Outcome, u64)>,
    /// Run times of ended jobs that ran.
    pub run_time: HistogramSnapshot,
    /// The history's commit times.
    pub commit_time: HistogramSnapshot,
}

impl JobStats {
    pub(crate) fn submitted(&self) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A job ended as `report` says, having written `output` (stdout, stderr).
    pub(crate) fn ended(&self, report: &ExitReport, output: (u64, u64)) {
        let outcome = Outcome::of(report);
        self.ended[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if !matches!(outcome, Outcome::NotStarted | Outcome::DependencyFailed) {
            self.run_time.observe(report.wall);
        }
        self.ended_output[0].fetch_add(output.0, Ordering::Relaxed);
        self.ended_output[1].fetch_add(output.1, Ordering::Relaxed);
    }

    /// A job changed in a way a live view shows: submitted, started, paused, resumed, ended.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// The history took `took` to commit a batch.
    pub(crate) fn committed(&self, took: Duration) {
        self.commit_time.observe(took);
    }

    /// Output written by ended jobs (stdout, stderr).
    pub(crate) fn ended_output(&self) -> (u64, u64) {
        (
            self.ended_output[0].load(Ordering::Relaxed),
            self.ended_output[1].load(Ordering::Relaxed),
        )
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            submitted: self.submitted.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            ended: Outcome::ALL
                .iter()
                .map(|o| (*o, self.ended[o.index()].load(Ordering::Relaxed)))
                .collect(),
            run_time: self.run_time.snapshot(),
            commit_time: self.commit_time.snapshot(),
        }
    }

    /// A receiver that sees the generation move whenever a job is submitted, starts, is
    /// paused or resumed, or ends.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_puts_each_observation_in_its_bucket_and_sums_them() {
        let histogram = Histogram::new(&[0.001, 1.0]);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(20));
        histogram.observe(Duration::from_secs(7));
        let read = histogram.snapshot();
        assert_eq!(read.count, 4);
        assert_eq!(read.buckets, vec![(0.001, 2), (1.0, 1), (f64::MAX, 1)]);
        assert!((read.sum - 7.0215).abs() < 1e-9, "{}", read.sum);
    }

    #[test]
    fn outcomes_tell_apart_how_jobs_end() {
        let report = |f: fn(&mut ExitReport)| {
            let mut report = ExitReport::default();
            f(&mut report);
            Outcome::of(&report)
        };
        assert_eq!(report(|r| r.code = Some(0)), Outcome::Succeeded);
        assert_eq!(report(|r| r.code = Some(3)), Outcome::Failed);
        assert_eq!(report(|r| r.signal = Some(15)), Outcome::Killed);
        assert_eq!(
            report(|r| {
                r.signal = Some(9);
                r.timed_out = true
            }),
            Outcome::TimedOut
        );
        assert_eq!(report(|r| r.error = Some("no".into())), Outcome::NotStarted);
        assert_eq!(
            report(|r| r.dependency_failed = Some(4)),
            Outcome::DependencyFailed
        );
    }
}
