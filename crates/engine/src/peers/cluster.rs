//! One hub across many daemons: the registry's side of a cluster link.
//!
//! The daemon's cluster task (in `ferry_daemon`) carries [`ClusterEvent`]s between this
//! registry and a NATS JetStream stream that every daemon of the cluster publishes into and
//! reads in full, in the stream's one order. The registry never speaks NATS: it queues the
//! events its members cause on [`ClusterLink::events`] and is handed each event of the stream
//! with [`PeerRegistry::apply`].
//!
//! - **One order.** When the registry is in a cluster, no message is delivered when it is
//!   sent: it is published, and every daemon (the sender's own included) delivers it to its
//!   own members when it reads it from the stream. So every receiver sees every sender's
//!   messages in the stream's order, wherever they are.
//! - **One member list.** A daemon announces its own members' joins and leaves in the stream
//!   and keeps the others' members in a table of its own; names are shown qualified by their
//!   daemon (`ann@build1`). A daemon speaks for its own members only: an event about a member
//!   homed elsewhere is ignored.
//! - **Held places.** A member whose connection ends is held, as on one daemon, and its daemon
//!   says so with the last stream position it had taken. Resuming on another daemon (its join
//!   carries a hash of its resume token), the member's messages are replayed from the stream
//!   from that position; its old daemon drops its place without a word. A daemon that stops
//!   or falls silent has its members held by everyone for the grace period.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::hub::{
    announce_here, check_text, members_up_to, Accepts, Delivery, HubMessage, Joined, Member,
    Presence, Refused, ResumeError, SendError, SERVER_ID,
};
use super::mailbox::Sender;
use super::{Entry, PeerEvent, PeerHandle, PeerInfo, PeerRegistry, Peers, Pushed};
use crate::principal::Principal;

/// A member as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Its id (unique in the cluster).
    pub id: String,
    /// Its name, unqualified.
    pub name: String,
    /// The dialect its connection speaks.
    pub dialect: String,
    /// When it joined, in milliseconds since the epoch.
    pub since_ms: u64,
    /// Who it acts for, as its daemon authenticated it.
    pub principal: String,
    /// SHA-256 of its resume token, in hex: another daemon can take its held place for the
    /// token's holder without ever seeing the token.
    pub place: String,
}

/// What a daemon tells the cluster. The origin daemon is not in the event: it is the subject
/// the event was published on, which NATS permissions can tie to the daemon's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A member of the origin joined.
    Joined(ClusterMember),
    /// A member of the origin left (or its held place ended).
    Left {
        /// Its id.
        id: String,
        /// Its name, unqualified.
        name: String,
        /// Its dialect.
        dialect: String,
        /// Why.
        reason: String,
    },
    /// A member's connection ended; the origin holds its place. It had taken every message
    /// up to stream position `taken`.
    Away {
        /// Its id.
        id: String,
        /// The last stream position it had taken.
        taken: u64,
    },
    /// A held member came back to the origin.
    Back {
        /// Its id.
        id: String,
    },
    /// A held member resumed on the origin (its old daemon drops its place).
    Moved(ClusterMember),
    /// A message from a member of the origin (or from the origin itself: [`SERVER_ID`]).
    Message {
        /// The sender's id.
        from: String,
        /// The sender's name, unqualified.
        from_name: String,
        /// Who the sender acts for, as the origin authenticated it.
        principal: String,
        /// The receiver's id; none: everyone.
        to: Option<String>,
        /// When it was sent, in milliseconds since the epoch.
        sent_ms: u64,
        /// Its text.
        text: String,
    },
    /// The origin is stopping: its members are held everywhere for the grace period.
    Stopping,
}

/// A daemon's members, for a daemon that joins the cluster (or sees it again).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// Its members, and for each one held, the stream position it had taken.
    pub members: Vec<(ClusterMember, Option<u64>)>,
    /// The last stream position the daemon had applied.
    pub processed: u64,
}

