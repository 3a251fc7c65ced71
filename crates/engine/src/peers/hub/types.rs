//! The hub's values: its settings, messages and presence, counters, what a join and a send
//! return, and why they fail.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// The longest message text, in bytes.
pub const MAX_MESSAGE_TEXT: usize = 64 * 1024;

/// The sender id of messages from the daemon itself (its owner, through the console or
/// `ferry peers msg`).
pub const SERVER_ID: &str = "server";

/// Longest name a member may take, in characters.
pub(super) const MAX_NAME: usize = 64;

/// The default [`HubConfig::presence_max`].
pub const DEFAULT_PRESENCE_MAX: usize = 1000;

/// The hub's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Events each peer's outbox holds.
    pub outbox: usize,
    /// How long a member whose connection ended keeps its place.
    pub grace: Duration,
    /// What happens to a member whose outbox stays full.
    pub slow_consumer: SlowConsumer,
    /// How long a member may be silent before it is pinged.
    pub ping_interval: Duration,
    /// Pings in a row a member may leave unanswered before it is removed.
    pub ping_misses: u32,
    /// The largest hub whose joins and leaves are announced to every member, and the most
    /// members a `Joined` lists. Each announcement goes to every member, so a hub that grows
    /// to n members costs n*n/2 deliveries; past this size members ask for the list instead.
    pub presence_max: usize,
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig {
            outbox: 1024,
            grace: Duration::from_secs(13),
            slow_consumer: SlowConsumer::Disconnect {
                after: Duration::from_secs(5),
            },
            ping_interval: Duration::from_secs(30),
            ping_misses: 3,
            presence_max: DEFAULT_PRESENCE_MAX,
        }
    }
}

impl HubConfig {
    /// How long a member may stay silent, pings unanswered, before it is removed.
    pub fn silence_limit(&self) -> Duration {
        self.ping_interval
            .saturating_mul(self.ping_misses.saturating_add(1))
    }
}

/// What happens to a member whose outbox is full (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Disconnect it, with a notice, once its outbox has been full for this long (zero: at
    /// the first message that does not fit); it is held for the grace period.
    Disconnect {
        /// How long the outbox may stay full.
        after: Duration,
    },
    /// Keep it; it loses the messages that do not fit (counted).
    Drop,
}

/// A message between peers.
#[derive(Debug, PartialEq, Eq)]
pub struct HubMessage {
    /// The sender's id ([`SERVER_ID`] for the daemon).
    pub from: String,
    /// The sender's name.
    pub from_name: String,
    /// The receiver's id; `None`: everyone.
    pub to: Option<String>,
    /// When it was sent.
    pub sent: SystemTime,
    /// Its text (UTF-8, at most [`MAX_MESSAGE_TEXT`] bytes).
    pub text: String,
    /// The message as framed by a dialect whose frame is the same for every receiver, made
    /// by the first of its connections to send it, so that a broadcast is encoded once.
    pub framed: OnceLock<bytes::Bytes>,
    /// Its position in the cluster's stream (0 outside a cluster).
    pub seq: u64,
    /// It is from the daemon or its owner, and so goes ahead of members' messages in an
    /// outbox: a member may be shown it before members' messages with a lower `seq`.
    pub ahead: bool,
}

/// A peer joined or left the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Its id.
    pub peer: String,
    /// Its name.
    pub name: String,
    /// Its dialect.
    pub dialect: String,
    /// Joined (`true`) or left.
    pub joined: bool,
    /// Why it left (empty for a join).
    pub reason: String,
}

/// The hub's counters since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Messages sent.
    pub messages: u64,
    /// Messages queued for a receiver.
    pub deliveries: u64,
    /// Deliveries refused because the receiver's dialect cannot carry the message.
    pub refused: u64,
    /// Deliveries dropped because the receiver's outbox was full.
    pub dropped: u64,
    /// Members disconnected as slow consumers.
    pub slow_disconnects: u64,
    /// Members removed for missing their pings.
    pub ping_timeouts: u64,
    /// Members that came back within the grace period.
    pub resumed: u64,
    /// Members whose grace ended.
    pub expired: u64,
    /// Joins and leaves not announced (the hub was larger than `presence_max`).
    pub unannounced: u64,
}

