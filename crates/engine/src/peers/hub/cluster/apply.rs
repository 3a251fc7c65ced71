//! Applying the cluster's stream: each event, in the stream's order, to this daemon's
//! registry (deliveries, the other daemons' members, held places, replays).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::{
    from_millis, lane_of, Cluster, ClusterCounters, ClusterEvent, ClusterLink, ClusterMember,
    Remote, RemoteAway, Roster,
};
use crate::peers::hub::{announce_here, HubMessage, Presence, SERVER_ID};
use crate::peers::mailbox::Sender;
use crate::peers::{PeerEvent, PeerRegistry, Peers, Pushed};

impl PeerRegistry {
    /// Joins this registry's hub to a cluster whose stream was read up to `processed`.
    pub fn join_cluster(&self, link: ClusterLink, processed: u64) {
        let mut peers = self.shared.lock();
        peers.cluster = Some(Cluster {
            link,
            remote: Default::default(),
            processed,
            connected: true,
            nodes: Default::default(),
            counters: Default::default(),
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
        if let Some(cluster) = peers.cluster.as_mut().filter(|c| c.link.node != node) {
            cluster.nodes.insert(node.to_owned(), false);
        }
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
            cluster.nodes.insert(node.to_owned(), true);
            for remote in cluster.remote.values_mut().filter(|r| r.node == node) {
                remote.away.get_or_insert(RemoteAway {
                    until,
                    taken: processed,
                });
            }
        }
    }

    /// Notes stream position `seq` as read without an event to apply (what was there is not
    /// one); positions skipped before it are told as missed.
    pub fn skip(&self, seq: u64) {
        let mut peers = self.shared.lock();
        reach(&mut peers, seq);
        count(&mut peers, |c| c.undecodable += 1);
    }

    /// Applies the event at stream position `seq`, published by daemon `origin`.
    pub fn apply(&self, seq: u64, origin: &str, event: ClusterEvent) {
        let mut peers = self.shared.lock();
        let grace = self.shared.config.grace;
        reach(&mut peers, seq);
        let Some(cluster) = &mut peers.cluster else {
            return;
        };
        let own = origin == cluster.link.node;
        match event {
            event @ ClusterEvent::Message { .. } => {
                if let Some(message) = message_of(seq, origin, event) {
                    if own || speaks_for(&mut peers, origin, &message.from) {
                        deliver(&mut peers, &message);
                    }
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
            count(&mut peers, |c| c.missed += lost);
            tell_missed_one(&mut peers, serial, lost);
        }
        // What came meanwhile goes after the replay.
        let waiting = peers
            .entries
            .get_mut(&serial)
            .and_then(|e| e.replaying.take())
            .unwrap_or_default();
        let replayed = events
            .into_iter()
            .filter_map(|(seq, origin, event)| message_of(seq, &origin, event))
            .filter(|message| is_for(message, id));
        for message in replayed.chain(waiting) {
            push_message(&mut peers, serial, &message);
        }
    }
}

/// The message event at stream position `seq` from daemon `origin` as delivered (its sender's
/// name qualified; ahead of members' messages when from the daemon or an owner); `None` for
/// other events.
fn message_of(seq: u64, origin: &str, event: ClusterEvent) -> Option<Arc<HubMessage>> {
    let ClusterEvent::Message {
        from,
        from_name,
        principal,
        to,
        sent_ms,
        text,
    } = event
    else {
        return None;
    };
    let message = HubMessage {
        ahead: principal == "owner" || from == SERVER_ID,
        from,
        from_name: Cluster::qualified(&from_name, origin),
        to,
        sent: from_millis(sent_ms),
        text,
        framed: OnceLock::new(),
        seq,
    };
    Some(Arc::new(message))
}

/// Whether `message` is for the member `id`: sent to it, or to everyone by another.
fn is_for(message: &HubMessage, id: &str) -> bool {
    match &message.to {
        Some(to) => to == id,
        None => message.from != id,
    }
}

/// Moves the last applied stream position to `seq`; positions skipped on the way (events
/// the stream no longer holds) are told to every member.
fn reach(peers: &mut Peers, seq: u64) {
    let Some(cluster) = &mut peers.cluster else {
        return;
    };
    let gap = seq.saturating_sub(cluster.processed.saturating_add(1));
    cluster.processed = cluster.processed.max(seq);
    if gap > 0 {
        cluster.counters.missed += gap;
        tell_missed(peers, gap, "the cluster's stream (events lost in NATS)");
    }
}

/// Adds to the cluster's counters.
fn count(peers: &mut Peers, add: impl FnOnce(&mut ClusterCounters)) {
    if let Some(cluster) = &mut peers.cluster {
        add(&mut cluster.counters);
    }
}

/// Whether `origin` is the home of member `from` (a daemon speaks for its own members only).
fn speaks_for(peers: &mut Peers, origin: &str, from: &str) -> bool {
    if from == SERVER_ID {
        return true;
    }
    let Some(cluster) = &mut peers.cluster else {
        return false;
    };
    let ok = cluster.remote.get(from).is_some_and(|r| r.node == origin);
    if !ok {
        cluster.counters.ignored += 1;
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
    let local = peers.entries.values().any(|e| e.info.id == member.id);
    let Some(cluster) = &mut peers.cluster else {
        return;
    };
    if node == cluster.link.node {
        return;
    }
    let elsewhere = cluster
        .remote
        .get(&member.id)
        .is_some_and(|r| r.node != node);
    if local || elsewhere {
        cluster.counters.ignored += 1;
        tracing::warn!(
            origin = node,
            id = member.id,
            "a daemon claimed another daemon's member: ignored"
        );
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
    let here = peers
        .entries
        .iter()
        .find(|(_, e)| e.info.id == member.id)
        .map(|(serial, e)| {
            let held = e.member.as_ref().is_some_and(|m| m.away.is_some());
            (*serial, held)
        });
    let known = peers
        .cluster
        .as_ref()
        .is_some_and(|c| c.remote.contains_key(&member.id));
    match here {
        Some((serial, true)) => {
            peers.entries.remove(&serial);
        }
        // Its connection is here: no one else holds its token's place.
        Some((_, false)) => {
            count(peers, |c| c.ignored += 1);
            tracing::warn!(
                origin,
                id = member.id,
                "a daemon claimed a member connected here: ignored"
            );
            return;
        }
        None => {}
    }
    let presence = presence_of(&member, origin, true, String::new());
    let id = member.id.clone();
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
    if !known && here.is_none() {
        // Resumed before this daemon knew of it: new here.
        announce_here(peers, presence, Some(&id));
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
fn deliver(peers: &mut Peers, message: &Arc<HubMessage>) {
    let serials: Vec<u64> = peers
        .entries
        .iter()
        .filter(|(_, e)| e.member.is_some() && is_for(message, &e.info.id))
        .map(|(serial, _)| *serial)
        .collect();
    for serial in serials {
        push_message(peers, serial, message);
    }
}

/// Queues a message for one local member (held back while its replay is on its way).
fn push_message(peers: &mut Peers, serial: u64, message: &Arc<HubMessage>) {
    let policy = peers
        .slow_consumer
        .unwrap_or(crate::peers::hub::SlowConsumer::Drop);
    let Some(entry) = peers.entries.get_mut(&serial) else {
        return;
    };
    // Shown to it on the daemon it resumed from.
    if entry
        .member
        .as_ref()
        .is_some_and(|m| m.shown > 0 && message.seq <= m.shown)
    {
        return;
    }
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
    let sender = if message.ahead {
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
            if crate::peers::hub::slow_consumer(entry, policy) {
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
