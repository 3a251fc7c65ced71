//! The peer registry: every connection the daemon serves, whatever its dialect, is a peer here,
//! with an id, a name, its address and dialect, when it connected, and the jobs it started.
//!
//! Each peer has a bounded outbox of [`PeerEvent`]s that its connection drains and turns into
//! its own dialect's frames, so the engine (and the daemon) can tell a peer something without
//! knowing how it speaks. Pushing never blocks: when an outbox is full the event is dropped
//! for that peer, and the drop is counted in the peer's [`PeerInfo::dropped_events`] (a peer
//! that cannot keep up loses events, never slows anyone else). A kick is not an event but a
//! flag each connection watches, so it works even when the outbox is full.
//!
//! Ids are sqids of a counter (at least 10 characters), never reused while the daemon runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch, Notify};

use crate::{JobId, Principal};

/// Events a peer's outbox holds at most.
pub const OUTBOX_EVENTS: usize = 64;

/// Job ids a peer's entry remembers (the newest; the count covers all).
const JOBS_REMEMBERED: usize = 100;

/// Shortest peer id.
const MIN_ID_LEN: u8 = 10;

/// What the daemon tells a peer, whatever its dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The daemon is going down: running jobs are being terminated. The connection says so
    /// in its own way, then calls [`PeerHandle::shutdown_told`].
    ShuttingDown,
}

/// A peer, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub id: String,
    /// Who it is: the Unix user, a client certificate's name, the token's label, or what its
    /// dialect says.
    pub name: String,
    /// Where it connects from.
    pub address: String,
    /// The dialect it speaks.
    pub dialect: String,
    /// Who it acts for (`None` until it has authenticated).
    pub principal: Option<Principal>,
    /// When it connected.
    pub connected: SystemTime,
    /// Jobs it started, in all.
    pub jobs_started: u64,
    /// The newest of them (at most 100).
    pub jobs: Vec<JobId>,
    /// Events waiting in its outbox.
    pub outbox_used: usize,
    /// Its outbox's room.
    pub outbox_capacity: usize,
    /// Events dropped because its outbox was full.
    pub dropped_events: u64,
}

/// Who a new peer is, as its connection knows it.
#[derive(Debug, Clone, Default)]
pub struct NewPeer {
    /// See [`PeerInfo::name`].
    pub name: String,
    /// See [`PeerInfo::address`].
    pub address: String,
    /// See [`PeerInfo::dialect`].
    pub dialect: String,
    /// See [`PeerInfo::principal`].
    pub principal: Option<Principal>,
}

struct Entry {
    info: PeerInfo,
    outbox: mpsc::Sender<PeerEvent>,
    kicked: watch::Sender<Option<String>>,
    /// A shutdown notice was queued and not yet told.
    notice_pending: bool,
}

impl Entry {
    /// Queues `event` without waiting; counts it as dropped when the outbox is full.
    fn push(&mut self, event: PeerEvent) -> bool {
        match self.outbox.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.info.dropped_events += 1;
                false
            }
            // The connection is going away; it needs nothing more.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Default)]
struct Shared {
    peers: Mutex<BTreeMap<u64, Entry>>,
    /// Shutdown notices queued and not yet told.
    untold: AtomicUsize,
    told: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        // The map holds no invariant a panic could break half-way.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a pending shutdown notice of `entry` as told.
    fn notice_told(&self, entry: &mut Entry) {
        if std::mem::take(&mut entry.notice_pending) {
            self.untold.fetch_sub(1, Ordering::SeqCst);
            self.told.notify_waiters();
        }
    }
}

/// The registry of connected peers. Cheap to clone; every clone is the same registry.
#[derive(Clone)]
pub struct PeerRegistry {
    shared: Arc<Shared>,
    next: Arc<AtomicU64>,
    sqids: Arc<sqids::Sqids>,
}

impl Default for PeerRegistry {
    fn default() -> PeerRegistry {
        PeerRegistry::new()
    }
}

impl std::fmt::Debug for PeerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerRegistry")
    }
}

impl PeerRegistry {
    /// An empty registry.
    pub fn new() -> PeerRegistry {
        let sqids = sqids::Sqids::builder()
            .min_length(MIN_ID_LEN)
            .build()
            .unwrap_or_default();
        PeerRegistry {
            shared: Arc::default(),
            next: Arc::new(AtomicU64::new(1)),
            sqids: Arc::new(sqids),
        }
    }

