//! The matrix's rows: one fixture per form of the listener table, each speaking its dialect as
//! its own clients do, and the guarantees run on them.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use ferry_io::fdpass::send_all_with_fds;
use ferry_wire::native::{decode_frame, encode_frame, ClientMessage, DaemonMessage, NoticeKind};

use super::{Link, Matrix, Words};
use crate::helper::{poll_until, run_message};

/// What a kicked peer is told, in every dialect that has words for it.
const KICKED: &str = "disconnected by the daemon's owner (ferry peers kick); your jobs go on";
/// What a peer is told when the daemon goes down.
const GOING_DOWN: &str = "the ferry daemon is going down";
/// What a peer past the first-request limit is told.
const TIMED_OUT: &str = "no whole request within 1500 ms";

/// One form of the listener table, as its peers speak it.
pub trait Row: Sync {
    /// `DIALECT:TRANSPORT`, as the listener table lists it.
    fn form(&self) -> &'static str;

    /// The dialect.
    fn dialect(&self) -> &'static str {
        self.form().split(':').next().unwrap_or_default()
    }

    /// A new connection, before any handshake.
    fn raw(&self, m: &Matrix) -> Link;

    /// A connection ready for requests: its handshake done where the dialect has one (a
    /// TsockM peer logged in, on its push connection).
    fn connect(&self, m: &Matrix) -> Link {
        self.raw(m)
    }

    /// The daemon ends a connection by closing it (a FIFO pair is opened anew instead).
    fn closes(&self) -> bool {
        true
    }

    /// Sends a request that starts `argv` on `link` (its answer not read); `false` when the
    /// dialect runs no commands.
    fn start(&self, link: &mut Link, argv: &[String]) -> bool;

    /// Runs `argv` on a connection of its own; its stdout (`None`: no commands).
    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>>;

    /// What a kicked peer reads until the close.
    fn kicked(&self) -> Words;

    /// What an idle peer reads when the daemon goes down.
    fn going_down(&self) -> Words;

    /// The first bytes of a first request never finished, and the words at the limit;
    /// `None` where the transport has no first-request limit.
    fn slow(&self) -> Option<(&'static [u8], Words)>;

    /// A malformed request, its words, and whether the connection then closes.
    fn malformed(&self) -> (Vec<u8>, Words, bool);

    /// Requests for the split test.
    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a>;

    /// Where this row's jobs run, below the file area (a prefix); `None`: no commands.
    fn area(&self) -> Option<&'static str>;

    /// Another principal's jobs, neither listed nor touched: checked (`Some`), or `None`
    /// where it does not apply.
    fn other_principal(&self, _m: &Matrix) -> Option<Result<String, String>> {
        None
    }

    /// The answer to a command holds its output (which is then capped).
    fn answers_with_output(&self) -> bool {
        false
    }

    /// Why a guarantee does not apply to this row.
    fn not_applicable(&self, guarantee: &str) -> String;
}

/// One row's requests for the split test.
pub trait Requests {
    /// A connection to send a request on.
    fn link(&mut self) -> Link;
    /// The request.
    fn request(&self) -> Vec<u8>;
    /// Ends a request's sending (a TsockM request ends where its connection ends).
    fn finish(&self, _link: &mut Link) {}
    /// Two requests in one write (by default the request twice).
    fn joined(&self) -> Vec<u8> {
        let mut both = self.request();
        both.extend(self.request());
        both
    }
    /// Reads and checks one request's answer.
    fn answer(&mut self, link: &mut Link) -> Result<(), String>;
    /// Two requests in one write are two (`false`: one request per connection).
    fn joins(&self) -> bool {
        true
    }
}

/// Every fixture.
pub fn all() -> Vec<Box<dyn Row>> {
    vec![
        Box::new(Native("ferry:unix")),
        Box::new(Native("ferry:tls")),
        Box::new(Native("ferry:tcp")),
        Box::new(Fanos),
        Box::new(Cbsd),
        Box::new(Cbsdng),
        Box::new(Rake64),
        Box::new(Tsockm),
        Box::new(C2("c2:fifo")),
        Box::new(C2("c2:tcp")),
    ]
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(300).collect()
}

/// Commands that run together on one connection, whose frames interleave: each answer is
/// the next command accepted, once it has ended.
#[derive(Default)]
struct Interleaved {
    /// Commands accepted, in order, with their stdout and whether they ended.
    accepted: std::collections::VecDeque<(u64, Vec<u8>, bool)>,
}

impl Interleaved {
    fn accepted(&mut self, id: u64) {
        self.accepted.push_back((id, Vec::new(), false));
    }

    fn stdout(&mut self, id: u64, data: &[u8]) {
        if let Some((_, out, _)) = self.accepted.iter_mut().find(|(of, ..)| *of == id) {
            out.extend_from_slice(data);
        }
    }

    fn ended(&mut self, id: u64) {
        if let Some((_, _, ended)) = self.accepted.iter_mut().find(|(of, ..)| *of == id) {
            *ended = true;
        }
    }

    /// The stdout of the first command accepted, once it has ended.
    fn next_done(&mut self) -> Option<Vec<u8>> {
        if self.accepted.front().is_some_and(|(_, _, ended)| *ended) {
            return self.accepted.pop_front().map(|(_, out, _)| out);
        }
        None
    }
}

/// An answer that must be `split\n`.
fn split_answer(out: &[u8]) -> Result<(), String> {
    (out == b"split\n")
        .then_some(())
        .ok_or_else(|| format!("stdout {:?}", lossy(out)))
}

// ----- The guarantees -------------------------------------------------------------------

