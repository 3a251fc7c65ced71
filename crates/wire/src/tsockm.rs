//! The TsockM dialect (seed 002, thetazzo/TsockM at f2967f2c): seven ASCII fields joined by
//! `::`, `TYPE::ACTION::STATUS::sender_id::src::dst::body`, with no length and no delimiter.
//!
//! TsockM's peers take one `read()` as one message: a message ends where the sender's write
//! (and, for a request connection, the connection) ends. [`RequestDecoder`] finds that end on
//! a connection toward the server: a request ends where its connection ends (TsockM's client
//! closes each request connection after its one write), and a login, whose connection stays
//! open for pushes, once its seven fields are there and the stream pauses; [`decode`] parses
//! a whole message.
//!
//! The body is everything after the sixth `::` (TsockM's own parser keeps only up to the
//! next `::`, cutting the rest; ferry keeps the text whole). What a TsockM client can show is
//! narrower than what ferry carries: see [`carries`].

use std::fmt;

/// The fields' separator.
pub const SEPARATOR: &str = "::";

/// Largest request the daemon takes (TsockM's client sends at most 256 bytes).
pub const MAX_REQUEST: usize = 4096;

/// What TsockM's client reads in one `read()`: a longer message would be split in two.
pub const CLIENT_READ: usize = 1024;

/// Longest body ferry pushes to a TsockM client: [`CLIENT_READ`] less room for the other six
/// fields (types, an id, two socket addresses).
pub const MAX_PUSH_BODY: usize = 800;

/// The byte TsockM's client takes as the end of what it read (it slices its undefined-filled
/// buffer, which a debug build fills with 0xAA, up to the first such byte).
pub const CLIENT_END_BYTE: u8 = 0xAA;

/// The first field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request.
    Req,
    /// A response.
    Res,
    /// An error.
    Err,
}

/// The second field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open the connection that takes pushes (login), or, from the server, a health check.
    Comm,
    /// End it.
    CommEnd,
    /// A message.
    Msg,
    /// A peer's name by its id.
    GetPeer,
    /// No action (in errors about a request whose action is unknown).
    None,
}

/// The third field (HTTP-like).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200
    Ok,
    /// 400
    BadRequest,
    /// 404
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 502
    BadGateway,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request, response or error.
    pub kind: Kind,
    /// What it is about.
    pub action: Action,
    /// Its status.
    pub status: Status,
    /// The sender's peer id (`client` before it has one, `server` for the server).
    pub sender_id: String,
    /// The source address (or `client`/`server`).
    pub src: String,
    /// The destination address.
    pub dst: String,
    /// The text: a user name, a message, a peer id, `OK`, an error.
    pub body: String,
}

/// Why bytes are not a TsockM message. [`TsockmError::status`] is the status to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsockmError {
    /// Nothing came.
    #[error("empty request")]
    Empty,
    /// The bytes are not UTF-8.
    #[error("the request is not UTF-8 text")]
    NotUtf8,
    /// Fewer than seven fields.
    #[error(
        "expected 7 fields (TYPE, ACTION, STATUS, ID, SRC, DST, BODY) joined by double colons, got {0}"
    )]
    TooFewFields(usize),
    /// The first field is not `REQ`, `RES` or `ERR`.
    #[error("unknown type '{0}' (REQ, RES or ERR)")]
    UnknownType(String),
    /// The second field is not an action.
    #[error("unknown action '{0}' (COMM, COMM_END, MSG or GET_PEER)")]
    UnknownAction(String),
    /// The third field is not a status.
    #[error("unknown status '{0}' (200, 400, 404, 405 or 502)")]
    UnknownStatus(String),
    /// The request is over the limit.
    #[error("request of {len} bytes is over the limit of {max} bytes")]
    TooLong {
        /// Its length so far.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl TsockmError {
    /// The status an `ERR` answer carries for this error: 405 for an unknown action, 400 for
    /// anything else malformed.
    pub fn status(&self) -> Status {
        match self {
            TsockmError::UnknownAction(_) => Status::MethodNotAllowed,
            _ => Status::BadRequest,
        }
    }
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Req => "REQ",
            Kind::Res => "RES",
            Kind::Err => "ERR",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "REQ" => Kind::Req,
            "RES" => Kind::Res,
            "ERR" => Kind::Err,
            _ => return None,
        })
    }
}

