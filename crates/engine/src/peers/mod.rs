//! The peer registry: every connection the daemon serves, whatever its dialect, is a peer here,
//! with an id, a name, its address and dialect, when it connected, and the jobs it started.
//!
//! Each peer has a bounded outbox of [`PeerEvent`]s that its connection drains and turns into
//! its own dialect's frames, so the engine (and the daemon) can tell a peer something without
//! knowing how it speaks. Pushing never blocks: when an outbox is full the event is dropped
//! for that peer and counted (a peer that cannot keep up loses events, never slows anyone
//! else), and the peer is told what it missed from whom; the daemon's events go ahead of
//! members' messages, and one member cannot take another's whole outbox (see [`mailbox`]).
//! What else happens to a slow peer is the hub's slow-consumer policy (see [`hub`]). A kick is
//! not an event but a flag each connection watches, so it works even when the outbox is full.
//!
//! Peers that join the hub ([`PeerHandle::join`]) exchange messages and see each other come
//! and go; [`hub`] holds that part: messages, presence, delayed removal and resumption.
//!
//! Ids are sqids of a counter (at least 10 characters), never reused while the daemon runs.

pub mod hub;
pub mod mailbox;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Notify};

use crate::principal::Principal;
use crate::types::JobId;
pub use hub::cluster;
pub use hub::{
    Delivery, HubConfig, HubMessage, HubStats, Joined, MemberInfo, Presence, Refused, ResumeError,
    SendError, SlowConsumer, MAX_MESSAGE_TEXT, SERVER_ID,
};
use mailbox::{Mailbox, Queued, Sender};
pub use mailbox::{Missed, MissedFrom};

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
    /// A message from another peer (or from the daemon's owner), for a peer in the hub.
    Message(Arc<HubMessage>),
    /// A peer joined or left the hub.
    Presence(Arc<Presence>),
    /// Events were dropped for this peer (its outbox, or a sender's share of it, was full):
    /// how many, from whom.
    Missed(Arc<Missed>),
}

/// A peer, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub id: String,
    /// Who it is: the Unix user, a client certificate's name, the token's label, what its
    /// dialect says, or the name it joined the hub with.
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
    /// It joined the hub (takes messages and sees presence).
    pub member: bool,
    /// Its connection ended and the hub holds its place until it resumes or the grace ends.
    pub away: bool,
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
    outbox: Arc<Mailbox>,
    kicked: watch::Sender<Option<String>>,
    /// A shutdown notice was queued and not yet told.
    notice_pending: bool,
    /// Its hub membership, once it joined.
    member: Option<hub::Member>,
    /// Why it leaves the hub at once when its connection ends (a kick, a leave, missed
    /// pings); `None`: a member is held for the grace period.
    leaving: Option<String>,
    /// When the peer was last heard from (any request, any answer to a ping).
    last_heard: Instant,
    /// A member that resumed here from another daemon of the cluster, while its messages are
    /// replayed from the stream: what came for it meanwhile, to be queued after them.
    replaying: Option<Vec<Arc<HubMessage>>>,
}

impl Entry {
    /// Queues an event of the daemon's own without waiting; counts it as dropped when the
    /// outbox is full.
    fn push(&mut self, event: PeerEvent) -> Pushed {
        let daemon = Sender::Daemon {
            id: SERVER_ID,
            name: SERVER_ID,
        };
        self.push_from(event, daemon)
    }

    /// Queues `event` from `sender` without waiting; counts it as dropped when it does not
    /// fit.
    fn push_from(&mut self, event: PeerEvent, sender: Sender<'_>) -> Pushed {
        match self.outbox.push(event, sender) {
            Queued::Yes => Pushed::Queued,
            Queued::Dropped => {
                self.info.dropped_events += 1;
                Pushed::Full
            }
        }
    }
}

/// What became of a pushed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushed {
    Queued,
    Full,
}

