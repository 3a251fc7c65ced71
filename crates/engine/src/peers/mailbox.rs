//! A peer's outbox: the events queued for one connection, which it takes one at a time.
//!
//! Two lanes. The daemon's lane (shutdown notices, joins and leaves, messages from the daemon
//! or from its owner) is taken first: what the daemon says is never stuck behind members'
//! chatter. The members' lane holds their messages, and one sender holds at most a share of
//! its room ([`SHARE_DIVISOR`]): a sender that floods a slow member loses its own messages,
//! not everyone's. Each lane holds the outbox's capacity at most.
//!
//! Nothing waits to push. What does not fit is dropped and counted by sender, and the member
//! is told ([`PeerEvent::Missed`]) how many it missed from whom: at its next read once its
//! outbox is empty, or at most once every [`NOTICE_EVERY`] while it is still behind.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::PeerEvent;

/// A member sender may hold 1 / `SHARE_DIVISOR` of another member's outbox.
pub const SHARE_DIVISOR: usize = 4;

/// The shortest time between two notices of missed events while a member is still behind.
pub const NOTICE_EVERY: Duration = Duration::from_secs(1);

/// Events a member missed (its outbox, or its sender's share of it, was full), by sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// How many, in all.
    pub total: u64,
    /// How many from whom, in the order first missed.
    pub from: Vec<MissedFrom>,
}

impl Missed {
    /// In words: `you missed 98 events (your outbox was full): 97 from flood (ID), 1 from
    /// server`.
    pub fn describe(&self) -> String {
        let from: Vec<String> = self
            .from
            .iter()
            .map(|m| {
                if m.id == m.name {
                    format!("{} from {}", m.count, m.name)
                } else {
                    format!("{} from {} ({})", m.count, m.name, m.id)
                }
            })
            .collect();
        format!(
            "you missed {} event(s) (your outbox was full): {}",
            self.total,
            from.join(", ")
        )
    }
}

/// How many events a member missed from one sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedFrom {
    /// The sender's id ([`super::SERVER_ID`] for the daemon's own events).
    pub id: String,
    /// Its name.
    pub name: String,
    /// How many.
    pub count: u64,
}

/// Who queued an event, and so which lane it takes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Sender<'a> {
    /// The daemon, or its owner: the first lane, no share.
    Daemon {
        /// The id the event is from ([`super::SERVER_ID`], or the owner's member id).
        id: &'a str,
        /// Its name.
        name: &'a str,
    },
    /// A member (its serial in the registry): the members' lane, within its share.
    Member {
        /// Its registry serial.
        serial: u64,
        /// Its id.
        id: &'a str,
        /// Its name.
        name: &'a str,
    },
}

/// Whether an event was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queued {
    /// It was.
    Yes,
    /// Its lane (or its sender's share) was full: dropped, counted, to be told.
    Dropped,
}

#[derive(Default)]
struct Lanes {
    daemon: VecDeque<PeerEvent>,
    members: VecDeque<(u64, PeerEvent)>,
    /// Members' events queued now, by sender serial.
    held_by: HashMap<u64, usize>,
    /// Missed and not yet told, by sender id (with the order first missed).
    missed: BTreeMap<String, (usize, MissedFrom)>,
    /// When the last notice of missed events was taken.
    told: Option<Instant>,
    /// The first drop since the connection last took an event.
    stalled_since: Option<Instant>,
}

impl Lanes {
    /// Counts `count` events missed from `id` (named `name`), in the order first missed.
    fn count_missed(&mut self, id: &str, name: &str, count: u64) {
        let order = self.missed.len();
        let missed = self.missed.entry(id.to_owned()).or_insert_with(|| {
            (
                order,
                MissedFrom {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    count: 0,
                },
            )
        });
        missed.1.count += count;
    }
}

/// One peer's outbox (see the module documentation). Shared by its registry entry, which
/// pushes, and its connection, which takes.
pub(super) struct Mailbox {
    lanes: Mutex<Lanes>,
    ready: Notify,
    capacity: usize,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mailbox({} of {} each lane)", self.used(), self.capacity)
    }
}

