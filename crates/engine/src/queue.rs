//! The run queue: which waiting job starts next. Jobs wait in submission order; a job starts
//! when the daemon-wide limit has room, its group is not paused and has room under its own
//! limit, and every job it waits for (`--after`) has ended, successfully unless it runs after
//! any outcome. A job whose dependency failed never starts: [`RunQueue::ended`] hands it back
//! to be ended as `dependency failed`, which may fail its own dependents in turn.
//!
//! Plain data and no I/O: the engine holds it under its state lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::types::JobId;

/// The group a job without one joins.
pub const DEFAULT_GROUP: &str = "default";

/// A group of jobs with a limit of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Jobs of the group that may run at once.
    pub parallel: usize,
    /// Paused: its waiting jobs do not start (its running jobs were stopped).
    pub paused: bool,
    /// Jobs of the group running now (stopped ones included).
    pub running: usize,
}

/// How a group stands, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// Jobs of it that may run at once.
    pub parallel: usize,
    /// Jobs of it running.
    pub running: usize,
    /// Jobs of it waiting.
    pub queued: usize,
    /// Whether it is paused.
    pub paused: bool,
}

/// A job waiting to start.
#[derive(Debug, Clone)]
struct Waiting {
    group: String,
    /// The jobs it waits for that have not ended yet.
    pending: BTreeSet<JobId>,
    /// It runs whatever its dependencies' outcome.
    after_any: bool,
}

/// Why a waiting job will never start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyFailed {
    /// The job that will not run.
    pub job: JobId,
    /// The dependency that did not succeed.
    pub because_of: JobId,
}

/// The run queue (see the module's description).
#[derive(Debug)]
pub struct RunQueue {
    groups: BTreeMap<String, Group>,
    waiting: BTreeMap<JobId, Waiting>,
    /// For each job not yet ended, the waiting jobs that wait for it.
    dependents: HashMap<JobId, Vec<JobId>>,
    running: usize,
}

impl RunQueue {
    /// A queue with the default group, whose limit is `default_parallel`.
    pub fn new(default_parallel: usize) -> RunQueue {
        let mut groups = BTreeMap::new();
        groups.insert(
            DEFAULT_GROUP.to_owned(),
            Group {
                parallel: default_parallel,
                paused: false,
                running: 0,
            },
        );
        RunQueue {
            groups,
            waiting: BTreeMap::new(),
            dependents: HashMap::new(),
            running: 0,
        }
    }

    /// Jobs running, all groups together.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Jobs waiting.
    pub fn queued(&self) -> usize {
        self.waiting.len()
    }

    /// Whether `job` is waiting.
    pub fn is_waiting(&self, job: JobId) -> bool {
        self.waiting.contains_key(&job)
    }