/// The kick: the connection closed within a second, the peer told in its words, gone from
/// `ferry peers`, its job going on.
pub fn kick(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let mut link = row.connect(m);
    let marker = m.path(&format!("kicked-{}", row.form().replace(':', "-")));
    let job = row.start(&mut link, &m.job(&marker));
    let id = m.peer_id(row.dialect(), &link.address());
    let out = m.daemon.run(&["peers", "kick", &id]);
    if !out.status.success() {
        return Err(format!("ferry peers kick: {out:?}"));
    }
    let said = if row.closes() {
        link.until_closed(Duration::from_secs(1)).map_err(|read| {
            format!(
                "still open a second after the kick (read {:?})",
                lossy(&read)
            )
        })?
    } else {
        Vec::new()
    };
    let words = row.kicked().check(&said)?;
    if poll_until(Duration::from_secs(5), || (!m.listed(&id)).then_some(())).is_none() {
        return Err(format!("{id} is still listed by ferry peers"));
    }
    let mut found = format!("{words}, closed, unlisted");
    if job {
        if poll_until(Duration::from_secs(10), || marker.exists().then_some(())).is_none() {
            return Err("its job did not go on".into());
        }
        found.push_str(", its job went on");
    }
    if !row.closes() {
        // The pair is opened anew: the next client is served.
        let again = row.output(m, &["echo", "again"]);
        if again.as_deref() != Some(b"again\n") {
            return Err(format!("the pair served {again:?} after the kick"));
        }
        found.push_str(", the pair serves the next client");
    }
    Ok(Some(found))
}

/// Before the going-down notice: an idle peer of every row, then the daemon stopped once.
pub fn connect_all_then_shut_down(m: &Matrix, rows: &[&dyn Row]) {
    for row in rows {
        let connected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let link = row.connect(m);
            m.peer_id(row.dialect(), &link.address());
            link
        }));
        if let Ok(link) = connected {
            m.waiting(row.form(), link);
        }
    }
    let out = m.daemon.run(&["shutdown"]);
    assert!(out.status.success(), "ferry shutdown: {out:?}");
}

/// The going-down notice, to an idle peer of every row at once.
pub fn going_down(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let mut link = m
        .waited(row.form())
        .ok_or("could not connect before the shutdown")?;
    let said = link
        .until_closed(Duration::from_secs(10))
        .map_err(|read| format!("still open after the shutdown (read {:?})", lossy(&read)))?;
    row.going_down().check(&said).map(Some)
}