    /// Registers a connection as a peer; it stays listed until the handle is dropped.
    pub fn register(&self, peer: NewPeer) -> PeerHandle {
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        // Encoding one number cannot fail with the default alphabet; the serial itself is a
        // unique id all the same.
        let id = self
            .sqids
            .encode(&[serial])
            .unwrap_or_else(|_| format!("peer{serial:06}"));
        let (outbox, events) = mpsc::channel(OUTBOX_EVENTS);
        let (kicked, kick) = watch::channel(None);
        let entry = Entry {
            info: PeerInfo {
                id: id.clone(),
                name: peer.name,
                address: peer.address,
                dialect: peer.dialect,
                principal: peer.principal,
                connected: SystemTime::now(),
                jobs_started: 0,
                jobs: Vec::new(),
                outbox_used: 0,
                outbox_capacity: OUTBOX_EVENTS,
                dropped_events: 0,
            },
            outbox,
            kicked,
            notice_pending: false,
        };
        self.shared.lock().insert(serial, entry);
        PeerHandle {
            id,
            serial,
            events,
            kick,
            registry: Arc::downgrade(&self.shared),
        }
    }

    /// Every peer, in the order they connected.
    pub fn list(&self) -> Vec<PeerInfo> {
        self.shared
            .lock()
            .values()
            .map(|entry| PeerInfo {
                outbox_used: OUTBOX_EVENTS - entry.outbox.capacity(),
                ..entry.info.clone()
            })
            .collect()
    }

    /// Notes that peer `id` started `job`.
    pub fn started(&self, id: &str, job: JobId) {
        let mut peers = self.shared.lock();
        if let Some(entry) = peers.values_mut().find(|e| e.info.id == id) {
            entry.info.jobs_started += 1;
            if entry.info.jobs.len() == JOBS_REMEMBERED {
                entry.info.jobs.remove(0);
            }
            entry.info.jobs.push(job);
        }
    }

    /// Disconnects peer `id` (its connection says why, in its dialect, then closes); its
    /// jobs go on. Returns whether there was such a peer.
    pub fn kick(&self, id: &str, reason: &str) -> bool {
        let peers = self.shared.lock();
        match peers.values().find(|e| e.info.id == id) {
            Some(entry) => {
                entry.kicked.send_replace(Some(reason.to_owned()));
                true
            }
            None => false,
        }
    }

    /// Disconnects every peer but `except`; the ids kicked.
    pub fn kick_all(&self, except: &str, reason: &str) -> Vec<String> {
        let peers = self.shared.lock();
        peers
            .values()
            .filter(|e| e.info.id != except)
            .map(|entry| {
                entry.kicked.send_replace(Some(reason.to_owned()));
                entry.info.id.clone()
            })
            .collect()
    }

    /// Queues [`PeerEvent::ShuttingDown`] for every peer; returns how many got it (a full
    /// outbox drops it, counted; its connection closes with the daemon anyway).
    pub fn tell_all_going_down(&self) -> usize {
        let mut peers = self.shared.lock();
        let mut queued = 0;
        for entry in peers.values_mut() {
            if !entry.notice_pending && entry.push(PeerEvent::ShuttingDown) {
                entry.notice_pending = true;
                self.shared.untold.fetch_add(1, Ordering::SeqCst);
                queued += 1;
            }
        }
        queued
    }

    /// Waits until every queued shutdown notice is told (or its peer left), at most `limit`:
    /// a peer that does not read cannot hold the shutdown up. Whether all were told in time.
    pub async fn wait_until_told(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                let told = self.shared.told.notified();
                tokio::pin!(told);
                // Registered before the check, so a notice told in between is not missed.
                told.as_mut().enable();
                if self.shared.untold.load(Ordering::SeqCst) == 0 {
                    break;
                }
                told.await;
            }
        })
        .await
        .is_ok()
    }
}

/// A connection's place in the registry: its id, its outbox's receiving end and its kick
/// flag. Dropping it removes the peer.
#[derive(Debug)]
pub struct PeerHandle {
    id: String,
    serial: u64,
    events: mpsc::Receiver<PeerEvent>,
    kick: watch::Receiver<Option<String>>,
    registry: Weak<Shared>,
}

impl PeerHandle {
    /// The peer's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event for this peer (waits; `None` once the registry is gone).
    pub async fn next_event(&mut self) -> Option<PeerEvent> {
        self.events.recv().await
    }

    /// Records who the peer turned out to be (once its dialect's handshake authenticated it).
    pub fn identify(&self, principal: Principal, name: String) {
        if let Some(shared) = self.registry.upgrade() {
            if let Some(entry) = shared.lock().get_mut(&self.serial) {
                entry.info.principal = Some(principal);
                entry.info.name = name;
            }
        }
    }