/// A member resuming here wants its messages from the stream, `from` to `to` (both included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The member's id.
    pub id: String,
    /// The first stream position to read.
    pub from: u64,
    /// The last.
    pub to: u64,
}

/// How the registry reaches the daemon's cluster task.
#[derive(Debug)]
pub struct ClusterLink {
    /// This daemon's name in the cluster.
    pub node: String,
    /// Events to publish, in order.
    pub events: mpsc::Sender<ClusterEvent>,
    /// Replays for members resuming here.
    pub replays: mpsc::UnboundedSender<Replay>,
    /// What a member of each dialect accepts.
    pub accepts: fn(&str) -> Accepts,
}

/// The registry's cluster state.
pub(super) struct Cluster {
    link: ClusterLink,
    /// Other daemons' members, by id.
    remote: std::collections::BTreeMap<String, Remote>,
    /// The last stream position applied.
    processed: u64,
    /// Events that could not be queued for publishing (the link was that far behind).
    unpublished: u64,
}

/// A member of another daemon.
struct Remote {
    member: ClusterMember,
    node: String,
    away: Option<RemoteAway>,
}

/// A remote member's held place.
struct RemoteAway {
    until: Instant,
    /// The stream position it had taken.
    taken: u64,
}

/// Milliseconds since the epoch.
fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A time from milliseconds since the epoch.
fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// SHA-256 of a resume token, in hex.
pub(super) fn place_of(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A member sender's lane key in outboxes: its id hashed, kept apart from registry serials.
fn lane_of(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish() | (1 << 63)
}

impl Cluster {
    /// A name qualified by its daemon.
    fn qualified(name: &str, node: &str) -> String {
        format!("{name}@{node}")
    }
}

impl Peers {
    /// Queues `event` for the cluster; whether it was taken.
    pub(super) fn publish(&mut self, event: ClusterEvent) -> bool {
        let Some(cluster) = &mut self.cluster else {
            return false;
        };
        match cluster.link.events.try_send(event) {
            Ok(()) => true,
            Err(_) => {
                cluster.unpublished += 1;
                tracing::warn!(
                    target: "ferry::presence",
                    "the cluster link is behind: a hub event was not published"
                );
                false
            }
        }
    }

    /// This daemon's name in its cluster, if it is in one.
    pub(super) fn node(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.link.node.as_str())
    }

    /// A local member's name as the hub shows it (qualified in a cluster).
    pub(super) fn shown(&self, name: &str) -> String {
        match self.node() {
            Some(node) => Cluster::qualified(name, node),
            None => name.to_owned(),
        }
    }

    /// How many members other daemons have.
    pub(super) fn remote_count(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| c.remote.len())
    }

    /// Other daemons' members, as listed.
    pub(super) fn remote_members(&self) -> Vec<super::MemberInfo> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let mut members: Vec<&Remote> = cluster.remote.values().collect();
        members.sort_by(|a, b| (&a.node, a.member.since_ms).cmp(&(&b.node, b.member.since_ms)));
        members
            .into_iter()
            .map(|r| super::MemberInfo {
                id: r.member.id.clone(),
                name: Cluster::qualified(&r.member.name, &r.node),
                dialect: r.member.dialect.clone(),
                since: from_millis(r.member.since_ms),
                away: r.away.is_some(),
            })
            .collect()
    }

    /// The cluster member record of a local entry.
    fn cluster_member(entry: &Entry) -> Option<ClusterMember> {
        let member = entry.member.as_ref()?;
        Some(ClusterMember {
            id: entry.info.id.clone(),
            name: entry.info.name.clone(),
            dialect: entry.info.dialect.clone(),
            since_ms: millis(member.joined),
            principal: entry
                .info
                .principal
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            place: place_of(&member.resume),
        })
    }

    /// Announces a local member's join (or leave) to the cluster.
    pub(super) fn publish_presence(&mut self, serial: u64, joined: bool, reason: String) {
        let Some(entry) = self.entries.get(&serial) else {
            return;
        };
        let event = if joined {
            match Self::cluster_member(entry) {
                Some(member) => ClusterEvent::Joined(member),
                None => return,
            }
        } else {
            ClusterEvent::Left {
                id: entry.info.id.clone(),
                name: entry.info.name.clone(),
                dialect: entry.info.dialect.clone(),
                reason,
            }
        };
        self.publish(event);
    }

    /// Where a member that is away had got to: the message before the oldest still in its
    /// outbox, or the last applied.
    pub(super) fn taken_by(&self, entry: &Entry) -> u64 {
        let processed = self.cluster.as_ref().map_or(0, |c| c.processed);
        entry
            .outbox
            .oldest_message_seq()
            .map_or(processed, |seq| seq.saturating_sub(1))
    }

    /// Ends remote places held past `now`, telling local members they left.
    pub(super) fn expire_remote(&mut self, now: Instant, grace: Duration) -> usize {
        let Some(cluster) = &mut self.cluster else {
            return 0;
        };
        let expired: Vec<Remote> = {
            let ids: Vec<String> = cluster
                .remote
                .iter()
                .filter(|(_, r)| r.away.as_ref().is_some_and(|a| a.until <= now))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| cluster.remote.remove(id))
                .collect()
        };
        let reason = format!(
            "its connection ended and it did not come back within {}s",
            grace.as_secs_f32()
        );
        for remote in &expired {
            self.stats.expired += 1;
            let presence = Presence {
                peer: remote.member.id.clone(),
                name: Cluster::qualified(&remote.member.name, &remote.node),
                dialect: remote.member.dialect.clone(),
                joined: false,
                reason: reason.clone(),
            };
            announce_here(self, presence, None);
        }
        expired.len()
    }
}

