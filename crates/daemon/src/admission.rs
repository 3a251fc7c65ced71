//! Admission's bookkeeping: the pools a connection holds a place in while it lives.
//!
//! Each listener has two pools of its own: one for connections still authenticating (a TLS
//! handshake, a token still to be shown: `max_handshakes`) and one for authenticated
//! connections (`max_connections`). A connection takes a handshake place when it is
//! accepted and trades it for an authenticated place once its principal is known; the
//! handshake time limit bounds how long it may hold the first. Daemon-wide, each network
//! principal (a certificate's name, a token's label) holds at most
//! `max_connections_per_principal` authenticated connections, whatever the listener. The
//! owner is exempt (their Unix socket's pools are theirs alone: no network peer can take a
//! place there), and so are a dialect's anonymous loopback peers (they share one principal;
//! their listener's pool bounds them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ferry_engine::Principal;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::policy::{Refusal, RefusalKind};

/// One listener's two pools.
pub(crate) struct ListenerPools {
    /// What the listener is, for messages.
    name: String,
    handshakes: Arc<Semaphore>,
    max_handshakes: usize,
    connections: Arc<Semaphore>,
    max_connections: usize,
}

impl ListenerPools {
    /// Pools of the given sizes for the listener called `name`.
    pub fn new(name: String, max_handshakes: usize, max_connections: usize) -> ListenerPools {
        ListenerPools {
            name,
            handshakes: Arc::new(Semaphore::new(max_handshakes)),
            max_handshakes,
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections,
        }
    }

    /// Why a connection found the handshake pool full.
    pub fn handshakes_full(&self) -> String {
        format!(
            "too many connections still authenticating on {} (the limit is {})",
            self.name, self.max_handshakes
        )
    }
}

/// The daemon-wide count of authenticated connections per network principal.
pub(crate) struct PrincipalCounts {
    limit: usize,
    counts: Mutex<HashMap<Principal, usize>>,
}

impl PrincipalCounts {
    /// Counts with `limit` connections per principal.
    pub fn new(limit: usize) -> PrincipalCounts {
        PrincipalCounts {
            limit,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place for `principal`; `Ok(None)` for a principal the limit does not apply to.
    fn take(self: &Arc<Self>, principal: &Principal) -> Result<Option<PrincipalPlace>, Refusal> {
        if matches!(principal, Principal::Owner | Principal::Anonymous { .. }) {
            return Ok(None);
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(principal.clone()).or_default();
        if *count >= self.limit {
            return Err(Refusal::new(
                RefusalKind::LimitReached,
                format!(
                    "too many connections as {principal} (the limit is {} per client)",
                    self.limit
                ),
            ));
        }
        *count += 1;
        Ok(Some(PrincipalPlace {
            counts: Arc::clone(self),
            principal: principal.clone(),
        }))
    }

    /// How many connections `principal` holds now.
    #[cfg(test)]
    fn held_by(&self, principal: &Principal) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(principal).copied().unwrap_or(0)
    }
}

/// One connection's place in its principal's count, given back when dropped.
struct PrincipalPlace {
    counts: Arc<PrincipalCounts>,
    principal: Principal,
}

impl Drop for PrincipalPlace {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.principal);
            }
        }
    }
}

/// A connection's hold on admission: a handshake place until its principal is known, then
/// an authenticated place (and its principal's), all given back when it is dropped.
pub(crate) struct Admission {
    pools: Arc<ListenerPools>,
    principals: Arc<PrincipalCounts>,
    held: Held,
}

enum Held {
    Authenticating {
        _handshake: OwnedSemaphorePermit,
    },
    Established {
        _connection: OwnedSemaphorePermit,
        _principal: Option<PrincipalPlace>,
    },
}

impl Admission {
    /// A place in the listener's handshake pool for a connection just accepted; `None` when
    /// the pool is full.
    pub fn start(pools: &Arc<ListenerPools>, principals: &Arc<PrincipalCounts>) -> Option<Self> {
        let permit = Arc::clone(&pools.handshakes).try_acquire_owned().ok()?;
        Some(Admission {
            pools: Arc::clone(pools),
            principals: Arc::clone(principals),
            held: Held::Authenticating { _handshake: permit },
        })
    }

    /// The connection authenticated as `principal`: trades its handshake place for a place
    /// among the listener's connections and its principal's. Refused when either is full
    /// (close the connection then).
    pub fn establish(&mut self, principal: &Principal) -> Result<(), Refusal> {
        if matches!(self.held, Held::Established { .. }) {
            return Ok(());
        }
        let Ok(connection) = Arc::clone(&self.pools.connections).try_acquire_owned() else {
            return Err(Refusal::new(
                RefusalKind::LimitReached,
                format!(
                    "too many connections on {} (the limit is {})",
                    self.pools.name, self.pools.max_connections
                ),
            ));
        };
        let principal = self.principals.take(principal)?;
        // The handshake place is given back here.
        self.held = Held::Established {
            _connection: connection,
            _principal: principal,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(handshakes: usize, connections: usize) -> Arc<ListenerPools> {
        Arc::new(ListenerPools::new("test".into(), handshakes, connections))
    }

    #[test]
    fn a_full_handshake_pool_admits_no_one_until_a_place_is_given_back() {
        let pools = pools(2, 10);
        let counts = Arc::new(PrincipalCounts::new(10));
        let first = Admission::start(&pools, &counts).expect("first");
        let _second = Admission::start(&pools, &counts).expect("second");
        assert!(Admission::start(&pools, &counts).is_none());
        drop(first);
        assert!(Admission::start(&pools, &counts).is_some());
    }

    #[test]
    fn establishing_frees_the_handshake_place_and_takes_a_connection_place() {
        let pools = pools(1, 1);
        let counts = Arc::new(PrincipalCounts::new(10));
        let token = Principal::Token("ci".into());
        let mut first = Admission::start(&pools, &counts).expect("first");
        first.establish(&token).expect("room");
        first.establish(&token).expect("establishing twice is once");
        assert_eq!(counts.held_by(&token), 1);
        let mut second = Admission::start(&pools, &counts).expect("handshake place free");
        let refused = second.establish(&token).expect_err("connections full");
        assert_eq!(refused.kind, RefusalKind::LimitReached);
        assert_eq!(
            refused.message,
            "too many connections on test (the limit is 1)"
        );
        drop(second);
        drop(first);
        assert_eq!(counts.held_by(&token), 0);
    }

    #[test]
    fn a_principal_holds_at_most_its_limit_on_every_listener_together() {
        let (one, two) = (pools(10, 10), pools(10, 10));
        let counts = Arc::new(PrincipalCounts::new(2));
        let cert = Principal::Certificate("ci".into());
        let mut held = Vec::new();
        for pools in [&one, &two] {
            let mut admission = Admission::start(pools, &counts).expect("start");
            admission.establish(&cert).expect("under the limit");
            held.push(admission);
        }
        let mut third = Admission::start(&one, &counts).expect("start");
        let refused = third.establish(&cert).expect_err("over the limit");
        assert_eq!(
            refused.message,
            "too many connections as cert:ci (the limit is 2 per client)"
        );
        // Another principal, the owner and anonymous peers are not counted against it.
        for other in [
            Principal::Certificate("other".into()),
            Principal::Owner,
            Principal::anonymous("tsockm", Some(1000)),
        ] {
            let mut admission = Admission::start(&one, &counts).expect("start");
            admission
                .establish(&other)
                .expect("not counted against cert:ci");
            held.push(admission);
        }
        assert_eq!(counts.held_by(&Principal::Owner), 0);
        held.remove(0);
        third.establish(&cert).expect("a place was given back");
    }
}