impl Action {
    /// The action as the wire writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Comm => "COMM",
            Action::CommEnd => "COMM_END",
            Action::Msg => "MSG",
            Action::GetPeer => "GET_PEER",
            Action::None => "NONE",
        }
    }

    fn parse(text: &str) -> Option<Action> {
        Some(match text {
            "COMM" => Action::Comm,
            "COMM_END" => Action::CommEnd,
            "MSG" => Action::Msg,
            "GET_PEER" => Action::GetPeer,
            "NONE" => Action::None,
            _ => return None,
        })
    }
}

impl Status {
    /// The code as the wire writes it.
    pub fn code(self) -> &'static str {
        match self {
            Status::Ok => "200",
            Status::BadRequest => "400",
            Status::NotFound => "404",
            Status::MethodNotAllowed => "405",
            Status::BadGateway => "502",
        }
    }

    /// Its name, as TsockM writes it in error bodies.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "BAD_REQUEST",
            Status::NotFound => "NOT_FOUND",
            Status::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Status::BadGateway => "BAD_GATEWAY",
        }
    }

    fn parse(text: &str) -> Option<Status> {
        Some(match text {
            "200" => Status::Ok,
            "400" => Status::BadRequest,
            "404" => Status::NotFound,
            "405" => Status::MethodNotAllowed,
            "502" => Status::BadGateway,
            _ => return None,
        })
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}::{}::{}::{}::{}::{}::{}",
            self.kind.as_str(),
            self.action.as_str(),
            self.status.code(),
            self.sender_id,
            self.src,
            self.dst,
            self.body
        )
    }
}

impl Message {
    /// A message of the given fields.
    pub fn new(
        kind: Kind,
        action: Action,
        status: Status,
        sender_id: &str,
        src: &str,
        dst: &str,
        body: &str,
    ) -> Message {
        Message {
            kind,
            action,
            status,
            sender_id: sender_id.into(),
            src: src.into(),
            dst: dst.into(),
            body: body.into(),
        }
    }

    /// The message's bytes, to be sent in one write.
    pub fn encode(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

/// What a TsockM connection carries toward the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole request (each connection carries one).
    Message(Message),
    /// Bytes after a connection's one request (on a push connection, where a client has
    /// nothing to say): counted, and otherwise ignored.
    Stray(usize),
}

/// Whether `buf` starts a login (`REQ::COMM::...`), the one request whose connection stays
/// open (for pushes), so that only a pause can end it.
pub fn is_login(buf: &[u8]) -> bool {
    buf.starts_with(b"REQ::COMM::")
}

/// A connection's requests as a [`crate::Decoder`] (what the server reads): its first
/// message ends where the connection ends, or, for a login, at a pause once its seven fields
/// are there; whatever follows it is [`Incoming::Stray`]. A request over [`MAX_REQUEST`] is
/// refused as soon as it is over.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestDecoder {
    /// The connection's one request came.
    taken: bool,
}

impl crate::Decoder for RequestDecoder {
    type Message = Incoming;
    type Error = TsockmError;

    fn decode(
        &mut self,
        buf: &[u8],
        input: crate::Input,
    ) -> Result<Option<(Incoming, usize)>, TsockmError> {
        if self.taken {
            return Ok((!buf.is_empty()).then_some((Incoming::Stray(buf.len()), buf.len())));
        }
        if buf.len() > MAX_REQUEST {
            return Err(TsockmError::TooLong {
                len: buf.len(),
                max: MAX_REQUEST,
            });
        }
        let whole = match input {
            crate::Input::Open => false,
            crate::Input::Paused => self.ends_at_pause(buf),
            crate::Input::Ended => !buf.is_empty(),
        };
        if !whole {
            return Ok(None);
        }
        let message = decode(buf)?;
        self.taken = true;
        Ok(Some((Incoming::Message(message), buf.len())))
    }

    fn ends_at_pause(&self, buf: &[u8]) -> bool {
        !self.taken && is_login(buf) && fields_complete(buf)
    }
}

/// Whether `buf` holds all seven fields (the body may still be growing).
pub fn fields_complete(buf: &[u8]) -> bool {
    buf.windows(2).filter(|w| w == b"::").take(6).count() == 6
}

