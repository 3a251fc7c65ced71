//! The TsockM dialect adapter (seed 002): TsockM's own client works against it unchanged.
//!
//! - A connection's first message is read until the connection ends, or until the seven
//!   fields are there and [`QUIET`] passes with nothing more (TsockM has no delimiter: a
//!   request split over two writes is still one request), within the handshake time limit.
//! - `REQ::COMM` (a login, the body is the user name) makes the connection the peer's push
//!   connection: it joins the hub, is answered `RES::COMM::200::server::<server addr>::<client
//!   addr>::<peer id>`, and from then on gets the hub's messages as `RES::MSG::200::<sender
//!   id>::<src>::<dst>::<text>` (joins and leaves as messages from `server`), health checks
//!   as `REQ::COMM::200::server::...::check?`, and its `GET_PEER` answers.
//! - Every other request (`MSG`, `GET_PEER`, `COMM_END`, and `RES::COMM`, the answer to a
//!   health check) comes on a connection of its own, carrying the sender's id, and gets no
//!   answer but an `ERR` (400 malformed, 404 unknown peer, 405 unknown action) on that same
//!   connection. Nothing but `RES` goes on a push connection: TsockM's client quits when it
//!   reads an `ERR` there, so a lookup of a departed peer is answered `RES::GET_PEER::404`.
//! - TsockM's client takes one `read()` as one message, and after each `MSG` asks `GET_PEER`
//!   for the sender's name and takes the next thing it reads as the answer. So each message
//!   goes in one write, a `MSG` waits for that lookup (at most [`LOOKUP_WAIT`]) before
//!   anything else is written, and writes to one peer are at least [`PACE`] apart.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use ferry_engine::peers::{PeerEvent, SendError, SERVER_ID};
use ferry_wire::tsockm::{
    self, decode, fields_complete, Action, Kind, Message, Status, TsockmError, MAX_REQUEST,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::{became_true, BoxRead, BoxWrite, Conn};
use crate::policy::RefusalKind;

/// How long a request whose seven fields are there may still grow.
const QUIET: Duration = Duration::from_millis(50);

/// How long a push connection waits, after a `MSG`, for its client's `GET_PEER` lookup.
const LOOKUP_WAIT: Duration = Duration::from_secs(1);

/// The least time between two writes to one TsockM client, so that its `read()` never takes
/// two messages as one.
const PACE: Duration = Duration::from_millis(10);

/// How long one write to a TsockM client may take: a client that does not read its push
/// connection is let go (its place held for the grace period).
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// What a push connection is asked to do by its peer's request connections.
enum Line {
    /// Answer a `GET_PEER` for this id.
    Lookup(String),
    /// The peer said `COMM_END`: say goodbye and close.
    End,
}

/// The push connections of the daemon's TsockM peers, by peer id (shared by every TsockM
/// connection through `Server::state`).
#[derive(Default)]
struct PushLines(Mutex<HashMap<String, mpsc::Sender<Line>>>);

impl PushLines {
    fn get(&self, id: &str) -> Option<mpsc::Sender<Line>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn set(&self, id: &str, line: Option<mpsc::Sender<Line>>) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match line {
            Some(line) => lines.insert(id.to_owned(), line),
            None => lines.remove(id),
        };
    }
}

/// Serves one admitted connection (the listener table's entry point).
pub(crate) fn serve(conn: Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_connection(conn))
}

/// A refusal of a connection that will not be served: one `ERR`.
pub(crate) fn refusal(kind: RefusalKind, message: &str) -> Vec<u8> {
    let status = match kind {
        RefusalKind::InvalidRequest => Status::BadRequest,
        _ => Status::BadGateway,
    };
    error(Action::None, status, "server", "client", message)
}

/// An `ERR` message's bytes: the status's name, then what was wrong.
fn error(action: Action, status: Status, src: &str, dst: &str, detail: &str) -> Vec<u8> {
    let body = format!("{}: {}", status.name(), detail.replace("::", ": "));
    Message::new(Kind::Err, action, status, "server", src, dst, &body).encode()
}

