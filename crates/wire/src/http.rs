//! HTTP/1.1 as ferry's HTTP listener speaks it (RFC 9112): requests decoded from a
//! connection's bytes, responses encoded for its outbox. Sans-IO, as every dialect here.
//!
//! A request is its head (the request line and the header fields, parsed with `httparse`)
//! and, when it declares a `Content-Length`, that many bytes of body. Requests may follow one
//! another on a connection (keep-alive, pipelining); each decodes on its own. What ferry
//! does not take is refused with the status a client expects: a head past [`MAX_HEAD`] bytes
//! or [`MAX_HEADERS`] fields (431), a body past [`MAX_BODY`] (413), a body in a transfer
//! coding (`Transfer-Encoding`: 501; its API takes small JSON bodies with a length), a
//! malformed head or length (400), a version other than HTTP/1.x (505).
//!
//! Responses carry a `Content-Length`, or stream their body in chunks
//! ([`encode_stream_head`], [`encode_chunk`], [`LAST_CHUNK`]); a stream of Server-Sent Events
//! is such a body of [`encode_event`]s.

use crate::{Decoder, Input};

/// The largest request head (request line and header fields), in bytes.
pub const MAX_HEAD: usize = 16 * 1024;

/// The most header fields of one request.
pub const MAX_HEADERS: usize = 64;

/// The largest request body, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// The terminating chunk of a chunked body (no trailer fields).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A request's method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
    /// Any other token.
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method's token, as on the request line.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other(token) => token,
        }
    }

    /// Whether a request of this method may change something (and must pass the origin
    /// check): every method but `GET`, `HEAD` and `OPTIONS`.
    pub fn changes_things(&self) -> bool {
        !matches!(self, Method::Get | Method::Head | Method::Options)
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its method.
    pub method: Method,
    /// Its target as sent: a path and perhaps a query (`/api/v1/jobs?state=running`).
    pub target: String,
    /// Its minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Its header fields in order, names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its body (empty without a `Content-Length`).
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the first field named `name` (lower case), if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_slice())
    }

    /// The value of the first field named `name` (lower case) as text, if it is text.
    pub fn header_text(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The target's path (before any `?`).
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }

    /// The target's query (after the first `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// Whether the connection stays open after the response: HTTP/1.1 unless the client
    /// sent `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        let connection = self.header_text("connection").unwrap_or("");
        let says = |token: &str| {
            connection
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.minor_version >= 1 {
            !says("close")
        } else {
            says("keep-alive")
        }
    }
}

/// Why bytes are not a request ferry takes; each carries the status to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The head is longer than [`MAX_HEAD`].
    #[error("a request head is at most {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    #[error("a request has at most {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// The head is not HTTP/1.x.
    #[error("not an HTTP/1.1 request: {0}")]
    Malformed(String),
    /// A version other than HTTP/1.0 or HTTP/1.1.
    #[error("only HTTP/1.0 and HTTP/1.1 are spoken here")]
    Version,
    /// A `Content-Length` that is not one decimal number.
    #[error("a Content-Length is one decimal number")]
    BadLength,
    /// A body larger than [`MAX_BODY`].
    #[error("a request body is at most {MAX_BODY} bytes")]
    BodyTooLarge,
    /// A body in a transfer coding.
    #[error("request bodies in a transfer coding are not taken: send a Content-Length")]
    TransferCoding,
    /// The connection ended inside a request.
    #[error("the connection ended inside a request")]
    Truncated,
}

impl HttpError {
    /// The status a server answers this with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::Malformed(_) | HttpError::BadLength | HttpError::Truncated => 400,
            HttpError::Version => 505,
            HttpError::BodyTooLarge => 413,
            HttpError::TransferCoding => 501,
        }
    }
}

