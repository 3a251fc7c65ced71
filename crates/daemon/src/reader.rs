//! The one stream reader: the only code that reads a connection, whatever its dialect. It
//! drives the dialect's sans-IO [`Decoder`] over the bytes that come and hands its adapter
//! whole requests (with the fds that rode on them) and hub events, and it keeps, once for
//! every dialect, the promises of the connection layer:
//!
//! - the first request whole within the handshake time limit, later ones within the idle
//!   limit (while none of the connection's work runs, see [`Busy`]); past a limit, a
//!   refusal in the dialect's words and the close;
//! - a pause that ends a message where the dialect's format has no delimiter (its decoder
//!   decides, see `Decoder::ends_at_pause`), or a partial message given up some time after
//!   its first byte (a client that died in the middle of one: its bytes are dropped, and the
//!   next request is read from a clean start);
//! - bounded reads where requests carry fds, so that fds belong to the message they rode on
//!   (fds that come to a dialect that takes none are closed);
//! - a malformed request answered in the dialect's words, then the close (others are
//!   served on);
//! - the kick: the peer told in its words (if its outbox has room: a peer that does not read
//!   is not waited for), the connection closed at once, its jobs going on;
//! - the daemon going down: the peer told in its words between requests (after the one that
//!   runs, if any), and marked told so the daemon need not wait for it (a peer whose outbox is
//!   full is not waited for either);
//! - hub members' health checks, and their removal when they stop answering;
//! - accept order, for a dialect whose clients send each request on a connection of its own.
//!
//! An adapter reads with [`Reader::next`] (cancel-safe: it may wait on it beside sources of
//! its own in a `select!`), and runs a request's long work (a command it waits for) under
//! [`Reader::watch`], which keeps watching the kick, the daemon and the peer meanwhile. What
//! it writes goes to its [`Outbox`].

use std::fmt::Display;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::peers::{Kick, PeerEvent, PeerHandle};
use ferry_io::fdpass::FdInbox;
use ferry_io::{FrameReader, ReadError};
use ferry_wire::{Decoder, Input};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::conn::{became_true, Conn, Limits, Pause, Peer};
use crate::order::Turn;
use crate::outbox::Outbox;
use crate::policy::RefusalKind;

/// How long the last words of a connection the daemon's going down ends may take.
const NOTICE_WAIT: Duration = Duration::from_secs(1);

/// How long a kicked peer's last words may take to be written.
const KICK_WRITE: Duration = Duration::from_millis(500);

/// The most bytes read ahead while a request's work runs (to see the peer leave).
const READ_AHEAD: usize = 64 * 1024;

/// What a dialect says on the connection layer's behalf, in its own words: `None` where it
/// has no words for it (the connection then just ends, or goes on).
pub(crate) trait Voice<E: Display>: Send {
    /// The connection is ended by the daemon (a time limit, a refusal): `message` says why.
    fn refused(&self, kind: RefusalKind, message: &str) -> Option<Vec<u8>>;

    /// A request that is not of the dialect (by default refused as an invalid request, with
    /// the decoder's own words).
    fn malformed(&self, fault: &ReadError<E>) -> Option<Vec<u8>> {
        self.refused(RefusalKind::InvalidRequest, &fault.to_string())
    }

    /// No whole request came within a time limit (`first`: the first request's, which is the
    /// handshake's in a dialect that has one; else the idle limit).
    fn timed_out(&self, limit: Duration, _first: bool) -> Option<Vec<u8>> {
        let message = format!("no whole request within {} ms", limit.as_millis());
        self.refused(RefusalKind::InvalidRequest, &message)
    }

    /// The daemon is going down: running jobs are being terminated.
    fn going_down(&self) -> Notice;

    /// The peer is disconnected (kicked, or silent past its health checks): `message` says
    /// so, and why.
    fn disconnected(&self, message: &str) -> Option<Vec<u8>>;

    /// A health check for a hub member that has been silent.
    fn ping(&self, _nonce: u64) -> Option<Vec<u8>> {
        None
    }
}

/// What the daemon going down is, in words.
pub(crate) const GOING_DOWN: &str =
    "the ferry daemon is going down; running jobs are being terminated";

