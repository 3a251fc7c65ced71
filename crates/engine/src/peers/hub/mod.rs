//! The hub: peers that joined it exchange messages (to one peer, by id or name, or to
//! everyone) and see each other join and leave, whatever dialect each speaks.
//!
//! - **Order.** A message is pushed into every receiver's outbox under the registry's lock,
//!   so the messages of one sender reach each receiver in the order sent.
//! - **Slow consumers.** Pushing never waits. A full outbox drops the message for that peer
//!   and counts it, and the peer is told what it missed from whom; one member may fill only a
//!   share of another's outbox, and the daemon's and its owner's messages go ahead of
//!   members' (see [`super::mailbox`]). Under [`SlowConsumer::Disconnect`] a peer whose outbox has stayed full for
//!   the configured time is disconnected with a notice (and held, as below, so that it can
//!   come back); under [`SlowConsumer::Drop`] it only loses what did not fit.
//! - **Delayed removal.** A member whose connection ends without leaving (or being kicked, or
//!   missing its pings) keeps its id, its name and its outbox for [`HubConfig::grace`]; the
//!   others see it leave only when the grace ends. Coming back with its resume token
//!   ([`PeerHandle::resume`]) within the grace, it takes its place again and gets what was
//!   sent to it meanwhile, in order.
//! - **What a dialect cannot carry** is refused per receiver (each member says what it
//!   accepts when it joins), reported to the sender, never cut.

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;

pub mod cluster;
mod types;

use super::mailbox::Sender;
use super::{Entry, PeerEvent, PeerHandle, PeerRegistry, Peers, Pushed, Shared};
pub use types::*;
pub(in crate::peers) use types::{Away, Member};

/// Names only the daemon goes by (in any case): a member's line never looks like the
/// daemon's.
pub const RESERVED_NAMES: [&str; 3] = [SERVER_ID, "ferry", "daemon"];