/// A receiver of a message sent in a cluster.
struct Target {
    id: String,
    name: String,
    accepts: Accepts,
}

/// Who a message from `from` goes to, in the whole cluster.
fn targets(peers: &Peers, from: &str, to: Option<&str>) -> Result<Vec<Target>, SendError> {
    let Some(cluster) = &peers.cluster else {
        return Ok(Vec::new());
    };
    let node = cluster.link.node.as_str();
    let accepts_of = cluster.link.accepts;
    let mut all: Vec<Target> = peers
        .entries
        .values()
        .filter_map(|e| {
            let member = e.member.as_ref()?;
            Some(Target {
                id: e.info.id.clone(),
                name: Cluster::qualified(&e.info.name, node),
                accepts: member.accepts,
            })
        })
        .collect();
    all.extend(cluster.remote.values().map(|r| Target {
        id: r.member.id.clone(),
        name: Cluster::qualified(&r.member.name, &r.node),
        accepts: accepts_of(&r.member.dialect),
    }));
    let Some(to) = to else {
        all.retain(|t| t.id != from);
        return Ok(all);
    };
    if let Some(index) = all.iter().position(|t| t.id == to || t.name == to) {
        return Ok(vec![all.swap_remove(index)]);
    }
    // An unqualified name names the one member of that name anywhere.
    let named: Vec<Target> = all
        .into_iter()
        .filter(|t| t.name.rsplit_once('@').is_some_and(|(name, _)| name == to))
        .collect();
    match named.len() {
        0 => Err(SendError::NoSuchPeer(to.to_owned())),
        1 => Ok(named),
        _ => Err(SendError::Ambiguous {
            name: to.to_owned(),
            ids: named.into_iter().map(|t| t.name).collect(),
        }),
    }
}