/// Whether a member's dialect can carry a message's text: `Err` says why not.
pub type Accepts = fn(&str) -> Result<(), String>;

/// A member's part of its registry entry.
pub(in crate::peers) struct Member {
    pub(in crate::peers) resume: String,
    pub(in crate::peers) accepts: Accepts,
    /// Set while its connection is gone and its place held.
    pub(in crate::peers) away: Option<Away>,
    pub(in crate::peers) joined: SystemTime,
    /// In a cluster, for a member that resumed here from another daemon: the stream position
    /// up to which it had been shown its messages there. Those are not delivered again, even
    /// where this daemon reads them only after the resume (0: none).
    pub(in crate::peers) shown: u64,
}

impl Member {
    /// A member that joined here now, with the resume token `resume`.
    pub(in crate::peers) fn new(resume: String, accepts: Accepts) -> Member {
        Member {
            resume,
            accepts,
            away: None,
            joined: SystemTime::now(),
            shown: 0,
        }
    }

    /// A member that resumed here with `resume`, having joined at `joined` elsewhere and
    /// been shown its messages up to stream position `shown`.
    pub(in crate::peers) fn resumed(
        resume: &str,
        accepts: Accepts,
        joined: SystemTime,
        shown: u64,
    ) -> Member {
        Member {
            joined,
            shown,
            ..Member::new(resume.to_owned(), accepts)
        }
    }
}

/// A held member's deadline (its outbox stays in its entry).
pub(in crate::peers) struct Away {
    pub(in crate::peers) until: Instant,
    /// Its drop count when its connection ended.
    pub(in crate::peers) dropped_before: u64,
}

/// What a member learns when it joins (or resumes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The token that lets it take its place again after its connection ends.
    pub resume: String,
    /// Everyone in the hub (itself included), or the first `presence_max` of them.
    pub members: Vec<MemberInfo>,
    /// How many members the hub has.
    pub total_members: u64,
    /// Messages dropped for it while it was away (resuming only).
    pub missed: u64,
}

/// A member of the hub, as other members see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its dialect.
    pub dialect: String,
    /// When it joined.
    pub since: SystemTime,
    /// Its connection ended; its place is held.
    pub away: bool,
}

/// What became of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Receivers whose outbox took it.
    pub delivered: usize,
    /// Receivers whose dialect cannot carry it.
    pub refused: Vec<Refused>,
    /// Receivers whose outbox was full (ids).
    pub dropped: Vec<String>,
}

/// A receiver that could not take a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its id.
    pub peer: String,
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Why a message was not sent at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No member has that id or name.
    #[error("no peer '{0}' in the hub")]
    NoSuchPeer(String),
    /// Several members have that name.
    #[error("several peers are named '{name}': use an id ({})", ids.join(", "))]
    Ambiguous {
        /// The name.
        name: String,
        /// Their ids.
        ids: Vec<String>,
    },
    /// The sender is not a peer of this daemon.
    #[error("unknown sender '{0}'")]
    UnknownSender(String),
    /// The text is too long.
    #[error("a message is at most {MAX_MESSAGE_TEXT} bytes; this one has {0}")]
    TooLong(usize),
    /// The text is empty.
    #[error("a message needs some text")]
    Empty,
    /// The daemon's link to its cluster is too far behind to take more.
    #[error("the hub's cluster link is behind: try again shortly")]
    ClusterBehind,
}

/// Why a member could not resume.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// No held place has that token (its grace ended, or it never was).
    #[error(
        "no place is held for this resume token (its grace period may have ended): join afresh"
    )]
    NoSuchToken,
    /// The member's connection has not ended yet.
    #[error("that peer is still connected; its place can be taken only once its connection ends")]
    StillConnected,
    /// The held place belongs to another principal.
    #[error("that place belongs to someone else")]
    NotYours,
}
