//! The rake64 dialect adapter (the distributed rake's 64-byte headers), so that a rake client
//! written against the authors' server places its actions on ferry and reads the same bytes
//! back:
//!
//! - `!E` alone (or with length 0) asks the cost: `!E<len>` and the daemon's cost (`Cost`,
//!   `(running + queued) * 1000 / slots`) as decimal text.
//! - `!C<len>` (the authors' server) or `!E<len>` (the seed) with the command text: the command
//!   runs in this connection's sandbox, split on white space (no shell, as the authors' server
//!   does), as the listener's command policy allows. Exit 0: `!S`, three option bytes (`S`
//!   always, `I` when files follow or a space, a space), the stdout's length, the stdout
//!   (`!SS  12`, `!SSI 0`), then the files (a filestream). Otherwise: `!F<len>` and the stderr
//!   (or why it could not run), then `!F<len>` and the exit status (127 when it never ran; a
//!   signal's number, negated, as Python reports it to the authors' server).
//! - `!R`: requirements come as a filestream (either form of its count), each file asked for
//!   with `!N`, `!Z`, `!T` (two bytes, as the authors' server asks); names are checked as
//!   `put`'s.
//! - Files sent back are every file in the sandbox that the client did not send (the authors'
//!   rule): metadata `!SSIF<count>` (the count in the header, the authors' form), then, as the
//!   client asks, `!S!NF<len>` and the name, `!S!ZF<len>` and the size (each header and its
//!   payload in one write), and the bytes.
//! - `!D` ends the session; the sandbox goes with the connection.
//!
//! The conversation's bytes are read by the connection's one reader with
//! `ferry_wire::rake64::RequestDecoder` (lone codes and the authors' count end at the table's
//! pause); the daemon going down, a kick and a malformed request are said as a failure, `!F`
//! and the reason, then `!F1` and `1`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use ferry_common::checksum::FileChecksum;
use ferry_engine::files::FileArea;
use ferry_engine::{ExitReport, JobOrigin, JobSpec};
use ferry_wire::rake64::{text_len, Code, Header, Incoming, Options, RequestDecoder};
use std::io::Read;

use super::Receiving;
use crate::conn::Conn;
use crate::outbox::Outbox;
use crate::policy::{Access, RefusalKind};
use crate::reader::{Next, Reader, Refusals, Watched};
use crate::state::Daemon;

/// The largest file taken through the filestream.
const MAX_FILE: u64 = 16 << 30;

/// Files listed in a sandbox at most.
const MAX_FILES: usize = 10_000;

/// The most bytes of a file sent back in one write.
const SEND_CHUNK: usize = 256 * 1024;

/// Serves one admitted connection (the listener table's entry point).
pub(crate) fn serve(conn: Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_connection(conn))
}

/// A refusal of a connection that will not be served: a failure, as the seed's client reads it.
pub(crate) fn refusal(_kind: RefusalKind, message: &str) -> Vec<u8> {
    let mut bytes = Header::new(Code::Failure, Some(text_len(message.as_bytes())))
        .encode()
        .to_vec();
    bytes.extend_from_slice(message.as_bytes());
    bytes.extend_from_slice(&Header::new(Code::Failure, Some(1)).encode());
    bytes.push(b'1');
    bytes
}

/// What the connection layer says in rake64's words: a failure, as the seed's client reads one
/// (its stderr is the reason); then the connection ends.
const VOICE: Refusals = Refusals {
    refusal,
    closes_going_down: true,
};

