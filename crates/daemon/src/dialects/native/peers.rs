//! Peers on a native connection: `ListPeers` and `KickPeers`, for the daemon's owner.

use ferry_engine::peers::PeerInfo as Peer;
use ferry_engine::store::millis;
use ferry_wire::native::{ClientMessage, DaemonMessage, PeerInfo};

use super::Connection;
use crate::policy::{Refusal, RefusalKind};

/// What a kicked peer is told of why.
const KICK_REASON: &str = "ferry peers kick";

impl Connection {
    pub(super) async fn peer_request(&self, request: ClientMessage) {
        let (id, answer) = match request {
            ClientMessage::ListPeers { request } => (request, self.list_peers(request)),
            ClientMessage::KickPeers { request, peer } => (request, self.kick(request, peer)),
            _ => return,
        };
        self.answer(id, answer).await;
    }

    fn list_peers(&self, request: u64) -> Result<DaemonMessage, Refusal> {
        self.access.owner_only("list its peers")?;
        let me = self.peer.id();
        let peers = self
            .server
            .engine
            .peers()
            .list()
            .into_iter()
            .map(|peer| peer_info(peer, me))
            .collect();
        Ok(DaemonMessage::Peers { request, peers })
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
            None => registry.kick_all(self.peer.id(), KICK_REASON),
        };
        tracing::info!(by = self.peer.id(), ?kicked, "peers kicked");
        Ok(DaemonMessage::Kicked {
            request,
            peers: kicked,
        })
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
    }
}
