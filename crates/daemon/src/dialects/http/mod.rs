//! The HTTP dialect adapter: a JSON API under `/api/v1`, Server-Sent Event streams (a job's
//! output, the jobs as they change, the hub), Prometheus metrics at `/metrics`, and the
//! dashboard at `/`, over HTTP/1.1 (`ferry_wire::http`) read through the connection's one
//! reader like every other dialect.
//!
//! A browser is not a trusted client, so every request is checked here before it is routed
//! (see [`Gate`]): the `Host` header must name the listener (no DNS rebinding), a token must
//! come with it (`Authorization: Bearer`, or the `HttpOnly`, `SameSite=Strict` cookie that
//! `ferry web`'s one-time URL sets), and a request that changes anything must come from the
//! dashboard's own origin. No CORS header is ever sent; job output is served as text.
//!
//! The connection layer's words are HTTP's: a refusal, a malformed request or a first request
//! not whole in time is a JSON error response, then the close. HTTP has no unsolicited
//! message, so a kick or the daemon going down closes an idle connection without a word,
//! and is said as an event on an open event stream.

mod api;
mod assets;
mod gate;
mod json;
mod metrics;
mod streams;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferry_io::ReadError;
use ferry_wire::http::{
    encode_chunk, encode_event, encode_response, encode_stream_head, head_of, HttpError, Method,
    Request, RequestDecoder, LAST_CHUNK,
};

use crate::conn::Conn;
use crate::outbox::Outbox;
use crate::policy::{Refusal, RefusalKind};
use crate::reader::{Next, Notice, Reader, Voice, GOING_DOWN};
use crate::state::Daemon;

/// The reader of an HTTP connection.
type HttpReader = Reader<RequestDecoder, HttpVoice>;

/// Serves one admitted connection (the listener table's entry point).
pub(crate) fn serve(conn: Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_connection(conn))
}

/// The status a refusal of `kind` answers with.
pub(crate) fn status_of(kind: RefusalKind) -> u16 {
    match kind {
        RefusalKind::PermissionDenied => 403,
        RefusalKind::InvalidRequest => 400,
        RefusalKind::UnknownJob => 404,
        RefusalKind::LimitReached => 429,
        RefusalKind::ShuttingDown => 503,
        RefusalKind::Internal => 500,
    }
}

/// A refusal of a connection that will not be served: a JSON error, then the close.
pub(crate) fn refusal(kind: RefusalKind, message: &str) -> Vec<u8> {
    error_response(status_of(kind), message, false)
}

/// What the connection layer says in HTTP's words (see the module documentation).
#[derive(Default)]
pub(crate) struct HttpVoice {
    /// An event stream is open: the layer's words are its last event and its end.
    streaming: bool,
}

impl HttpVoice {
    /// `message` as an event stream's last event of type `kind`, and the stream's end.
    fn last_event(kind: &str, message: &str) -> Vec<u8> {
        let data = serde_json::json!({ "message": message }).to_string();
        let mut words = encode_chunk(&encode_event(Some(kind), &data));
        words.extend_from_slice(LAST_CHUNK);
        words
    }
}

impl Voice<HttpError> for HttpVoice {
    fn refused(&self, kind: RefusalKind, message: &str) -> Option<Vec<u8>> {
        if self.streaming {
            return Some(Self::last_event("error", message));
        }
        Some(refusal(kind, message))
    }

    fn malformed(&self, fault: &ReadError<HttpError>) -> Option<Vec<u8>> {
        let status = match fault {
            ReadError::Decode(e) => e.status(),
            _ => 400,
        };
        Some(error_response(status, &fault.to_string(), false))
    }

    fn timed_out(&self, limit: std::time::Duration, _first: bool) -> Option<Vec<u8>> {
        let message = format!("no whole request within {} ms", limit.as_millis());
        Some(error_response(408, &message, false))
    }

