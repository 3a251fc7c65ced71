//! Sessions on a native connection: `SessionNew`, `SessionState`, `SessionClose`. (A `Run`
//! with a session is a job: see `jobs`.)

use std::path::PathBuf;
use std::sync::Arc;

use ferry_wire::native::{ClientMessage, DaemonMessage};
use serde_bytes::ByteBuf;

use super::Connection;
use crate::policy::{blocking, Act, Refusal};

impl Connection {
    pub(super) async fn session_request(&self, request: ClientMessage) {
        let server = Arc::clone(&self.server);
        let (id, answer) = match request {
            ClientMessage::SessionNew { request, cwd } => {
                let cwd = self
                    .access
                    .job_dir(cwd.map(|cwd| PathBuf::from(super::jobs::os_string(cwd))));
                let principal = self.access.principal().clone();
                let made = match self.access.sessions_allowed() {
                    Ok(()) => blocking(move || server.sessions.create(&cwd, &principal)).await,
                    Err(refused) => Err(refused),
                };
                let ready = made.map(|session| DaemonMessage::SessionReady { request, session });
                (request, ready)
            }
            ClientMessage::SessionState { request, session } => {
                let state = match self.check_session(Act::See, &session).await {
                    Ok(()) => {
                        blocking(move || server.sessions.state(&server.engine, &session)).await
                    }
                    Err(refusal) => Err(refusal),
                };
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
                let removed = match self.check_session(Act::Touch, &session).await {
                    Ok(()) => blocking(move || server.sessions.remove(&session)).await,
                    Err(refusal) => Err(refusal),
                };
                (request, removed.map(|()| DaemonMessage::Done { request }))
            }
            _ => return,
        };
        self.answer(id, answer).await;
    }

    /// Whether this connection may `act` on session `session` (see `Access::check`).
    pub(super) async fn check_session(&self, act: Act, session: &str) -> Result<(), Refusal> {
        let server = Arc::clone(&self.server);
        let id = session.to_owned();
        let owner = blocking(move || server.sessions.principal(&id)).await?;
        self.access
            .check(act, &owner, &format!("session '{session}'"))
    }
}
