//! The rake64 dialect adapter (seed 001): the distributed rake's 64-byte headers, so that a
//! rake client of the seed's protocol can place its actions on ferry.
//!
//! - `!E` alone (or with length 0) asks the cost: `!E<len>` and the daemon's cost (`Cost`,
//!   `(running + queued) * 1000 / slots`) as decimal text.
//! - `!C<len>` (the authors' server) or `!E<len>` (the seed) with the command text: the command
//!   runs in this connection's sandbox, split on white space (no shell, as the authors' server
//!   does), as the listener's command policy allows. Exit 0: `!S` + `S` when stdout follows +
//!   `I` when files follow + the stdout's length, the stdout, then the files (a filestream).
//!   Otherwise: `!F<len>` and the stderr (or why it could not run), then `!F<len>` and the
//!   exit status (127 when it never ran), as the authors' server does.
//! - `!R`: requirements come as a filestream (metadata `!SSIF` with the count as a payload,
//!   the seed's form, or in the header itself, the authors'), each file asked for with `!N`,
//!   `!Z`, `!T` (sent as two bytes, as the authors' server does); names are checked as `put`'s.
//! - Files sent back are those the command made or changed in the sandbox.
//! - `!D` ends the session; the sandbox goes with the connection.
//!
//! Lone codes (two bytes with no padding) are taken once nothing more comes for [`QUIET`];
//! padded ones at once; the stray padding after a lone code is skipped.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferry_common::checksum::FileChecksum;
use ferry_engine::files::{FileArea, Listing};
use ferry_engine::{JobOrigin, JobSpec};
use ferry_wire::rake64::{
    bytes_of_chars, count_payload_len, decode_header, file_count, text_len, Code, Header, Options,
    Rake64Error,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::conn::{BoxRead, BoxWrite, Conn};
use crate::policy::{Answer, RefusalKind};
use crate::server::Server;

/// How long a lone code waits for the rest of a padded header before it is taken alone.
const QUIET: Duration = Duration::from_millis(50);

/// How long the payload of a seed-form `!SSIF` may take to arrive.
const COUNT_WAIT: Duration = Duration::from_millis(50);

/// The largest command text taken.
const MAX_COMMAND: u64 = 64 * 1024;

/// The largest file taken through the filestream.
const MAX_FILE: u64 = 16 << 30;

/// Files listed in a sandbox at most.
const MAX_FILES: usize = 10_000;

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

/// A connection's reading side, with what it read ahead.
struct Wire {
    read: BoxRead,
    write: BoxWrite,
    buf: Vec<u8>,
    idle: Option<Duration>,
    /// Until the first header is whole: the handshake time limit's deadline, and the limit.
    first_request: Option<(tokio::time::Instant, Duration)>,
}

/// Why a session ends early.
#[derive(Debug)]
enum Ended {
    /// The peer left or went silent.
    Gone,
    /// The peer sent something that is not the protocol: said, then closed.
    Bad(String),
}

impl From<Rake64Error> for Ended {
    fn from(e: Rake64Error) -> Ended {
        Ended::Bad(e.to_string())
    }
}

impl From<std::io::Error> for Ended {
    fn from(_: std::io::Error) -> Ended {
        Ended::Gone
    }
}

impl Wire {
    /// Reads more bytes, waiting at most `limit` (`None`: the idle limit, or for ever), and
    /// never past the handshake time limit before the first header is whole.
    async fn fill(&mut self, limit: Option<Duration>) -> Result<bool, Ended> {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.read.read(&mut chunk);
        let until = limit
            .or(self.idle)
            .map(|limit| tokio::time::Instant::now() + limit);
        let first_deadline = self.first_request.map(|(deadline, _)| deadline);
        let n = match until.into_iter().chain(first_deadline).min() {
            Some(bound) => match tokio::time::timeout_at(bound, read).await {
                Ok(n) => n?,
                Err(_) => match self.first_request {
                    Some((deadline, handshake)) if tokio::time::Instant::now() >= deadline => {
                        return Err(Ended::Bad(format!(
                            "no whole request within {} ms",
                            handshake.as_millis()
                        )))
                    }
                    _ => return Ok(false),
                },
            },
            None => read.await?,
        };
        if n == 0 {
            return Err(Ended::Gone);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(true)
    }

    /// The next header (`None` when the peer left between headers).
    async fn header(&mut self) -> Result<Option<Header>, Ended> {
        self.header_or_lone(false).await
    }

    /// The next header; with `request`, a filestream request is expected, and two bytes of a
    /// code are taken at once (its padding, if any, is skipped before the next header).
    async fn header_or_lone(&mut self, request: bool) -> Result<Option<Header>, Ended> {
        let mut lone = request;
        loop {
            if let Some((header, used)) = decode_header(&self.buf, lone)? {
                self.buf.drain(..used);
                self.first_request = None;
                return Ok(Some(header));
            }
            // Two bytes of a code that may come alone: wait a little for padding.
            let waiting_lone = self.buf.iter().filter(|b| **b != b' ').count() == 2;
            let limit = waiting_lone.then_some(QUIET);
            match self.fill(limit).await {
                Ok(true) => {}
                Ok(false) if waiting_lone => lone = true,
                Ok(false) => return Err(Ended::Gone),
                Err(Ended::Gone) if self.buf.iter().all(|b| *b == b' ') => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next `len` bytes.
    async fn payload(&mut self, len: u64) -> Result<Vec<u8>, Ended> {
        let len = usize::try_from(len).map_err(|_| Ended::Bad("payload too long".into()))?;
        while self.buf.len() < len {
            if !self.fill(None).await? {
                return Err(Ended::Gone);
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    /// The next text payload of `chars` characters (see `rake64::text_len`).
    async fn text(&mut self, chars: u64) -> Result<Vec<u8>, Ended> {
        loop {
            if let Some(len) = bytes_of_chars(&self.buf, chars) {
                return Ok(self.buf.drain(..len).collect());
            }
            if !self.fill(None).await? {
                return Err(Ended::Gone);
            }
        }
    }

    /// A header, then its payload.
    async fn send(&mut self, header: Header, payload: &[u8]) -> Result<(), Ended> {
        self.write.write_all(&header.encode()).await?;
        self.write.write_all(payload).await?;
        self.write.flush().await?;
        Ok(())
    }

    /// A lone code, two bytes, as the authors' server sends its filestream requests.
    async fn ask(&mut self, code: Code) -> Result<(), Ended> {
        self.write.write_all(&[b'!', code.letter()]).await?;
        self.write.flush().await?;
        Ok(())
    }
}

/// One connection's session.
struct Session {
    server: Arc<Server>,
    conn_access: crate::policy::Access,
    origin: JobOrigin,
    area: FileArea,
    sandbox: PathBuf,
}

async fn serve_connection(conn: Conn) {
    let server = Arc::clone(&conn.server);
    let access = conn.access.clone();
    let peer = conn.peer.id().to_owned();
    let origin = JobOrigin {
        owner: conn.peer.address.clone(),
        dialect: "rake64".into(),
        peer: Some(peer.clone()),
        principal: access.principal().clone(),
    };
    let mut wire = Wire {
        read: conn.read,
        write: conn.write,
        buf: Vec::new(),
        idle: conn.limits.idle,
        first_request: conn.limits.next_request(true),
    };
    let dir = access.files_dir();
    let opened = tokio::task::spawn_blocking(move || {
        let area = FileArea::open(&dir)?;
        let sandbox = area.create_sandbox().map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>((area, sandbox))
    })
    .await;
    let (area, sandbox) = match opened {
        Ok(Ok(opened)) => opened,
        other => {
            tracing::warn!(peer, "rake64: cannot make a sandbox: {other:?}");
            let _ = wire
                .write
                .write_all(&refusal(
                    RefusalKind::Internal,
                    "the daemon cannot make a sandbox",
                ))
                .await;
            return;
        }
    };
    let mut session = Session {
        server,
        conn_access: access,
        origin,
        area,
        sandbox,
    };
    let ended = session.serve(&mut wire).await;
    if let Err(Ended::Bad(why)) = ended {
        tracing::info!(peer, "rake64: closing a connection: {why}");
        let _ = wire
            .write
            .write_all(&refusal(RefusalKind::InvalidRequest, &why))
            .await;
    }
    let _ = wire.write.shutdown().await;
    let (area, sandbox) = (session.area, session.sandbox);
    let _ = tokio::task::spawn_blocking(move || area.remove_sandbox(&sandbox)).await;
}

impl Session {
    async fn serve(&mut self, wire: &mut Wire) -> Result<(), Ended> {
        while let Some(header) = wire.header().await? {
            match (header.code, header.length) {
                (Code::Disconnect, _) => return Ok(()),
                (Code::Cost, None | Some(0)) => {
                    let cost = self.server.engine.load().cost().to_string();
                    wire.send(
                        Header::new(Code::Cost, Some(text_len(cost.as_bytes()))),
                        cost.as_bytes(),
                    )
                    .await?;
                }
                (Code::Cost | Code::Command, Some(len)) => {
                    if len > MAX_COMMAND {
                        return Err(Ended::Bad(format!(
                            "a command of {len} bytes is over the limit of {MAX_COMMAND}"
                        )));
                    }
                    let text = wire.text(len).await?;
                    self.command(wire, &String::from_utf8_lossy(&text)).await?;
                }
                (Code::Command, None) => {
                    return Err(Ended::Bad("!C needs the command's length".into()))
                }
                (Code::Requirements, _) => self.receive_files(wire).await?,
                (code, _) => {
                    return Err(Ended::Bad(format!(
                        "a client sends !E, !C, !R or !D here, not !{}",
                        code.letter() as char
                    )))
                }
            }
        }
        Ok(())
    }

    fn sandbox_dir(&self) -> PathBuf {
        self.area.path().join(&self.sandbox)
    }

    fn listing(&self) -> Listing {
        self.area.list(&self.sandbox, MAX_FILES).unwrap_or_default()
    }

    /// Runs a command and answers with its outcome and the files it made.
    async fn command(&mut self, wire: &mut Wire, text: &str) -> Result<(), Ended> {
        let argv: Vec<OsString> = text.split_whitespace().map(OsString::from).collect();
        let before = self.listing();
        let ran = if argv.is_empty() {
            Err("an empty command".to_owned())
        } else {
            match self.conn_access.allowed_command(&self.server.catalog, argv) {
                Ok(argv) => self.run(wire, argv).await,
                Err(refusal) => Err(refusal.message),
            }
        };
        let (status, stdout, stderr) = match ran {
            Ok(ran) => ran,
            Err(why) => (127, Vec::new(), why.into_bytes()),
        };
        if status != 0 {
            wire.send(Header::new(Code::Failure, Some(text_len(&stderr))), &stderr)
                .await?;
            let code = status.to_string();
            return wire
                .send(
                    Header::new(Code::Failure, Some(text_len(code.as_bytes()))),
                    code.as_bytes(),
                )
                .await;
        }
        let after = self.listing();
        let made: Vec<&Path> = after
            .files
            .iter()
            .filter(|f| !before.files.contains(f))
            .map(|f| f.path.as_path())
            .collect();
        let header = Header {
            options: Options {
                stdout: !stdout.is_empty(),
                incoming: !made.is_empty(),
                filestream: false,
            },
            ..Header::new(Code::Success, Some(text_len(&stdout)))
        };
        wire.send(header, &stdout).await?;
        if !made.is_empty() {
            let made: Vec<PathBuf> = made.into_iter().map(Path::to_path_buf).collect();
            self.send_files(wire, &made).await?;
        }
        Ok(())
    }

    /// Runs `argv` in the sandbox; its status, stdout and stderr. If the client leaves
    /// meanwhile (a Ctrl-C on its side), the job's process group gets SIGHUP, as a native
    /// client's job does.
    async fn run(
        &self,
        wire: &mut Wire,
        argv: Vec<OsString>,
    ) -> Result<(i32, Vec<u8>, Vec<u8>), String> {
        let spec = JobSpec {
            argv,
            cwd: Some(self.sandbox_dir()),
            origin: self.origin.clone(),
            ..JobSpec::default()
        };
        let (job, _) = self
            .server
            .engine
            .submit(spec)
            .map_err(|e| e.refusal().message)?;
        let collected = super::collect_output(&self.server, job);
        tokio::pin!(collected);
        loop {
            tokio::select! {
                ran = &mut collected => return ran,
                read = wire.fill(None) => {
                    if let Err(Ended::Gone) = read {
                        // Jobs that already ended answer an error: nothing to hang up.
                        let _ = self.server.engine.signal(job, libc::SIGHUP);
                        return Err("the client left".into());
                    }
                }
            }
        }
    }

    /// Receives a filestream into the sandbox.
    async fn receive_files(&mut self, wire: &mut Wire) -> Result<(), Ended> {
        let meta = wire.header().await?.ok_or(Ended::Gone)?;
        if meta.code != Code::Success || !meta.options.filestream {
            return Err(Ended::Bad(format!(
                "expected the filestream's !SSIF header, not {meta}"
            )));
        }
        let announced = meta.length.unwrap_or(0);
        // The seed's form sends the count as a payload; the authors' puts it in the header
        // and sends nothing more until asked: wait briefly for a payload.
        while wire.buf.len() < count_payload_len(announced) && wire.fill(Some(COUNT_WAIT)).await? {}
        let (count, used) = file_count(announced, &wire.buf);
        wire.buf.drain(..used);
        for _ in 0..count {
            wire.ask(Code::Name).await?;
            let name = self.answer(wire, Code::Name).await?;
            let name = String::from_utf8(name)
                .map_err(|_| Ended::Bad("a file name is not UTF-8".into()))?;
            let relative = ferry_common::names::check_name(name.as_bytes())
                .map_err(|e| Ended::Bad(e.to_string()))?
                .to_owned();
            wire.ask(Code::Size).await?;
            let size = self.answer(wire, Code::Size).await?;
            let size: u64 = String::from_utf8_lossy(&size)
                .trim()
                .parse()
                .map_err(|_| Ended::Bad(format!("{name}: the size is not a number")))?;
            if size > MAX_FILE {
                return Err(Ended::Bad(format!(
                    "{name}: {size} bytes is over the limit"
                )));
            }
            wire.ask(Code::Transfer).await?;
            let data = wire.payload(size).await?;
            let target = self.sandbox.join(&relative);
            let mut upload = self
                .area
                .upload(&target, size, 0o644)
                .map_err(|e| Ended::Bad(e.to_string()))?;
            let mut checksum = FileChecksum::new();
            checksum.update(&data);
            upload.write(&data).map_err(|e| Ended::Bad(e.to_string()))?;
            upload
                .finish(&checksum.digest())
                .map_err(|e| Ended::Bad(e.to_string()))?;
        }
        Ok(())
    }

    /// Reads a filestream answer to `asked` (`!S!XF<len>`) and its payload.
    async fn answer(&self, wire: &mut Wire, asked: Code) -> Result<Vec<u8>, Ended> {
        let header = wire.header().await?.ok_or(Ended::Gone)?;
        if header.answers != Some(asked) {
            return Err(Ended::Bad(format!(
                "expected the answer to !{}, not {header}",
                asked.letter() as char
            )));
        }
        wire.text(header.length.unwrap_or(0)).await
    }

    /// Sends files of the sandbox as a filestream, each when asked.
    async fn send_files(&self, wire: &mut Wire, files: &[PathBuf]) -> Result<(), Ended> {
        let count = files.len().to_string();
        let meta = Header {
            options: Options {
                stdout: true,
                incoming: true,
                filestream: true,
            },
            ..Header::new(Code::Success, Some(text_len(count.as_bytes())))
        };
        wire.send(meta, count.as_bytes()).await?;
        for file in files {
            let name = file.to_string_lossy().into_owned();
            let data = std::fs::read(self.sandbox_dir().join(file))
                .map_err(|e| Ended::Bad(format!("{name}: {e}")))?;
            for (asked, payload) in [
                (Code::Name, name.clone().into_bytes()),
                (Code::Size, data.len().to_string().into_bytes()),
            ] {
                let request = wire.header_or_lone(true).await?.ok_or(Ended::Gone)?;
                if request.code != asked {
                    return Err(Ended::Bad(format!(
                        "expected !{}, not {request}",
                        asked.letter() as char
                    )));
                }
                let answer = Header::filestream_answer(asked, text_len(&payload));
                wire.send(answer, &payload).await?;
            }
            let request = wire.header_or_lone(true).await?.ok_or(Ended::Gone)?;
            if request.code != Code::Transfer {
                return Err(Ended::Bad(format!("expected !T, not {request}")));
            }
            wire.write.write_all(&data).await?;
            wire.write.flush().await?;
        }
        Ok(())
    }
}
