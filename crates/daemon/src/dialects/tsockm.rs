//! The TsockM dialect adapter: TsockM's own client works against it unchanged.
//!
//! - A connection carries one request (see `ferry_wire::tsockm::RequestDecoder`): it ends
//!   where the connection ends, or, for a login (whose connection stays open), once its seven
//!   fields are there and the listener table's pause (50 ms) passes with nothing more. Each
//!   request takes effect in the order its connection was accepted (TsockM's client sends
//!   each on a new connection, one after another).
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
//!   goes in one write, at least 10 ms apart (the listener table paces the writes), and a
//!   `MSG` waits for that lookup (at most [`LOOKUP_WAIT`]) before anything else is written.
//! - A kick, missed health checks and the daemon going down are said on a push connection
//!   with `RES::COMM_END::200::server::server::client::OK`, and it closes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use ferry_engine::peers::{PeerEvent, SendError, SERVER_ID};
use ferry_io::ReadError;
use ferry_wire::tsockm::{
    self, Action, Incoming, Kind, Message, RequestDecoder, Status, TsockmError,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::Conn;
use crate::outbox::Outbox;
use crate::policy::RefusalKind;
use crate::reader::{Next, Notice, Reader, Voice};

/// How long a push connection waits, after a `MSG`, for its client's `GET_PEER` lookup.
const LOOKUP_WAIT: Duration = Duration::from_secs(1);

/// How long a push connection's goodbye may take to be written.
const GOODBYE_WRITE: Duration = Duration::from_millis(500);

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

/// What the connection layer says in TsockM's words: an `ERR` on a request connection; on a
/// push connection (once logged in) a goodbye, `RES::COMM_END` (TsockM's client quits when
/// it reads an `ERR` there), and health checks.
struct TsockmVoice {
    /// The listener's address as the client reached it.
    here: String,
    /// The client's address.
    there: String,
    /// The connection is a logged-in peer's push connection.
    pushing: bool,
}

/// A push connection's goodbye: the exact bytes TsockM's client takes as its end.
fn goodbye() -> Message {
    Message::new(
        Kind::Res,
        Action::CommEnd,
        Status::Ok,
        "server",
        "server",
        "client",
        "OK",
    )
}

impl TsockmVoice {
    /// What is said on this connection: an `ERR` on a request connection, the goodbye on a
    /// push connection (TsockM's client quits when it reads an `ERR` there).
    fn say(&self, status: Status, message: &str) -> Option<Vec<u8>> {
        Some(if self.pushing {
            goodbye().encode()
        } else {
            error(Action::None, status, &self.here, &self.there, message)
        })
    }
}

impl Voice<TsockmError> for TsockmVoice {
    fn refused(&self, kind: RefusalKind, message: &str) -> Option<Vec<u8>> {
        let status = match kind {
            RefusalKind::InvalidRequest => Status::BadRequest,
            _ => Status::BadGateway,
        };
        self.say(status, message)
    }

    fn malformed(&self, fault: &ReadError<TsockmError>) -> Option<Vec<u8>> {
        let status = match fault {
            ReadError::Decode(e) => e.status(),
            _ => Status::BadRequest,
        };
        self.say(status, &fault.to_string())
    }

    fn going_down(&self) -> Notice {
        Notice {
            words: self.pushing.then(|| goodbye().encode()),
            closes: true,
        }
    }

    fn disconnected(&self, message: &str) -> Option<Vec<u8>> {
        self.say(Status::BadGateway, message)
    }

    fn ping(&self, _nonce: u64) -> Option<Vec<u8>> {
        let check = Message::new(
            Kind::Req,
            Action::Comm,
            Status::Ok,
            "server",
            &self.here,
            &self.there,
            "check?",
        );
        self.pushing.then(|| check.encode())
    }
}

/// The reader of a TsockM connection.
type TsockmReader = Reader<RequestDecoder, TsockmVoice>;

async fn serve_connection(mut conn: Conn) {
    let voice = TsockmVoice {
        here: conn.ends.local.clone(),
        there: conn.ends.remote.clone(),
        pushing: false,
    };
    let Some((mut reader, out)) = Reader::new(&mut conn, RequestDecoder::default(), voice) else {
        return;
    };
    let message = match reader.next(true).await {
        Some(Next::Request(Incoming::Message(message), _)) => message,
        _ => return,
    };
    match (message.kind, message.action) {
        (Kind::Req, Action::Comm) => login(&conn, reader, out, message).await,
        _ => {
            if let Some(refusal) = serve_request(&conn, &message) {
                out.send(refusal).await;
            }
        }
    }
}

/// Serves a request that came on a connection of its own; the `ERR` to answer, if any.
fn serve_request(conn: &Conn, message: &Message) -> Option<Vec<u8>> {
    let (here, there) = (conn.ends.local.as_str(), conn.ends.remote.as_str());
    let registry = conn.daemon.engine.peers();
    let lines = conn.daemon.state::<PushLines>();
    let sender = message.sender_id.as_str();
    let unknown = || {
        error(
            message.action,
            Status::NotFound,
            here,
            there,
            &format!("no peer '{sender}' of yours is logged in (send REQ::COMM first)"),
        )
    };
    // A request acts for the member it names only if this connection's principal logged it
    // in, on this dialect: a TsockM request can speak neither as another user's member nor as
    // a native one (the owner's, say).
    let acting = matches!(
        (message.kind, message.action),
        (Kind::Req, Action::Msg | Action::GetPeer | Action::CommEnd) | (Kind::Res, Action::Comm)
    );
    if acting && !registry.acts_for(sender, "tsockm", conn.access.principal()) {
        return Some(unknown());
    }
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

/// A login: the connection becomes the peer's push connection.
async fn login(conn: &Conn, mut reader: TsockmReader, out: Outbox, message: Message) {
    let (here, there) = (conn.ends.local.clone(), conn.ends.remote.clone());
    // Only the id and name are kept: the member list (up to --hub-presence-max of them) is
    // nothing a TsockM client is told, and held for the connection's life it cost a login
    // ~150 KB in a large hub.
    let joined = match reader
        .peer_mut()
        .handle
        .join(Some(message.body.clone()), conn.contract.hub_accepts)
    {
        Ok(joined) => (joined.id, joined.name),
        Err(why) => {
            let detail = format!("cannot log in as '{}': {why}", message.body);
            out.send(error(
                Action::Comm,
                Status::BadRequest,
                &here,
                &there,
                &detail,
            ))
            .await;
            return;
        }
    };
    let (id, name) = joined;
    tracing::info!(target: "ferry::presence", peer = id, name, from = there, "joined the hub (tsockm)");
    let answer = Message::new(
        Kind::Res,
        Action::Comm,
        Status::Ok,
        "server",
        &here,
        &there,
        &id,
    );
    if !out.send(answer.encode()).await {
        return;
    }
    reader.voice().pushing = true;
    reader.set_member(true);
    let lines = conn.daemon.state::<PushLines>();
    let (line, requests) = mpsc::channel(16);
    lines.set(&id, Some(line));
    let push = Push {
        here,
        there,
        out,
        registry: conn.daemon.engine.peers().clone(),
    };
    // A name another member goes by was given a suffix: the daemon says which (TsockM's
    // login answer carries the id alone).
    let mut awaiting = None;
    // In a cluster the name comes qualified by the daemon (`ann@build1`).
    if name
        .rsplit_once('@')
        .map_or(name.as_str(), |(bare, _)| bare)
        != message.body
    {
        let text = format!(
            "you are {name} here: '{}' is another member's name",
            message.body
        );
        if !push
            .out
            .send(push.message(SERVER_ID, &clean(&text)).encode())
            .await
        {
            return;
        }
        awaiting = Some(Push::lookup_of(SERVER_ID, SERVER_ID));
    }
    push.serve(&mut reader, requests, awaiting).await;
    lines.set(&id, None);
}

/// A push connection's writing side.
struct Push {
    here: String,
    there: String,
    out: Outbox,
    registry: ferry_engine::peers::PeerRegistry,
}

impl Push {
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

    /// The lookup a client makes after a pushed message from `id` (named `name`), waited for
    /// until a deadline.
    fn lookup_of(id: &str, name: &str) -> (String, String, Instant) {
        (id.into(), name.into(), Instant::now() + LOOKUP_WAIT)
    }

    /// Serves the push connection until it ends (the peer leaves, logs out, is kicked or
    /// removed, or the daemon closes). `awaiting`: the sender whose name the client is about
    /// to ask for, and until when that is waited for.
    async fn serve(
        &self,
        reader: &mut TsockmReader,
        mut lines: mpsc::Receiver<Line>,
        mut awaiting: Option<(String, String, Instant)>,
    ) {
        loop {
            let lookup_deadline = awaiting.as_ref().map(|a| a.2);
            tokio::select! {
                next = reader.next(awaiting.is_none()) => {
                    let message = match next {
                        None => return,
                        Some(Next::Request(incoming, _)) => {
                            if let Incoming::Stray(bytes) = incoming {
                                tracing::debug!(peer = reader.peer().id(), bytes, "tsockm: ignored bytes on a push connection (requests come on connections of their own)");
                            }
                            continue;
                        }
                        Some(Next::Event(PeerEvent::Message(message))) => {
                            awaiting = Some(Push::lookup_of(&message.from, &message.from_name));
                            self.message(&message.from, &tsockm::pushed(&message.text))
                        }
                        Some(Next::Event(PeerEvent::Presence(presence))) => {
                            let text = if presence.joined {
                                format!("{} ({}) joined", presence.name, presence.peer)
                            } else {
                                format!("{} ({}) left: {}", presence.name, presence.peer, presence.reason)
                            };
                            awaiting = Some(Push::lookup_of(SERVER_ID, SERVER_ID));
                            self.message(SERVER_ID, &clean(&text))
                        }
                        Some(Next::Event(PeerEvent::Missed(missed))) => {
                            awaiting = Some(Push::lookup_of(SERVER_ID, SERVER_ID));
                            self.message(SERVER_ID, &clean(&missed.describe()))
                        }
                        // Said by the reader.
                        Some(Next::Event(PeerEvent::ShuttingDown)) => continue,
                    };
                    if !self.out.send(message.encode()).await {
                        return;
                    }
                }
                Some(line) = lines.recv() => match line {
                    Line::Lookup(id) => {
                        let name = match &awaiting {
                            Some((from, name, _)) if *from == id => Some(name.clone()),
                            _ => self.registry.name_of(&id),
                        };
                        if awaiting.as_ref().is_some_and(|a| a.0 == id) {
                            awaiting = None;
                        }
                        let answer = match name {
                            Some(name) => Message::new(Kind::Res, Action::GetPeer, Status::Ok, "server", &self.here, &self.there, &name),
                            None => Message::new(Kind::Res, Action::GetPeer, Status::NotFound, "server", &self.here, &self.there, Status::NotFound.name()),
                        };
                        if !self.out.send(answer.encode()).await {
                            return;
                        }
                    }
                    Line::End => {
                        reader.peer_mut().handle.leave("it logged out (COMM_END)");
                        self.out.send(goodbye().encode()).await;
                        self.out.end(GOODBYE_WRITE);
                        return;
                    }
                },
                () = sleep_until_some(lookup_deadline) => awaiting = None,
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
    for c in tsockm::pushed(&text.replace("::", ": ")).chars() {
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