/// The request at the start of `buf`, and the bytes it took; `None` until it is whole.
pub fn decode_request(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(HttpError::HeadTooLarge)
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HttpError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HttpError::Version),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    let (Some(method), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HttpError::Malformed("an incomplete request line".into()));
    };
    let headers: Vec<(String, Vec<u8>)> = parsed
        .headers
        .iter()
        .map(|field| (field.name.to_ascii_lowercase(), field.value.to_vec()))
        .collect();
    if headers.iter().any(|(name, _)| name == "transfer-encoding") {
        return Err(HttpError::TransferCoding);
    }
    let mut length = None;
    for (_, value) in headers.iter().filter(|(name, _)| name == "content-length") {
        let this = std::str::from_utf8(value)
            .ok()
            .map(str::trim)
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or(HttpError::BadLength)?;
        // Several fields must agree (RFC 9110, 8.6).
        if length.is_some_and(|before| before != this) {
            return Err(HttpError::BadLength);
        }
        length = Some(this);
    }
    let body_len = match length {
        Some(len) if len > MAX_BODY as u64 => return Err(HttpError::BodyTooLarge),
        Some(len) => len as usize,
        None => 0,
    };
    let Some(body) = buf.get(head_len..head_len + body_len) else {
        return Ok(None);
    };
    let request = Request {
        method: Method::from_token(method),
        target: target.to_owned(),
        minor_version,
        headers,
        body: body.to_vec(),
    };
    Ok(Some((request, head_len + body_len)))
}

/// A connection's request decoder.
#[derive(Debug, Default)]
pub struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Message = Request;
    type Error = HttpError;

    fn decode(&mut self, buf: &[u8], input: Input) -> Result<Option<(Request, usize)>, HttpError> {
        match decode_request(buf)? {
            Some(whole) => Ok(Some(whole)),
            None if input == Input::Ended && !buf.is_empty() => Err(HttpError::Truncated),
            None => Ok(None),
        }
    }
}

/// The reason phrase of `status` (empty for a status ferry does not send).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Why a header field cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header field {0:?} holds a character a field may not")]
pub struct BadField(pub String);