    /// The peer's kick flag, to wait on beside its events.
    pub fn kick(&self) -> Kick {
        Kick(self.kick.clone())
    }

    /// Says that this peer's connection has queued its shutdown notice.
    pub fn shutdown_told(&self) {
        if let Some(shared) = self.registry.upgrade() {
            let mut peers = shared.lock();
            if let Some(entry) = peers.get_mut(&self.serial) {
                shared.notice_told(entry);
            }
        }
    }
}

/// A peer's kick flag (see [`PeerHandle::kick`]).
#[derive(Debug, Clone)]
pub struct Kick(watch::Receiver<Option<String>>);

impl Kick {
    /// Resolves once the daemon's owner kicked this peer, with the reason.
    pub async fn kicked(&self) -> String {
        let mut kick = self.0.clone();
        let reason = match kick.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            // The registry is gone: the daemon is going away; never resolve.
            None => std::future::pending().await,
        }
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        if let Some(shared) = self.registry.upgrade() {
            let mut peers = shared.lock();
            if let Some(mut entry) = peers.remove(&self.serial) {
                // A peer that leaves needs no notice.
                shared.notice_told(&mut entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(registry: &PeerRegistry, name: &str) -> PeerHandle {
        registry.register(NewPeer {
            name: name.into(),
            address: "test".into(),
            dialect: "ferry".into(),
            principal: Some(Principal::Owner),
        })
    }

    #[test]
    fn ids_are_long_unique_and_peers_leave_with_their_handles() {
        let registry = PeerRegistry::new();
        let handles: Vec<PeerHandle> = (0..50).map(|i| peer(&registry, &i.to_string())).collect();
        let mut ids: Vec<String> = handles.iter().map(|h| h.id().to_owned()).collect();
        assert!(ids.iter().all(|id| id.len() >= 10), "{ids:?}");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50);
        assert_eq!(registry.list().len(), 50);
        drop(handles);
        assert!(registry.list().is_empty());
        // Never reused: the next id is new.
        assert!(!ids.contains(&peer(&registry, "late").id().to_owned()));
    }

    #[tokio::test]
    async fn a_full_outbox_drops_and_counts_and_never_blocks() {
        let registry = PeerRegistry::new();
        let mut slow = peer(&registry, "slow");
        for _ in 0..3 {
            registry.tell_all_going_down();
            // One notice is pending at a time: the others are not queued twice.
        }
        assert_eq!(registry.list()[0].outbox_used, 1);
        assert_eq!(slow.next_event().await, Some(PeerEvent::ShuttingDown));
        slow.shutdown_told();
        // Fill the outbox behind the registry's back, then push once more.
        {
            let mut peers = registry.shared.lock();
            let entry = peers.values_mut().next().expect("entry");
            for _ in 0..OUTBOX_EVENTS {
                assert!(entry.push(PeerEvent::ShuttingDown));
            }
        }
        assert_eq!(registry.tell_all_going_down(), 0);
        let info = &registry.list()[0];
        assert_eq!(info.outbox_used, OUTBOX_EVENTS);
        assert_eq!(info.dropped_events, 1);
        // Nothing is pending: every notice queued was told.
        assert!(registry.wait_until_told(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn kicks_reach_their_peers_and_jobs_are_remembered() {
        let registry = PeerRegistry::new();
        let one = peer(&registry, "one");
        let two = peer(&registry, "two");
        let me = peer(&registry, "me");
        registry.started(one.id(), 7);
        registry.started(one.id(), 8);
        let listed = registry.list();
        assert_eq!(listed[0].jobs, vec![7, 8]);
        assert_eq!(listed[0].jobs_started, 2);
        assert!(registry.kick(one.id(), "bye"));
        assert!(!registry.kick("nobody", "bye"));
        assert_eq!(one.kick().kicked().await, "bye");
        assert_eq!(registry.kick_all(me.id(), "all").len(), 2);
        assert_eq!(two.kick().kicked().await, "all");
    }

    #[tokio::test]
    async fn waiting_for_notices_ends_when_told_or_gone() {
        let registry = PeerRegistry::new();
        let mut reader = peer(&registry, "reader");
        let gone = peer(&registry, "gone");
        assert_eq!(registry.tell_all_going_down(), 2);
        assert_eq!(reader.next_event().await, Some(PeerEvent::ShuttingDown));
        reader.shutdown_told();
        assert!(!registry.wait_until_told(Duration::from_millis(1)).await);
        drop(gone);
        assert!(registry.wait_until_told(Duration::from_secs(5)).await);
    }
}
