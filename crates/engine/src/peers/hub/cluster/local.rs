//! A cluster's side of what local members do: sending (checked here, delivered by every
//! daemon from the stream) and taking a place another daemon held.

use std::sync::Arc;
use std::time::SystemTime;

use super::{from_millis, millis, place_of, Cluster, ClusterEvent, Replay};
use crate::peers::hub::{
    members_up_to, Accepts, Author, Delivery, Joined, Member, Refused, ResumeError, SendError,
};
use crate::peers::{PeerHandle, PeerInfo, Peers};

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
            ids: named
                .into_iter()
                .map(|t| format!("{} for {}", t.id, t.name))
                .collect(),
        }),
    }
}

/// Sends a message in a cluster: checked and published here, delivered by every daemon as it
/// reads it from the stream.
pub(in crate::peers) fn send(
    peers: &mut Peers,
    author: Author,
    to: Option<&str>,
    text: String,
) -> Result<Delivery, SendError> {
    let (from_id, from_name) = (author.id, author.name);
    let principal = author
        .principal
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
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

impl PeerHandle {
    /// Takes a place held for `token` by another daemon of the cluster: a new entry with the
    /// member's id and name, whose messages since it was last served are replayed.
    pub(in crate::peers) fn resume_remote(
        &self,
        shared: &Arc<crate::peers::Shared>,
        peers: &mut Peers,
        token: &str,
        seen: Option<u64>,
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
        // Every message for it up to `seen` was shown to it (a member's messages come in
        // the stream's order): where its daemon was killed, `taken` is that daemon's last
        // beat, and may be behind.
        let taken = away.taken.max(seen.unwrap_or(0));
        let (id, from) = (id.clone(), taken.saturating_add(1));
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
        let name = crate::peers::hub::unique_name(peers, serial, &remote.member.name);
        let joined = from_millis(remote.member.since_ms);
        let (handle, mut entry) = crate::peers::new_entry(
            shared,
            serial,
            PeerInfo {
                id: id.clone(),
                name: name.clone(),
                ..info
            },
        );
        entry.member = Some(Member::resumed(token, accepts, joined, taken));
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
            total_members: crate::peers::hub::member_count(peers) as u64,
            missed: 0,
        };
        Ok((handle, joined))
    }
}
