//! The HTTP API's event streams (Server-Sent Events in a chunked response): a job's output
//! and its end, the jobs as they change, and the hub (messages and presence). A stream runs
//! under the connection's reader, which keeps watching the kick and the daemon meanwhile
//! and says them as the stream's last event.
//!
//! A job's output goes as `stdout` and `stderr` events whose data is JSON: `{"offset": N,
//! "text": "..."}` where the bytes are UTF-8 (a character split between two chunks is held
//! back until it is whole), `{"offset": N, "base64": "..."}` where they are not; `skipped`
//! says bytes the log no longer held were passed over; `exit` ends it.

use std::time::Duration;

use base64::Engine as _;
use ferry_engine::peers::PeerEvent;
use ferry_engine::{JobId, OutputEvent, OutputStream};
use ferry_wire::http::{
    encode_chunk, encode_chunk_with, encode_event, write_json_string, Request, LAST_CHUNK,
};
use serde_json::{json, Value};

use super::gate::query_value;
use super::{json, stream_head, HttpReader, Reply, Session};
use crate::outbox::Outbox;
use crate::policy::{Act, Answer as _};
use crate::reader::{Next, Watched};

/// How often an idle stream says it is alive (a comment), so that proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The least time between two `jobs` events of the jobs' stream.
const CHANGES_GAP: Duration = Duration::from_millis(100);

/// The head of an event stream.
fn event_stream_head() -> Vec<u8> {
    stream_head(&[("Content-Type", "text/event-stream")])
}

/// One event as a chunk of the stream.
fn event(kind: &str, data: &Value) -> Vec<u8> {
    encode_chunk(&encode_event(Some(kind), &data.to_string()))
}

/// Runs `work` (which writes the stream's events) under the reader as an open stream; what
/// the connection does next.
async fn run_stream<F>(reader: &mut HttpReader, out: &Outbox, work: F) -> Reply
where
    F: std::future::Future<Output = bool>,
{
    reader.voice().streaming = true;
    let mut work = std::pin::pin!(work);
    let watched = reader.watch(&mut work).await;
    reader.voice().streaming = false;
    match watched {
        Watched::Done(true) => Reply::Streamed(out.send(LAST_CHUNK.to_vec()).await),
        Watched::Done(false) | Watched::Left | Watched::Over => Reply::Streamed(false),
    }
}

/// `GET /api/v1/jobs/ID/events[?from=now]`: the job's output from its start (or from now)
/// and its end.
pub(super) async fn job_events(
    session: &Session,
    request: &Request,
    reader: &mut HttpReader,
    job: JobId,
) -> Reply {
    let owner = match session.conn.daemon.engine.principal_of(job) {
        Ok(owner) => owner,
        Err(e) => return Reply::from(e.refusal()),
    };
    if let Err(refusal) = session
        .conn
        .access
        .check(Act::See, &owner, &format!("job {job}"))
    {
        return Reply::from(refusal);
    }
    let replay = match query_value(request, "from") {
        None | Some("start") => true,
        Some("now") => false,
        Some(other) => return Reply::Error(400, format!("from is start or now, not '{other}'")),
    };
    let log = match session.conn.daemon.engine.output(job, replay, true, false) {
        Ok(log) => log,
        Err(e) => return Reply::from(e.refusal()),
    };
    let out = session.out.clone();
    if !out.send(event_stream_head()).await {
        return Reply::Streamed(false);
    }
    let engine = session.conn.daemon.engine.clone();
    run_stream(reader, &session.out, follow_job(log, out, engine, job)).await
}

/// Writes a job's output events and its end; whether the stream ended whole.
async fn follow_job(
    mut log: ferry_engine::LogReader,
    out: Outbox,
    engine: ferry_engine::Engine,
    job: JobId,
) -> bool {
    let mut streams = [TextStream::default(), TextStream::default()];
    loop {
        let frame = match log.next().await {
            Ok(Some(OutputEvent::Chunk {
                stream,
                offset,
                data,
            })) => {
                let (index, name) = match stream {
                    OutputStream::Stdout => (0, "stdout"),
                    OutputStream::Stderr => (1, "stderr"),
                };
                streams[index].take(name, offset, &data)
            }
            Ok(Some(OutputEvent::Exit(report))) => {
                let mut frames = Vec::new();
                for (text, name) in streams.iter_mut().zip(["stdout", "stderr"]) {
                    frames.extend(text.flush(name));
                }
                // Output past the log's cap: a stream that fell behind the live output did not
                // see it (the bytes it carried tell).
                let unstored = engine.snapshot(job).map_or(0, |s| s.unstored_bytes);
                if unstored > 0 {
                    let message = format!("{unstored} bytes past the log's cap were not stored: a stream that fell behind the live output did not see them");
                    frames.extend(event(
                        "notice",
                        &json!({ "unstored_bytes": unstored, "message": message }),
                    ));
                }
                frames.extend(event("exit", &json::exit(&report)));
                return out.send(frames).await;
            }
            Ok(Some(OutputEvent::StoreFailed(why))) => event(
                "notice",
                &json!({ "message": format!("the log cannot store this job's output ({why}); it still arrives live") }),
            ),
            Ok(Some(OutputEvent::End) | None) => return true,
            Err(e) => {
                let _ = out
                    .send(event("error", &json!({ "message": e.to_string() })))
                    .await;
                return true;
            }
        };
        if !frame.is_empty() && !out.send(frame).await {
            return false;
        }
    }
}