    /// The group, if it exists.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    /// Every group, by name.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.groups
            .iter()
            .map(|(name, group)| GroupInfo {
                name: name.clone(),
                parallel: group.parallel,
                running: group.running,
                queued: self.waiting.values().filter(|w| &w.group == name).count(),
                paused: group.paused,
            })
            .collect()
    }

    /// Makes or changes a group (a new one is not paused).
    pub fn set_group(&mut self, name: &str, parallel: usize, paused: bool) {
        let group = self.groups.entry(name.to_owned()).or_insert(Group {
            parallel,
            paused,
            running: 0,
        });
        group.parallel = parallel;
        group.paused = paused;
    }

    /// Removes a group that has no job running or waiting; `Err` says how many it has.
    pub fn remove_group(&mut self, name: &str) -> Result<(), (usize, usize)> {
        let queued = self.waiting.values().filter(|w| w.group == name).count();
        let running = self.groups.get(name).map_or(0, |g| g.running);
        if queued > 0 || running > 0 {
            return Err((running, queued));
        }
        self.groups.remove(name);
        Ok(())
    }

    /// Takes a new job of `group` (which must exist): `true` when it may start now (it is
    /// then counted as running), `false` when it waits. `pending`: the jobs it waits for that
    /// have not ended.
    pub fn admit(
        &mut self,
        job: JobId,
        group: &str,
        pending: BTreeSet<JobId>,
        after_any: bool,
        max_running: usize,
    ) -> bool {
        // Every waiting job that could start has started (the engine asks for the startable
        // ones at each change), so a job that may start now passes no one.
        let free = pending.is_empty()
            && self.running < max_running
            && self
                .groups
                .get(group)
                .is_some_and(|g| !g.paused && g.running < g.parallel);
        if free {
            self.start(group);
            return true;
        }
        for &dependency in &pending {
            self.dependents.entry(dependency).or_default().push(job);
        }
        self.waiting.insert(
            job,
            Waiting {
                group: group.to_owned(),
                pending,
                after_any,
            },
        );
        false
    }

    /// Takes a waiting job out of the queue (it is cancelled); whether it was waiting.
    pub fn cancel(&mut self, job: JobId) -> bool {
        let Some(waiting) = self.waiting.remove(&job) else {
            return false;
        };
        for dependency in waiting.pending {
            if let Some(list) = self.dependents.get_mut(&dependency) {
                list.retain(|&j| j != job);
            }
        }
        true
    }

    /// Every waiting job, in order (for shutdown).
    pub fn drain(&mut self) -> Vec<JobId> {
        self.dependents.clear();
        std::mem::take(&mut self.waiting).into_keys().collect()
    }

    /// A job ended: `started_in` is its group when it had started (its slot is freed).
    /// Returns the waiting jobs that will now never start, because `job` did not succeed
    /// and they wait for it (not after any outcome); end each, then call this for it too.
    pub fn ended(
        &mut self,
        job: JobId,
        started_in: Option<&str>,
        succeeded: bool,
    ) -> Vec<DependencyFailed> {
        if let Some(group) = started_in {
            self.running = self.running.saturating_sub(1);
            if let Some(group) = self.groups.get_mut(group) {
                group.running = group.running.saturating_sub(1);
            }
        }
        let mut failed = Vec::new();
        for dependent in self.dependents.remove(&job).unwrap_or_default() {
            let Some(waiting) = self.waiting.get_mut(&dependent) else {
                continue;
            };
            waiting.pending.remove(&job);
            if !succeeded && !waiting.after_any {
                self.cancel(dependent);
                failed.push(DependencyFailed {
                    job: dependent,
                    because_of: job,
                });
            }
        }
        failed
    }

    /// The next jobs that may start now, in order, each counted as running; with the
    /// daemon-wide limit `max_running`.
    pub fn startable(&mut self, max_running: usize) -> Vec<JobId> {
        let mut started = Vec::new();
        if self.running >= max_running {
            return started;
        }
        // Groups full or paused are passed over at once.
        let mut full: BTreeSet<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.paused || g.running >= g.parallel)
            .map(|(name, _)| name.clone())
            .collect();
        if full.len() == self.groups.len() {
            return started;
        }
        for (&job, waiting) in &self.waiting {
            if self.running + started.len() >= max_running {
                break;
            }
            if !waiting.pending.is_empty() || full.contains(&waiting.group) {
                continue;
            }
            let Some(group) = self.groups.get_mut(&waiting.group) else {
                continue;
            };
            group.running += 1;
            if group.running >= group.parallel {
                full.insert(waiting.group.clone());
            }
            started.push(job);
        }
        self.running += started.len();
        for job in &started {
            self.waiting.remove(job);
        }
        started
    }

    /// Counts one more running job of `group`.
    fn start(&mut self, group: &str) {
        self.running += 1;
        if let Some(group) = self.groups.get_mut(group) {
            group.running += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> BTreeSet<JobId> {
        BTreeSet::new()
    }

    #[test]
    fn each_group_keeps_its_limit_and_the_daemon_its_own() {
        let mut queue = RunQueue::new(8);
        queue.set_group("one", 1, false);
        queue.set_group("two", 2, false);
        assert!(queue.admit(1, "one", none(), false, 3));
        assert!(!queue.admit(2, "one", none(), false, 3), "one of one");
        assert!(queue.admit(3, "two", none(), false, 3));
        assert!(queue.admit(4, "two", none(), false, 3));
        assert!(
            !queue.admit(5, "two", none(), false, 3),
            "three of the daemon's three"
        );
        assert!(queue.startable(3).is_empty());
        assert!(queue.ended(3, Some("two"), true).is_empty());
        assert_eq!(queue.startable(3), vec![5], "job 2's group is still full");
        assert!(queue.ended(1, Some("one"), true).is_empty());
        assert_eq!(queue.startable(3), vec![2]);
        assert_eq!(queue.running(), 3);
    }

    #[test]
    fn a_paused_group_waits_and_others_pass_it() {
        let mut queue = RunQueue::new(8);
        queue.set_group("slow", 4, true);
        assert!(!queue.admit(1, "slow", none(), false, 8));
        assert!(
            queue.admit(2, DEFAULT_GROUP, none(), false, 8),
            "passes the paused one"
        );
        assert!(queue.startable(8).is_empty());
        queue.set_group("slow", 4, false);
        assert_eq!(queue.startable(8), vec![1]);
    }

    #[test]
    fn a_failed_dependency_fails_its_dependents_and_after_any_runs() {
        let mut queue = RunQueue::new(8);
        assert!(queue.admit(1, DEFAULT_GROUP, none(), false, 8));
        assert!(!queue.admit(2, DEFAULT_GROUP, BTreeSet::from([1]), false, 8));
        assert!(!queue.admit(3, DEFAULT_GROUP, BTreeSet::from([2]), false, 8));
        assert!(!queue.admit(4, DEFAULT_GROUP, BTreeSet::from([1]), true, 8));
        assert!(queue.startable(8).is_empty());
        let failed = queue.ended(1, Some(DEFAULT_GROUP), false);
        assert_eq!(
            failed,
            vec![DependencyFailed {
                job: 2,
                because_of: 1
            }]
        );
        let failed = queue.ended(2, None, false);
        assert_eq!(failed[0].job, 3);
        assert!(queue.ended(3, None, false).is_empty());
        assert_eq!(queue.startable(8), vec![4]);
        assert_eq!(queue.queued(), 0);
    }

    #[test]
    fn a_group_with_jobs_is_not_removed() {
        let mut queue = RunQueue::new(8);
        queue.set_group("g", 1, false);
        assert!(queue.admit(1, "g", none(), false, 8));
        assert!(!queue.admit(2, "g", none(), false, 8));
        assert_eq!(queue.remove_group("g"), Err((1, 1)));
        assert!(queue.cancel(2));
        queue.ended(1, Some("g"), true);
        assert_eq!(queue.remove_group("g"), Ok(()));
    }
}
