//! One hub across many daemons: the registry's side of a cluster link.
//!
//! The daemon's cluster task (in `ferry_daemon`) carries [`ClusterEvent`]s between this
//! registry and a NATS JetStream stream that every daemon of the cluster publishes into and
//! reads in full, in the stream's one order. The registry never speaks NATS, nor knows how
//! an event is written there (that is `ferry_wire::cluster`, and the daemon maps one onto the
//! other): it queues the events its members cause on [`ClusterLink::events`] and is handed
//! each event of the stream with [`PeerRegistry::apply`].
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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

mod apply;
mod local;
mod status;
#[cfg(test)]
mod tests;

pub(in crate::peers) use local::send;
pub use status::{ClusterCounters, ClusterDaemon, ClusterStatus};

use super::{announce_here, Accepts, Presence};
use crate::peers::{Entry, Peers};

/// A member as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
pub(in crate::peers) struct Cluster {
    link: ClusterLink,
    /// Other daemons' members, by id.
    remote: std::collections::BTreeMap<String, Remote>,
    /// The last stream position applied.
    processed: u64,
    /// The link to NATS is up.
    connected: bool,
    /// The other daemons whose members were asked for, and whether each is gone (stopped or
    /// silent); one gone is forgotten once its last held place ends.
    nodes: std::collections::BTreeMap<String, bool>,
    /// What was counted.
    counters: ClusterCounters,
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
pub(in crate::peers) fn place_of(token: &str) -> String {
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
    pub(in crate::peers) fn publish(&mut self, event: ClusterEvent) -> bool {
        let Some(cluster) = &mut self.cluster else {
            return false;
        };
        match cluster.link.events.try_send(event) {
            Ok(()) => {
                cluster.counters.published += 1;
                true
            }
            Err(_) => {
                cluster.counters.unpublished += 1;
                tracing::warn!(
                    target: "ferry::presence",
                    "the cluster link is behind: a hub event was not published"
                );
                false
            }
        }
    }

    /// This daemon's name in its cluster, if it is in one.
    pub(in crate::peers) fn node(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.link.node.as_str())
    }

    /// A local member's name as the hub shows it (qualified in a cluster).
    pub(in crate::peers) fn shown(&self, name: &str) -> String {
        match self.node() {
            Some(node) => Cluster::qualified(name, node),
            None => name.to_owned(),
        }
    }

    /// How many members other daemons have.
    pub(in crate::peers) fn remote_count(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| c.remote.len())
    }

    /// Other daemons' members, as listed.
    pub(in crate::peers) fn remote_members(&self) -> Vec<crate::peers::MemberInfo> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let mut members: Vec<&Remote> = cluster.remote.values().collect();
        members.sort_by(|a, b| (&a.node, a.member.since_ms).cmp(&(&b.node, b.member.since_ms)));
        members
            .into_iter()
            .map(|r| crate::peers::MemberInfo {
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
    pub(in crate::peers) fn publish_presence(&mut self, serial: u64, joined: bool, reason: String) {
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
    pub(in crate::peers) fn taken_by(&self, entry: &Entry) -> u64 {
        let processed = self.cluster.as_ref().map_or(0, |c| c.processed);
        entry
            .outbox
            .oldest_message_seq()
            .map_or(processed, |seq| seq.saturating_sub(1))
    }

    /// Ends remote places held past `now`, telling local members they left.
    pub(in crate::peers) fn expire_remote(&mut self, now: Instant, grace: Duration) -> usize {
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
        let remote = &cluster.remote;
        cluster
            .nodes
            .retain(|node, gone| !*gone || remote.values().any(|r| &r.node == node));
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
