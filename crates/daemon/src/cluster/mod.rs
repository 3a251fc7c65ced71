//! One hub across many daemons, on NATS: the daemon's cluster link.
//!
//! Every daemon of a cluster (same NATS, same cluster name) publishes its hub's events (the
//! registry's, `ferry_engine::peers::cluster`, written as `ferry_wire::cluster` says: module
//! `events` maps one onto the other) on `ferry.CLUSTER.hub.NODE`, into one JetStream stream,
//! `FERRY_HUB_CLUSTER` (file storage, kept for a while), and reads that whole stream in its one
//! order with an ordered consumer, applying each event to its registry. Beside the stream, on
//! core NATS:
//!
//! - `ferry.CLUSTER.beat.NODE`: each daemon says every [`BEAT_EVERY`] that it is alive (and how
//!   far it has read); one silent for [`SILENT_AFTER`] has its members held, as one that
//!   stopped;
//! - `ferry.CLUSTER.roster[.NODE]`: a daemon that starts (or sees another again) asks the
//!   others for their members.
//!
//! Nothing is lost silently. Events are published one at a time, each acknowledged by
//! JetStream before the next, and retried under the same message id (JetStream drops the
//! duplicate) until they are: a sender's order survives a NATS restart. A daemon whose
//! ordered consumer finds a hole in the stream tells its members how many events it missed.

pub mod config;
mod events;
mod link;

use std::sync::Arc;
use std::time::Duration;

use ferry_engine::peers::PeerRegistry;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use config::{ClusterConfig, Credentials};

use crate::config::DaemonError;

/// How often a daemon says it is alive.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);

/// How long a daemon may be silent before its members are held as if it had stopped.
pub const SILENT_AFTER: Duration = Duration::from_secs(3);

/// A running cluster link.
pub struct Cluster {
    tasks: Vec<JoinHandle<()>>,
    /// Told when the publisher has published the `Stopping` event.
    stopped: Arc<Notify>,
    registry: PeerRegistry,
    stopping: tokio::sync::mpsc::Sender<ferry_engine::peers::cluster::ClusterEvent>,
}

impl Cluster {
    /// Joins `registry`'s hub to the cluster `config` names: connects to NATS, makes the
    /// stream if it is not there, learns the other daemons' members and starts the link's
    /// tasks. Fails (with what to fix) when NATS cannot be reached or refuses the
    /// credentials, or when another live daemon has this one's name.
    pub async fn start(
        config: &ClusterConfig,
        registry: PeerRegistry,
    ) -> Result<Cluster, DaemonError> {
        link::start(config, registry).await
    }

    /// Tells the cluster this daemon is stopping (its members are held everywhere for the
    /// grace period), waiting a moment for it to be published.
    pub async fn stop(&self) {
        let told = self.stopped.notified();
        if self
            .stopping
            .try_send(ferry_engine::peers::cluster::ClusterEvent::Stopping)
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(2), told).await;
        }
        tracing::debug!(node = ?self.registry.cluster_node(), "left the hub cluster");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