/// Before the first-request limit: a peer of every row sending its first request a byte a
/// second (a peer's own timing: each byte comes before any read time limit would fire, the
/// request is never whole), the owner served meanwhile. On a FIFO pair (no first-request
/// limit: the daemon opened it itself, before any client) the bytes start a frame that stays
/// partial.
pub fn send_slowly(m: &Matrix, rows: &[&dyn Row]) {
    let mut slow: Vec<(&'static str, Link, &'static [u8])> = rows
        .iter()
        .map(|row| {
            let bytes = row.slow().map_or(&[0x20u8, 0x00][..], |(bytes, _)| bytes);
            (row.form(), row.raw(m), bytes)
        })
        .collect();
    for i in 0..2 {
        for (_, link, bytes) in &mut slow {
            link.send_taken(&bytes[i..=i]);
        }
        let served = m.daemon.run(&["run", "--", "true"]);
        assert!(
            served.status.success(),
            "the owner was not served: {served:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    for (form, link, _) in slow {
        m.waiting(form, link);
    }
}

/// A peer sending a byte a second is closed at the first-request limit, in its dialect's
/// words (see [`send_slowly`]).
pub fn first_request_limit(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let mut link = m.waited(row.form()).ok_or("could not connect")?;
    let Some((_, words)) = row.slow() else {
        return fifo_partial_frame(m, row);
    };
    let said = link
        .until_closed(Duration::from_secs(5))
        .map_err(|read| format!("still open past the limit (read {:?})", lossy(&read)))?;
    words
        .check(&said)
        .map(|words| Some(format!("{words}, closed")))
}

/// A frame left partial on a FIFO pair is given up after its pause, and the next request is
/// served.
fn fifo_partial_frame(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    if row.closes() {
        return Ok(None);
    }
    let given_up = poll_until(Duration::from_secs(10), || {
        m.daemon
            .log()
            .contains("dropped a partial request of 2 bytes")
            .then_some(())
    });
    if given_up.is_none() {
        return Err("the partial frame was not given up".into());
    }
    match row.output(m, &["echo", "next"]) {
        Some(out) if out == b"next\n" => Ok(Some(
            "a partial frame given up at its pause; the next request served".into(),
        )),
        other => Err(format!("the next request got {other:?}")),
    }
}

/// A request split at every byte boundary is one request; two in one write are two.
pub fn split_and_joined(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let mut requests = row.requests(m);
    let request = requests.request();
    for cut in 1..request.len() {
        let mut link = requests.link();
        link.send_taken(&request[..cut]);
        link.write_all(&request[cut..]).map_err(|e| e.to_string())?;
        link.flush().map_err(|e| e.to_string())?;
        requests.finish(&mut link);
        requests
            .answer(&mut link)
            .map_err(|why| format!("cut at {cut}: {why}"))?;
    }
    if !requests.joins() {
        return Ok(Some(format!(
            "split at all {} boundaries: one request (one request per connection)",
            request.len() - 1
        )));
    }
    let mut link = requests.link();
    link.write_all(&requests.joined())
        .map_err(|e| e.to_string())?;
    for n in 0..2 {
        requests
            .answer(&mut link)
            .map_err(|why| format!("two in one write, answer {n}: {why}"))?;
    }
    Ok(Some(format!(
        "split at all {} boundaries: one request; two in one write: two",
        request.len() - 1
    )))
}

/// A malformed request is answered in the dialect's words; the daemon serves on.
pub fn malformed(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let (bytes, words, closes) = row.malformed();
    let mut requests = row.requests(m);
    let mut link = requests.link();
    link.write_all(&bytes).map_err(|e| e.to_string())?;
    requests.finish(&mut link);
    let said = if closes {
        link.until_closed(Duration::from_secs(5))
            .map_err(|read| format!("still open (read {:?})", lossy(&read)))?
    } else {
        let mut said = Vec::new();
        poll_until(Duration::from_secs(5), || {
            said.extend(
                link.until_closed(Duration::from_millis(200))
                    .unwrap_or_else(|r| r),
            );
            (!said.is_empty()).then_some(())
        });
        said
    };
    let found = words.check(&said)?;
    m.daemon.assert_serving();
    // And another peer of the same row is served.
    let mut link = requests.link();
    link.write_all(&requests.request())
        .map_err(|e| e.to_string())?;
    requests.finish(&mut link);
    requests
        .answer(&mut link)
        .map_err(|why| format!("the next peer: {why}"))?;
    Ok(Some(format!(
        "{found}{}; others served",
        if closes { ", closed" } else { "" }
    )))
}

/// A job runs in its principal's file area, never in the daemon's working directory.
pub fn job_directory(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let Some(area) = row.area() else {
        return Ok(None);
    };
    let Some(out) = row.output(m, &["pwd"]) else {
        return Ok(None);
    };
    let dir = PathBuf::from(String::from_utf8_lossy(&out).trim_end());
    let expected = m.files().join(area);
    if dir.starts_with(&m.cwd) || !dir.starts_with(&expected) {
        return Err(format!(
            "ran in {}, not in {} (the daemon's: {})",
            dir.display(),
            expected.display(),
            m.cwd.display()
        ));
    }
    let shown = dir
        .strip_prefix(m.files())
        .map(|d| format!("files/{}", d.display()))
        .unwrap_or_default();
    Ok(Some(format!("ran in {shown}")))
}

/// Another principal's jobs are neither listed nor touched.
pub fn other_principal(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    row.other_principal(m).transpose()
}

/// An answer's output past the dialect's cap is cut with a note.
pub fn output_cap(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    if !row.answers_with_output() {
        return Ok(None);
    }
    const CAP: usize = 16 * 1024 * 1024;
    let over = CAP + 1000;
    let out = row
        .output(m, &["head", "-c", &over.to_string(), "/dev/zero"])
        .ok_or("no output")?;
    let (kept, note) = out.split_at(CAP.min(out.len()));
    if kept.len() != CAP || kept.iter().any(|b| *b != 0) {
        return Err(format!("kept {} bytes of output, not {CAP}", kept.len()));
    }
    let note = String::from_utf8_lossy(note);
    if !note.contains("1000 bytes more were written") || !note.contains("ferry log") {
        return Err(format!("no note of the rest: {note:?}"));
    }
    Ok(Some(
        "16 MiB kept, then a note of the 1000 bytes more".into(),
    ))
}

// ----- The native protocol ----------------------------------------------------------------

/// `ferry` over its Unix socket, TLS or TCP.
struct Native(&'static str);

/// The native frames in `bytes`.
fn native_frames(bytes: &[u8]) -> Vec<DaemonMessage> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Ok(Some((frame, used))) = decode_frame::<DaemonMessage>(rest, usize::MAX) {
        frames.push(frame);
        rest = &rest[used..];
    }
    frames
}

/// Reads the next native frame.
fn native_next(link: &mut Link) -> DaemonMessage {
    let head = link.exact(4);
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut frame = head;
    frame.extend(link.exact(len));
    match decode_frame::<DaemonMessage>(&frame, usize::MAX) {
        Ok(Some((message, _))) => message,
        other => panic!("not a daemon frame: {other:?}"),
    }
}

fn native_bytes(message: &ClientMessage) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_frame(message, &mut bytes).expect("encode");
    bytes
}

/// Reads a job's frames up to its exit; its stdout.
fn native_stdout(link: &mut Link) -> Result<Vec<u8>, String> {
    let mut stdout = Vec::new();
    loop {
        match native_next(link) {
            DaemonMessage::Output {
                stream: ferry_wire::Stream::Stdout,
                data,
                ..
            } => stdout.extend(data),
            DaemonMessage::Exit { .. } => return Ok(stdout),
            DaemonMessage::Error { message, .. } => return Err(message),
            _ => {}
        }
    }
}

impl Native {
    fn token(&self, m: &Matrix) -> Option<String> {
        (self.0 != "ferry:unix").then(|| m.token.clone())
    }
}

/// A notice of `kind` saying `text` among the frames read.
fn native_notice(read: &[u8], kind: NoticeKind, text: &str) -> Result<(), String> {
    let frames = native_frames(read);
    frames
        .iter()
        .any(|f| matches!(f, DaemonMessage::Notice { kind: k, message } if *k == kind && message.contains(text)))
        .then_some(())
        .ok_or_else(|| format!("no {kind:?} notice saying {text:?} in {frames:?}"))
}