/// One output stream turned into events: a UTF-8 character split between chunks is held
/// back until it is whole.
#[derive(Default)]
struct TextStream {
    /// Bytes held back: the last ones before `next`.
    held: Vec<u8>,
    /// Where the next byte is expected.
    next: u64,
}

impl TextStream {
    /// The events for `data` at `offset` of stream `name`.
    fn take(&mut self, name: &str, offset: u64, data: &[u8]) -> Vec<u8> {
        let mut frames = Vec::new();
        if offset != self.next {
            // The log passed bytes over: what was held cannot be completed.
            frames.extend(self.flush(name));
            frames.extend(event(
                "skipped",
                &json!({ "stream": name, "from": self.next, "to": offset }),
            ));
        }
        let joined;
        let (bytes, at): (&[u8], u64) = if self.held.is_empty() {
            (data, offset)
        } else {
            let at = offset - self.held.len() as u64;
            let mut both = std::mem::take(&mut self.held);
            both.extend_from_slice(data);
            joined = both;
            (&joined, at)
        };
        self.next = offset + data.len() as u64;
        let whole = match std::str::from_utf8(bytes) {
            Ok(_) => bytes.len(),
            // Incomplete at the end only: hold the start of the last character back.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Not UTF-8: the bytes go as they are.
            Err(_) => {
                frames.extend(event(name, &binary(at, bytes)));
                return frames;
            }
        };
        self.held = bytes[whole..].to_vec();
        if whole > 0 {
            // Checked above: the bytes up to `whole` are UTF-8.
            let text = std::str::from_utf8(&bytes[..whole]).unwrap_or_default();
            frames.extend(text_event(name, at, text));
        }
        frames
    }

    /// What is held back, as bytes (the stream ends, or skips).
    fn flush(&mut self, name: &str) -> Vec<u8> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let held = std::mem::take(&mut self.held);
        event(name, &binary(self.next - held.len() as u64, &held))
    }
}

/// A text output event as a chunk, written in place in one pass: the JSON string escapes
/// every line end, so the data is one `data:` line.
fn text_event(name: &str, offset: u64, text: &str) -> Vec<u8> {
    encode_chunk_with(text.len() + text.len() / 16 + 64, |out| {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(format!("\ndata: {{\"offset\":{offset},\"text\":").as_bytes());
        write_json_string(out, text);
        out.extend_from_slice(b"}\n\n");
    })
}