/// Sends a message in a cluster: checked and published here, delivered by every daemon as it
/// reads it from the stream.
pub(super) fn send(
    peers: &mut Peers,
    from: Option<u64>,
    to: Option<&str>,
    text: String,
) -> Result<Delivery, SendError> {
    check_text(&text)?;
    let (from_id, from_name, principal) = match from {
        Some(serial) => {
            let entry = peers
                .entries
                .get_mut(&serial)
                .ok_or_else(|| SendError::UnknownSender(String::new()))?;
            entry.last_heard = Instant::now();
            let principal = entry
                .info
                .principal
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            (entry.info.id.clone(), entry.info.name.clone(), principal)
        }
        None => (
            SERVER_ID.to_owned(),
            SERVER_ID.to_owned(),
            Principal::Owner.to_string(),
        ),
    };
    let targets = targets(peers, &from_id, to)?;
    let mut delivery = Delivery::default();
    for target in &targets {
        match (target.accepts)(&text) {
            Ok(()) => delivery.delivered += 1,
            Err(reason) => delivery.refused.push(Refused {
                peer: target.id.clone(),
                name: target.name.clone(),
                reason,
            }),
        }
    }
    peers.stats.refused += delivery.refused.len() as u64;
    if to.is_some() && delivery.delivered == 0 {
        // Its one receiver cannot carry it: nothing to publish.
        return Ok(delivery);
    }
    let event = ClusterEvent::Message {
        from: from_id,
        from_name,
        principal,
        to: to.and(targets.first()).map(|t| t.id.clone()),
        sent_ms: millis(SystemTime::now()),
        text,
    };
    if !peers.publish(event) {
        return Err(SendError::ClusterBehind);
    }
    peers.stats.messages += 1;
    Ok(delivery)
}

impl PeerRegistry {
    /// Joins this registry's hub to a cluster whose stream was read up to `processed`.
    pub fn join_cluster(&self, link: ClusterLink, processed: u64) {
        let mut peers = self.shared.lock();
        peers.cluster = Some(Cluster {
            link,
            remote: Default::default(),
            processed,
            unpublished: 0,
        });
        // Ids must be unique in the whole cluster from now on.
        self.salt_ids();
    }

    /// This daemon's name in its cluster, if it is in one.
    pub fn cluster_node(&self) -> Option<String> {
        self.shared.lock().node().map(str::to_owned)
    }

    /// The last stream position applied.
    pub fn cluster_processed(&self) -> u64 {
        self.shared
            .lock()
            .cluster
            .as_ref()
            .map_or(0, |c| c.processed)
    }

    /// Hub events not published because the link was behind.
    pub fn cluster_unpublished(&self) -> u64 {
        self.shared
            .lock()
            .cluster
            .as_ref()
            .map_or(0, |c| c.unpublished)
    }

    /// This daemon's members, for a daemon that asks.
    pub fn roster(&self) -> Roster {
        let peers = self.shared.lock();
        let members = peers
            .entries
            .values()
            .filter_map(|entry| {
                let member = Peers::cluster_member(entry)?;
                let away = entry
                    .member
                    .as_ref()
                    .and_then(|m| m.away.as_ref())
                    .map(|_| peers.taken_by(entry));
                Some((member, away))
            })
            .collect();
        Roster {
            members,
            processed: peers.cluster.as_ref().map_or(0, |c| c.processed),
        }
    }

    /// Takes in the members of daemon `node` (at start, or when it is seen again): new ones
    /// are announced, known ones are no longer held.
    pub fn apply_roster(&self, node: &str, roster: Roster) {
        let mut peers = self.shared.lock();
        let grace = self.shared.config.grace;
        for (member, away) in roster.members {
            let away = away.map(|taken| RemoteAway {
                until: Instant::now() + grace,
                taken,
            });
            upsert_remote(&mut peers, node, member, away);
        }
    }

    /// Daemon `node` stopped, or fell silent: its members are held for the grace period; a
    /// member resuming elsewhere gets its messages from stream position `processed` on.
    pub fn node_gone(&self, node: &str, processed: u64) {
        let mut peers = self.shared.lock();
        let until = Instant::now() + self.shared.config.grace;
        if let Some(cluster) = &mut peers.cluster {
            for remote in cluster.remote.values_mut().filter(|r| r.node == node) {
                remote.away.get_or_insert(RemoteAway {
                    until,
                    taken: processed,
                });
            }
        }
    }