impl Mailbox {
    /// An empty outbox whose lanes hold `capacity` events each.
    pub(super) fn new(capacity: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            lanes: Mutex::default(),
            ready: Notify::new(),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Lanes> {
        // The queues hold no invariant a panic could break half-way.
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events waiting.
    pub(super) fn used(&self) -> usize {
        let lanes = self.lock();
        lanes.daemon.len() + lanes.members.len()
    }

    /// Queues `event` from `sender` without waiting.
    pub(super) fn push(&self, event: PeerEvent, sender: Sender<'_>) -> Queued {
        let mut lanes = self.lock();
        let share = (self.capacity / SHARE_DIVISOR).max(1);
        let (fits, id, name) = match sender {
            Sender::Daemon { id, name } => (lanes.daemon.len() < self.capacity, id, name),
            Sender::Member { serial, id, name } => {
                let held = lanes.held_by.get(&serial).copied().unwrap_or(0);
                (
                    lanes.members.len() < self.capacity && held < share,
                    id,
                    name,
                )
            }
        };
        if !fits {
            lanes.count_missed(id, name, 1);
            lanes.stalled_since.get_or_insert_with(Instant::now);
            drop(lanes);
            // It may be told now, if its connection is waiting on an empty outbox.
            self.ready.notify_one();
            return Queued::Dropped;
        }
        match sender {
            Sender::Daemon { .. } => lanes.daemon.push_back(event),
            Sender::Member { serial, .. } => {
                *lanes.held_by.entry(serial).or_default() += 1;
                lanes.members.push_back((serial, event));
            }
        }
        drop(lanes);
        self.ready.notify_one();
        Queued::Yes
    }

    /// The stream position of the oldest message waiting (in a cluster).
    pub(super) fn oldest_message_seq(&self) -> Option<u64> {
        let lanes = self.lock();
        lanes
            .daemon
            .iter()
            .chain(lanes.members.iter().map(|(_, event)| event))
            .filter_map(|event| match event {
                PeerEvent::Message(message) if message.seq > 0 => Some(message.seq),
                _ => None,
            })
            .min()
    }

    /// Counts `count` events missed from `id` (named `name`), to be told at the next read.
    pub(super) fn missed_from(&self, id: &str, name: &str, count: u64) {
        self.lock().count_missed(id, name, count);
        self.ready.notify_one();
    }

    /// How long events have been dropped with none taken since (the slow-consumer policy's
    /// test); `None` when nothing was dropped since the last take.
    pub(super) fn stalled_for(&self) -> Option<Duration> {
        self.lock().stalled_since.map(|since| since.elapsed())
    }

    /// The next event, if one is ready now.
    pub(super) fn try_take(&self) -> Option<PeerEvent> {
        let mut lanes = self.lock();
        let event = Self::next_of(&mut lanes);
        if event.is_some() {
            lanes.stalled_since = None;
        }
        event
    }

    fn next_of(lanes: &mut Lanes) -> Option<PeerEvent> {
        let behind = !lanes.daemon.is_empty() || !lanes.members.is_empty();
        let notice_due = !lanes.missed.is_empty()
            && (!behind || lanes.told.is_none_or(|t| t.elapsed() >= NOTICE_EVERY));
        if notice_due {
            lanes.told = Some(Instant::now());
            let mut from: Vec<(usize, MissedFrom)> =
                std::mem::take(&mut lanes.missed).into_values().collect();
            from.sort_by_key(|(order, _)| *order);
            let from: Vec<MissedFrom> = from.into_iter().map(|(_, m)| m).collect();
            let total = from.iter().map(|m| m.count).sum();
            return Some(PeerEvent::Missed(Arc::new(Missed { total, from })));
        }
        if let Some(event) = lanes.daemon.pop_front() {
            return Some(event);
        }
        let (serial, event) = lanes.members.pop_front()?;
        if let Some(held) = lanes.held_by.get_mut(&serial) {
            *held -= 1;
            if *held == 0 {
                lanes.held_by.remove(&serial);
            }
        }
        Some(event)
    }

    /// The next event, waiting for one.
    pub(super) async fn take(&self) -> PeerEvent {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            // Registered before the check, so an event pushed in between is not missed.
            ready.as_mut().enable();
            if let Some(event) = self.try_take() {
                return event;
            }
            ready.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(serial: u64, id: &str) -> Sender<'_> {
        Sender::Member {
            serial,
            id,
            name: id,
        }
    }

    #[test]
    fn a_flooding_sender_loses_its_own_messages_and_the_daemon_goes_first() {
        let mailbox = Mailbox::new(8);
        // The flooder may hold 2 of 8.
        let queued: Vec<Queued> = (0..5)
            .map(|_| mailbox.push(PeerEvent::ShuttingDown, member(1, "flood")))
            .collect();
        assert_eq!(queued.iter().filter(|q| **q == Queued::Yes).count(), 2);
        // Another member still gets in, and the daemon ahead of both.
        assert_eq!(
            mailbox.push(PeerEvent::ShuttingDown, member(2, "calm")),
            Queued::Yes
        );
        let daemon = Sender::Daemon {
            id: "server",
            name: "server",
        };
        assert_eq!(mailbox.push(PeerEvent::ShuttingDown, daemon), Queued::Yes);
        assert_eq!(mailbox.used(), 4);
        // The notice of what was missed comes first (nothing was told yet), then the
        // daemon's event, then the members' in order.
        match mailbox.try_take() {
            Some(PeerEvent::Missed(missed)) => {
                assert_eq!(missed.total, 3);
                assert_eq!(missed.from.len(), 1);
                assert_eq!(missed.from[0].id, "flood");
            }
            other => panic!("expected the notice, got {other:?}"),
        }
        for _ in 0..4 {
            assert_eq!(mailbox.try_take(), Some(PeerEvent::ShuttingDown));
        }
        assert_eq!(mailbox.try_take(), None);
        // Taken, the flooder's share is free again.
        assert_eq!(
            mailbox.push(PeerEvent::ShuttingDown, member(1, "flood")),
            Queued::Yes
        );
    }

    #[test]
    fn while_behind_the_notice_waits_its_interval_and_comes_once_the_outbox_is_empty() {
        let mailbox = Mailbox::new(4);
        for _ in 0..3 {
            mailbox.push(PeerEvent::ShuttingDown, member(1, "a"));
        }
        assert!(matches!(mailbox.try_take(), Some(PeerEvent::Missed(_))));
        mailbox.push(PeerEvent::ShuttingDown, member(1, "a"));
        mailbox.push(PeerEvent::ShuttingDown, member(1, "a"));
        // Behind, and told a moment ago: events first.
        assert_eq!(mailbox.try_take(), Some(PeerEvent::ShuttingDown));
        match mailbox.try_take() {
            Some(PeerEvent::Missed(missed)) => assert_eq!(missed.total, 2),
            other => panic!("expected the notice once empty, got {other:?}"),
        }
    }
}