/// The voice of a dialect that says all the connection layer says in one kind of message,
/// its refusal (a FANOS `ERROR`, a rake64 failure, a cbsdng closing frame).
pub(crate) struct Refusals {
    /// The dialect's refusal.
    pub refusal: fn(RefusalKind, &str) -> Vec<u8>,
    /// The connection ends after the daemon's going-down notice (else it goes on until the
    /// daemon closes it, its jobs' ends still to come).
    pub closes_going_down: bool,
}

impl<E: Display> Voice<E> for Refusals {
    fn refused(&self, kind: RefusalKind, message: &str) -> Option<Vec<u8>> {
        Some((self.refusal)(kind, message))
    }

    fn going_down(&self) -> Notice {
        Notice {
            words: Some((self.refusal)(RefusalKind::ShuttingDown, GOING_DOWN)),
            closes: self.closes_going_down,
        }
    }

    fn disconnected(&self, message: &str) -> Option<Vec<u8>> {
        Some((self.refusal)(RefusalKind::PermissionDenied, message))
    }
}

/// What a dialect says when the daemon is going down, and whether the connection then ends
/// (or goes on until the daemon closes it, its jobs' ends still to come).
pub(crate) struct Notice {
    /// The words.
    pub words: Option<Vec<u8>>,
    /// The connection ends after them.
    pub closes: bool,
}

/// What [`Reader::next`] gives an adapter.
pub(crate) enum Next<M> {
    /// A whole request, and the fds that rode on it (none but where the dialect takes fds).
    Request(M, Vec<OwnedFd>),
    /// A hub member's event: a message, or a member coming or going.
    Event(PeerEvent),
}

/// What became of a request's work under [`Reader::watch`].
pub(crate) enum Watched<T> {
    /// It ended.
    Done(T),
    /// The peer closed its end meanwhile (watch again to let the work finish).
    Left,
    /// The connection is over (kicked, or the daemon closes it): what was to be said was
    /// said; drop the work (its job goes on).
    Over,
}

/// Counts a connection's work that runs apart from its requests (jobs it streams): no idle
/// limit applies while some runs.
#[derive(Clone)]
pub(crate) struct Busy(Arc<watch::Sender<usize>>);

/// One piece of work counted by [`Busy`], until dropped.
pub(crate) struct BusyGuard(Arc<watch::Sender<usize>>);