    /// Applies the event at stream position `seq`, published by daemon `origin`.
    pub fn apply(&self, seq: u64, origin: &str, event: ClusterEvent) {
        let mut peers = self.shared.lock();
        let grace = self.shared.config.grace;
        let Some(cluster) = &mut peers.cluster else {
            return;
        };
        let gap = seq.saturating_sub(cluster.processed.saturating_add(1));
        cluster.processed = cluster.processed.max(seq);
        let own = origin == cluster.link.node;
        if gap > 0 && cluster.processed > gap {
            tell_missed(
                &mut peers,
                gap,
                "the cluster's stream (events lost in NATS)",
            );
        }
        match event {
            ClusterEvent::Message {
                from,
                from_name,
                principal,
                to,
                sent_ms,
                text,
            } => {
                if own || speaks_for(&peers, origin, &from) {
                    let message = Arc::new(HubMessage {
                        from,
                        from_name: Cluster::qualified(&from_name, origin),
                        to,
                        sent: from_millis(sent_ms),
                        text,
                        framed: OnceLock::new(),
                        seq,
                    });
                    deliver(&mut peers, &message, principal == "owner", None);
                }
            }
            ClusterEvent::Joined(member) => {
                let presence = presence_of(&member, origin, true, String::new());
                if !own {
                    upsert_remote(&mut peers, origin, member, None);
                } else {
                    announce_here(&mut peers, presence, Some(&member.id));
                }
            }
            ClusterEvent::Left {
                id,
                name,
                dialect,
                reason,
            } => {
                let known = own || remove_remote(&mut peers, origin, &id);
                if known {
                    let presence = Presence {
                        peer: id.clone(),
                        name: Cluster::qualified(&name, origin),
                        dialect,
                        joined: false,
                        reason,
                    };
                    announce_here(&mut peers, presence, Some(&id));
                }
            }
            ClusterEvent::Away { id, taken } => {
                if let Some(remote) = remote_of(&mut peers, origin, &id) {
                    remote.away = Some(RemoteAway {
                        until: Instant::now() + grace,
                        taken,
                    });
                }
            }
            ClusterEvent::Back { id } => {
                if let Some(remote) = remote_of(&mut peers, origin, &id) {
                    remote.away = None;
                }
            }
            ClusterEvent::Moved(member) => {
                if !own {
                    moved_away(&mut peers, origin, member);
                }
            }
            ClusterEvent::Stopping => {
                drop(peers);
                self.node_gone(origin, seq);
            }
        }
    }

    /// Messages replayed from the stream for a member that resumed here, then what came for it
    /// meanwhile.
    pub fn replayed(&self, id: &str, events: Vec<(u64, String, ClusterEvent)>, lost: u64) {
        let mut peers = self.shared.lock();
        let Some((&serial, _)) = peers.entries.iter().find(|(_, e)| e.info.id == id) else {
            return;
        };
        if lost > 0 {
            tell_missed_one(&mut peers, serial, lost);
        }
        for (seq, origin, event) in events {
            if let ClusterEvent::Message {
                from,
                from_name,
                principal,
                to,
                sent_ms,
                text,
            } = event
            {
                if from == id || to.as_deref().is_some_and(|to| to != id) {
                    continue;
                }
                let message = Arc::new(HubMessage {
                    from,
                    from_name: Cluster::qualified(&from_name, &origin),
                    to,
                    sent: from_millis(sent_ms),
                    text,
                    framed: OnceLock::new(),
                    seq,
                });
                push_message(&mut peers, serial, &message, principal == "owner");
            }
        }
        let waiting = peers
            .entries
            .get_mut(&serial)
            .and_then(|e| e.replaying.take())
            .unwrap_or_default();
        for message in waiting {
            let owner = message.from == SERVER_ID;
            push_message(&mut peers, serial, &message, owner);
        }
    }
}