/// The registry's state, under one lock.
#[derive(Default)]
struct Peers {
    entries: BTreeMap<u64, Entry>,
    /// The hub's `presence_max` (see [`HubConfig`]).
    presence_max: usize,
    stats: HubStats,
    /// Where the bytes the hub moves are counted, so that memory is given back after a burst
    /// (see `crate::memory`).
    traffic: Option<Arc<crate::memory::OutputFlow>>,
    /// The hub's slow-consumer policy.
    slow_consumer: Option<hub::SlowConsumer>,
    /// The hub's cluster, if it is in one.
    cluster: Option<hub::cluster::Cluster>,
}

#[derive(Default)]
struct Shared {
    peers: Mutex<Peers>,
    config: HubConfig,
    /// Shutdown notices queued and not yet told.
    untold: AtomicUsize,
    told: Notify,
    /// The next serial.
    next: AtomicU64,
    /// Makes ids of serials.
    sqids: sqids::Sqids,
    /// Mixed into ids in a cluster, so that they are unique in it (0: none).
    salt: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Peers> {
        // The map holds no invariant a panic could break half-way.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new serial.
    fn next_serial(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The id of serial `serial`.
    fn id_of(&self, serial: u64) -> String {
        let salt = self.salt.load(Ordering::Relaxed);
        let numbers = if salt == 0 {
            vec![serial]
        } else {
            vec![salt, serial]
        };
        // Encoding numbers cannot fail with the default alphabet; the serial itself is a
        // unique id all the same.
        self.sqids
            .encode(&numbers)
            .unwrap_or_else(|_| format!("peer{salt:x}{serial:06}"))
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
}

impl Default for PeerRegistry {
    fn default() -> PeerRegistry {
        PeerRegistry::new(HubConfig::default())
    }
}

impl std::fmt::Debug for PeerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerRegistry")
    }
}

impl PeerRegistry {
    /// An empty registry whose hub follows `config`.
    pub fn new(config: HubConfig) -> PeerRegistry {
        let sqids = sqids::Sqids::builder()
            .min_length(MIN_ID_LEN)
            .build()
            .unwrap_or_default();
        PeerRegistry {
            shared: Arc::new(Shared {
                peers: Mutex::new(Peers {
                    presence_max: config.presence_max,
                    slow_consumer: Some(config.slow_consumer),
                    ..Peers::default()
                }),
                config,
                next: AtomicU64::new(1),
                sqids,
                ..Shared::default()
            }),
        }
    }

    /// The same empty registry, counting the bytes its hub moves in `flow`.
    pub(crate) fn counting_traffic(
        config: HubConfig,
        flow: Arc<crate::memory::OutputFlow>,
    ) -> PeerRegistry {
        let registry = PeerRegistry::new(config);
        registry.shared.lock().traffic = Some(flow);
        registry
    }

    /// The hub's settings.
    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// Registers a connection as a peer; it stays listed until the handle is dropped (and,
    /// for a member of the hub, the grace period after).
    pub fn register(&self, peer: NewPeer) -> PeerHandle {
        let serial = self.shared.next_serial();
        let info = PeerInfo {
            id: self.shared.id_of(serial),
            name: peer.name,
            address: peer.address,
            dialect: peer.dialect,
            principal: peer.principal,
            connected: SystemTime::now(),
            jobs_started: 0,
            jobs: Vec::new(),
            outbox_used: 0,
            outbox_capacity: 0,
            dropped_events: 0,
            member: false,
            away: false,
        };
        let (handle, entry) = new_entry(&self.shared, serial, info);
        self.shared.lock().entries.insert(serial, entry);
        handle
    }

    /// Mixes a random salt into the ids made from now on (for a cluster).
    fn salt_ids(&self) {
        let mut bytes = [0u8; 4];
        let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
        let salt = u64::from(u32::from_le_bytes(bytes)).max(1);
        self.shared.salt.store(salt, Ordering::Relaxed);
    }