    fn going_down(&self) -> Notice {
        if self.streaming {
            // Said as an event; the stream goes on to deliver what is still to come (a job's
            // end) until the daemon closes it.
            let data = serde_json::json!({ "message": GOING_DOWN }).to_string();
            return Notice {
                words: Some(encode_chunk(&encode_event(Some("shutdown"), &data))),
                closes: false,
            };
        }
        // Between requests HTTP has nothing to say: the connection closes.
        Notice {
            words: None,
            closes: true,
        }
    }

    fn disconnected(&self, message: &str) -> Option<Vec<u8>> {
        self.streaming
            .then(|| Self::last_event("disconnected", message))
    }
}

/// A JSON error response: `{"error": {"status": N, "message": "..."}}` (a 401 with
/// `WWW-Authenticate`); `keep_alive`: the connection goes on after it.
pub(crate) fn error_response(status: u16, message: &str, keep_alive: bool) -> Vec<u8> {
    let body = serde_json::json!({ "error": { "status": status, "message": message } });
    let mut fields = vec![("Content-Type", "application/json")];
    if status == 401 {
        // A 401 names the scheme that would be taken.
        fields.push(("WWW-Authenticate", "Bearer realm=\"ferry\""));
    }
    if !keep_alive {
        fields.push(("Connection", "close"));
    }
    response(status, &fields, body.to_string().as_bytes())
}

/// The fields every response carries: no sniffing, no framing, no referrer, no caching.
const COMMON_FIELDS: [(&str, &str); 5] = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("Server", "ferry"),
];

/// A whole response with `fields` and the common ones. A field ferry made that cannot be
/// written (which would be a bug) becomes a 500.
pub(crate) fn response(status: u16, fields: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let all: Vec<(&str, &str)> = COMMON_FIELDS.iter().chain(fields).copied().collect();
    encode_response(status, &all, body).unwrap_or_else(|e| {
        tracing::error!("cannot write a response: {e}");
        let body = br#"{"error":{"status":500,"message":"the daemon made a bad header field"}}"#;
        encode_response(500, &COMMON_FIELDS, body).unwrap_or_default()
    })
}

/// The head of a chunked response (an event stream) with `fields` and the common ones.
pub(crate) fn stream_head(fields: &[(&str, &str)]) -> Vec<u8> {
    let all: Vec<(&str, &str)> = COMMON_FIELDS.iter().chain(fields).copied().collect();
    encode_stream_head(200, &all).unwrap_or_default()
}

/// What a request is answered with.
pub(crate) enum Reply {
    /// A whole response (its bytes, made with the connection's keep-alive in mind).
    Whole(Vec<u8>),
    /// JSON, status 200 or as given.
    Json(u16, serde_json::Value),
    /// An error.
    Error(u16, String),
    /// An event stream, served by the route itself, after which the connection goes on
    /// (`true`) or ends.
    Streamed(bool),
}

impl From<Refusal> for Reply {
    fn from(refusal: Refusal) -> Reply {
        Reply::Error(status_of(refusal.kind), refusal.message)
    }
}

/// One connection's state between its requests.
pub(crate) struct Session {
    /// The connection (its I/O taken by the reader); its access's principal is set by its
    /// first authenticated request.
    pub conn: Conn,
    pub out: Outbox,
    /// The peer's id in the registry.
    pub peer: String,
}

async fn serve_connection(mut conn: Conn) {
    let Some((mut reader, out)) = Reader::new(&mut conn, RequestDecoder, HttpVoice::default())
    else {
        return;
    };
    let peer = reader.peer().id().to_owned();
    let mut session = Session { conn, out, peer };
    while let Some(next) = reader.next(false).await {
        let Next::Request(request, _) = next else {
            continue;
        };
        if !session.handle(request, &mut reader).await {
            break;
        }
    }
}