/// Bytes that are not UTF-8, in base64.
fn binary(offset: u64, bytes: &[u8]) -> Value {
    json!({
        "offset": offset,
        "base64": base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// `GET /api/v1/jobs/changes`: the jobs this connection may see, at once and again whenever
/// one is submitted, starts or ends (at most ten times a second).
pub(super) async fn job_changes(
    session: &Session,
    _request: &Request,
    reader: &mut HttpReader,
) -> Reply {
    let out = session.out.clone();
    if !out.send(event_stream_head()).await {
        return Reply::Streamed(false);
    }
    let mut changes = session.conn.daemon.engine.stats().changes();
    let work = async {
        loop {
            let jobs: Vec<Value> = session
                .conn
                .daemon
                .engine
                .list()
                .iter()
                .filter(|job| session.conn.access.may(Act::See, &job.principal))
                .map(json::job)
                .collect();
            if !out.send(event("jobs", &json!({ "jobs": jobs }))).await {
                return false;
            }
            tokio::time::sleep(CHANGES_GAP).await;
            let changed = tokio::time::timeout(KEEP_ALIVE, changes.changed()).await;
            match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return true,
                Err(_) => {
                    if !out.send(encode_chunk(b": keep-alive\n\n")).await {
                        return false;
                    }
                }
            }
        }
    };
    run_stream(reader, &session.out, work).await
}

/// `GET /api/v1/hub/events[?name=NAME]`: joins the hub for as long as the stream is open;
/// `joined` (this member's id and name, and the members), then `message`, `presence` and
/// `missed` events.
pub(super) async fn hub_events(
    session: &Session,
    request: &Request,
    reader: &mut HttpReader,
) -> Reply {
    let name = query_value(request, "name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let joined = match reader
        .peer()
        .handle
        .join(name, session.conn.contract.hub_accepts)
    {
        Ok(joined) => joined,
        Err(e) => return Reply::Error(400, e),
    };
    tracing::info!(target: "ferry::presence", peer = joined.id, name = joined.name, "joined the hub (http)");
    let out = &session.out;
    let members: Vec<Value> = joined.members.iter().map(json::member).collect();
    let mut first = event_stream_head();
    first.extend(event(
        "joined",
        &json!({ "id": joined.id, "name": joined.name, "members": members }),
    ));
    if !out.send(first).await {
        return Reply::Streamed(false);
    }
    reader.voice().streaming = true;
    let mut alive = tokio::time::interval(KEEP_ALIVE);
    alive.tick().await;
    loop {
        let next = tokio::select! {
            next = reader.next(true) => next,
            _ = alive.tick() => {
                if !out.send(encode_chunk(b": keep-alive\n\n")).await {
                    break;
                }
                continue;
            }
        };
        let frame = match next {
            None => break,
            Some(Next::Event(PeerEvent::Message(message))) => {
                event("message", &json::message(&message))
            }
            Some(Next::Event(PeerEvent::Presence(presence))) => {
                event("presence", &json::presence(&presence))
            }
            Some(Next::Event(PeerEvent::Missed(missed))) => event(
                "missed",
                &json!({ "total": missed.total, "message": missed.describe() }),
            ),
            Some(Next::Event(PeerEvent::ShuttingDown)) => continue,
            // A request on a connection whose response never ends cannot be answered.
            Some(Next::Request(..)) => break,
        };
        if !out.send(frame).await {
            break;
        }
    }
    reader.voice().streaming = false;
    reader.peer().handle.leave("its event stream closed");
    Reply::Streamed(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON data of every event in `frames` (chunked), with its type.
    fn events(frames: &[u8]) -> Vec<(String, Value)> {
        let text = String::from_utf8_lossy(frames);
        let mut found = Vec::new();
        let mut kind = String::new();
        for line in text.lines() {
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                found.push((kind.clone(), serde_json::from_str(data).expect("json")));
            }
        }
        found
    }

    /// The bytes the events carry, in order.
    fn carried(found: &[(String, Value)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (_, data) in found {
            if let Some(text) = data["text"].as_str() {
                bytes.extend_from_slice(text.as_bytes());
            } else if let Some(b64) = data["base64"].as_str() {
                bytes.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .expect("base64"),
                );
            }
        }
        bytes
    }

    #[test]
    fn a_character_split_between_chunks_arrives_whole_as_text() {
        let text = "héllo wörld ✓ done\n".as_bytes();
        for cut in 0..=text.len() {
            let mut stream = TextStream::default();
            let mut frames = stream.take("stdout", 0, &text[..cut]);
            frames.extend(stream.take("stdout", cut as u64, &text[cut..]));
            frames.extend(stream.flush("stdout"));
            let found = events(&frames);
            assert!(
                found.iter().all(|(_, d)| d.get("base64").is_none()),
                "{cut}: {found:?}"
            );
            assert_eq!(carried(&found), text, "cut at {cut}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_arrive_exactly_in_base64() {
        let bytes: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        let mut stream = TextStream::default();
        let mut frames = stream.take("stderr", 0, &bytes[..300]);
        frames.extend(stream.take("stderr", 300, &bytes[300..]));
        frames.extend(stream.flush("stderr"));
        assert_eq!(carried(&events(&frames)), bytes);
    }

    #[test]
    fn a_jump_in_offsets_is_said() {
        let mut stream = TextStream::default();
        let mut frames = stream.take("stdout", 0, b"abc");
        frames.extend(stream.take("stdout", 10, b"def"));
        let found = events(&frames);
        assert_eq!(found[1].0, "skipped");
        assert_eq!(found[1].1["from"], 3);
        assert_eq!(found[1].1["to"], 10);
        assert_eq!(found[2].1["offset"], 10);
    }
}