impl Busy {
    /// Counts one more piece of work while the guard lives.
    pub fn hold(&self) -> BusyGuard {
        self.0.send_modify(|n| *n += 1);
        BusyGuard(Arc::clone(&self.0))
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A hub member's health checks.
struct HealthChecks {
    interval: Duration,
    limit: Duration,
    misses: u32,
    next: Instant,
    nonce: u64,
}

/// A connection's one reader (see the module documentation).
pub(crate) struct Reader<D: Decoder, V> {
    frames: FrameReader<crate::transport::BoxRead>,
    decoder: D,
    voice: V,
    fds: Option<FdInbox>,
    takes_fds: bool,
    pause: Option<Pause>,
    /// When bytes last came.
    last_read: Instant,
    /// Since when the buffer has held a partial message.
    partial_since: Option<Instant>,
    /// The buffer's length when a pause was last tried on it (not tried again until it
    /// changes).
    paused_at: Option<usize>,
    peer: Peer,
    kick: Kick,
    closing: watch::Receiver<bool>,
    out: Outbox,
    limits: Limits,
    first: bool,
    busy: Busy,
    busy_count: watch::Receiver<usize>,
    turn: Option<Turn>,
    /// A hub member's health check interval, the silence after which it is removed, and
    /// how many checks that is.
    health_config: (Duration, Duration, u32),
    health: Option<HealthChecks>,
    /// When the peer last sent a request.
    heard: Instant,
    /// An event taken while a request's work ran, for the next call.
    held_event: Option<PeerEvent>,
    /// The daemon went down while a request's work ran: to be said before the next request.
    notice_due: bool,
    /// The connection is over.
    over: bool,
}

impl<D, V> Reader<D, V>
where
    D: Decoder,
    D::Error: Display,
    V: Voice<D::Error>,
{
    /// The reader of `conn` (its I/O is taken: a connection has one reader), decoding with
    /// `decoder` and speaking with `voice`; and the connection's outbox.
    pub fn new(conn: &mut Conn, decoder: D, voice: V) -> Option<(Reader<D, V>, Outbox)> {
        let io = conn.take_io()?;
        let takes_fds = conn.contract.takes_fds && io.fds.is_some();
        let frames = if takes_fds {
            FrameReader::bounded(io.read)
        } else {
            FrameReader::new(io.read)
        };
        let (busy, busy_count) = watch::channel(0);
        let out = io.out.clone();
        let hub = conn.daemon.engine.peers().config();
        let health_config = (hub.ping_interval, hub.silence_limit(), hub.ping_misses);
        let reader = Reader {
            frames,
            decoder,
            voice,
            fds: io.fds,
            takes_fds,
            pause: conn.contract.pause,
            last_read: Instant::now(),
            partial_since: None,
            paused_at: None,
            kick: io.peer.handle.kick(),
            peer: io.peer,
            closing: conn.daemon.closing.subscribe(),
            out: io.out,
            limits: io.limits,
            first: true,
            busy: Busy(Arc::new(busy)),
            busy_count,
            turn: io.turn,
            health_config,
            health: None,
            heard: Instant::now(),
            held_event: None,
            notice_due: false,
            over: false,
        };
        Some((reader, out))
    }

    /// The connection's place in the daemon.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The connection's place in the daemon, to change (join the hub, say who it is...).
    pub fn peer_mut(&mut self) -> &mut Peer {
        &mut self.peer
    }

    /// The connection's registry entry is now `handle` (a hub member's place resumed): its
    /// events and kick flag are read from it.
    pub fn resumed(&mut self, handle: PeerHandle) {
        self.kick = handle.kick();
        drop(std::mem::replace(&mut self.peer.handle, handle));
    }

    /// The decoder, to change its settings (the native frame limit, once the handshake is
    /// done).
    pub fn decoder(&mut self) -> &mut D {
        &mut self.decoder
    }

    /// The voice (a dialect whose words depend on what the connection became).
    pub fn voice(&mut self) -> &mut V {
        &mut self.voice
    }

    /// Work that runs apart from the requests (no idle limit while some does).
    pub fn busy(&self) -> Busy {
        self.busy.clone()
    }

    /// The peer is a hub member (health checks run while it is one), or no longer.
    pub fn set_member(&mut self, member: bool) {
        let (interval, limit, misses) = self.health_config;
        self.health = member.then(|| HealthChecks {
            interval,
            limit,
            misses,
            next: Instant::now() + interval,
            nonce: 0,
        });
        // Joining counts as being heard from.
        self.heard = Instant::now();
    }

    /// The next request or hub event (`events`: take hub events now), or `None` once the
    /// connection is over: the peer left, or the daemon ended it (and said why in the
    /// dialect's words).
    pub async fn next(&mut self, events: bool) -> Option<Next<D::Message>> {
        if !self.first {
            // The request handed out before has taken effect.
            self.turn = None;
        }
        if self.over {
            return None;
        }
        if std::mem::take(&mut self.notice_due) && self.say_going_down() {
            return None;
        }
        if events {
            if let Some(event) = self.held_event.take() {
                return Some(Next::Event(event));
            }
        }
        let mut idle_from = Instant::now();
        loop {
            match self.frames.decode_buffered(&mut self.decoder, Input::Open) {
                Ok(Some(message)) => return self.deliver(message).await,
                Ok(None) => {}
                Err(fault) => return self.end_malformed(&fault),
            }
            if self.frames.ended() {
                self.over = true;
                return None;
            }
            self.track_partial();
            let pause = self.pause_deadline();
            let limit = self.time_limit(idle_from);
            let health = self.health.as_ref().filter(|_| events).map(|h| h.next);
            let room = events.then_some(&self.out);
            tokio::select! {
                biased;
                () = became_true(&mut self.closing) => {
                    self.over = true;
                    return None;
                }
                reason = self.kick.kicked() => {
                    self.end_disconnected(&format!("disconnected {reason}; your jobs go on"));
                    return None;
                }
                event = next_event(room, &mut self.peer.handle) => match event {
                    PeerEvent::ShuttingDown => {
                        if self.say_going_down() {
                            return None;
                        }
                    }
                    event => return Some(Next::Event(event)),
                },
                read = self.frames.fill(&self.decoder) => match read {
                    Ok(0) => {}
                    Ok(_) => {
                        self.last_read = Instant::now();
                        self.paused_at = None;
                    }
                    // Fds lost to a truncated control message: the stream cannot be trusted.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        return self.end_malformed(&ReadError::Io(e));
                    }
                    Err(e) => {
                        tracing::debug!(peer = self.peer.id(), "read failed: {e}");
                        self.over = true;
                        return None;
                    }
                },
                () = sleep_until_some(pause) => match self.paused() {
                    Ok(Some(message)) => return self.deliver(message).await,
                    Ok(None) => {}
                    Err(fault) => return self.end_malformed(&fault),
                },
                limit = time_limit(limit) => {
                    tracing::info!(
                        peer = self.peer.id(),
                        "closing a connection: no whole request within {} ms",
                        limit.as_millis()
                    );
                    let words = self.voice.timed_out(limit, self.first);
                    self.end_with(words, crate::outbox::FLUSH_WAIT);
                    return None;
                }
                () = sleep_until_some(health) => {
                    if !self.check_health() {
                        return None;
                    }
                }
                changed = self.busy_count.changed() => {
                    if changed.is_ok() {
                        idle_from = Instant::now();
                    }
                }
            }
        }
    }

    /// Runs a request's `work` to its end while watching the connection: the kick and the
    /// daemon closing end it at once ([`Watched::Over`]: drop the work), the daemon going
    /// down is said after it (and counts as told at once), and the peer closing its end is
    /// [`Watched::Left`]. Bytes the peer sends meanwhile are read ahead for the next request.
    pub async fn watch<F>(&mut self, work: &mut F) -> Watched<F::Output>
    where
        F: std::future::Future + Unpin,
    {
        if self.over {
            return Watched::Over;
        }
        loop {
            let read_ahead = !self.frames.ended()
                && self.frames.buffered().len() < READ_AHEAD
                && self.decoder.message_len_at_least(self.frames.buffered())
                    > self.frames.buffered().len();
            let take_events = self.held_event.is_none() && !self.notice_due;
            tokio::select! {
                biased;
                () = became_true(&mut self.closing) => {
                    self.over = true;
                    return Watched::Over;
                }
                reason = self.kick.kicked() => {
                    self.end_disconnected(&format!("disconnected {reason}; your jobs go on"));
                    return Watched::Over;
                }
                done = &mut *work => return Watched::Done(done),
                Some(event) = self.peer.handle.next_event(), if take_events => match event {
                    PeerEvent::ShuttingDown => {
                        // Said after the work's answer; the daemon need not wait for it.
                        self.peer.handle.shutdown_told();
                        self.notice_due = true;
                    }
                    event => self.held_event = Some(event),
                },
                read = self.frames.fill(&self.decoder), if read_ahead => match read {
                    Ok(0) | Err(_) => return Watched::Left,
                    Ok(_) => self.last_read = Instant::now(),
                },
            }
        }
    }

    /// Hands out a decoded request, with its fds, once it may take effect.
    async fn deliver(&mut self, message: D::Message) -> Option<Next<D::Message>> {
        let span = self.frames.last_frame_span();
        let fds = match &self.fds {
            Some(inbox) if self.takes_fds => {
                let fds = inbox.claim(span);
                inbox.drop_unclaimable(span.1);
                fds
            }
            // Fds sent to a dialect that takes none are closed.
            Some(inbox) => {
                inbox.drop_unclaimable(u64::MAX);
                Vec::new()
            }
            None => Vec::new(),
        };
        self.heard = Instant::now();
        self.partial_since = None;
        if std::mem::take(&mut self.first) {
            if let Some(turn) = &self.turn {
                tokio::select! {
                    () = turn.wait() => {}
                    () = became_true(&mut self.closing) => {
                        self.over = true;
                        return None;
                    }
                }
            }
        }
        Some(Next::Request(message, fds))
    }

    /// Notes when the buffer began to hold a partial message.
    fn track_partial(&mut self) {
        if self.frames.buffered().is_empty() {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
    }

    /// When a pause would end what the buffer holds (a quiet pause the decoder waits for),
    /// or give it up (a partial message's limit), if the dialect has one.
    fn pause_deadline(&self) -> Option<Instant> {
        let pause = self.pause?;
        let buf = self.frames.buffered();
        if buf.is_empty() || self.paused_at == Some(buf.len()) {
            return None;
        }
        match pause {
            Pause::Quiet(quiet) => self
                .decoder
                .ends_at_pause(buf)
                .then_some(self.last_read + quiet),
            Pause::Partial(limit) => Some(self.partial_since? + limit),
        }
    }

    /// A pause came: the decoder takes what the buffer holds as a message, or the partial
    /// message is given up.
    fn paused(&mut self) -> Result<Option<D::Message>, ReadError<D::Error>> {
        self.paused_at = Some(self.frames.buffered().len());
        match self.pause {
            Some(Pause::Partial(limit)) => {
                let dropped = self.frames.discard();
                self.partial_since = None;
                self.paused_at = None;
                tracing::warn!(
                    peer = self.peer.id(),
                    "dropped a partial request of {dropped} bytes that stood {} ms: reading the next from a clean start",
                    limit.as_millis()
                );
                Ok(None)
            }
            _ => self
                .frames
                .decode_buffered(&mut self.decoder, Input::Paused),
        }
    }

    /// The time limit that applies now: the first request's, or the idle limit (counted
    /// from `idle_from`) while no work of the connection runs.
    fn time_limit(&self, idle_from: Instant) -> Option<(Instant, Duration)> {
        if self.first {
            return self.limits.first;
        }
        if *self.busy_count.borrow() > 0 {
            return None;
        }
        self.limits.idle.map(|idle| (idle_from + idle, idle))
    }

    /// A health check is due: pings a silent member, or removes one silent too long; whether
    /// the connection goes on.
    fn check_health(&mut self) -> bool {
        let silent = self.heard.elapsed().min(self.peer.handle.silent_for());
        let Some(health) = &mut self.health else {
            return true;
        };
        health.next = Instant::now() + health.interval;
        if silent >= health.limit {
            let reason = format!(
                "no answer to {} health checks in {:.1}s",
                health.misses,
                silent.as_secs_f32()
            );
            tracing::info!(target: "ferry::presence", peer = self.peer.id(), "removed: {reason}");
            self.peer.handle.missed_pings(&reason);
            self.end_disconnected(&format!("disconnected: {reason}"));
            return false;
        }
        if silent >= health.interval {
            health.nonce += 1;
            if let Some(words) = self.voice.ping(health.nonce) {
                self.out.try_send(words);
            }
        }
        true
    }

    /// Says the daemon is going down (and marks it told), if the outbox has room (a peer that
    /// does not read cannot hold the shutdown up); whether the connection ends.
    fn say_going_down(&mut self) -> bool {
        let notice = self.voice.going_down();
        if let Some(words) = notice.words {
            self.out.try_send(words);
        }
        self.peer.handle.shutdown_told();
        if notice.closes {
            self.over = true;
            self.out.end(NOTICE_WAIT);
        }
        notice.closes
    }

    /// Ends the connection for a malformed request.
    fn end_malformed(&mut self, fault: &ReadError<D::Error>) -> Option<Next<D::Message>> {
        tracing::info!(peer = self.peer.id(), "closing a connection: {fault}");
        let words = self.voice.malformed(fault);
        self.end_with(words, crate::outbox::FLUSH_WAIT);
        None
    }

    /// Ends the connection of a peer disconnected by the daemon.
    fn end_disconnected(&mut self, message: &str) {
        let words = self.voice.disconnected(message);
        self.end_with(words, KICK_WRITE);
    }

    /// Queues the last words, if there is room (a peer that does not read is not waited
    /// for), and ends the connection.
    fn end_with(&mut self, words: Option<Vec<u8>>, limit: Duration) {
        if let Some(words) = words {
            self.out.try_send(words);
        }
        self.out.end(limit);
        self.over = true;
    }
}

/// The peer's next hub event, taken only once its outbox has room (when `room` is given:
/// events are wanted now); never otherwise.
async fn next_event(room: Option<&Outbox>, handle: &mut PeerHandle) -> PeerEvent {
    let Some(out) = room else {
        return std::future::pending().await;
    };
    if !out.room().await {
        return std::future::pending().await;
    }
    match handle.next_event().await {
        Some(event) => event,
        // The registry is gone: the daemon is going away.
        None => std::future::pending().await,
    }
}

/// Resolves at a time limit's deadline, with the limit (to name it); never without one.
pub(crate) async fn time_limit(limit: Option<(Instant, Duration)>) -> Duration {
    match limit {
        Some((deadline, limit)) => {
            tokio::time::sleep_until(deadline).await;
            limit
        }
        None => std::future::pending().await,
    }
}

/// Waits until `deadline`, or for ever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