impl Row for Native {
    fn form(&self) -> &'static str {
        self.0
    }

    fn raw(&self, m: &Matrix) -> Link {
        match self.0 {
            "ferry:unix" => Link::unix(&m.daemon.socket),
            _ => Link::tcp(m.port(self.0)),
        }
    }

    fn connect(&self, m: &Matrix) -> Link {
        let mut link = match self.0 {
            "ferry:tls" => Link::tls(m.port("ferry:tls"), &m.tls),
            _ => self.raw(m),
        };
        link.write_all(&native_bytes(&ClientMessage::Hello {
            version: ferry_wire::PROTOCOL_VERSION,
            client: "conformance".into(),
            token: self.token(m),
        }))
        .expect("hello");
        match native_next(&mut link) {
            DaemonMessage::Welcome { .. } => link,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    fn start(&self, link: &mut Link, argv: &[String]) -> bool {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        link.write_all(&native_bytes(&run_message(1, &argv, false, None)))
            .expect("run");
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.connect(m);
        link.write_all(&native_bytes(&run_message(1, argv, false, None)))
            .expect("run");
        Some(native_stdout(&mut link).expect("job output"))
    }

    fn kicked(&self) -> Words {
        Words::Check(|read| native_notice(read, NoticeKind::Kicked, KICKED))
    }

    fn going_down(&self) -> Words {
        Words::Check(|read| native_notice(read, NoticeKind::ShuttingDown, GOING_DOWN))
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        if self.0 == "ferry:tls" {
            // The first bytes of a ClientHello: no words can reach a peer before its TLS
            // handshake.
            return Some((
                &[0x16, 0x03, 0x01],
                Words::Nothing("nothing can be said before the TLS handshake"),
            ));
        }
        Some((
            &[0, 0, 1, 0xa1],
            Words::Check(|read| {
                native_frames(read)
                    .iter()
                    .any(|f| matches!(f, DaemonMessage::Error { code: ferry_wire::ErrorCode::BadHandshake, message, .. } if message.contains("no Hello within 1500 ms")))
                    .then_some(())
                    .ok_or_else(|| format!("no BadHandshake error in {:?}", native_frames(read)))
            }),
        ))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        (
            vec![0, 0, 0, 2, 0xff, 0xff],
            Words::Check(|read| {
                native_frames(read)
                    .iter()
                    .any(|f| {
                        matches!(
                            f,
                            DaemonMessage::Error {
                                code: ferry_wire::ErrorCode::BadFrame,
                                ..
                            }
                        )
                    })
                    .then_some(())
                    .ok_or_else(|| format!("no BadFrame error in {:?}", native_frames(read)))
            }),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(NativeRequests {
            row: Native(self.0),
            m,
            jobs: Interleaved::default(),
        })
    }

    fn area(&self) -> Option<&'static str> {
        // The owner's jobs run in the whole area when its client names no directory.
        Some(if self.0 == "ferry:unix" {
            ""
        } else {
            "tokens/default"
        })
    }

    fn other_principal(&self, m: &Matrix) -> Option<Result<String, String>> {
        if self.0 == "ferry:unix" {
            return None;
        }
        // A job of the owner's, then this row's token principal asking for it.
        let out = m.daemon.run(&["run", "--detach", "--", "sleep", "30"]);
        let job: u64 = match String::from_utf8_lossy(&out.stdout).trim().parse() {
            Ok(job) => job,
            Err(_) => return Some(Err(format!("cannot start the owner's job: {out:?}"))),
        };
        let mut link = self.connect(m);
        link.write_all(&native_bytes(&ClientMessage::ListJobs {
            request: 1,
            all: false,
        }))
        .expect("list");
        let listed = match native_next(&mut link) {
            DaemonMessage::Jobs { jobs, .. } => jobs.iter().any(|j| j.id == job),
            other => return Some(Err(format!("ListJobs answered {other:?}"))),
        };
        if listed {
            return Some(Err(format!("the owner's job {job} is listed")));
        }
        link.write_all(&native_bytes(&ClientMessage::Signal {
            request: 2,
            job,
            signal: libc::SIGTERM,
        }))
        .expect("signal");
        let touched = match native_next(&mut link) {
            DaemonMessage::Error {
                code: ferry_wire::ErrorCode::PermissionDenied,
                ..
            } => false,
            other => return Some(Err(format!("Signal answered {other:?}"))),
        };
        let _ = m.daemon.run(&["kill", &job.to_string()]);
        Some(if touched {
            Err("signalled".into())
        } else {
            Ok("the owner's job neither listed nor signalled".into())
        })
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "other principal" => "the owner may see and touch every job".into(),
            "output cap" => "output streams as it comes: no answer holds it".into(),
            _ => "-".into(),
        }
    }
}

/// Native requests for the split test.
struct NativeRequests<'a> {
    row: Native,
    m: &'a Matrix,
    jobs: Interleaved,
}

impl Requests for NativeRequests<'_> {
    fn link(&mut self) -> Link {
        self.row.connect(self.m)
    }

    fn request(&self) -> Vec<u8> {
        native_bytes(&run_message(1, &["echo", "split"], false, None))
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        loop {
            if let Some(out) = self.jobs.next_done() {
                return split_answer(&out);
            }
            match native_next(link) {
                DaemonMessage::Accepted { job, .. } => self.jobs.accepted(job),
                DaemonMessage::Output {
                    job,
                    stream: ferry_wire::Stream::Stdout,
                    data,
                    ..
                } => self.jobs.stdout(job, &data),
                DaemonMessage::Exit { job, .. } => self.jobs.ended(job),
                DaemonMessage::Error { message, .. } => return Err(message),
                _ => {}
            }
        }
    }
}

// ----- FANOS ------------------------------------------------------------------------------

struct Fanos;

/// The netstring payloads in `bytes`.
fn netstrings(bytes: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = bytes;
    while let Ok(Some((range, used))) = ferry_wire::fanos::decode_netstring(rest, 1 << 26, false) {
        found.push(String::from_utf8_lossy(&rest[range]).into_owned());
        rest = &rest[used..];
    }
    found
}

fn fanos_error(read: &[u8], text: &str) -> Result<(), String> {
    let replies = netstrings(read);
    replies
        .iter()
        .any(|r| r.starts_with("ERROR ") && r.contains(text))
        .then_some(())
        .ok_or_else(|| format!("no ERROR saying {text:?} in {replies:?}"))
}

