//! Sessions on a native connection: `SessionNew`, `SessionState`, `SessionClose`. (A `Run`
//! with a session is a job: see `jobs`.)

use std::path::PathBuf;
use std::sync::Arc;

use ferry_wire::native::{ClientMessage, DaemonMessage};
use serde_bytes::ByteBuf;

use super::Connection;
use crate::policy::blocking;

impl Connection {
    pub(super) async fn session_request(&self, request: ClientMessage) {
        let server = Arc::clone(&self.server);
        let (id, answer) = match request {
            ClientMessage::SessionNew { request, cwd } => {
                let cwd = match (self.access.owner, cwd) {
                    (true, Some(cwd)) => PathBuf::from(super::jobs::os_string(cwd)),
                    (true, None) => std::env::current_dir().unwrap_or_else(|_| "/".into()),
                    (false, _) => self.access.files_dir.clone(),
                };
                let made = match self.access.sessions_allowed() {
                    Ok(()) => blocking(move || server.sessions.create(&cwd)).await,
                    Err(refused) => Err(refused),
                };
                let ready = made.map(|session| DaemonMessage::SessionReady { request, session });
                (request, ready)
            }
            ClientMessage::SessionState { request, session } => {
                let state = blocking(move || server.sessions.state(&server.engine, &session)).await;
                let info = state.map(|state| DaemonMessage::SessionInfo {
                    request,
                    cwd: ByteBuf::from(state.cwd),
                    status: state.status,
                    changed: state.changed.into_iter().map(ByteBuf::from).collect(),
                    unset: state.unset.into_iter().map(ByteBuf::from).collect(),
                });
                (request, info)
            }
            ClientMessage::SessionClose { request, session } => {
                let removed = blocking(move || server.sessions.remove(&session)).await;
                (request, removed.map(|()| DaemonMessage::Done { request }))
            }
            _ => return,
        };
        self.answer(id, answer).await;
    }
}
