//! The JSON API under `/api/v1` (docs/http.md): jobs (list with `ps`'s filters, details,
//! stored log ranges, run, kill, restart, event streams), peers, the hub, and the counters
//! the dashboard charts. Every route goes through the same [`Access`] checks as every other
//! dialect's requests.

use std::ffi::OsString;
use std::time::Duration;

use ferry_engine::{JobId, JobOrigin, JobSpec, OutputEvent, OutputStream};
use ferry_wire::http::{Method, Request};
use serde::Deserialize;
use serde_json::{json, Value};

use super::gate::query_value;
use super::{json, streams, HttpReader, Reply, Session};
use crate::policy::{blocking, Access, Act, Answer as _};

/// The most bytes one log request returns.
const MAX_LOG_RANGE: u64 = 16 * 1024 * 1024;

/// Routes a request below `/api/v1/`.
pub(super) async fn route(
    session: &mut Session,
    request: &Request,
    reader: &mut HttpReader,
    rest: &[&str],
) -> Reply {
    use Method::{Get, Head, Post};
    let job = |text: &str| {
        text.parse::<JobId>()
            .map_err(|_| Reply::Error(400, format!("'{text}' is not a job id")))
    };
    let got = match (&request.method, rest) {
        (Get | Head, [] | [""]) => Ok(index()),
        (Get | Head, ["jobs"]) => list(session, request).await,
        (Post, ["jobs"]) => run(session, request),
        (Get | Head, ["jobs", "changes"]) => {
            return streams::job_changes(session, request, reader).await
        }
        (Get | Head, ["jobs", id]) => match job(id) {
            Ok(id) => details(session, id).await,
            Err(reply) => Err(reply),
        },
        (Get | Head, ["jobs", id, "log"]) => match job(id) {
            Ok(id) => return log(session, request, id).await,
            Err(reply) => Err(reply),
        },
        (Get | Head, ["jobs", id, "events"]) => match job(id) {
            Ok(id) => return streams::job_events(session, request, reader, id).await,
            Err(reply) => Err(reply),
        },
        (Post, ["jobs", id, "kill"]) => job(id).and_then(|id| kill(session, request, id)),
        (Post, ["jobs", id, "restart"]) => match job(id) {
            Ok(id) => restart(session, id).await,
            Err(reply) => Err(reply),
        },
        (Get | Head, ["peers"]) => peers(session),
        (Post, ["peers", id, "kick"]) => kick(session, id),
        (Get | Head, ["hub", "members"]) => Ok(members(session)),
        (Post, ["hub", "messages"]) => say(session, request),
        (Get | Head, ["hub", "events"]) => {
            return streams::hub_events(session, request, reader).await
        }
        (Get | Head, ["stats"]) => Ok(stats(session)),
        (_, rest) => Err(not_here(&request.method, rest)),
    };
    match got {
        Ok((status, value)) => Reply::Json(status, value),
        Err(reply) => reply,
    }
}

/// What answers a route that does not exist: 404, or 405 for a path with other methods.
fn not_here(method: &Method, rest: &[&str]) -> Reply {
    let path = format!("/api/v1/{}", rest.join("/"));
    let known = matches!(
        rest,
        ["jobs"]
            | ["jobs", "changes"]
            | ["jobs", _]
            | ["jobs", _, "log" | "events" | "kill" | "restart"]
            | ["peers"]
            | ["peers", _, "kick"]
            | ["hub", "members" | "messages" | "events"]
            | ["stats"]
    );
    if known {
        Reply::Error(405, format!("{} is not served at {path}", method.as_str()))
    } else {
        Reply::Error(404, format!("no such API: {path} (see GET /api/v1)"))
    }
}

type Answer = Result<(u16, Value), Reply>;