/// Sends an ARGV with stdin from /dev/null and stdout, stderr to `out`.
fn fanos_argv(link: &Link, argv: &[&str], out: std::os::fd::BorrowedFd<'_>) {
    let Link::Unix(stream) = link else {
        panic!("FANOS is served on Unix sockets");
    };
    let mut payload = b"ARGV".to_vec();
    for arg in argv {
        payload.push(0);
        payload.extend_from_slice(arg.as_bytes());
    }
    let mut message = Vec::new();
    ferry_wire::fanos::encode_netstring(&payload, &mut message);
    let null = std::fs::File::open("/dev/null").expect("null");
    send_all_with_fds(stream.as_fd(), &message, &[null.as_fd(), out, out]).expect("send");
}

impl Row for Fanos {
    fn form(&self) -> &'static str {
        "fanos:unix"
    }

    fn raw(&self, m: &Matrix) -> Link {
        Link::unix(&m.path("fanos.sock"))
    }

    fn start(&self, link: &mut Link, argv: &[String]) -> bool {
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .expect("null");
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        fanos_argv(link, &argv, null.as_fd());
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.raw(m);
        let (read, write) = rustix::pipe::pipe().expect("pipe");
        fanos_argv(&link, argv, write.as_fd());
        drop(write);
        let reply = link.one_netstring().expect("a reply");
        assert_eq!(reply, "STATUS 0");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(read), &mut out).expect("read");
        Some(out)
    }

    fn kicked(&self) -> Words {
        Words::Check(|read| fanos_error(read, KICKED))
    }

    fn going_down(&self) -> Words {
        Words::Check(|read| fanos_error(read, GOING_DOWN))
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        Some((
            b"6:GETPID",
            Words::Check(|read| fanos_error(read, TIMED_OUT)),
        ))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        (
            b"x:GETPID,".to_vec(),
            Words::Check(|read| fanos_error(read, "Expected netstring length")),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(FanosRequests(m))
    }

    fn area(&self) -> Option<&'static str> {
        Some("")
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "other principal" => "the owner's socket: the owner may see and touch every job".into(),
            "output cap" => "output goes to the client's own fds: no answer holds it".into(),
            _ => "-".into(),
        }
    }
}

struct FanosRequests<'a>(&'a Matrix);

impl Requests for FanosRequests<'_> {
    fn link(&mut self) -> Link {
        Fanos.raw(self.0)
    }

    fn request(&self) -> Vec<u8> {
        b"6:GETPID,".to_vec()
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        let reply = link.one_netstring()?;
        reply
            .starts_with("OK ")
            .then_some(())
            .ok_or_else(|| format!("GETPID answered {reply:?}"))
    }
}

impl Link {
    /// One netstring reply, read to its end.
    fn one_netstring(&mut self) -> Result<String, String> {
        let mut buf = Vec::new();
        loop {
            if let Ok(Some((range, _))) = ferry_wire::fanos::decode_netstring(&buf, 1 << 20, false)
            {
                return Ok(String::from_utf8_lossy(&buf[range]).into_owned());
            }
            let byte = self.exact(1);
            buf.extend(byte);
        }
    }
}

// ----- CBSD and cbsdng ----------------------------------------------------------------------

struct Cbsd;

fn cbsd_frames(bytes: &[u8]) -> Vec<ferry_wire::cbsd::Frame> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Ok(Some((frame, used))) = ferry_wire::cbsd::decode_frame(rest) {
        frames.push(frame);
        rest = &rest[used..];
    }
    frames
}

fn cbsd_said(read: &[u8], kind: u32, text: &str) -> Result<(), String> {
    let frames = cbsd_frames(read);
    frames
        .iter()
        .any(|f| f.id == 0 && f.kind == kind && String::from_utf8_lossy(&f.payload).contains(text))
        .then_some(())
        .ok_or_else(|| format!("no frame `0 {kind} ...` saying {text:?} in {frames:?}"))
}

/// Reads CBSD frames until the exit of the command; its stdout.
fn cbsd_stdout(link: &mut Link) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut stdout = Vec::new();
    loop {
        while let Ok(Some((frame, used))) = ferry_wire::cbsd::decode_frame(&buf) {
            buf.drain(..used);
            match frame.kind {
                ferry_wire::cbsd::kind::STDOUT => stdout.extend(frame.payload),
                ferry_wire::cbsd::kind::EXIT => return Ok(stdout),
                ferry_wire::cbsd::kind::ERROR => {
                    return Err(String::from_utf8_lossy(&frame.payload).into_owned())
                }
                _ => {}
            }
        }
        buf.extend(link.exact(1));
    }
}

impl Row for Cbsd {
    fn form(&self) -> &'static str {
        "cbsd:unix"
    }

    fn raw(&self, m: &Matrix) -> Link {
        Link::unix(&m.path("cbsd.sock"))
    }

    fn start(&self, link: &mut Link, argv: &[String]) -> bool {
        link.write_all(format!("command {}\n", argv.join(" ")).as_bytes())
            .expect("command");
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.raw(m);
        link.write_all(format!("command {}\n", argv.join(" ")).as_bytes())
            .expect("command");
        Some(cbsd_stdout(&mut link).expect("output"))
    }

    fn kicked(&self) -> Words {
        Words::Check(|read| cbsd_said(read, ferry_wire::cbsd::kind::NOTICE, KICKED))
    }

    fn going_down(&self) -> Words {
        Words::Says(b"0 5 ", GOING_DOWN)
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        Some((b"command sleep 1", Words::Says(b"0 4 ", TIMED_OUT)))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        (
            b"bogus request\n".to_vec(),
            Words::Says(b"0 4 ", "unknown request 'bogus'"),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(CbsdRequests {
            m,
            commands: Interleaved::default(),
            buf: Vec::new(),
        })
    }

    fn area(&self) -> Option<&'static str> {
        Some("")
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "other principal" => "the owner's socket: the owner may see and touch every job".into(),
            "output cap" => "output streams as it comes: no answer holds it".into(),
            _ => "-".into(),
        }
    }
}