impl PeerHandle {
    /// Takes a place held for `token` by another daemon of the cluster: a new entry with the
    /// member's id and name, whose messages since it was last served are replayed.
    pub(super) fn resume_remote(
        &self,
        shared: &Arc<super::Shared>,
        peers: &mut Peers,
        token: &str,
    ) -> Result<(PeerHandle, Joined), ResumeError> {
        let place = place_of(token);
        let (info, principal) = match peers.entries.get(&self.serial) {
            Some(entry) => (entry.info.clone(), entry.info.principal.clone()),
            None => return Err(ResumeError::NoSuchToken),
        };
        let cluster = peers.cluster.as_mut().ok_or(ResumeError::NoSuchToken)?;
        let (id, remote) = cluster
            .remote
            .iter()
            .find(|(_, r)| r.member.place == place)
            .ok_or(ResumeError::NoSuchToken)?;
        let Some(away) = &remote.away else {
            return Err(ResumeError::StillConnected);
        };
        let who = principal.as_ref().map(ToString::to_string);
        if who.as_deref() != Some(remote.member.principal.as_str()) {
            return Err(ResumeError::NotYours);
        }
        let (id, from) = (id.clone(), away.taken.saturating_add(1));
        let remote = cluster.remote.remove(&id).ok_or(ResumeError::NoSuchToken)?;
        let to = cluster.processed;
        let accepts = (cluster.link.accepts)(&info.dialect);
        if from <= to {
            let _ = cluster.link.replays.send(Replay {
                id: id.clone(),
                from,
                to,
            });
        }
        let serial = shared.next_serial();
        let name = super::hub::unique_name(peers, serial, &remote.member.name);
        let joined = from_millis(remote.member.since_ms);
        let (handle, mut entry) = super::new_entry(
            shared,
            serial,
            PeerInfo {
                id: id.clone(),
                name: name.clone(),
                ..info
            },
        );
        entry.member = Some(Member::resumed(token, accepts, joined));
        entry.replaying = (from <= to).then(Vec::new);
        peers.entries.insert(serial, entry);
        peers.stats.resumed += 1;
        if let Some(member) = peers.entries.get(&serial).and_then(Peers::cluster_member) {
            peers.publish(ClusterEvent::Moved(member));
        }
        tracing::debug!(target: "ferry::presence", peer = id, from = remote.node, "resumed here from another daemon");
        let joined = Joined {
            id,
            name: peers.shown(&name),
            resume: token.to_owned(),
            members: members_up_to(peers, peers.presence_max),
            total_members: super::hub::member_count(peers) as u64,
            missed: 0,
        };
        Ok((handle, joined))
    }
}

/// Whether `origin` is the home of member `from` (a daemon speaks for its own members only).
fn speaks_for(peers: &Peers, origin: &str, from: &str) -> bool {
    if from == SERVER_ID {
        return true;
    }
    let Some(cluster) = &peers.cluster else {
        return false;
    };
    let ok = cluster.remote.get(from).is_some_and(|r| r.node == origin);
    if !ok {
        tracing::warn!(
            origin,
            from,
            "a daemon spoke for a member it does not hold: ignored"
        );
    }
    ok
}

/// The remote member `id`, if `origin` is its home.
fn remote_of<'a>(peers: &'a mut Peers, origin: &str, id: &str) -> Option<&'a mut Remote> {
    peers
        .cluster
        .as_mut()?
        .remote
        .get_mut(id)
        .filter(|r| r.node == origin)
}

/// Adds (or refreshes) a member of daemon `node`; a new one is announced here.
fn upsert_remote(peers: &mut Peers, node: &str, member: ClusterMember, away: Option<RemoteAway>) {
    let Some(cluster) = &mut peers.cluster else {
        return;
    };
    if node == cluster.link.node {
        return;
    }
    let presence = presence_of(&member, node, true, String::new());
    let id = member.id.clone();
    let new = cluster
        .remote
        .insert(
            id.clone(),
            Remote {
                member,
                node: node.to_owned(),
                away,
            },
        )
        .is_none();
    if new {
        announce_here(peers, presence, Some(&id));
    }
}

/// Removes member `id` of `origin`; whether it was known.
fn remove_remote(peers: &mut Peers, origin: &str, id: &str) -> bool {
    let Some(cluster) = &mut peers.cluster else {
        return false;
    };
    if cluster.remote.get(id).is_some_and(|r| r.node == origin) {
        cluster.remote.remove(id);
        true
    } else {
        false
    }
}

