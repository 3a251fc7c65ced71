//! Peers on a native connection: the hub (`Join`, `Say`, `Members`, `Leave`, `Pong`, and the
//! `Message`s, `Presence` and `Ping`s the daemon pushes), and, for the daemon's owner,
//! `ListPeers` and `KickPeers`.

use bytes::Bytes;
use ferry_engine::peers::cluster::{ClusterCounters, ClusterStatus};
use ferry_engine::peers::{
    HubMessage, HubStats, Joined, MemberInfo, Missed, PeerInfo as Peer, Presence, SendError,
};
use ferry_engine::store::millis;
use ferry_io::frame;
use ferry_wire::native::{
    ClientMessage, DaemonMessage, HubCluster, HubClusterDaemon, HubCounters, HubMember, MissedFrom,
    PeerInfo, Undelivered,
};

use super::Connection;
use crate::outbox::Outgoing;
use crate::policy::{Refusal, RefusalKind};

/// What a kicked peer is told of why.
const KICK_REASON: &str = "by the daemon's owner (ferry peers kick)";

impl Connection {
    pub(super) async fn peer_request(&mut self, request: ClientMessage) {
        let (id, answer) = match request {
            ClientMessage::ListPeers { request } => (request, self.list_peers(request)),
            ClientMessage::KickPeers { request, peer } => (request, self.kick(request, peer)),
            ClientMessage::Join {
                request,
                name,
                resume,
                seen,
            } => (request, self.join(request, name, resume, seen)),
            ClientMessage::Say {
                request,
                to,
                text,
                as_daemon,
            } => (request, self.say(request, to, text, as_daemon)),
            ClientMessage::Members { request } => {
                let members = self.server.engine.peers().members();
                let members = members.into_iter().map(hub_member).collect();
                (request, Ok(DaemonMessage::Members { request, members }))
            }
            ClientMessage::Leave { request } => {
                self.reader.peer_mut().handle.leave("it left");
                self.member = false;
                self.reader.set_member(false);
                (request, Ok(DaemonMessage::Done { request }))
            }
            _ => return,
        };
        self.answer(id, answer).await;
    }

    fn list_peers(&self, request: u64) -> Result<DaemonMessage, Refusal> {
        self.access.owner_only("list its peers")?;
        let me = self.peer_id();
        let registry = self.server.engine.peers();
        let peers = registry
            .list()
            .into_iter()
            .map(|peer| peer_info(peer, me))
            .collect();
        Ok(DaemonMessage::Peers {
            request,
            peers,
            hub: counters(registry.stats()),
            cluster: registry.cluster_status().map(hub_cluster),
        })
    }

    fn kick(&self, request: u64, peer: Option<String>) -> Result<DaemonMessage, Refusal> {
        self.access.owner_only("disconnect its peers")?;
        let registry = self.server.engine.peers();
        let kicked = match peer {
            Some(id) if registry.kick(&id, KICK_REASON) => vec![id],
            Some(id) => {
                return Err(Refusal::new(
                    RefusalKind::InvalidRequest,
                    format!("no peer '{id}' (see `ferry peers`)"),
                ))
            }
            None => registry.kick_all(self.peer_id(), KICK_REASON),
        };
        tracing::info!(by = self.peer_id(), ?kicked, "peers kicked");
        Ok(DaemonMessage::Kicked {
            request,
            peers: kicked,
        })
    }

    fn join(
        &mut self,
        request: u64,
        name: Option<String>,
        resume: Option<String>,
        seen: Option<u64>,
    ) -> Result<DaemonMessage, Refusal> {
        let invalid = |message: String| Refusal::new(RefusalKind::InvalidRequest, message);
        let joined = match resume {
            Some(_) if self.member => {
                return Err(invalid(
                    "this connection is in the hub already: resume from a new connection".into(),
                ))
            }
            Some(token) => {
                let (handle, joined) = self
                    .reader
                    .peer()
                    .handle
                    .resume(&token, seen)
                    .map_err(|e| invalid(e.to_string()))?;
                // This connection now is the member it was; its fresh entry goes.
                self.reader.resumed(handle);
                joined
            }
            None => self
                .reader
                .peer()
                .handle
                .join(name, self.hub_accepts)
                .map_err(invalid)?,
        };
        tracing::info!(target: "ferry::presence", peer = joined.id, name = joined.name, "joined the hub (ferry)");
        self.member = true;
        self.reader.set_member(true);
        Ok(joined_message(request, joined))
    }