/// CBSD requests for the split test.
struct CbsdRequests<'a> {
    m: &'a Matrix,
    commands: Interleaved,
    buf: Vec<u8>,
}

impl Requests for CbsdRequests<'_> {
    fn link(&mut self) -> Link {
        Cbsd.raw(self.m)
    }

    fn request(&self) -> Vec<u8> {
        b"command echo split\n".to_vec()
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        use ferry_wire::cbsd::kind;
        loop {
            if let Some(out) = self.commands.next_done() {
                return split_answer(&out);
            }
            match ferry_wire::cbsd::decode_frame(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    match frame.kind {
                        kind::ACCEPTED => self.commands.accepted(frame.id),
                        kind::STDOUT => self.commands.stdout(frame.id, &frame.payload),
                        kind::EXIT => self.commands.ended(frame.id),
                        kind::ERROR => return Err(lossy(&frame.payload)),
                        _ => {}
                    }
                }
                Ok(None) => self.buf.extend(link.exact(1)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

struct Cbsdng;

fn cbsdng_frames(bytes: &[u8]) -> Vec<ferry_wire::cbsdng::Frame> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Ok(Some((frame, used))) = ferry_wire::cbsdng::decode_frame(rest) {
        frames.push(frame);
        rest = &rest[used..];
    }
    frames
}

fn cbsdng_closing(read: &[u8], text: &str) -> Result<(), String> {
    let frames = cbsdng_frames(read);
    frames
        .iter()
        .any(|f| {
            f.id == 0
                && f.kind == ferry_wire::cbsdng::bits::CONNECTION_CLOSED
                && String::from_utf8_lossy(&f.payload).contains(text)
        })
        .then_some(())
        .ok_or_else(|| format!("no closing frame saying {text:?} in {frames:?}"))
}

fn cbsdng_request(id: u32, line: &str) -> Vec<u8> {
    ferry_wire::cbsdng::encode_frame(&ferry_wire::cbsdng::Frame {
        id,
        kind: 0,
        payload: line.as_bytes().to_vec(),
    })
}

/// Reads cbsdng frames until request `id`'s end; its output.
fn cbsdng_output(link: &mut Link, id: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let head = link.exact(12);
        let size = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let mut bytes = head;
        bytes.extend(link.exact(size));
        let frames = cbsdng_frames(&bytes);
        let frame = frames.first().ok_or("not a frame")?;
        if frame.id != id {
            return Err(format!("a frame of request {}", frame.id));
        }
        if frame.kind & ferry_wire::cbsdng::bits::EXIT != 0 {
            return if frame.payload == b"0" {
                Ok(out)
            } else {
                Err(format!("status {}", lossy(&frame.payload)))
            };
        }
        out.extend_from_slice(&frame.payload);
    }
}

impl Row for Cbsdng {
    fn form(&self) -> &'static str {
        "cbsdng:unix"
    }

    fn raw(&self, m: &Matrix) -> Link {
        Link::unix(&m.path("cbsdng.sock"))
    }

    fn start(&self, link: &mut Link, argv: &[String]) -> bool {
        link.write_all(&cbsdng_request(5, &argv.join(" ")))
            .expect("request");
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.raw(m);
        link.write_all(&cbsdng_request(9, &argv.join(" ")))
            .expect("request");
        Some(cbsdng_output(&mut link, 9).expect("output"))
    }

    fn kicked(&self) -> Words {
        Words::Check(|read| cbsdng_closing(read, KICKED))
    }

    fn going_down(&self) -> Words {
        Words::Check(|read| cbsdng_closing(read, GOING_DOWN))
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        Some((
            &[1, 0, 0, 0],
            Words::Check(|read| cbsdng_closing(read, TIMED_OUT)),
        ))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        // A frame announcing more than 1 MiB.
        (
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0],
            Words::Check(|read| cbsdng_closing(read, "over the limit")),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(CbsdngRequests {
            m,
            requests: Interleaved::default(),
        })
    }

    fn area(&self) -> Option<&'static str> {
        Some("")
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        Cbsd.not_applicable(guarantee)
    }
}

/// cbsdng requests for the split test (two in one write have ids of their own).
struct CbsdngRequests<'a> {
    m: &'a Matrix,
    requests: Interleaved,
}

impl Requests for CbsdngRequests<'_> {
    fn link(&mut self) -> Link {
        Cbsdng.raw(self.m)
    }

    fn request(&self) -> Vec<u8> {
        cbsdng_request(7, "echo split")
    }

    fn joined(&self) -> Vec<u8> {
        let mut both = cbsdng_request(7, "echo split");
        both.extend(cbsdng_request(8, "echo split"));
        both
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        loop {
            if let Some(out) = self.requests.next_done() {
                return split_answer(&out);
            }
            let head = link.exact(12);
            let size = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
            let mut bytes = head;
            bytes.extend(link.exact(size));
            let frame = cbsdng_frames(&bytes).pop().ok_or("not a frame")?;
            let id = u64::from(frame.id);
            if !self.requests.accepted.iter().any(|(of, ..)| *of == id) {
                self.requests.accepted(id);
            }
            if frame.kind & ferry_wire::cbsdng::bits::EXIT != 0 {
                if frame.payload != b"0" {
                    return Err(format!("status {}", lossy(&frame.payload)));
                }
                self.requests.ended(id);
            } else {
                self.requests.stdout(id, &frame.payload);
            }
        }
    }
}