/// The status line and header fields, without the blank line that ends them.
fn encode_head(status: u16, fields: &[(&str, &str)], out: &mut Vec<u8>) -> Result<(), BadField> {
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    for (name, value) in fields {
        // A CR or LF would end the field early (response splitting): never written.
        let bad = |text: &str| text.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        if name.is_empty() || bad(name) || name.contains(':') || bad(value) {
            return Err(BadField((*name).to_owned()));
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// A whole response: the status, `fields`, a `Content-Length` and the body.
pub fn encode_response(
    status: u16,
    fields: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<u8>, BadField> {
    let mut out = Vec::with_capacity(128 + body.len());
    encode_head(status, fields, &mut out)?;
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// A whole response as a `HEAD` request is answered: its status line and fields alone (its
/// `Content-Length` still that of the body left out).
pub fn head_of(response: &[u8]) -> &[u8] {
    match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &response[..end + 4],
        None => response,
    }
}

/// The head of a response whose body follows in chunks ([`encode_chunk`], then
/// [`LAST_CHUNK`]).
pub fn encode_stream_head(status: u16, fields: &[(&str, &str)]) -> Result<Vec<u8>, BadField> {
    let mut out = Vec::with_capacity(128);
    encode_head(status, fields, &mut out)?;
    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    Ok(out)
}

/// One chunk of a chunked body (`data` not empty: an empty chunk ends the body).
pub fn encode_chunk(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// One chunk of a chunked body written in place by `write` (no copy of what it writes): its
/// size is written first as eight hex digits with leading zeros (`chunk-size` is any number of
/// hex digits), so it can be filled in once the data is written; `capacity` is a hint.
/// Nothing written leaves an empty vector (an empty chunk would end the body).
pub fn encode_chunk_with(capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    const SIZE_LINE: usize = 10;
    let mut out = Vec::with_capacity(capacity + SIZE_LINE + 2);
    out.extend_from_slice(b"00000000\r\n");
    write(&mut out);
    let size = out.len() - SIZE_LINE;
    if size == 0 {
        return Vec::new();
    }
    // A chunk holds less than 4 GiB: what a daemon writes at once is far smaller.
    let digits = format!("{:08x}", u32::try_from(size).unwrap_or(u32::MAX));
    out[..8].copy_from_slice(digits.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether any byte of `word` may need a JSON escape (`"`, `\\`, or below 0x20). It may say
/// yes for a word that needs none (the byte-wise check then decides), never no for one that
/// does.
fn may_need_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    below_space | quote | backslash != 0
}

/// Appends `text` as a JSON string (quoted, escaped), eight bytes at a time where nothing
/// needs an escape: job output as event data, at the speed of a copy.
pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let (mut start, mut at) = (0, 0);
    while at < bytes.len() {
        if let Some(word) = bytes[at..].first_chunk::<8>() {
            if !may_need_escape(u64::from_le_bytes(*word)) {
                at += 8;
                continue;
            }
        }
        let byte = bytes[at];
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            _ => {
                at += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..at]);
        out.extend_from_slice(escape);
        at += 1;
        start = at;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// One Server-Sent Event: its type (`event:`), if any, and its data, a `data:` line for each
/// of its lines (CR, LF and CRLF all end a line there).
pub fn encode_event(kind: Option<&str>, data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    if let Some(kind) = kind {
        out.extend_from_slice(b"event: ");
        out.extend(kind.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
        out.push(b'\n');
    }
    for line in data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_written_in_place_has_its_size_in_front() {
        let chunk = encode_chunk_with(4, |out| out.extend_from_slice(b"hello"));
        assert_eq!(chunk, b"00000005\r\nhello\r\n");
        assert!(encode_chunk_with(4, |_| {}).is_empty());
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters_only() {
        let mut out = Vec::new();
        write_json_string(
            &mut out,
            "plain text, long enough for words \"q\" \\ \n\r\t\u{1}\u{1f} é ✓ end",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#""plain text, long enough for words \"q\" \\ \n\r\t\u0001\u001f é ✓ end""#
        );
    }

    #[test]
    fn a_head_answer_keeps_the_head_and_the_bodys_length() {
        let whole = encode_response(200, &[("Content-Type", "text/plain")], b"body").expect("ok");
        let head = head_of(&whole);
        assert!(head.ends_with(b"Content-Length: 4\r\n\r\n"), "{head:?}");
        assert_eq!(&whole[head.len()..], b"body");
    }

    #[test]
    fn a_get_with_keep_alive_and_a_post_with_a_body_follow_each_other() {
        let stream = b"GET /api/v1/jobs?state=running HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n\
POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        let (first, used) = decode_request(stream).expect("ok").expect("whole");
        assert_eq!(first.method, Method::Get);
        assert_eq!(first.path(), "/api/v1/jobs");
        assert_eq!(first.query(), Some("state=running"));
        assert_eq!(first.header_text("host"), Some("127.0.0.1:8080"));
        assert!(first.keep_alive());
        let (second, rest) = decode_request(&stream[used..]).expect("ok").expect("whole");
        assert_eq!(used + rest, stream.len());
        assert_eq!(second.body, b"{}");
        assert!(!second.keep_alive());
        assert!(second.method.changes_things());
    }

    #[test]
    fn what_is_not_taken_gets_its_status() {
        let status = |bytes: &[u8]| {
            decode_request(bytes)
                .map(|_| 0)
                .unwrap_or_else(|e| e.status())
        };
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            400
        );
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), 400);
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(long.as_bytes()), 431);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for n in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{n}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(status(&many), 431);
    }

    #[test]
    fn a_field_that_would_split_the_response_is_never_written() {
        assert!(encode_response(200, &[("X-A", "1\r\nSet-Cookie: x")], b"").is_err());
        let ok = encode_response(404, &[("Content-Type", "application/json")], b"{}").expect("ok");
        assert_eq!(
            ok,
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn an_event_of_several_lines_is_a_data_line_each() {
        assert_eq!(
            encode_event(Some("stdout"), "a\nb\r\nc"),
            b"event: stdout\ndata: a\ndata: b\ndata: c\n\n"
        );
        assert_eq!(encode_chunk(b"hello"), b"5\r\nhello\r\n");
    }
}