/// Whether `name` is the daemon's own.
fn reserved(name: &str) -> bool {
    RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// `wanted`, or, while another member goes by it, `wanted#2`, `wanted#3`...: a name is one
/// member's while it is in the hub (held places included).
pub(super) fn unique_name(peers: &Peers, serial: u64, wanted: &str) -> String {
    let taken = |name: &str| {
        peers
            .entries
            .iter()
            .any(|(s, e)| *s != serial && e.member.is_some() && e.info.name == name)
    };
    if !taken(wanted) {
        return wanted.to_owned();
    }
    (2..)
        .map(|n| format!("{wanted}#{n}"))
        .find(|name| !taken(name))
        .unwrap_or_else(|| wanted.to_owned())
}

/// Checks a member's name.
pub fn check_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err("a name needs at least one character".into());
    }
    if chars > MAX_NAME {
        return Err(format!("a name is at most {MAX_NAME} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("a name holds no control characters".into());
    }
    if name.trim() != name {
        return Err("a name neither starts nor ends with a space".into());
    }
    Ok(())
}

impl PeerHandle {
    /// Joins the hub under `name` (default: the peer's registry name): from now on the peer
    /// takes messages its dialect `accepts` and sees others come and go, and they see it
    /// join. A name another member goes by gets a suffix (`ann#2`: [`Joined::name`] says
    /// which); the daemon's own names are refused. Joining again changes nothing but the name.
    pub fn join(&self, name: Option<String>, accepts: Accepts) -> Result<Joined, String> {
        if let Some(name) = &name {
            check_name(name)?;
        }
        let shared = self.registry.upgrade().ok_or("the daemon is going down")?;
        let mut peers = shared.lock();
        let wanted = match name {
            Some(name) => name,
            None => peers
                .entries
                .get(&self.serial)
                .ok_or("this connection has left")?
                .info
                .name
                .clone(),
        };
        if reserved(&wanted) {
            return Err(format!(
                "'{wanted}' is the daemon's own name: choose another"
            ));
        }
        let granted = unique_name(&peers, self.serial, &wanted);
        let entry = peers
            .entries
            .get_mut(&self.serial)
            .ok_or("this connection has left")?;
        entry.info.name = granted;
        let first = entry.member.is_none();
        if first {
            entry.member = Some(Member::new(resume_token(), accepts));
        }
        let (name, dialect) = (entry.info.name.clone(), entry.info.dialect.clone());
        let resume = entry.member.as_ref().map(|m| m.resume.clone());
        if first {
            announce(&mut peers, self.serial, true, String::new());
        }
        Ok(Joined {
            id: self.id.clone(),
            name: peers.shown(&name),
            resume: resume.unwrap_or_default(),
            members: members_up_to(&peers, peers.presence_max),
            total_members: member_count(&peers) as u64,
            missed: 0,
        })
        .inspect(|_| tracing::debug!(target: "ferry::presence", peer = self.id, name, dialect, "joined the hub"))
    }

    /// Takes the place this `token` holds (a member whose connection ended, within its
    /// grace): returns the handle of that place, with what was sent to it meanwhile still
    /// queued. This connection's own fresh entry goes when its handle is dropped. In a
    /// cluster, `seen` is the stream position of the last message the member was shown: a
    /// place held by another daemon is replayed from the one after (without it, from where
    /// that daemon last said the member had got to).
    pub fn resume(
        &self,
        token: &str,
        seen: Option<u64>,
    ) -> Result<(PeerHandle, Joined), ResumeError> {
        let shared = self.registry.upgrade().ok_or(ResumeError::NoSuchToken)?;
        let mut peers = shared.lock();
        let (principal, address) = match peers.entries.get(&self.serial) {
            Some(entry) => (entry.info.principal.clone(), entry.info.address.clone()),
            None => return Err(ResumeError::NoSuchToken),
        };
        let serial = peers
            .entries
            .iter()
            .find(|(_, e)| {
                e.member
                    .as_ref()
                    .is_some_and(|m| same_secret(&m.resume, token))
            })
            .map(|(serial, _)| *serial);
        let Some(serial) = serial else {
            return self.resume_remote(&shared, &mut peers, token, seen);
        };
        let entry = peers
            .entries
            .get_mut(&serial)
            .ok_or(ResumeError::NoSuchToken)?;
        if entry.info.principal != principal {
            return Err(ResumeError::NotYours);
        }
        let member = entry.member.as_mut().ok_or(ResumeError::NoSuchToken)?;
        let away = member.away.take().ok_or(ResumeError::StillConnected)?;
        let resume = member.resume.clone();
        let (kicked, kick) = watch::channel(None);
        entry.kicked = kicked;
        entry.leaving = None;
        entry.info.address = address;
        entry.last_heard = Instant::now();
        let missed = entry.info.dropped_events - away.dropped_before;
        let handle = PeerHandle {
            id: entry.info.id.clone(),
            serial,
            events: Arc::clone(&entry.outbox),
            kick,
            registry: std::sync::Arc::downgrade(&shared),
        };
        let name = entry.info.name.clone();
        peers.stats.resumed += 1;
        peers.publish(cluster::ClusterEvent::Back {
            id: handle.id.clone(),
        });
        let name = peers.shown(&name);
        tracing::debug!(target: "ferry::presence", peer = handle.id, name, "came back within its grace");
        let joined = Joined {
            id: handle.id.clone(),
            name,
            resume,
            members: members_up_to(&peers, peers.presence_max),
            total_members: member_count(&peers) as u64,
            missed,
        };
        Ok((handle, joined))
    }

    /// Sends `text` to the member `to` (an id or a name) or to every other member.
    pub fn send(&self, to: Option<&str>, text: String) -> Result<Delivery, SendError> {
        let shared = self
            .registry
            .upgrade()
            .ok_or_else(|| SendError::UnknownSender(self.id.clone()))?;
        let mut peers = shared.lock();
        send(&shared, &mut peers, Some(self.serial), to, text)
    }

    /// Leaves the hub now (the others see it leave, with `reason`); the connection goes on,
    /// out of the hub, and no place is held for it.
    pub fn leave(&self, reason: &str) {
        self.with_entry(|_, peers, serial| {
            let member = peers
                .entries
                .get(&serial)
                .is_some_and(|e| e.member.is_some());
            if member {
                announce(peers, serial, false, reason.to_owned());
                if let Some(entry) = peers.entries.get_mut(&serial) {
                    entry.member = None;
                    tracing::debug!(target: "ferry::presence", peer = entry.info.id, reason, "left the hub");
                }
            }
        });
    }

    /// The peer missed its pings: it leaves at once when its connection ends.
    pub fn missed_pings(&self, reason: &str) {
        self.with_entry(|_, peers, serial| {
            peers.stats.ping_timeouts += 1;
            if let Some(entry) = peers.entries.get_mut(&serial) {
                entry.leaving = Some(reason.to_owned());
            }
        });
    }

    /// Whether the peer joined the hub.
    pub fn is_member(&self) -> bool {
        self.with_entry(|_, peers, serial| {
            peers
                .entries
                .get(&serial)
                .is_some_and(|e| e.member.is_some())
        })
        .unwrap_or(false)
    }
}

impl PeerRegistry {
    /// Sends `text` from the peer with id `from` (a dialect whose requests name their
    /// sender), to the member `to` or to every other member.
    pub fn send_as(
        &self,
        from: &str,
        to: Option<&str>,
        text: String,
    ) -> Result<Delivery, SendError> {
        let mut peers = self.shared.lock();
        let serial = peers
            .entries
            .iter()
            .find(|(_, e)| e.info.id == from)
            .map(|(serial, _)| *serial)
            .ok_or_else(|| SendError::UnknownSender(from.to_owned()))?;
        send(&self.shared, &mut peers, Some(serial), to, text)
    }

    /// Sends `text` from the daemon itself (sender [`SERVER_ID`]).
    pub fn send_from_server(&self, to: Option<&str>, text: String) -> Result<Delivery, SendError> {
        let mut peers = self.shared.lock();
        send(&self.shared, &mut peers, None, to, text)
    }

    /// The hub's members, in the order they connected.
    pub fn members(&self) -> Vec<MemberInfo> {
        members(&self.shared.lock())
    }

    /// The name of the peer with id `id` (the daemon's own for [`SERVER_ID`]), as the hub
    /// shows it.
    pub fn name_of(&self, id: &str) -> Option<String> {
        if id == SERVER_ID {
            return Some(SERVER_ID.to_owned());
        }
        let peers = self.shared.lock();
        let local = peers
            .entries
            .values()
            .find(|e| e.info.id == id)
            .map(|e| peers.shown(&e.info.name));
        local.or_else(|| {
            peers
                .remote_members()
                .into_iter()
                .find(|m| m.id == id)
                .map(|m| m.name)
        })
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        self.shared.lock().stats
    }

    /// Ends the places held past their grace (the others see those members leave); how
    /// many. The daemon calls this every so often.
    pub fn expire_away(&self, now: Instant) -> usize {
        let mut peers = self.shared.lock();
        let expired: Vec<u64> = peers
            .entries
            .iter()
            .filter(|(_, e)| {
                e.member
                    .as_ref()
                    .and_then(|m| m.away.as_ref())
                    .is_some_and(|away| away.until <= now)
            })
            .map(|(serial, _)| *serial)
            .collect();
        let grace = self.shared.config.grace;
        let reason = format!(
            "its connection ended and it did not come back within {}s",
            grace.as_secs_f32()
        );
        peers.stats.expired += expired.len() as u64;
        remove_together(&mut peers, &expired, &reason);
        expired.len() + peers.expire_remote(now, grace)
    }
}

/// The members, as listed.
fn members(peers: &Peers) -> Vec<MemberInfo> {
    members_up_to(peers, usize::MAX)
}

/// How many members the hub has (in a cluster, every daemon's).
pub(super) fn member_count(peers: &Peers) -> usize {
    peers
        .entries
        .values()
        .filter(|e| e.member.is_some())
        .count()
        + peers.remote_count()
}

/// The first `most` members, as listed (this daemon's first).
pub(super) fn members_up_to(peers: &Peers, most: usize) -> Vec<MemberInfo> {
    let local = peers.entries.values().filter_map(|entry| {
        let member = entry.member.as_ref()?;
        Some(MemberInfo {
            id: entry.info.id.clone(),
            name: peers.shown(&entry.info.name),
            dialect: entry.info.dialect.clone(),
            since: member.joined,
            away: member.away.is_some(),
        })
    });
    local.chain(peers.remote_members()).take(most).collect()
}

/// Checks a message's text.
pub(super) fn check_text(text: &str) -> Result<(), SendError> {
    if text.is_empty() {
        return Err(SendError::Empty);
    }
    if text.len() > MAX_MESSAGE_TEXT {
        return Err(SendError::TooLong(text.len()));
    }
    Ok(())
}

/// Who a message goes to.
fn receivers(peers: &Peers, from: Option<u64>, to: Option<&str>) -> Result<Vec<u64>, SendError> {
    let is_member = |e: &&Entry| e.member.is_some();
    let Some(to) = to else {
        return Ok(peers
            .entries
            .iter()
            .filter(|(serial, e)| Some(**serial) != from && e.member.is_some())
            .map(|(serial, _)| *serial)
            .collect());
    };
    if let Some((serial, _)) = peers
        .entries
        .iter()
        .find(|(_, e)| e.info.id == to && e.member.is_some())
    {
        return Ok(vec![*serial]);
    }
    let named: Vec<(&u64, &Entry)> = peers
        .entries
        .iter()
        .filter(|(_, e)| e.info.name == to && is_member(e))
        .collect();
    match named.as_slice() {
        [] => Err(SendError::NoSuchPeer(to.to_owned())),
        [(serial, _)] => Ok(vec![**serial]),
        many => Err(SendError::Ambiguous {
            name: to.to_owned(),
            ids: many.iter().map(|(_, e)| e.info.id.clone()).collect(),
        }),
    }
}

/// Who sends a message.
pub(in crate::peers) struct Author {
    /// Its id ([`SERVER_ID`] for the daemon).
    pub(in crate::peers) id: String,
    /// Its name.
    pub(in crate::peers) name: String,
    /// Who it acts for (the owner, for the daemon).
    pub(in crate::peers) principal: Option<crate::principal::Principal>,
}

impl Author {
    /// Whether it speaks for the daemon's owner (its messages take the daemon's lane).
    fn is_owner(&self) -> bool {
        self.principal.as_ref().is_some_and(|p| p.is_owner())
    }
}

/// The author of a message from `from` (a serial; `None`: the daemon), heard from now.
fn author(peers: &mut Peers, from: Option<u64>) -> Result<Author, SendError> {
    let Some(serial) = from else {
        return Ok(Author {
            id: SERVER_ID.to_owned(),
            name: SERVER_ID.to_owned(),
            principal: Some(crate::principal::Principal::Owner),
        });
    };
    let entry = peers
        .entries
        .get_mut(&serial)
        .ok_or_else(|| SendError::UnknownSender(String::new()))?;
    entry.last_heard = Instant::now();
    Ok(Author {
        id: entry.info.id.clone(),
        name: entry.info.name.clone(),
        principal: entry.info.principal.clone(),
    })
}

/// Sends a message from `from` (a serial; `None`: the daemon) under the lock.
fn send(
    shared: &Shared,
    peers: &mut Peers,
    from: Option<u64>,
    to: Option<&str>,
    text: String,
) -> Result<Delivery, SendError> {
    check_text(&text)?;
    let author = author(peers, from)?;
    if peers.cluster.is_some() {
        return cluster::send(peers, author, to, text);
    }
    let targets = receivers(peers, from, to)?;
    // The daemon's and its owner's messages take the daemon's lane; a member's, its share.
    let ahead = author.is_owner() || from.is_none();
    let message = Arc::new(HubMessage {
        from: author.id,
        from_name: author.name,
        to: to
            .and(targets.first())
            .and_then(|s| peers.entries.get(s))
            .map(|e| e.info.id.clone()),
        sent: SystemTime::now(),
        text,
        framed: OnceLock::new(),
        seq: 0,
        ahead,
    });
    peers.stats.messages += 1;
    let mut delivery = Delivery::default();
    let policy = shared.config.slow_consumer;
    for serial in targets {
        let Some(entry) = peers.entries.get_mut(&serial) else {
            continue;
        };
        let Some(member) = &entry.member else {
            continue;
        };
        if let Err(reason) = (member.accepts)(&message.text) {
            peers.stats.refused += 1;
            delivery.refused.push(Refused {
                peer: entry.info.id.clone(),
                name: entry.info.name.clone(),
                reason,
            });
            continue;
        }
        let sender = match from {
            Some(serial) if !ahead => Sender::Member {
                serial,
                id: &message.from,
                name: &message.from_name,
            },
            _ => Sender::Daemon {
                id: &message.from,
                name: &message.from_name,
            },
        };
        match entry.push_from(PeerEvent::Message(Arc::clone(&message)), sender) {
            Pushed::Queued => {
                delivery.delivered += 1;
                peers.stats.deliveries += 1;
            }
            Pushed::Full => {
                peers.stats.dropped += 1;
                delivery.dropped.push(entry.info.id.clone());
                if slow_consumer(entry, policy) {
                    peers.stats.slow_disconnects += 1;
                }
            }
        }
    }
    if let Some(traffic) = &peers.traffic {
        traffic.add(delivery.delivered * (message.text.len() + 64));
    }
    Ok(delivery)
}

/// Applies the slow-consumer policy to a member a message was just dropped for; whether it is
/// disconnected now. A member is slow when it has taken nothing from its outbox for the
/// policy's time while messages for it were being dropped: one that reads steadily, however
/// slowly, only misses what did not fit (and is told so), as when one sender floods it.
pub(super) fn slow_consumer(entry: &mut Entry, policy: SlowConsumer) -> bool {
    let SlowConsumer::Disconnect { after } = policy else {
        return false;
    };
    let Some(member) = &entry.member else {
        return false;
    };
    if member.away.is_some() || entry.kicked.borrow().is_some() {
        return false;
    }
    if entry
        .outbox
        .stalled_for()
        .is_none_or(|stalled| stalled < after)
    {
        return false;
    }
    let reason = format!(
        "as a slow consumer: it read nothing for {}s while messages for it were being dropped (it may come back within its grace period)",
        after.as_secs_f32()
    );
    tracing::warn!(target: "ferry::presence", peer = entry.info.id, "{reason}");
    entry.kicked.send_replace(Some(reason));
    true
}

/// Tells every other member that the member `subject` joined or left (unless the hub is
/// larger than `presence_max`); in a cluster, tells the cluster, and every daemon tells its
/// own members as it reads it.
fn announce(peers: &mut Peers, subject: u64, joined: bool, reason: String) {
    if peers.cluster.is_some() {
        peers.publish_presence(subject, joined, reason);
        return;
    }
    let Some(entry) = peers.entries.get(&subject) else {
        return;
    };
    let presence = presence_of(entry, joined, reason);
    let id = entry.info.id.clone();
    announce_here(peers, presence, Some(&id));
}

/// The notice that `entry` joined or left.
fn presence_of(entry: &Entry, joined: bool, reason: String) -> Presence {
    Presence {
        peer: entry.info.id.clone(),
        name: entry.info.name.clone(),
        dialect: entry.info.dialect.clone(),
        joined,
        reason,
    }
}

/// Tells this daemon's members (but `except`) of a join or leave (unless the hub is larger
/// than `presence_max`).
pub(super) fn announce_here(peers: &mut Peers, presence: Presence, except: Option<&str>) {
    if member_count(peers) > peers.presence_max {
        peers.stats.unannounced += 1;
        return;
    }
    let presence = Arc::new(presence);
    let (mut pushed, mut dropped) = (0, 0);
    for entry in peers.entries.values_mut() {
        if Some(entry.info.id.as_str()) != except && entry.member.is_some() {
            match entry.push(PeerEvent::Presence(Arc::clone(&presence))) {
                Pushed::Queued => pushed += 1,
                Pushed::Full => dropped += 1,
            }
        }
    }
    peers.stats.dropped += dropped;
    if let Some(traffic) = &peers.traffic {
        traffic.add(pushed * 128);
    }
}

/// Removes an entry; a member's leave is announced.
fn remove(peers: &mut Peers, serial: u64, reason: String) {
    let member = peers
        .entries
        .get(&serial)
        .is_some_and(|e| e.member.is_some());
    if member {
        if let Some(entry) = peers.entries.get(&serial) {
            tracing::debug!(target: "ferry::presence", peer = entry.info.id, name = entry.info.name, reason, "left the hub");
        }
        announce(peers, serial, false, reason);
    }
    peers.entries.remove(&serial);
}

/// Removes entries that end together (the places whose grace ended in one sweep), each
/// member's leave announced with `reason`. On a daemon outside a cluster they are all taken
/// out first, and each leave is then told to the members that stay only: a held place is
/// not told of the others' leaves, which nobody would read (with a thousand places ending
/// together that was half a million notices queued, and 9 MB, for nothing). In a cluster
/// each leave is published, and every daemon tells its members as it reads it. What the
/// places held counts toward the next trim, as a closed connection's does.
fn remove_together(peers: &mut Peers, serials: &[u64], reason: &str) {
    if let Some(traffic) = &peers.traffic {
        traffic.add(serials.len() * crate::memory::CONNECTION_END_WEIGHT);
    }
    if peers.cluster.is_some() {
        for serial in serials {
            remove(peers, *serial, reason.to_owned());
        }
        return;
    }
    let gone: Vec<Entry> = serials
        .iter()
        .filter_map(|serial| peers.entries.remove(serial))
        .collect();
    for entry in gone.iter().filter(|entry| entry.member.is_some()) {
        tracing::debug!(target: "ferry::presence", peer = entry.info.id, name = entry.info.name, reason, "left the hub");
        announce_here(peers, presence_of(entry, false, reason.to_owned()), None);
    }
}

/// Kicks one entry: a connected peer is told (its connection closes, and it leaves the hub
/// at once); a held place ends now. Its id, if there was such an entry.
pub(super) fn kick_entry(peers: &mut Peers, serial: u64, reason: &str) -> Option<String> {
    let entry = peers.entries.get_mut(&serial)?;
    let id = entry.info.id.clone();
    let away = entry.member.as_ref().is_some_and(|m| m.away.is_some());
    if away {
        remove(peers, serial, format!("disconnected {reason}"));
    } else {
        entry.leaving = Some(format!("disconnected {reason}"));
        entry.kicked.send_replace(Some(reason.to_owned()));
    }
    Some(id)
}

/// A connection ended: its entry goes, or, for a member that did not leave, is held for the
/// grace period with its outbox.
pub(super) fn connection_ended(shared: &Shared, peers: &mut Peers, serial: u64) {
    let grace = shared.config.grace;
    let Some(entry) = peers.entries.get_mut(&serial) else {
        return;
    };
    // A peer that leaves needs no notice.
    shared.notice_told(entry);
    let hold = entry.member.is_some() && entry.leaving.is_none() && !grace.is_zero();
    if hold {
        let dropped_before = entry.info.dropped_events;
        if let Some(member) = &mut entry.member {
            member.away = Some(Away {
                until: Instant::now() + grace,
                dropped_before,
            });
        }
        let id = entry.info.id.clone();
        tracing::debug!(target: "ferry::presence", peer = id, "connection ended; its place is held");
        if let Some(entry) = peers.entries.get(&serial) {
            let taken = peers.taken_by(entry);
            peers.publish(cluster::ClusterEvent::Away { id, taken });
        }
    } else {
        let reason = entry
            .leaving
            .take()
            .unwrap_or_else(|| "its connection ended".to_owned());
        remove(peers, serial, reason);
    }
}

/// A fresh resume token: 128 random bits, in hex.
fn resume_token() -> String {
    let mut bytes = [0u8; 16];
    // The kernel's random source does not fail for 16 bytes; a zero token would still be
    // unique to no one but never matched by a careless compare (see same_secret).
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets without stopping at the first difference.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