/// The routes, for a client finding its way.
fn index() -> (u16, Value) {
    (
        200,
        json!({
            "version": 1,
            "documentation": "docs/http.md",
            "routes": [
                "GET /api/v1/jobs?state=STATE,...&group=NAME&label=TEXT&all=1",
                "POST /api/v1/jobs {\"argv\": [...], \"group\", \"label\", \"timeout_ms\"}",
                "GET /api/v1/jobs/changes (event stream)",
                "GET /api/v1/jobs/ID",
                "GET /api/v1/jobs/ID/log?stream=stdout|stderr&offset=N&length=N",
                "GET /api/v1/jobs/ID/events?from=start|now (event stream)",
                "POST /api/v1/jobs/ID/kill {\"signal\": \"TERM\"}",
                "POST /api/v1/jobs/ID/restart",
                "GET /api/v1/peers",
                "POST /api/v1/peers/ID/kick",
                "GET /api/v1/hub/members",
                "POST /api/v1/hub/messages {\"as\", \"to\", \"text\"}",
                "GET /api/v1/hub/events?name=NAME (event stream)",
                "GET /api/v1/stats",
                "GET /metrics",
            ],
        }),
    )
}

/// The jobs this connection may see, filtered as `ferry ps` filters.
async fn list(session: &Session, request: &Request) -> Answer {
    let states: Vec<&str> = query_value(request, "state")
        .map(|s| s.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    if let Some(bad) = states.iter().find(|s| !json::STATES.contains(s)) {
        return Err(Reply::Error(
            400,
            format!("unknown state '{bad}' (known: {})", json::STATES.join(", ")),
        ));
    }
    let group = query_value(request, "group");
    let label = query_value(request, "label");
    let all = matches!(query_value(request, "all"), Some("1" | "true"));
    let engine = session.conn.daemon.engine.clone();
    let jobs = if all {
        blocking(move || engine.history()).await?
    } else {
        engine.list()
    };
    let jobs: Vec<Value> = jobs
        .iter()
        .filter(|job| session.conn.access.may(Act::See, &job.principal))
        .filter(|job| states.is_empty() || states.iter().any(|s| json::matches_state(job, s)))
        .filter(|job| group.is_none_or(|g| job.group == g))
        .filter(|job| label.is_none_or(|l| job.label.as_deref() == Some(l)))
        .map(json::job)
        .collect();
    Ok((200, json!({ "jobs": jobs })))
}

/// Whether this connection may `act` on `job`.
fn check_job(session: &Session, act: Act, job: JobId) -> Result<(), Reply> {
    crate::dialects::check_job(&session.conn.daemon, &session.conn.access, act, job)
        .map_err(Reply::from)
}

/// One job's details.
async fn details(session: &Session, id: JobId) -> Answer {
    check_job(session, Act::See, id)?;
    let engine = session.conn.daemon.engine.clone();
    let (snapshot, record) = blocking(move || engine.details(id)).await?;
    let mut value = json::job(&snapshot);
    value["dialect"] = json!(record.dialect);
    value["from"] = json!(record.owner);
    value["cwd"] = json!(record
        .cwd
        .as_ref()
        .map(|cwd| String::from_utf8_lossy(cwd).into_owned()));
    value["stdout_bytes"] = json!(record.stdout_bytes);
    value["stderr_bytes"] = json!(record.stderr_bytes);
    Ok((200, value))
}

/// A range of one stream of a job's stored log, as text (never HTML):
/// `?stream=stdout|stderr&offset=N&length=N` (at most 16 MiB).
async fn log(session: &Session, request: &Request, id: JobId) -> Reply {
    if let Err(reply) = check_job(session, Act::See, id) {
        return reply;
    }
    let stream = match query_value(request, "stream").unwrap_or("stdout") {
        "stdout" => OutputStream::Stdout,
        "stderr" => OutputStream::Stderr,
        other => return Reply::Error(400, format!("stream is stdout or stderr, not '{other}'")),
    };
    let number = |key: &str, default: u64| match query_value(request, key) {
        None => Ok(default),
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| Reply::Error(400, format!("{key} '{text}' is not a number"))),
    };
    let (offset, length) = match (number("offset", 0), number("length", MAX_LOG_RANGE)) {
        (Ok(offset), Ok(length)) => (offset, length.min(MAX_LOG_RANGE)),
        (Err(reply), _) | (_, Err(reply)) => return reply,
    };
    let mut reader = match session.conn.daemon.engine.output(id, true, false, false) {
        Ok(reader) => reader,
        Err(e) => return Reply::from(e.refusal()),
    };
    let end = offset.saturating_add(length);
    let mut body = Vec::new();
    let mut total = 0;
    loop {
        match reader.next().await {
            Ok(Some(OutputEvent::Chunk {
                stream: of,
                offset: at,
                data,
            })) if of == stream => {
                total = at + data.len() as u64;
                let from = offset.clamp(at, total);
                let to = end.clamp(at, total);
                if from < to {
                    body.extend_from_slice(&data[(from - at) as usize..(to - at) as usize]);
                }
            }
            Ok(Some(OutputEvent::Exit(_) | OutputEvent::End) | None) => break,
            Ok(Some(_)) => {}
            Err(e) => return Reply::Error(500, e.to_string()),
        }
    }
    let total_text = total.to_string();
    Reply::Whole(super::response(
        200,
        &[
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Ferry-Stream-Length", &total_text),
        ],
        &body,
    ))
}