impl Session {
    /// Serves one request; whether the connection goes on.
    async fn handle(&mut self, request: Request, reader: &mut HttpReader) -> bool {
        let keep_alive = request.keep_alive();
        let head = request.method == Method::Head;
        let reply = match gate::check(self, &request, reader) {
            Err(reply) => reply,
            Ok(()) => self.route(&request, reader).await,
        };
        let bytes = match reply {
            Reply::Streamed(goes_on) => return goes_on && keep_alive,
            Reply::Whole(bytes) => bytes,
            Reply::Json(status, value) => json_response(status, &value, keep_alive),
            Reply::Error(status, message) => {
                tracing::debug!(peer = self.peer, status, "{message}");
                error_response(status, &message, keep_alive)
            }
        };
        let bytes = if head {
            head_of(&bytes).to_vec()
        } else {
            bytes
        };
        if !self.out.send(bytes).await {
            return false;
        }
        keep_alive
    }

    /// Routes a request that passed the gate.
    async fn route(&mut self, request: &Request, reader: &mut HttpReader) -> Reply {
        let path = request.path().to_owned();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = &request.method;
        match (method, parts.as_slice()) {
            (Method::Get | Method::Head, [""]) => assets::page(self, request),
            (Method::Get | Method::Head, [file]) if assets::has(file) => assets::file(file),
            (Method::Get | Method::Head, ["metrics"]) => metrics::scrape(self).await,
            (_, ["api", "v1", rest @ ..]) => api::route(self, request, reader, rest).await,
            (_, ["api", ..]) => Reply::Error(
                404,
                format!("no such API: {path} (this daemon serves /api/v1, see docs/http.md)"),
            ),
            (Method::Get | Method::Head, _) => Reply::Error(404, format!("nothing at {path}")),
            _ => Reply::Error(405, format!("{} is not served at {path}", method.as_str())),
        }
    }
}

/// Serializes `ferry web`'s requests: one HTTP listener is opened at most.
#[derive(Default)]
struct WebListener(tokio::sync::Mutex<()>);

/// The dashboard's one-time URL on a loopback HTTP listener of the daemon's: the first one it
/// has, or one it opens now on a free port of 127.0.0.1.
pub(crate) async fn web_url(daemon: &Arc<Daemon>) -> Result<String, Refusal> {
    let token = &daemon.config.web_token;
    if token.is_empty() {
        return Err(Refusal::new(
            RefusalKind::Internal,
            "the daemon has no web token (the kernel's random source failed at its start)",
        ));
    }
    let serial = daemon.state::<WebListener>();
    let _one_at_a_time = serial.0.lock().await;
    let listening = daemon.listener_stats().into_iter().find_map(|stats| {
        let spec = crate::spec::ListenSpec::parse(&stats.listener).ok()?;
        match spec.transport {
            crate::spec::Transport::Tcp { host, port } if stats.dialect == "http" => {
                let loopback = host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
                loopback.then_some((host, port))
            }
            _ => None,
        }
    });
    let (host, port) = match listening {
        Some(found) => found,
        None => {
            let spec = crate::spec::ListenSpec::parse("http:tcp:127.0.0.1:0")
                .map_err(|e| Refusal::new(RefusalKind::Internal, e.to_string()))?;
            let mut listener = crate::config::Listener::new(spec);
            // With no configured token, only the owner (its web token, from its uid) gets in:
            // any command may run, as on its socket. Else the network listeners' rule applies.
            if daemon.config.tokens.is_empty() {
                listener.commands = Some(crate::config::CommandPolicy::Any);
            }
            let open = daemon.open_listener.get().ok_or_else(|| {
                Refusal::new(
                    RefusalKind::Internal,
                    "the daemon cannot open listeners now",
                )
            })?;
            let (host, port) = open(Arc::clone(daemon), listener)
                .await
                .map_err(|e| Refusal::new(RefusalKind::Internal, e))?;
            tracing::info!("opened an HTTP listener for the dashboard on {host}:{port}");
            (host, port)
        }
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!("http://{host}:{port}/?token={token}"))
}

/// A JSON response.
pub(crate) fn json_response(status: u16, value: &serde_json::Value, keep_alive: bool) -> Vec<u8> {
    let mut fields = vec![("Content-Type", "application/json")];
    if !keep_alive {
        fields.push(("Connection", "close"));
    }
    response(status, &fields, value.to_string().as_bytes())
}
