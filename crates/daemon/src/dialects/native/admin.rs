//! The daemon's administration on a native connection: `Cost` for any peer; for its owner,
//! `Shutdown`, `Web` (the dashboard's URL) and `Prune`.

use std::time::Duration;

use ferry_wire::native::{ClientMessage, DaemonMessage};

use super::Connection;
use crate::policy::blocking;

impl Connection {
    pub(super) async fn admin_request(&self, request: ClientMessage) {
        match request {
            ClientMessage::Cost { request } => {
                let load = self.server.engine.load();
                self.send(&DaemonMessage::Cost {
                    request,
                    cost: load.cost(),
                    running: load.running,
                    queued: load.queued,
                    slots: load.slots,
                })
                .await;
            }
            ClientMessage::Shutdown { request } => {
                if let Err(refused) = self.access.owner_only("shut it down") {
                    tracing::warn!(from = self.address, "refused a remote shutdown request");
                    return self.refuse(Some(request), refused).await;
                }
                tracing::info!(peer = self.peer_id(), "client asked for shutdown");
                self.send(&DaemonMessage::Done { request }).await;
                self.server.shutdown_requested.notify_one();
            }
            ClientMessage::Web { request } => {
                if let Err(refused) = self.access.owner_only("open its dashboard") {
                    return self.refuse(Some(request), refused).await;
                }
                let url = crate::dialects::http::web_url(&self.server)
                    .await
                    .map(|url| DaemonMessage::Web { request, url });
                self.answer(request, url).await;
            }
            ClientMessage::Prune {
                request,
                older_than_ms,
                keep,
            } => {
                if let Err(refused) = self.access.owner_only("prune its history") {
                    return self.refuse(Some(request), refused).await;
                }
                let engine = self.server.engine.clone();
                let older_than = older_than_ms.map(Duration::from_millis);
                let keep = keep.map(|k| usize::try_from(k).unwrap_or(usize::MAX));
                let pruned = blocking(move || engine.prune(older_than, keep))
                    .await
                    .map(|pruned| {
                        tracing::info!(jobs = pruned.jobs, bytes = pruned.bytes, "history pruned");
                        DaemonMessage::Pruned {
                            request,
                            jobs: pruned.jobs,
                            bytes: pruned.bytes,
                        }
                    });
                self.answer(request, pruned).await;
            }
            _ => {}
        }
    }
}