/// A job to run.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    argv: Vec<String>,
    group: Option<String>,
    label: Option<String>,
    timeout_ms: Option<u64>,
}

/// The request's body as JSON of type `T`.
fn body<T: for<'de> Deserialize<'de>>(request: &Request) -> Result<T, Reply> {
    serde_json::from_slice(&request.body).map_err(|e| {
        Reply::Error(
            400,
            format!("the body is not the JSON this route takes: {e}"),
        )
    })
}

/// Whom this connection's jobs belong to.
fn origin(session: &Session) -> JobOrigin {
    crate::dialects::origin(&session.conn, &session.peer)
}

/// Runs a job (the listener's command policy applies); 201 with its id.
fn run(session: &Session, request: &Request) -> Answer {
    let asked: RunRequest = body(request)?;
    if asked.argv.is_empty() {
        return Err(Reply::Error(400, "argv is empty: name a command".into()));
    }
    let spec = JobSpec {
        group: asked.group,
        label: asked.label,
        timeout: asked.timeout_ms.map(Duration::from_millis),
        origin: origin(session),
        ..JobSpec::default()
    };
    let argv = asked.argv.into_iter().map(OsString::from).collect();
    submit(session, argv, spec)
}

fn submit(session: &Session, argv: Vec<OsString>, spec: JobSpec) -> Answer {
    let id = crate::dialects::submit(&session.conn.daemon, &session.conn.access, argv, spec)?;
    Ok((201, json!({ "id": id })))
}