/// What reading a request came to.
enum Request {
    /// The request's bytes (the connection ended after them, or went quiet).
    Bytes(Vec<u8>),
    /// The connection ended before a byte came.
    Closed,
    /// Nothing came in time.
    Silent,
    /// Over [`MAX_REQUEST`].
    TooLong(usize),
}

/// Reads one request (see the module documentation).
async fn read_request(read: &mut BoxRead, deadline: Instant) -> Request {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let wait_until = if fields_complete(&buf) {
            deadline.min(Instant::now() + QUIET)
        } else {
            deadline
        };
        match tokio::time::timeout_at(wait_until, read.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return if buf.is_empty() {
                    Request::Closed
                } else {
                    Request::Bytes(buf)
                };
            }
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_REQUEST {
                    return Request::TooLong(buf.len());
                }
            }
            Err(_) if buf.is_empty() => return Request::Silent,
            Err(_) => return Request::Bytes(buf),
        }
    }
}

async fn serve_connection(mut conn: Conn) {
    let here = conn.local.clone();
    let there = conn.peer.address.clone();
    let bytes = match read_request(&mut conn.read, conn.limits.handshake_deadline).await {
        Request::Bytes(bytes) => bytes,
        Request::Closed => return,
        Request::Silent => {
            let detail = format!("no request within {} ms", conn.limits.handshake.as_millis());
            let _ = write(
                &mut conn.write,
                &error(Action::None, Status::BadRequest, &here, &there, &detail),
            )
            .await;
            return;
        }
        Request::TooLong(len) => {
            let e = TsockmError::TooLong {
                len,
                max: MAX_REQUEST,
            };
            tracing::info!(peer = conn.peer.id(), "tsockm: {e}");
            let _ = write(
                &mut conn.write,
                &error(Action::None, e.status(), &here, &there, &e.to_string()),
            )
            .await;
            return;
        }
    };
    let message = match decode(&bytes) {
        Ok(message) => message,
        Err(e) => {
            tracing::info!(peer = conn.peer.id(), "tsockm: bad request: {e}");
            let _ = write(
                &mut conn.write,
                &error(Action::None, e.status(), &here, &there, &e.to_string()),
            )
            .await;
            return;
        }
    };
    match (message.kind, message.action) {
        (Kind::Req, Action::Comm) => login(conn, message).await,
        _ => {
            if let Some(refusal) = serve_request(&conn, &message) {
                let _ = write(&mut conn.write, &refusal).await;
            }
        }
    }
}

/// Serves a request that came on a connection of its own; the `ERR` to answer, if any.
fn serve_request(conn: &Conn, message: &Message) -> Option<Vec<u8>> {
    let (here, there) = (conn.local.as_str(), conn.peer.address.as_str());
    let registry = conn.server.engine.peers();
    let lines = conn.server.state::<PushLines>();
    let sender = message.sender_id.as_str();
    let unknown = || {
        error(
            message.action,
            Status::NotFound,
            here,
            there,
            &format!("no peer '{sender}' is logged in (send REQ::COMM first)"),
        )
    };
    match (message.kind, message.action) {
        (Kind::Req, Action::Msg) => {
            registry.heard(sender);
            match registry.send_as(sender, None, message.body.clone()) {
                Ok(_) => None,
                Err(SendError::UnknownSender(_)) => Some(unknown()),
                Err(e) => Some(error(
                    Action::Msg,
                    Status::BadRequest,
                    here,
                    there,
                    &e.to_string(),
                )),
            }
        }
        (Kind::Req, Action::GetPeer) => {
            registry.heard(sender);
            match lines.get(sender) {
                Some(line) => {
                    // A full line means lookups are piling up; the client asked for one too many.
                    let _ = line.try_send(Line::Lookup(message.body.clone()));
                    None
                }
                None => Some(unknown()),
            }
        }
        (Kind::Req, Action::CommEnd) => match lines.get(sender) {
            Some(line) => {
                let _ = line.try_send(Line::End);
                None
            }
            None => Some(unknown()),
        },
        // The answer to a health check.
        (Kind::Res, Action::Comm) => {
            if registry.heard(sender) {
                None
            } else {
                Some(unknown())
            }
        }
        (Kind::Req, Action::None) => Some(error(
            Action::None,
            Status::MethodNotAllowed,
            here,
            there,
            "a request needs an action (COMM, COMM_END, MSG or GET_PEER)",
        )),
        (kind, action) => Some(error(
            action,
            Status::BadRequest,
            here,
            there,
            &format!(
                "a client sends requests (REQ), or RES::COMM to answer a health check; not {}::{}",
                match kind {
                    Kind::Req => "REQ",
                    Kind::Res => "RES",
                    Kind::Err => "ERR",
                },
                action.as_str()
            ),
        )),
    }
}

