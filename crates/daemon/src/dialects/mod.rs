//! The dialect adapters: each maps its wire format's frames onto engine calls and engine
//! events onto its frames, over a connection the connection layer admitted. An adapter never
//! calls another adapter.

pub(crate) mod c2;
pub(crate) mod cbsd;
pub(crate) mod cbsdng;
pub(crate) mod fanos;
pub(crate) mod native;
pub(crate) mod rake64;
pub(crate) mod tsockm;

use ferry_engine::peers::PeerHandle;
use ferry_engine::{JobId, JobOrigin, OutputEvent, OutputStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::conn::{became_true, time_limit, BoxRead, BoxWrite, Conn, Limits};
use crate::server::Server;

/// What a connection's request stream gave next ([`Requests::next`]).
pub(crate) enum Next<R> {
    /// A whole request.
    Request(R),
    /// No request can be read (why): the bytes are none, or none came whole within the
    /// time limit. Answer in the dialect's words, then close.
    Malformed(String),
    /// The daemon is going down: tell the peer in the dialect's words (it counts as told).
    GoingDown,
    /// The peer closed, or the daemon closes the connection.
    Ended,
}

/// A dialect's sans-IO request decoder: a whole request and the bytes it took, `None` when
/// more bytes are needed, or why the bytes are no request.
pub(crate) type Decode<R> = fn(&[u8]) -> Result<Option<(R, usize)>, String>;

/// One connection's requests, for dialects whose requests are served as they come: a
/// sans-IO decoder over what is buffered, more read only when it holds no whole request.
/// [`Requests::next`] may be cancelled (in a `select!`) without losing bytes. The first
/// request must be whole by the handshake time limit, later ones within the idle limit (if
/// any) of the call that waits for them.
pub(crate) struct Requests<'a, R> {
    read: &'a mut BoxRead,
    peer: &'a mut PeerHandle,
    closing: watch::Receiver<bool>,
    limits: Limits,
    first: bool,
    decode: Decode<R>,
    buf: Vec<u8>,
    chunk: Vec<u8>,
}

impl<'a, R> Requests<'a, R> {
    /// Reads `conn`'s requests with `decode`, `read_size` bytes at most per read.
    pub fn new(
        read: &'a mut BoxRead,
        peer: &'a mut PeerHandle,
        server: &Server,
        limits: Limits,
        read_size: usize,
        decode: Decode<R>,
    ) -> Self {
        Requests {
            read,
            peer,
            closing: server.closing.subscribe(),
            limits,
            first: true,
            decode,
            buf: Vec::new(),
            chunk: vec![0u8; read_size],
        }
    }

    /// The next request, or why there is none. `idle` says whether the idle limit applies
    /// (not while the connection's commands run: their output is its traffic).
    pub async fn next(&mut self, idle: bool) -> Next<R> {
        let limit = self
            .limits
            .next_request(self.first)
            .filter(|_| self.first || idle);
        loop {
            match (self.decode)(&self.buf) {
                Ok(Some((request, used))) => {
                    self.buf.drain(..used);
                    self.first = false;
                    return Next::Request(request);
                }
                Ok(None) => {}
                Err(why) => return Next::Malformed(why),
            }
            tokio::select! {
                read = self.read.read(&mut self.chunk) => match read {
                    Ok(0) | Err(_) => return Next::Ended,
                    Ok(n) => self.buf.extend_from_slice(&self.chunk[..n]),
                },
                Some(_) = self.peer.next_event() => {
                    self.peer.shutdown_told();
                    return Next::GoingDown;
                }
                () = became_true(&mut self.closing) => return Next::Ended,
                limit = time_limit(limit) => {
                    return Next::Malformed(format!("no whole request within {} ms", limit.as_millis()));
                }
            }
        }
    }
}

/// A connection's writer task for dialects whose answers come from several tasks at once:
/// what is sent on the channel is written in order; the task ends when every sender is gone
/// (or the peer stops reading).
pub(crate) fn frame_writer(
    mut write: BoxWrite,
) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>) {
    let (out, mut frames) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = frames.recv().await {
            if write.write_all(&bytes).await.is_err() || write.flush().await.is_err() {
                break;
            }
        }
    });
    (out, writer)
}

/// Who the jobs a connection of `dialect` starts belong to, for their records.
pub(crate) fn origin(conn: &Conn, dialect: &str) -> JobOrigin {
    JobOrigin {
        owner: conn.peer.address.clone(),
        dialect: dialect.into(),
        peer: Some(conn.peer.id().to_owned()),
        principal: conn.access.principal().clone(),
    }
}

/// The most of each stream [`collect_output`] keeps: an answer is held whole in memory
/// before it is sent, so a command writing without end must not take the daemon's memory.
pub(crate) const MAX_COLLECTED: usize = 16 * 1024 * 1024;

/// One stream of a job's output as [`collect_output`] keeps it.
#[derive(Default)]
struct Collected {
    kept: Vec<u8>,
    /// Bytes past [`MAX_COLLECTED`], not kept.
    beyond: u64,
}

impl Collected {
    fn take(&mut self, data: &[u8]) {
        let room = MAX_COLLECTED
            .saturating_sub(self.kept.len())
            .min(data.len());
        self.kept.extend_from_slice(&data[..room]);
        self.beyond += (data.len() - room) as u64;
    }

    /// What was kept, and a note of what was not (in job `job`'s log).
    fn done(mut self, job: JobId) -> Vec<u8> {
        if self.beyond > 0 {
            let note = format!(
                "\n[ferry: {} bytes more were written; the whole output is in the job's log: ferry log {job}]\n",
                self.beyond
            );
            self.kept.extend_from_slice(note.as_bytes());
        }
        self.kept
    }
}

/// A job's stdout and stderr (each up to [`MAX_COLLECTED`] bytes, then a note that says how
/// much more there was and where it is) and its shell status, or why it never ran (for
/// dialects that answer with the output at the end: rake64, C2).
pub(crate) async fn collect_output(
    server: &Server,
    job: JobId,
) -> Result<(i32, Vec<u8>, Vec<u8>), String> {
    let mut reader = server
        .engine
        .output(job, true, true, false)
        .map_err(|e| e.to_string())?;
    let (mut stdout, mut stderr) = (Collected::default(), Collected::default());
    loop {
        match reader.next().await {
            Ok(Some(OutputEvent::Chunk { stream, data, .. })) => match stream {
                OutputStream::Stdout => stdout.take(&data),
                OutputStream::Stderr => stderr.take(&data),
            },
            Ok(Some(OutputEvent::Exit(exit))) => {
                if let Some(error) = exit.error {
                    return Err(error);
                }
                return Ok((exit.shell_status(), stdout.done(job), stderr.done(job)));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("the job ended without a status".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}
