//! The dashboard's files, built into the binary (no network beyond the daemon is needed to
//! use it): the page, its script and its style, served under a content security policy
//! that lets the page run its own script alone.

use ferry_wire::http::Request;

use super::gate::{cookie_name, listener_port, query_value};
use super::{Reply, Session};
use crate::spec::TransportKind;

/// The page's policy: its own script, style and connections only; never framed.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The files besides the page: name, type, contents.
const FILES: [(&str, &str, &str); 2] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("web/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("web/style.css"),
    ),
];

/// Whether `name` is one of the dashboard's files.
pub(super) fn has(name: &str) -> bool {
    FILES.iter().any(|(file, ..)| *file == name)
}

/// One of the dashboard's files.
pub(super) fn file(name: &str) -> Reply {
    match FILES.iter().find(|(file, ..)| *file == name) {
        Some((_, kind, body)) => Reply::Whole(super::response(
            200,
            &[("Content-Type", kind), ("Content-Security-Policy", POLICY)],
            body.as_bytes(),
        )),
        None => Reply::Error(404, format!("nothing at /{name}")),
    }
}

/// The page. Opened with `?token=` (`ferry web`'s one-time URL, already checked by the
/// gate), it sets the token as an `HttpOnly`, `SameSite=Strict` cookie and sends the
/// browser to `/`, so that the token leaves the address bar and the history.
pub(super) fn page(session: &Session, request: &Request) -> Reply {
    if let Some(token) = query_value(request, "token") {
        let secure = if session.conn.transport == TransportKind::Tls {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Strict{secure}",
            cookie_name(listener_port(session))
        );
        return Reply::Whole(super::response(
            303,
            &[("Location", "/"), ("Set-Cookie", &cookie)],
            b"",
        ));
    }
    Reply::Whole(super::response(
        200,
        &[
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Security-Policy", POLICY),
        ],
        include_str!("web/index.html").as_bytes(),
    ))
}