/// Who a login made of its connection.
struct LoggedIn {
    id: String,
    name: String,
}

/// A login: the connection becomes the peer's push connection.
async fn login(mut conn: Conn, message: Message) {
    let (here, there) = (conn.local.clone(), conn.peer.address.clone());
    // Only the id and name are kept: the member list (up to --hub-presence-max of them) is
    // nothing a TsockM client is told, and held for the connection's life it cost a login
    // ~150 KB in a large hub.
    let joined = match conn
        .peer
        .handle
        .join(Some(message.body.clone()), tsockm::carries)
    {
        Ok(joined) => LoggedIn {
            id: joined.id,
            name: joined.name,
        },
        Err(why) => {
            let detail = format!("cannot log in as '{}': {why}", message.body);
            let _ = write(
                &mut conn.write,
                &error(Action::Comm, Status::BadRequest, &here, &there, &detail),
            )
            .await;
            return;
        }
    };
    tracing::info!(target: "ferry::presence", peer = joined.id, name = joined.name, from = there, "joined the hub (tsockm)");
    let answer = Message::new(
        Kind::Res,
        Action::Comm,
        Status::Ok,
        "server",
        &here,
        &there,
        &joined.id,
    );
    if write(&mut conn.write, &answer.encode()).await.is_err() {
        return;
    }
    let lines = conn.server.state::<PushLines>();
    let (line, requests) = mpsc::channel(16);
    lines.set(&joined.id, Some(line));
    let mut push = Push {
        here,
        there,
        last_write: Instant::now(),
    };
    push.serve(&mut conn, requests).await;
    lines.set(&joined.id, None);
}

/// A push connection's writing side.
struct Push {
    here: String,
    there: String,
    last_write: Instant,
}

impl Push {
    /// Writes one message in one write, paced; whether it went.
    async fn send(&mut self, write_half: &mut BoxWrite, message: &Message) -> bool {
        tokio::time::sleep_until(self.last_write + PACE).await;
        let sent = matches!(
            tokio::time::timeout(WRITE_WAIT, write(write_half, &message.encode())).await,
            Ok(Ok(()))
        );
        self.last_write = Instant::now();
        sent
    }

    /// A `RES::MSG` from `from` to this peer.
    fn message(&self, from: &str, text: &str) -> Message {
        Message::new(
            Kind::Res,
            Action::Msg,
            Status::Ok,
            from,
            &self.here,
            &self.there,
            text,
        )
    }