/// A member resumed on daemon `origin`: if it was held here, its place goes without a word;
/// everyone else's table follows it.
fn moved_away(peers: &mut Peers, origin: &str, member: ClusterMember) {
    let held_here = peers
        .entries
        .iter()
        .find(|(_, e)| e.info.id == member.id && e.member.is_some())
        .map(|(serial, _)| *serial);
    if let Some(serial) = held_here {
        peers.entries.remove(&serial);
    }
    if let Some(cluster) = &mut peers.cluster {
        cluster.remote.insert(
            member.id.clone(),
            Remote {
                member,
                node: origin.to_owned(),
                away: None,
            },
        );
    }
}

fn presence_of(member: &ClusterMember, node: &str, joined: bool, reason: String) -> Presence {
    Presence {
        peer: member.id.clone(),
        name: Cluster::qualified(&member.name, node),
        dialect: member.dialect.clone(),
        joined,
        reason,
    }
}

/// Delivers a message read from the stream to this daemon's members it is for.
fn deliver(peers: &mut Peers, message: &Arc<HubMessage>, from_owner: bool, only: Option<u64>) {
    let serials: Vec<u64> = peers
        .entries
        .iter()
        .filter(|(serial, e)| {
            e.member.is_some()
                && only.is_none_or(|o| o == **serial)
                && match &message.to {
                    Some(to) => e.info.id == *to,
                    None => e.info.id != message.from,
                }
        })
        .map(|(serial, _)| *serial)
        .collect();
    for serial in serials {
        push_message(peers, serial, message, from_owner);
    }
}

/// Queues a message for one local member (held back while its replay is on its way).
fn push_message(peers: &mut Peers, serial: u64, message: &Arc<HubMessage>, from_owner: bool) {
    let policy = peers
        .slow_consumer
        .unwrap_or(super::hub::SlowConsumer::Drop);
    let Some(entry) = peers.entries.get_mut(&serial) else {
        return;
    };
    if let Some(waiting) = &mut entry.replaying {
        waiting.push(Arc::clone(message));
        return;
    }
    let Some(member) = &entry.member else {
        return;
    };
    if (member.accepts)(&message.text).is_err() {
        // The sender's daemon reported it.
        return;
    }
    let lane = lane_of(&message.from);
    let sender = if from_owner || message.from == SERVER_ID {
        Sender::Daemon {
            id: &message.from,
            name: &message.from_name,
        }
    } else {
        Sender::Member {
            serial: lane,
            id: &message.from,
            name: &message.from_name,
        }
    };
    match entry.push_from(PeerEvent::Message(Arc::clone(message)), sender) {
        Pushed::Queued => peers.stats.deliveries += 1,
        Pushed::Full => {
            peers.stats.dropped += 1;
            if super::hub::slow_consumer(entry, policy) {
                peers.stats.slow_disconnects += 1;
            }
        }
    }
    if let Some(traffic) = &peers.traffic {
        traffic.add(message.text.len() + 64);
    }
}

/// Tells every local member that `count` hub events may have been missed, and where.
fn tell_missed(peers: &mut Peers, count: u64, what: &str) {
    tracing::warn!(target: "ferry::presence", count, "hub events missed: {what}");
    let serials: Vec<u64> = peers
        .entries
        .iter()
        .filter(|(_, e)| e.member.is_some())
        .map(|(s, _)| *s)
        .collect();
    for serial in serials {
        if let Some(entry) = peers.entries.get_mut(&serial) {
            entry.outbox.missed_from("cluster", what, count);
        }
    }
}

/// Tells one member that `count` messages for it could not be replayed.
fn tell_missed_one(peers: &mut Peers, serial: u64, count: u64) {
    if let Some(entry) = peers.entries.get_mut(&serial) {
        entry.outbox.missed_from(
            "cluster",
            "the cluster's stream (no longer kept there)",
            count,
        );
    }
}