    fn say(
        &self,
        request: u64,
        to: Option<String>,
        text: String,
        as_daemon: bool,
    ) -> Result<DaemonMessage, Refusal> {
        let registry = self.server.engine.peers();
        let sent = if as_daemon {
            self.access.owner_only("send messages as the daemon")?;
            registry.send_from_server(to.as_deref(), text)
        } else {
            self.reader.peer().handle.send(to.as_deref(), text)
        };
        let delivery = sent.map_err(|e| {
            let kind = match e {
                SendError::UnknownSender(_) => RefusalKind::Internal,
                _ => RefusalKind::InvalidRequest,
            };
            Refusal::new(kind, e.to_string())
        })?;
        Ok(DaemonMessage::Said {
            request,
            delivered: delivery.delivered as u64,
            refused: delivery
                .refused
                .into_iter()
                .map(|r| Undelivered {
                    peer: r.peer,
                    name: r.name,
                    reason: r.reason,
                })
                .collect(),
            dropped: delivery.dropped,
        })
    }

    /// Queues a message from the hub: its frame is made once per broadcast.
    pub(super) async fn push_message(&self, message: &HubMessage) {
        let bytes = message.framed.get_or_init(|| {
            let direct = message.to.is_some();
            frame(&DaemonMessage::Message {
                from: message.from.clone(),
                name: message.from_name.clone(),
                sent_ms: millis(message.sent),
                text: message.text.clone(),
                direct,
                // What goes ahead in the outbox is not in the order of `seq`: a client's
                // `seen` counts members' messages only (so a resume elsewhere may show the
                // daemon's and the owner's again, and never skips a member's).
                seq: if message.ahead { 0 } else { message.seq },
            })
            .map(Bytes::from)
            .unwrap_or_default()
        });
        // A direct message's frame names no receiver, so it is shared as well.
        let _ = self.out.send(Outgoing::Shared(bytes.clone())).await;
    }

    /// Tells the member what it missed, from whom.
    pub(super) async fn push_missed(&self, missed: &Missed) {
        self.send(&DaemonMessage::Missed {
            total: missed.total,
            from: missed
                .from
                .iter()
                .map(|m| MissedFrom {
                    peer: m.id.clone(),
                    name: m.name.clone(),
                    count: m.count,
                })
                .collect(),
        })
        .await;
    }

    /// Queues a presence change.
    pub(super) async fn push_presence(&self, presence: &Presence) {
        self.send(&DaemonMessage::Presence {
            peer: presence.peer.clone(),
            name: presence.name.clone(),
            dialect: presence.dialect.clone(),
            joined: presence.joined,
            reason: presence.reason.clone(),
        })
        .await;
    }
}

fn joined_message(request: u64, joined: Joined) -> DaemonMessage {
    DaemonMessage::Joined {
        request,
        peer: joined.id,
        name: joined.name,
        resume: joined.resume,
        members: joined.members.into_iter().map(hub_member).collect(),
        missed: joined.missed,
        total_members: joined.total_members,
    }
}

fn hub_member(member: MemberInfo) -> HubMember {
    HubMember {
        id: member.id,
        name: member.name,
        dialect: member.dialect,
        since_ms: millis(member.since),
        away: member.away,
    }
}

fn counters(stats: HubStats) -> HubCounters {
    HubCounters {
        messages: stats.messages,
        deliveries: stats.deliveries,
        refused: stats.refused,
        dropped: stats.dropped,
        slow_disconnects: stats.slow_disconnects,
        ping_timeouts: stats.ping_timeouts,
        resumed: stats.resumed,
        expired: stats.expired,
        unannounced: stats.unannounced,
    }
}

fn hub_cluster(status: ClusterStatus) -> HubCluster {
    let ClusterCounters {
        published,
        unpublished,
        undecodable,
        ignored,
        missed,
    } = status.counters;
    HubCluster {
        node: status.node,
        connected: status.connected,
        position: status.position,
        daemons: status
            .daemons
            .into_iter()
            .map(|d| HubClusterDaemon {
                node: d.node,
                gone: d.gone,
                members: d.members,
                held: d.held,
            })
            .collect(),
        published,
        unpublished,
        undecodable,
        ignored,
        missed,
    }
}

/// A peer, as the wire lists it to the peer `me`.
fn peer_info(peer: Peer, me: &str) -> PeerInfo {
    PeerInfo {
        you: peer.id == me,
        id: peer.id,
        name: peer.name,
        address: peer.address,
        dialect: peer.dialect,
        principal: peer.principal.map(|p| p.to_string()).unwrap_or_default(),
        connected_ms: millis(peer.connected),
        jobs_started: peer.jobs_started,
        jobs: peer.jobs,
        outbox: (peer.outbox_used as u64, peer.outbox_capacity as u64),
        dropped_events: peer.dropped_events,
        member: peer.member,
        away: peer.away,
    }
}