    /// Serves the push connection until it ends, is kicked, or the daemon closes.
    async fn serve(&mut self, conn: &mut Conn, mut lines: mpsc::Receiver<Line>) {
        let registry = conn.server.engine.peers().clone();
        let config = registry.config().clone();
        let kick = conn.peer.handle.kick();
        let mut closing = conn.server.closing.subscribe();
        let mut pings =
            tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
        // The sender whose name the client is about to ask for, and until when we wait.
        let mut awaiting: Option<(String, String, Instant)> = None;
        let mut stray = [0u8; 512];
        let goodbye = Message::new(
            Kind::Res,
            Action::CommEnd,
            Status::Ok,
            "server",
            "server",
            "client",
            "OK",
        );
        loop {
            let lookup_deadline = awaiting.as_ref().map(|a| a.2);
            tokio::select! {
                read = conn.read.read(&mut stray) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => tracing::debug!(peer = conn.peer.id(), bytes = n, "tsockm: ignored bytes on a push connection (requests come on connections of their own)"),
                },
                Some(event) = conn.peer.handle.next_event(), if awaiting.is_none() => {
                    let message = match event {
                        PeerEvent::Message(message) => {
                            awaiting = Some((message.from.clone(), message.from_name.clone(), Instant::now() + LOOKUP_WAIT));
                            self.message(&message.from, &message.text)
                        }
                        PeerEvent::Presence(presence) => {
                            let text = if presence.joined {
                                format!("{} ({}) joined", presence.name, presence.peer)
                            } else {
                                format!("{} ({}) left: {}", presence.name, presence.peer, presence.reason)
                            };
                            awaiting = Some((SERVER_ID.into(), SERVER_ID.into(), Instant::now() + LOOKUP_WAIT));
                            self.message(SERVER_ID, &clean(&text))
                        }
                        PeerEvent::ShuttingDown => {
                            let _ = self.send(&mut conn.write, &goodbye).await;
                            conn.peer.handle.shutdown_told();
                            return;
                        }
                    };
                    if !self.send(&mut conn.write, &message).await {
                        return;
                    }
                }
                Some(line) = lines.recv() => match line {
                    Line::Lookup(id) => {
                        let name = match &awaiting {
                            Some((from, name, _)) if *from == id => Some(name.clone()),
                            _ => registry.name_of(&id),
                        };
                        if awaiting.as_ref().is_some_and(|a| a.0 == id) {
                            awaiting = None;
                        }
                        let answer = match name {
                            Some(name) => Message::new(Kind::Res, Action::GetPeer, Status::Ok, "server", &self.here, &self.there, &name),
                            None => Message::new(Kind::Res, Action::GetPeer, Status::NotFound, "server", &self.here, &self.there, Status::NotFound.name()),
                        };
                        if !self.send(&mut conn.write, &answer).await {
                            return;
                        }
                    }
                    Line::End => {
                        conn.peer.handle.leave("it logged out (COMM_END)");
                        let _ = self.send(&mut conn.write, &goodbye).await;
                        return;
                    }
                },
                () = sleep_until_some(lookup_deadline) => awaiting = None,
                _ = kick.kicked() => {
                    let _ = self.send(&mut conn.write, &goodbye).await;
                    return;
                }
                _ = pings.tick(), if awaiting.is_none() => {
                    let silent = conn.peer.handle.silent_for();
                    if silent >= config.silence_limit() {
                        let reason = format!("no answer to {} health checks in {:.1}s", config.ping_misses, silent.as_secs_f32());
                        tracing::info!(target: "ferry::presence", peer = conn.peer.id(), "removed: {reason}");
                        conn.peer.handle.missed_pings(&reason);
                        let _ = self.send(&mut conn.write, &goodbye).await;
                        return;
                    }
                    if silent >= config.ping_interval {
                        let check = Message::new(Kind::Req, Action::Comm, Status::Ok, "server", &self.here, &self.there, "check?");
                        if !self.send(&mut conn.write, &check).await {
                            return;
                        }
                    }
                }
                () = became_true(&mut closing) => return,
            }
        }
    }
}

/// Waits until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A server-made text (a join or a leave) that a TsockM client can show: no `::`, no
/// character whose UTF-8 holds the byte 0xAA, and short enough (a reason cut short ends with
/// `...`; a peer's message is never cut, see `tsockm::carries`).
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.replace("::", ": ").chars() {
        let mut utf8 = [0u8; 4];
        let c = if c
            .encode_utf8(&mut utf8)
            .as_bytes()
            .contains(&tsockm::CLIENT_END_BYTE)
        {
            '?'
        } else {
            c
        };
        if out.len() + c.len_utf8() > tsockm::MAX_PUSH_BODY - 3 {
            out.push_str("...");
            break;
        }
        out.push(c);
    }
    out
}

/// Writes one message in one write.
async fn write(write_half: &mut BoxWrite, bytes: &[u8]) -> std::io::Result<()> {
    write_half.write_all(bytes).await?;
    write_half.flush().await
}
