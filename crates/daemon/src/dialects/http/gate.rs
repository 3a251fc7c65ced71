//! The checks every HTTP request passes before it is routed: the `Host` header names the
//! listener (a page of another site that rebinds its name to loopback is refused), a token
//! comes with it and names a principal (the daemon's web token, honoured from the owner's
//! own uid on loopback, acts for the owner; a configured token for its label; a verified
//! client certificate needs none), and a request that changes anything comes from the
//! dashboard's own origin.

use ferry_engine::Principal;
use ferry_wire::http::Request;
use subtle::ConstantTimeEq;

use super::{HttpReader, Reply, Session};
use crate::spec::TransportKind;

/// The cookie that carries the token for the dashboard (its name ends with the listener's
/// port: cookies are not kept apart by port).
const WEB_COOKIE: &str = "ferry_token";

/// The cookie's name on the listener at `port`.
pub(crate) fn cookie_name(port: u16) -> String {
    format!("{WEB_COOKIE}_{port}")
}

/// The listener's port, from the connection's local address.
pub(crate) fn listener_port(session: &Session) -> u16 {
    session
        .conn
        .ends
        .local
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(0)
}

/// Checks `request` (see the module documentation): the reply that refuses it, if any.
pub(super) fn check(
    session: &mut Session,
    request: &Request,
    reader: &mut HttpReader,
) -> Result<(), Reply> {
    check_host(session, request)?;
    let (token, via_cookie) = token(session, request);
    let principal = match (&session.conn.access.principal, token) {
        (Some(known), None) if session.authenticated_by_transport() => known.clone(),
        (_, Some(token)) => principal_of(session, token)?,
        (_, None) => {
            return Err(Reply::Error(
                401,
                "this daemon needs its token: open the URL that `ferry web` prints, or send `Authorization: Bearer TOKEN`".into(),
            ))
        }
    };
    // A connection acts for one principal: the one its first request (or its client
    // certificate) showed.
    match &session.conn.access.principal {
        Some(known) if *known == principal => {}
        Some(known) => {
            return Err(Reply::Error(
                403,
                format!(
                    "this connection acts for {known}; open another one to act for {principal}"
                ),
            ))
        }
        None => {
            reader
                .peer_mut()
                .authenticated(&principal)
                .map_err(Reply::from)?;
            session.conn.access.principal = Some(principal);
        }
    }
    if request.method.changes_things() {
        check_origin(session, request, via_cookie)?;
    }
    Ok(())
}

impl Session {
    /// The transport vouched for the peer already (a verified client certificate).
    fn authenticated_by_transport(&self) -> bool {
        matches!(self.conn.access.principal, Some(Principal::Certificate(_)))
    }
}

/// The `Host` header must name this listener: over plain TCP, a loopback address or
/// `localhost` with its port; over TLS, any name with its port (a rebound name fails the
/// certificate check in the browser).
fn check_host(session: &Session, request: &Request) -> Result<(), Reply> {
    let port = listener_port(session);
    let Some(host) = request.header_text("host") else {
        return Err(Reply::Error(400, "the request has no Host header".into()));
    };
    let (name, given_port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || name.starts_with('[') => {
            (name, port.parse::<u16>().ok())
        }
        _ => (host, None),
    };
    let default_port = match session.conn.transport {
        TransportKind::Tls => 443,
        _ => 80,
    };
    let port_matches = given_port.unwrap_or(default_port) == port;
    let name_matches = session.conn.transport == TransportKind::Tls || is_loopback_name(name);
    if port_matches && name_matches {
        return Ok(());
    }
    Err(Reply::Error(
        421,
        format!(
            "the Host header ({host}) does not name this listener (127.0.0.1:{port}, localhost:{port} or [::1]:{port})"
        ),
    ))
}

/// Whether `name` is `localhost` or a loopback address.
fn is_loopback_name(name: &str) -> bool {
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The token the request carries, and whether it came in the cookie.
fn token<'r>(session: &Session, request: &'r Request) -> (Option<&'r str>, bool) {
    if let Some(auth) = request.header_text("authorization") {
        let bearer = auth
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        return (bearer, false);
    }
    // The one-time URL's token, on the page alone (which turns it into the cookie).
    if request.path() == "/" {
        if let Some(token) = query_value(request, "token") {
            return (Some(token), true);
        }
    }
    let name = cookie_name(listener_port(session));
    let cookie = request
        .headers
        .iter()
        .filter(|(field, _)| field == "cookie")
        .filter_map(|(_, value)| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value);
    (cookie, cookie.is_some())
}

/// The value of `key` in the request's query (`key=value&...`; values are taken as they
/// are: ferry's values need no escapes).
pub(crate) fn query_value<'r>(request: &'r Request, key: &str) -> Option<&'r str> {
    request
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The principal `token` names: the web token (from the owner's uid on loopback) the owner,
/// a configured token its label.
fn principal_of(session: &Session, token: &str) -> Result<Principal, Reply> {
    let web = session.conn.daemon.config.web_token.as_bytes();
    if !web.is_empty() && bool::from(token.as_bytes().ct_eq(web)) {
        let owner = rustix::process::getuid().as_raw();
        return match session.conn.ends.uid {
            Some(uid) if uid == owner => Ok(Principal::Owner),
            Some(uid) => Err(Reply::Error(
                403,
                format!("the daemon's web token acts for its owner, and this connection is uid {uid}'s: use a token of your own"),
            )),
            None => Err(Reply::Error(
                403,
                "the daemon's web token is honoured only on loopback, from its owner's uid: use a configured token or a client certificate".into(),
            )),
        };
    }
    session
        .conn
        .access
        .token_principal(Some(token))
        .ok_or_else(|| Reply::Error(401, "the token is not one of this daemon's".into()))
}

/// A request that changes anything must come from this listener's own origin: a browser's
/// `Origin` names it; a request without one is a script's, which must use the
/// `Authorization` header (a cookie alone may be a cross-site form's).
fn check_origin(session: &Session, request: &Request, via_cookie: bool) -> Result<(), Reply> {
    let cross_site = request
        .header_text("sec-fetch-site")
        .is_some_and(|site| !matches!(site, "same-origin" | "none"));
    let host = request.header_text("host").unwrap_or_default();
    let scheme = match session.conn.transport {
        TransportKind::Tls => "https",
        _ => "http",
    };
    let origin_ok = match request.header_text("origin") {
        Some(origin) => origin == format!("{scheme}://{host}"),
        None => !via_cookie,
    };
    if origin_ok && !cross_site {
        return Ok(());
    }
    Err(Reply::Error(
        403,
        format!(
            "a request that changes anything must come from this dashboard ({scheme}://{host}) or carry `Authorization: Bearer TOKEN`: cross-origin requests are refused"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_are_localhost_and_loopback_addresses() {
        for name in ["localhost", "LocalHost", "127.0.0.1", "127.1.2.3", "[::1]"] {
            assert!(is_loopback_name(name), "{name}");
        }
        for name in [
            "example.com",
            "10.0.0.1",
            "[::2]",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_loopback_name(name), "{name}");
        }
    }
}