// ----- rake64 -----------------------------------------------------------------------------

struct Rake64;

fn padded(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(64, b' ');
    bytes
}

fn rake64_command(text: &str) -> Vec<u8> {
    let mut bytes = padded(&format!("!C{}", text.chars().count()));
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// One answer read as the seed's reader does (see `rake64.rs`): its code and payload.
fn rake64_answer(link: &mut Link) -> (String, Vec<u8>) {
    let header = String::from_utf8(link.exact(64)).expect("text");
    let code = header[..2].to_owned();
    let length = if code == "!S" {
        &header[5..]
    } else {
        &header[2..]
    };
    let length: usize = length.trim().parse().expect("a length");
    (code, link.exact(length))
}

impl Row for Rake64 {
    fn form(&self) -> &'static str {
        "rake64:tcp"
    }

    fn raw(&self, m: &Matrix) -> Link {
        Link::tcp(m.port("rake64:tcp"))
    }

    fn start(&self, link: &mut Link, argv: &[String]) -> bool {
        link.write_all(&rake64_command(&argv.join(" ")))
            .expect("command");
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.raw(m);
        link.write_all(&rake64_command(&argv.join(" ")))
            .expect("command");
        let (code, stdout) = rake64_answer(&mut link);
        assert_eq!(code, "!S", "{}", lossy(&stdout));
        Some(stdout)
    }

    fn kicked(&self) -> Words {
        Words::Says(b"!F", KICKED)
    }

    fn going_down(&self) -> Words {
        Words::Says(b"!F", GOING_DOWN)
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        Some((b"!C12", Words::Says(b"!F", TIMED_OUT)))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        (
            padded("?E"),
            Words::Says(b"!F", "a rake64 header starts with '!'"),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(Rake64Requests(m))
    }

    fn area(&self) -> Option<&'static str> {
        // Each connection's sandbox, in the anonymous rake64 principal's area.
        Some("anonymous/rake64")
    }

    fn answers_with_output(&self) -> bool {
        true
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "other principal" => "no request lists or touches jobs".into(),
            _ => "-".into(),
        }
    }
}

struct Rake64Requests<'a>(&'a Matrix);

impl Requests for Rake64Requests<'_> {
    fn link(&mut self) -> Link {
        Rake64.raw(self.0)
    }

    fn request(&self) -> Vec<u8> {
        rake64_command("echo split")
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        match rake64_answer(link) {
            (code, stdout) if code == "!S" && stdout == b"split\n" => Ok(()),
            (code, payload) => Err(format!("{code} {:?}", lossy(&payload))),
        }
    }
}

// ----- TsockM -----------------------------------------------------------------------------

struct Tsockm;

/// What a TsockM push connection reads when the daemon ends it.
const GOODBYE: &str = "RES::COMM_END::200::server::server::client::OK";

impl Tsockm {
    /// Logs `name` in; its push connection and its id.
    fn login(m: &Matrix, name: &str) -> (Link, String) {
        let port = m.port("tsockm:tcp");
        let mut link = Link::tcp(port);
        let server = format!("127.0.0.1:{port}");
        link.write_all(format!("REQ::COMM::200::client::client::{server}::{name}").as_bytes())
            .expect("login");
        let answer = link.one_read();
        let id = answer.rsplit("::").next().unwrap_or_default().to_owned();
        assert!(answer.starts_with("RES::COMM::200::"), "{answer}");
        (link, id)
    }
}

impl Link {
    /// One read, as TsockM's client takes one message.
    fn one_read(&mut self) -> String {
        let mut buf = [0u8; 1024];
        let n = std::io::Read::read(self, &mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Row for Tsockm {
    fn form(&self) -> &'static str {
        "tsockm:tcp"
    }

    fn raw(&self, m: &Matrix) -> Link {
        Link::tcp(m.port("tsockm:tcp"))
    }

    fn connect(&self, m: &Matrix) -> Link {
        Tsockm::login(m, "conformance").0
    }

    fn start(&self, _link: &mut Link, _argv: &[String]) -> bool {
        false
    }

    fn output(&self, _m: &Matrix, _argv: &[&str]) -> Option<Vec<u8>> {
        None
    }

    fn kicked(&self) -> Words {
        Words::Says(GOODBYE.as_bytes(), "OK")
    }

    fn going_down(&self) -> Words {
        Words::Says(GOODBYE.as_bytes(), "OK")
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        Some((b"REQ::MSG::2", Words::Says(b"ERR::NONE::400::", TIMED_OUT)))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        // On a connection of its own (a logged-in peer's requests come that way).
        (
            b"REQ::FOO::200::x::client::server::hi".to_vec(),
            Words::Says(b"ERR::NONE::405::", "unknown action"),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        let (_sender_link, sender) = Tsockm::login(m, "sender");
        let (receiver, receiver_id) = Tsockm::login(m, "receiver");
        Box::new(TsockmRequests {
            m,
            sender,
            _sender_link,
            receiver,
            receiver_id,
        })
    }

    fn area(&self) -> Option<&'static str> {
        None
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "job's directory" | "output cap" => "the chat runs no commands".into(),
            "other principal" => "no request lists or touches jobs".into(),
            _ => "-".into(),
        }
    }
}

/// A TsockM member sending `MSG`s on connections of their own, and one receiving them.
struct TsockmRequests<'a> {
    m: &'a Matrix,
    sender: String,
    _sender_link: Link,
    receiver: Link,
    receiver_id: String,
}