/// A header and its payload, in one write (as the authors' server sends its filestream
/// answers).
fn framed(header: Header, payload: &[u8]) -> Vec<u8> {
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// Why a session ends early.
#[derive(Debug)]
enum Ended {
    /// The peer left, or the connection is over (what was to be said was said).
    Gone,
    /// The peer sent something out of place: said, then closed.
    Bad(String),
}

/// The reader of a rake64 connection.
type Rake64Reader = Reader<RequestDecoder, Refusals>;

/// The client's next item of the conversation.
async fn expect(reader: &mut Rake64Reader) -> Result<Incoming, Ended> {
    loop {
        match reader.next(true).await {
            Some(Next::Request(item, _)) => return Ok(item),
            Some(Next::Event(_)) => {}
            None => return Err(Ended::Gone),
        }
    }
}

/// What an item is, for a message saying it came out of place.
fn described(item: &Incoming) -> String {
    match item {
        Incoming::Cost => "!E".into(),
        Incoming::Command(_) => "a command".into(),
        Incoming::Requirements => "!R".into(),
        Incoming::FileCount(_) => "a filestream's !SSIF".into(),
        Incoming::Ask(code) => format!("!{}", code.letter() as char),
        Incoming::Name(_) => "a file's name".into(),
        Incoming::Size(_) => "a file's size".into(),
        Incoming::Data { .. } => "a file's bytes".into(),
        Incoming::Disconnect => "!D".into(),
    }
}

/// One connection's session.
struct Session {
    daemon: Arc<Daemon>,
    access: Access,
    origin: JobOrigin,
    area: Arc<FileArea>,
    sandbox: PathBuf,
    out: Outbox,
    /// The names of the files the client sent: never sent back.
    received: BTreeSet<PathBuf>,
}

async fn serve_connection(mut conn: Conn) {
    let Some((mut reader, out)) = Reader::new(&mut conn, RequestDecoder::new(MAX_FILE), VOICE)
    else {
        return;
    };
    let peer = reader.peer().id().to_owned();
    let dir = conn.access.files_dir();
    let opened = tokio::task::spawn_blocking(move || {
        let area = FileArea::open(&dir)?;
        let sandbox = area.create_sandbox().map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>((area, sandbox))
    })
    .await;
    let (area, sandbox) = match opened {
        Ok(Ok((area, sandbox))) => (Arc::new(area), sandbox),
        other => {
            tracing::warn!(peer, "rake64: cannot make a sandbox: {other:?}");
            out.send(refusal(
                RefusalKind::Internal,
                "the daemon cannot make a sandbox",
            ))
            .await;
            return;
        }
    };
    let mut session = Session {
        origin: super::origin(&conn, &peer),
        daemon: Arc::clone(&conn.daemon),
        access: conn.access.clone(),
        area,
        sandbox,
        out: out.clone(),
        received: BTreeSet::new(),
    };
    if let Err(Ended::Bad(why)) = session.serve(&mut reader).await {
        tracing::info!(peer, "rake64: closing a connection: {why}");
        out.send(refusal(RefusalKind::InvalidRequest, &why)).await;
    }
    let (area, sandbox) = (session.area, session.sandbox);
    let _ = tokio::task::spawn_blocking(move || area.remove_sandbox(&sandbox)).await;
}

impl Session {
    async fn serve(&mut self, reader: &mut Rake64Reader) -> Result<(), Ended> {
        loop {
            match expect(reader).await? {
                Incoming::Disconnect => return Ok(()),
                Incoming::Cost => {
                    let cost = self.daemon.engine.load().cost().to_string();
                    let header = Header::new(Code::Cost, Some(text_len(cost.as_bytes())));
                    self.send(framed(header, cost.as_bytes())).await?;
                }
                Incoming::Command(text) => {
                    self.command(reader, &String::from_utf8_lossy(&text))
                        .await?
                }
                Incoming::Requirements => self.receive_files(reader).await?,
                other => {
                    return Err(Ended::Bad(format!(
                        "a client sends !E, !C, !R or !D here, not {}",
                        described(&other)
                    )))
                }
            }
        }
    }

    /// Queues bytes for the client.
    async fn send(&self, bytes: impl Into<crate::outbox::Outgoing>) -> Result<(), Ended> {
        if self.out.send(bytes).await {
            Ok(())
        } else {
            Err(Ended::Gone)
        }
    }

    fn sandbox_dir(&self) -> PathBuf {
        self.area.path().join(&self.sandbox)
    }

    /// Runs a command and answers with its outcome and the files it made.
    async fn command(&mut self, reader: &mut Rake64Reader, text: &str) -> Result<(), Ended> {
        let argv: Vec<OsString> = text.split_whitespace().map(OsString::from).collect();
        let ran = if argv.is_empty() {
            Err("an empty command".to_owned())
        } else {
            self.run(reader, argv).await?
        };
        let (status, stdout, stderr) = match ran {
            Ok(ran) => ran,
            Err(why) => (127, Vec::new(), why.into_bytes()),
        };
        if status != 0 {
            let code = status.to_string();
            let mut failure = framed(Header::new(Code::Failure, Some(text_len(&stderr))), &stderr);
            failure.extend_from_slice(&framed(
                Header::new(Code::Failure, Some(text_len(code.as_bytes()))),
                code.as_bytes(),
            ));
            return self.send(failure).await;
        }
        let made = self.made();
        let header = Header {
            options: Options {
                stdout: true,
                incoming: !made.is_empty(),
                filestream: false,
            },
            ..Header::new(Code::Success, Some(text_len(&stdout)))
        };
        self.send(framed(header, &stdout)).await?;
        if !made.is_empty() {
            self.send_files(reader, &made).await?;
        }
        Ok(())
    }

    /// The files of the sandbox the client did not send.
    fn made(&self) -> Vec<PathBuf> {
        let listing = self.area.list(&self.sandbox, MAX_FILES).unwrap_or_default();
        listing
            .files
            .into_iter()
            .map(|file| file.path)
            .filter(|path| !self.received.contains(path))
            .collect()
    }

    /// Runs `argv` in the sandbox; its status (a signal's number negated, as Python reports
    /// it), stdout and stderr, or why it never ran. If the client leaves meanwhile (a Ctrl-C
    /// on its side), the job's process group gets SIGHUP, as a native client's job does.
    async fn run(
        &self,
        reader: &mut Rake64Reader,
        argv: Vec<OsString>,
    ) -> Result<Result<(i32, Vec<u8>, Vec<u8>), String>, Ended> {
        let spec = JobSpec {
            cwd: Some(self.sandbox_dir()),
            origin: self.origin.clone(),
            ..JobSpec::default()
        };
        let job = match super::submit(&self.daemon, &self.access, argv, spec) {
            Ok(job) => job,
            Err(refusal) => return Ok(Err(refusal.message)),
        };
        let collected = super::collect_output(&self.daemon, job);
        tokio::pin!(collected);
        match reader.watch(&mut collected).await {
            Watched::Done(ran) => {
                Ok(ran.map(|(exit, stdout, stderr)| (python_status(&exit), stdout, stderr)))
            }
            Watched::Left => {
                // Jobs that already ended answer an error: nothing to hang up.
                let _ = self.daemon.engine.signal(job, libc::SIGHUP);
                Err(Ended::Gone)
            }
            Watched::Over => Err(Ended::Gone),
        }
    }

    /// Receives a filestream into the sandbox.
    async fn receive_files(&mut self, reader: &mut Rake64Reader) -> Result<(), Ended> {
        let count = match expect(reader).await? {
            Incoming::FileCount(count) => count,
            other => {
                return Err(Ended::Bad(format!(
                    "expected the filestream's !SSIF header, not {}",
                    described(&other)
                )))
            }
        };
        for _ in 0..count {
            self.send(b"!N".to_vec()).await?;
            let name = match expect(reader).await? {
                Incoming::Name(name) => name,
                other => return Err(out_of_place("a file's name (!S!NF)", &other)),
            };
            let name = String::from_utf8(name)
                .map_err(|_| Ended::Bad("a file name is not UTF-8".into()))?;
            let relative = ferry_common::names::check_name(name.as_bytes())
                .map_err(|e| Ended::Bad(e.to_string()))?
                .to_owned();
            self.send(b"!Z".to_vec()).await?;
            let size = match expect(reader).await? {
                Incoming::Size(size) => size,
                other => return Err(out_of_place("a file's size (!S!ZF)", &other)),
            };
            let target = self.sandbox.join(&relative);
            let (daemon, area) = (Arc::clone(&self.daemon), Arc::clone(&self.area));
            let principal = self.access.principal().clone();
            // Off the async threads: the quota may walk the principal's area.
            let mut upload = tokio::task::spawn_blocking(move || {
                Receiving::start(&daemon, &principal, &area, &target, size, 0o644)
            })
            .await
            .map_err(|e| Ended::Bad(e.to_string()))?
            .map_err(|refusal| Ended::Bad(refusal.message))?;
            self.send(b"!T".to_vec()).await?;
            let mut checksum = FileChecksum::new();
            let limit = self.daemon.config.upload_idle_timeout;
            loop {
                // A file whose bytes stop coming is dropped, and its room given back.
                let next = match limit {
                    Some(limit) => {
                        tokio::time::timeout(limit, expect(reader))
                            .await
                            .map_err(|_| {
                                Ended::Bad(format!(
                                    "{name}: no bytes came for {}s: the transfer was dropped",
                                    limit.as_secs_f32()
                                ))
                            })?
                    }
                    None => expect(reader).await,
                };
                let (bytes, last) = match next? {
                    Incoming::Data { bytes, last } => (bytes, last),
                    other => return Err(out_of_place("a file's bytes", &other)),
                };
                checksum.update(&bytes);
                upload
                    .write(&bytes)
                    .map_err(|e| Ended::Bad(e.to_string()))?;
                if last {
                    break;
                }
            }
            upload
                .finish(&checksum.digest())
                .map_err(|e| Ended::Bad(e.to_string()))?;
            self.received.insert(relative);
        }
        Ok(())
    }

    /// Sends files of the sandbox as a filestream, each when asked.
    async fn send_files(&self, reader: &mut Rake64Reader, files: &[PathBuf]) -> Result<(), Ended> {
        let meta = Header {
            options: Options {
                stdout: true,
                incoming: true,
                filestream: true,
            },
            ..Header::new(Code::Success, Some(files.len() as u64))
        };
        self.send(meta.encode().to_vec()).await?;
        for file in files {
            let path = self.sandbox_dir().join(file);
            let name = file.to_string_lossy().into_owned();
            let size = std::fs::metadata(&path)
                .map_err(|e| Ended::Bad(format!("{name}: {e}")))?
                .len()
                .to_string();
            for (asked, payload) in [(Code::Name, name.as_bytes()), (Code::Size, size.as_bytes())] {
                match expect(reader).await? {
                    Incoming::Ask(code) if code == asked => {}
                    other => {
                        let what = format!("!{}", asked.letter() as char);
                        return Err(out_of_place(&what, &other));
                    }
                }
                let answer = Header::filestream_answer(asked, text_len(payload));
                self.send(framed(answer, payload)).await?;
            }
            match expect(reader).await? {
                Incoming::Ask(Code::Transfer) => {}
                other => return Err(out_of_place("!T", &other)),
            }
            self.send_file(&path, &name).await?;
        }
        Ok(())
    }

    /// Sends a file's bytes, a chunk at a time.
    async fn send_file(&self, path: &Path, name: &str) -> Result<(), Ended> {
        // A local file, read a chunk at a time as the client takes them.
        let mut file = std::fs::File::open(path).map_err(|e| Ended::Bad(format!("{name}: {e}")))?;
        loop {
            let mut chunk = vec![0u8; SEND_CHUNK];
            let n = file
                .read(&mut chunk)
                .map_err(|e| Ended::Bad(format!("{name}: {e}")))?;
            if n == 0 {
                return Ok(());
            }
            chunk.truncate(n);
            self.send(crate::outbox::Outgoing::Shared(Bytes::from(chunk)))
                .await?;
        }
    }
}

/// A client's item that came where another was expected.
fn out_of_place(expected: &str, got: &Incoming) -> Ended {
    Ended::Bad(format!("expected {expected}, not {}", described(got)))
}

/// A job's status as Python's `returncode` gives it to the authors' server: its exit code,
/// or the number of the signal that ended it, negated (`-9`).
fn python_status(exit: &ExitReport) -> i32 {
    match (exit.code, exit.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => -signal,
        (None, None) => exit.shell_status(),
    }
}
