//! What a daemon in a cluster can say of it: its link to NATS, how far it has read the
//! stream, the other daemons it knows, and what the link counted (for `ferry peers` and
//! `/metrics`).

use std::collections::BTreeMap;

use crate::peers::PeerRegistry;

/// What the cluster side of the registry counted since the daemon joined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterCounters {
    /// Events this daemon handed to its link to publish.
    pub published: u64,
    /// Events not published because the link was behind (each one logged, and a message's
    /// sender told).
    pub unpublished: u64,
    /// Stream positions whose bytes were no event of the cluster (logged and skipped).
    pub undecodable: u64,
    /// Events ignored: a daemon spoke for, or claimed, a member that is not its own.
    pub ignored: u64,
    /// Events missed: holes in the stream, and replays it no longer held (members told).
    pub missed: u64,
}

/// Another daemon of the cluster, as this one knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDaemon {
    /// Its name.
    pub node: String,
    /// It stopped, or fell silent: its members are held until their grace ends.
    pub gone: bool,
    /// Its members.
    pub members: u64,
    /// Those of them whose places are held.
    pub held: u64,
}

/// The cluster as this daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This daemon's name in it.
    pub node: String,
    /// Its link to NATS is up.
    pub connected: bool,
    /// The last stream position applied.
    pub position: u64,
    /// The other daemons, by name.
    pub daemons: Vec<ClusterDaemon>,
    /// What was counted.
    pub counters: ClusterCounters,
}

impl PeerRegistry {
    /// The cluster as this daemon sees it; `None` outside a cluster.
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        let peers = self.shared.lock();
        let cluster = peers.cluster.as_ref()?;
        let mut daemons: BTreeMap<&str, ClusterDaemon> = cluster
            .nodes
            .iter()
            .map(|(node, gone)| {
                let daemon = ClusterDaemon {
                    node: node.clone(),
                    gone: *gone,
                    members: 0,
                    held: 0,
                };
                (node.as_str(), daemon)
            })
            .collect();
        for remote in cluster.remote.values() {
            let daemon = daemons
                .entry(remote.node.as_str())
                .or_insert_with(|| ClusterDaemon {
                    node: remote.node.clone(),
                    gone: false,
                    members: 0,
                    held: 0,
                });
            daemon.members += 1;
            daemon.held += u64::from(remote.away.is_some());
        }
        Some(ClusterStatus {
            node: cluster.link.node.clone(),
            connected: cluster.connected,
            position: cluster.processed,
            daemons: daemons.into_values().collect(),
            counters: cluster.counters,
        })
    }

    /// Notes whether the link to NATS is up.
    pub fn cluster_connected(&self, connected: bool) {
        if let Some(cluster) = &mut self.shared.lock().cluster {
            cluster.connected = connected;
        }
    }
}
