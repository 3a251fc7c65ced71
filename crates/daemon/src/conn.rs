//! A connection the connection layer admitted, as its dialect's adapter receives it: which
//! row of the listener table and which transport it came by (as values: what the layer must
//! know of its dialect is its [`Contract`]), who it is and what it may do, its time limits,
//! and its I/O, which only the one stream reader ([`crate::reader`]) and the outbox
//! ([`crate::outbox`]) ever touch.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferry_engine::peers::PeerHandle;
use ferry_engine::Principal;
use ferry_io::fdpass::FdInbox;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::admission::Admission;
use crate::order::Turn;
use crate::outbox::{Outbox, Writes};
use crate::policy::{Access, Refusal};
use crate::spec::TransportKind;
use crate::state::Daemon;
use crate::transport::BoxRead;

/// What the connection layer must know of a dialect to keep its promises for it: the
/// values of its row that shape how its connections are read, timed and written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Contract {
    /// The dialect's name (in listener specs, logs, and its peers' entries).
    pub name: &'static str,
    /// It opens every connection with a handshake of its own (which may carry a token): it
    /// may then be served with TLS beyond loopback. A dialect without one gets its first
    /// request within the handshake time limit, and the idle limit between requests.
    pub authenticates: bool,
    /// Its requests may carry fds (SCM_RIGHTS) on a Unix socket: reads stop at the end of
    /// each message, so that fds belong to the message they rode on.
    pub takes_fds: bool,
    /// The pause that ends, or gives up, a message in its stream, for a format that needs
    /// one.
    pub pause: Option<Pause>,
    /// Its clients send each request on a connection of its own, one after another: a
    /// request takes effect only after those of earlier-accepted connections (see
    /// [`crate::order`]).
    pub accept_order: bool,
    /// How its answers are written.
    pub writes: Writes,
    /// What a hub member of this dialect can be sent (a text its frames cannot carry whole is
    /// refused for it, and the sender told; members on other daemons of a hub cluster are
    /// checked by their own dialect's).
    pub hub_accepts: ferry_engine::peers::hub::Accepts,
}

/// Any text (a dialect whose frames carry every message whole).
pub(crate) fn any_text(_: &str) -> Result<(), String> {
    Ok(())
}

/// A pause in a stream that ends or gives up a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pause {
    /// Nothing more came for this long: a message with no delimiter, whose sender's silence
    /// is its end, is taken as it is (where its decoder says so, see
    /// `ferry_wire::Decoder::ends_at_pause`).
    Quiet(Duration),
    /// A message began this long ago and is still partial: a client that died in the middle
    /// of one left it; its bytes are dropped, and the next request is read from a clean
    /// start.
    Partial(Duration),
}

/// The time limits of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Its first request must be whole by then (the handshake time limit, counted from its
    /// accept: a TLS handshake spends part of it), with the limit to name; `None`: no limit
    /// (a FIFO pair waits for its client as long as it takes).
    pub first: Option<(Instant, Duration)>,
    /// Between requests, in a dialect without a handshake: silent longer, it is closed.
    pub idle: Option<Duration>,
}

/// A connection's two ends, as addresses its dialect may name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ends {
    /// The listener's address as the peer reached it (TCP; empty otherwise).
    pub local: String,
    /// Where the peer connects from (`127.0.0.1:51234`, `unix, pid 42`, a FIFO pair).
    pub remote: String,
    /// The uid at the other end of a loopback TCP connection, where its dialect asks (the
    /// web token acts for the owner only from the owner's uid).
    pub uid: Option<u32>,
}

/// An admitted connection's place in the daemon: its entry in the peer registry and its
/// places in the admission pools, all held as long as this lives.
pub(crate) struct Peer {
    /// Its registry entry: id, events, kick flag.
    pub handle: PeerHandle,
    admission: Admission,
}

impl Peer {
    /// A place made of its registry entry and its admission.
    pub fn new(handle: PeerHandle, admission: Admission) -> Peer {
        Peer { handle, admission }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        self.handle.id()
    }

    /// Its handshake showed it is `principal`: it trades its place among the connections
    /// still authenticating for one among the authenticated (refused when its listener or
    /// its principal has no room left: close the connection then). Its entry in the peer
    /// registry then names the principal.
    pub fn authenticated(&mut self, principal: &Principal) -> Result<(), Refusal> {
        self.admission.establish(principal)?;
        self.handle
            .identify(principal.clone(), peer_name(Some(principal)));
        Ok(())
    }
}

/// A peer's name, as far as its admission tells: the certificate's common name, the
/// token's label, `anonymous` for a dialect without authentication, or (until its
/// handshake shows a token) nothing yet.
pub(crate) fn peer_name(principal: Option<&Principal>) -> String {
    match principal {
        Some(Principal::Certificate(name)) => name.clone(),
        Some(Principal::Token(label)) => label.clone(),
        Some(Principal::Anonymous { .. }) => "anonymous".into(),
        Some(Principal::Owner) | None => String::new(),
    }
}

/// A connection's I/O: taken once, by its reader.
pub(crate) struct Io {
    /// The reading half. On a Unix socket every read goes through `recvmsg`, and fds that
    /// come land in `fds`.
    pub read: BoxRead,
    /// Fds received on it (Unix sockets only).
    pub fds: Option<FdInbox>,
    /// Its outbox.
    pub out: Outbox,
    /// Its place in the daemon.
    pub peer: Peer,
    /// Its time limits.
    pub limits: Limits,
    /// Its place in its listener's accept order, if the dialect keeps one.
    pub turn: Option<Turn>,
}

/// A connection the layer admitted, handed to its dialect's adapter.
pub(crate) struct Conn {
    /// What the layer knows of its dialect.
    pub contract: Contract,
    /// The transport it came by.
    pub transport: TransportKind,
    /// What it may do.
    pub access: Access,
    /// Its two ends' addresses.
    pub ends: Ends,
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// Its I/O until its reader takes it (behind a lock only so that the rest of the
    /// connection may be shared across tasks: the lock is never contended).
    io: Mutex<Option<Io>>,
}

impl Conn {
    /// A connection of `contract`'s dialect over `transport`, with its I/O.
    pub fn new(
        contract: Contract,
        transport: TransportKind,
        access: Access,
        ends: Ends,
        daemon: Arc<Daemon>,
        io: Io,
    ) -> Conn {
        Conn {
            contract,
            transport,
            access,
            ends,
            daemon,
            io: Mutex::new(Some(io)),
        }
    }

    /// Its I/O, for its reader (`None` once taken).
    pub fn take_io(&mut self) -> Option<Io> {
        self.io
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Resolves once the watched flag is true (or its sender is gone).
pub(crate) async fn became_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|value| *value).await;
}