    /// Every peer, in the order they connected; in a cluster, then the other daemons'
    /// members (named `name@daemon`, at the address `daemon (cluster)`).
    pub fn list(&self) -> Vec<PeerInfo> {
        let peers = self.shared.lock();
        let local = peers.entries.values().map(|entry| PeerInfo {
            outbox_used: entry.outbox.used(),
            member: entry.member.is_some(),
            away: entry.member.as_ref().is_some_and(|m| m.away.is_some()),
            name: if entry.member.is_some() {
                peers.shown(&entry.info.name)
            } else {
                entry.info.name.clone()
            },
            ..entry.info.clone()
        });
        let remote = peers.remote_members().into_iter().map(|m| PeerInfo {
            address: m
                .name
                .rsplit_once('@')
                .map(|(_, node)| format!("{node} (cluster)"))
                .unwrap_or_default(),
            id: m.id,
            name: m.name,
            dialect: m.dialect,
            principal: None,
            connected: m.since,
            jobs_started: 0,
            jobs: Vec::new(),
            outbox_used: 0,
            outbox_capacity: 0,
            dropped_events: 0,
            member: true,
            away: m.away,
        });
        local.chain(remote).collect()
    }

    /// Notes that peer `id` started `job`.
    pub fn started(&self, id: &str, job: JobId) {
        let mut peers = self.shared.lock();
        if let Some(entry) = peers.entries.values_mut().find(|e| e.info.id == id) {
            entry.info.jobs_started += 1;
            if entry.info.jobs.len() == JOBS_REMEMBERED {
                entry.info.jobs.remove(0);
            }
            entry.info.jobs.push(job);
        }
    }

    /// Whether a request naming peer `id` may act for it: only one of its own dialect, made
    /// by the principal its connection acts for (ids are no secret: every member learns them;
    /// who may speak as a member is decided by who logged it in, never by the id alone).
    pub fn acts_for(&self, id: &str, dialect: &str, principal: &Principal) -> bool {
        self.shared.lock().entries.values().any(|e| {
            e.info.id == id
                && e.info.dialect == dialect
                && e.info.principal.as_ref() == Some(principal)
        })
    }