impl Requests for TsockmRequests<'_> {
    fn link(&mut self) -> Link {
        Tsockm.raw(self.m)
    }

    fn request(&self) -> Vec<u8> {
        format!(
            "REQ::MSG::200::{}::client::server::split in two",
            self.sender
        )
        .into_bytes()
    }

    fn finish(&self, link: &mut Link) {
        // A TsockM request ends where its connection ends.
        if let Link::Tcp(stream) = link {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    }

    fn answer(&mut self, _link: &mut Link) -> Result<(), String> {
        // The receiver gets it whole, and looks its sender up as TsockM's client does.
        let pushed = self.receiver.one_read();
        if !pushed.starts_with("RES::MSG::200::") || !pushed.ends_with("::split in two") {
            return Err(format!("the receiver read {pushed:?}"));
        }
        let sender = pushed.split("::").nth(3).unwrap_or_default();
        let mut lookup = Tsockm.raw(self.m);
        lookup
            .write_all(
                format!(
                    "REQ::GET_PEER::200::{}::client::server::{sender}",
                    self.receiver_id
                )
                .as_bytes(),
            )
            .map_err(|e| e.to_string())?;
        drop(lookup);
        let name = self.receiver.one_read();
        name.ends_with("::sender")
            .then_some(())
            .ok_or_else(|| format!("the lookup answered {name:?}"))
    }

    fn joins(&self) -> bool {
        false
    }
}

// ----- C2 ---------------------------------------------------------------------------------

/// C2 on a FIFO pair or over TCP.
struct C2(&'static str);

/// A CSP id from address 2, port 40, to the daemon (address 1, port 10).
const C2_REQUEST_ID: u32 = (2 << 30) | (2 << 25) | (1 << 20) | (10 << 14) | (40 << 8);

fn c2_frame(data: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(data.len())
        .expect("a frame")
        .to_le_bytes()
        .to_vec();
    out.extend_from_slice(&C2_REQUEST_ID.to_le_bytes());
    out.extend_from_slice(data);
    out
}

fn c2_request(argv: &[&str]) -> Vec<u8> {
    let args: Vec<String> = argv[1..].iter().map(|a| a.to_string()).collect();
    c2_frame(&ferry_wire::c2::encode_request(argv[0], &args))
}

/// Reads one answer frame's data.
fn c2_read(link: &mut Link) -> Vec<u8> {
    let head = link.exact(6);
    let len = usize::from(u16::from_le_bytes([head[0], head[1]]));
    link.exact(len)
}

/// Reads a command's answer (its result and continuations); its output.
fn c2_output(link: &mut Link) -> Result<Vec<u8>, String> {
    match ferry_wire::c2::decode_response(&c2_read(link)) {
        Ok(ferry_wire::c2::Response::Result { output, more, .. }) => {
            let mut out = output.into_bytes();
            for _ in 0..more {
                match ferry_wire::c2::decode_response(&c2_read(link)) {
                    Ok(ferry_wire::c2::Response::Continuation { output }) => {
                        out.extend(output.into_bytes())
                    }
                    other => return Err(format!("expected a continuation, got {other:?}")),
                }
            }
            Ok(out)
        }
        other => Err(format!("expected a result, got {other:?}")),
    }
}

impl Row for C2 {
    fn form(&self) -> &'static str {
        self.0
    }

    fn raw(&self, m: &Matrix) -> Link {
        if self.0 == "c2:fifo" {
            Link::fifo(&m.path("c2.in"), &m.path("c2.out"))
        } else {
            Link::tcp(m.port("c2:tcp"))
        }
    }

    fn closes(&self) -> bool {
        self.0 != "c2:fifo"
    }

    fn start(&self, link: &mut Link, argv: &[String]) -> bool {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        link.write_all(&c2_request(&argv)).expect("request");
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.raw(m);
        link.write_all(&c2_request(argv)).expect("request");
        Some(c2_output(&mut link).expect("output"))
    }

    fn kicked(&self) -> Words {
        Words::Nothing("C2 answers requests only: the connection just ends")
    }

    fn going_down(&self) -> Words {
        Words::Nothing("C2 answers requests only: the connection just ends")
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        if self.0 == "c2:fifo" {
            return None;
        }
        Some((
            &[0x20, 0x00, 0x00],
            Words::Check(|read| {
                match ferry_wire::c2::decode_response(&read[6.min(read.len())..]) {
                    Ok(ferry_wire::c2::Response::Error { message })
                        if message.contains(TIMED_OUT) =>
                    {
                        Ok(())
                    }
                    other => Err(format!("expected an error response, got {other:?}")),
                }
            }),
        ))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        (
            c2_frame(&[0xff, 0x00]),
            Words::Check(|read| {
                match ferry_wire::c2::decode_response(&read[6.min(read.len())..]) {
                    Ok(ferry_wire::c2::Response::Error { .. }) => Ok(()),
                    other => Err(format!("expected an error response, got {other:?}")),
                }
            }),
            // C2 answers an error and serves the connection on.
            false,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(C2Requests { row: C2(self.0), m })
    }

    fn area(&self) -> Option<&'static str> {
        Some("anonymous/c2")
    }

    fn answers_with_output(&self) -> bool {
        true
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "other principal" => "no request lists or touches jobs".into(),
            "first-request limit" => "the pair is the daemon's own".into(),
            _ => "-".into(),
        }
    }
}

struct C2Requests<'a> {
    row: C2,
    m: &'a Matrix,
}

impl Requests for C2Requests<'_> {
    fn link(&mut self) -> Link {
        self.row.raw(self.m)
    }

    fn request(&self) -> Vec<u8> {
        c2_request(&["echo", "split"])
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        split_answer(&c2_output(link)?)
    }
}