/// Parses one whole message.
pub fn decode(buf: &[u8]) -> Result<Message, TsockmError> {
    if buf.is_empty() {
        return Err(TsockmError::Empty);
    }
    if buf.len() > MAX_REQUEST {
        return Err(TsockmError::TooLong {
            len: buf.len(),
            max: MAX_REQUEST,
        });
    }
    let text = std::str::from_utf8(buf).map_err(|_| TsockmError::NotUtf8)?;
    let fields: Vec<&str> = text.splitn(7, SEPARATOR).collect();
    // The type is checked first, as TsockM does: `FOO` alone is an unknown type.
    let kind =
        Kind::parse(fields[0]).ok_or_else(|| TsockmError::UnknownType(excerpt(fields[0])))?;
    if fields.len() < 7 {
        return Err(TsockmError::TooFewFields(fields.len()));
    }
    let action =
        Action::parse(fields[1]).ok_or_else(|| TsockmError::UnknownAction(excerpt(fields[1])))?;
    let status =
        Status::parse(fields[2]).ok_or_else(|| TsockmError::UnknownStatus(excerpt(fields[2])))?;
    Ok(Message {
        kind,
        action,
        status,
        sender_id: fields[3].into(),
        src: fields[4].into(),
        dst: fields[5].into(),
        body: fields[6].into(),
    })
}

/// Whether a TsockM client can show `body` whole, as the body of a pushed message (with its
/// control characters as visible escapes, see [`pushed`]): `Err` says why not (ferry refuses
/// such a delivery rather than cut it).
pub fn carries(body: &str) -> Result<(), String> {
    let body = &*pushed(body);
    if body.contains(SEPARATOR) {
        return Err("a TsockM client cuts a message at '::'".into());
    }
    if body.as_bytes().contains(&CLIENT_END_BYTE) {
        return Err(
            "a TsockM client cuts a message at the byte 0xAA (in this text's UTF-8)".into(),
        );
    }
    if body.len() > MAX_PUSH_BODY {
        return Err(format!(
            "a TsockM client reads {CLIENT_READ} bytes at a time: a message to it is at most {MAX_PUSH_BODY} bytes; this one has {}",
            body.len()
        ));
    }
    Ok(())
}

/// A message's text as it is pushed to a TsockM client: its control characters as visible
/// escapes (TsockM's client prints what it reads raw, so a `\n` would forge a line and an
/// ESC drive the terminal).
pub fn pushed(text: &str) -> std::borrow::Cow<'_, str> {
    ferry_common::text::visible(text)
}

/// A short, printable excerpt of a field for an error.
fn excerpt(field: &str) -> String {
    let mut out: String = field.chars().take(32).filter(|c| !c.is_control()).collect();
    if field.chars().count() > 32 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transcript_parses_and_prints_byte_for_byte() {
        let login = b"REQ::COMM::200::client::client::127.0.0.1:6969::ann";
        let message = decode(login).expect("login");
        assert_eq!(message.kind, Kind::Req);
        assert_eq!(message.action, Action::Comm);
        assert_eq!(message.body, "ann");
        assert_eq!(message.encode(), login.to_vec());
        let with_colons = decode(b"REQ::MSG::200::id::client::a::x::y").expect("msg");
        assert_eq!(with_colons.body, "x::y");
    }

    #[test]
    fn malformed_requests_name_their_fault_and_status() {
        let cases: [(&[u8], Status); 6] = [
            (b"REQ", Status::BadRequest),
            (b"FOO::MSG::200::a::b::c::d", Status::BadRequest),
            (b"REQ::FOO::200::a::b::c::d", Status::MethodNotAllowed),
            (b"REQ::MSG::999::a::b::c::d", Status::BadRequest),
            (b"REQ::MSG::200::a::b::c::\xff", Status::BadRequest),
            (b"", Status::BadRequest),
        ];
        for (bytes, status) in cases {
            let error = decode(bytes).expect_err("malformed");
            assert_eq!(error.status(), status, "{error}");
        }
        assert!(matches!(
            decode(&[b'a'; MAX_REQUEST + 1]),
            Err(TsockmError::TooLong { .. })
        ));
    }

    #[test]
    fn what_a_tsockm_client_cannot_show_is_refused() {
        assert!(carries("hello").is_ok());
        assert!(carries("a::b").is_err());
        assert!(carries("ª").is_err(), "U+00AA is C2 AA in UTF-8");
        assert!(carries(&"x".repeat(MAX_PUSH_BODY + 1)).is_err());
    }

    #[test]
    fn fields_are_complete_at_the_sixth_separator() {
        assert!(!fields_complete(b"REQ::MSG::200::a::b::c"));
        assert!(fields_complete(b"REQ::MSG::200::a::b::c::"));
    }
}