    /// Notes that peer `id` was heard from (it answered a ping on a connection of its own);
    /// whether there is such a peer.
    pub fn heard(&self, id: &str) -> bool {
        let mut peers = self.shared.lock();
        match peers.entries.values_mut().find(|e| e.info.id == id) {
            Some(entry) => {
                entry.last_heard = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Disconnects peer `id` (its connection says why, in its dialect, then closes); its
    /// jobs go on, and it leaves the hub at once. `reason` completes "disconnected ...", e.g.
    /// "by the daemon's owner (ferry peers kick)". Returns whether there was such a peer.
    pub fn kick(&self, id: &str, reason: &str) -> bool {
        let mut peers = self.shared.lock();
        let Some((&serial, _)) = peers.entries.iter().find(|(_, e)| e.info.id == id) else {
            return false;
        };
        hub::kick_entry(&mut peers, serial, reason);
        true
    }

    /// Disconnects every peer but `except`; the ids kicked.
    pub fn kick_all(&self, except: &str, reason: &str) -> Vec<String> {
        let mut peers = self.shared.lock();
        let serials: Vec<u64> = peers
            .entries
            .iter()
            .filter(|(_, e)| e.info.id != except)
            .map(|(serial, _)| *serial)
            .collect();
        serials
            .into_iter()
            .filter_map(|serial| hub::kick_entry(&mut peers, serial, reason))
            .collect()
    }

    /// Queues [`PeerEvent::ShuttingDown`] for every connected peer; returns how many got it
    /// (a full outbox drops it, counted; its connection closes with the daemon anyway).
    pub fn tell_all_going_down(&self) -> usize {
        let mut peers = self.shared.lock();
        let mut queued = 0;
        for entry in peers.entries.values_mut() {
            let away = entry.member.as_ref().is_some_and(|m| m.away.is_some());
            if !away
                && !entry.notice_pending
                && entry.push(PeerEvent::ShuttingDown) == Pushed::Queued
            {
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

/// A new entry for `info` (its outbox made to the hub's size), and its handle.
fn new_entry(shared: &Arc<Shared>, serial: u64, info: PeerInfo) -> (PeerHandle, Entry) {
    let capacity = shared.config.outbox.max(1);
    let outbox = Mailbox::new(capacity);
    let (kicked, kick) = watch::channel(None);
    let handle = PeerHandle {
        id: info.id.clone(),
        serial,
        events: Arc::clone(&outbox),
        kick,
        registry: Arc::downgrade(shared),
    };
    let entry = Entry {
        info: PeerInfo {
            outbox_capacity: capacity,
            ..info
        },
        outbox,
        kicked,
        notice_pending: false,
        member: None,
        leaving: None,
        last_heard: Instant::now(),
        replaying: None,
    };
    (handle, entry)
}

/// A connection's place in the registry: its id, its outbox's receiving end and its kick
/// flag. Dropping it ends the connection's place: the peer is removed, or, if it is in the
/// hub and did not leave, held for the grace period (see [`hub`]).
#[derive(Debug)]
pub struct PeerHandle {
    id: String,
    serial: u64,
    events: Arc<Mailbox>,
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
        if self.registry.strong_count() == 0 {
            return None;
        }
        Some(self.events.take().await)
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_next_event(&mut self) -> Option<PeerEvent> {
        self.events.try_take()
    }

    /// Runs `f` on this peer's entry, if the registry and the entry still exist.
    fn with_entry<T>(&self, f: impl FnOnce(&Shared, &mut Peers, u64) -> T) -> Option<T> {
        let shared = self.registry.upgrade()?;
        let mut peers = shared.lock();
        if !peers.entries.contains_key(&self.serial) {
            return None;
        }
        Some(f(&shared, &mut peers, self.serial))
    }

    /// Records who the peer turned out to be (once its dialect's handshake authenticated it).
    pub fn identify(&self, principal: Principal, name: String) {
        self.with_entry(|_, peers, serial| {
            if let Some(entry) = peers.entries.get_mut(&serial) {
                entry.info.principal = Some(principal);
                entry.info.name = name;
            }
        });
    }

    /// Notes that the peer was heard from (a request, an answer to a ping).
    pub fn heard(&self) {
        self.with_entry(|_, peers, serial| {
            if let Some(entry) = peers.entries.get_mut(&serial) {
                entry.last_heard = Instant::now();
            }
        });
    }

    /// How long the peer has been silent.
    pub fn silent_for(&self) -> Duration {
        self.with_entry(|_, peers, serial| {
            peers
                .entries
                .get(&serial)
                .map(|entry| entry.last_heard.elapsed())
        })
        .flatten()
        .unwrap_or_default()
    }

    /// The peer's kick flag, to wait on beside its events.
    pub fn kick(&self) -> Kick {
        Kick(self.kick.clone())
    }

    /// Says that this peer's connection has queued its shutdown notice.
    pub fn shutdown_told(&self) {
        self.with_entry(|shared, peers, serial| {
            if let Some(entry) = peers.entries.get_mut(&serial) {
                shared.notice_told(entry);
            }
        });
    }
}

/// A peer's kick flag (see [`PeerHandle::kick`]).
#[derive(Debug, Clone)]
pub struct Kick(watch::Receiver<Option<String>>);

impl Kick {
    /// Resolves once the peer was kicked (by the daemon's owner, or as a slow consumer), with
    /// the reason.
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
        let Some(shared) = self.registry.upgrade() else {
            return;
        };
        let mut peers = shared.lock();
        hub::connection_ended(&shared, &mut peers, self.serial);
    }
}

#[cfg(test)]
mod tests;