/// Runs a job's command again, in its group with its label, as a new job.
async fn restart(session: &Session, id: JobId) -> Answer {
    check_job(session, Act::See, id)?;
    let snapshot = session
        .conn
        .daemon
        .engine
        .snapshot(id)
        .map_err(|e| Reply::from(e.refusal()))?;
    let spec = JobSpec {
        group: Some(snapshot.group.clone()),
        label: snapshot.label.clone(),
        origin: origin(session),
        ..JobSpec::default()
    };
    submit(session, snapshot.argv, spec)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KillRequest {
    signal: Option<String>,
}

/// Sends a signal (TERM by default) to a job, or cancels it while queued.
fn kill(session: &Session, request: &Request, id: JobId) -> Answer {
    let asked: KillRequest = if request.body.is_empty() {
        KillRequest::default()
    } else {
        body(request)?
    };
    let name = asked.signal.unwrap_or_else(|| "TERM".into());
    let signal = ferry_common::signals::parse_signal(&name)
        .ok_or_else(|| Reply::Error(400, format!("'{name}' is not a signal")))?;
    check_job(session, Act::Touch, id)?;
    session
        .conn
        .daemon
        .engine
        .signal(id, signal)
        .map_err(|e| Reply::from(e.refusal()))?;
    Ok((200, json!({ "id": id, "signal": signal })))
}

/// The daemon's peers and the hub's counters (the owner only).
fn peers(session: &Session) -> Answer {
    session
        .conn
        .access
        .owner_only("list its peers")
        .map_err(Reply::from)?;
    let registry = session.conn.daemon.engine.peers();
    let peers: Vec<Value> = registry
        .list()
        .iter()
        .map(|peer| {
            let mut value = json::peer(peer);
            value["you"] = json!(peer.id == session.peer);
            value
        })
        .collect();
    let hub = registry.stats();
    Ok((
        200,
        json!({
            "peers": peers,
            "hub": {
                "messages": hub.messages,
                "deliveries": hub.deliveries,
                "refused": hub.refused,
                "dropped": hub.dropped,
                "slow_disconnects": hub.slow_disconnects,
            },
        }),
    ))
}

/// Disconnects a peer (the owner only).
fn kick(session: &Session, id: &str) -> Answer {
    session
        .conn
        .access
        .owner_only("disconnect its peers")
        .map_err(Reply::from)?;
    if !session
        .conn
        .daemon
        .engine
        .peers()
        .kick(id, "by the daemon's owner (dashboard)")
    {
        return Err(Reply::Error(404, format!("no peer '{id}'")));
    }
    Ok((200, json!({ "kicked": id })))
}

/// The hub's members.
fn members(session: &Session) -> (u16, Value) {
    let members: Vec<Value> = session
        .conn
        .daemon
        .engine
        .peers()
        .members()
        .iter()
        .map(json::member)
        .collect();
    (200, json!({ "members": members }))
}

/// A message for the hub.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SayRequest {
    /// The member it comes from (one of this principal's: the dashboard's hub stream);
    /// without it, from the daemon itself (the owner only).
    #[serde(rename = "as")]
    from: Option<String>,
    to: Option<String>,
    text: String,
}

/// Sends a hub message, from a member of this principal's or (the owner) from the daemon.
fn say(session: &Session, request: &Request) -> Answer {
    let asked: SayRequest = body(request)?;
    let registry = session.conn.daemon.engine.peers();
    let sent = match &asked.from {
        Some(from) => {
            if !registry.acts_for(from, "http", session.conn.access.principal()) {
                return Err(Reply::Error(
                    403,
                    format!(
                        "'{from}' is not a hub member of yours on this daemon's HTTP listeners"
                    ),
                ));
            }
            registry.send_as(from, asked.to.as_deref(), asked.text)
        }
        None => {
            owner_or_refuse(&session.conn.access, "send messages as the daemon")?;
            registry.send_from_server(asked.to.as_deref(), asked.text)
        }
    };
    let delivery = sent.map_err(|e| Reply::Error(400, e.to_string()))?;
    Ok((
        200,
        json!({
            "delivered": delivery.delivered,
            "refused": delivery.refused.iter().map(|r| json!({"peer": r.peer, "name": r.name, "reason": r.reason})).collect::<Vec<_>>(),
            "dropped": delivery.dropped,
        }),
    ))
}

fn owner_or_refuse(access: &Access, what: &str) -> Result<(), Reply> {
    access.owner_only(what).map_err(Reply::from)
}

/// What the dashboard charts: counters it turns into rates.
fn stats(session: &Session) -> (u16, Value) {
    let engine = &session.conn.daemon.engine;
    let counted = engine.stats().snapshot();
    let (stdout, stderr) = engine.output_bytes();
    let mut by_dialect = std::collections::BTreeMap::<String, u64>::new();
    for peer in engine.peers().list() {
        *by_dialect.entry(peer.dialect).or_default() += 1;
    }
    let load = engine.load();
    (
        200,
        json!({
            "jobs_submitted": counted.submitted,
            "jobs_started": counted.started,
            "jobs_ended": counted.ended.iter().map(|(o, n)| (o.name(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
            "jobs_running": load.running,
            "jobs_queued": load.queued,
            "output_bytes": stdout + stderr,
            "connections": by_dialect,
            "hub_messages": engine.peers().stats().messages,
        }),
    )
}
