//! The native `ferry` protocol: message types and the frame codec.
//!
//! A frame is a 4-byte big-endian body length followed by a CBOR body. The body is one
//! [`ClientMessage`] (client → daemon) or one [`DaemonMessage`] (daemon → client), encoded with
//! serde's default external tagging: a one-entry CBOR map from the variant name to a map of its
//! fields. Payload bytes are CBOR byte strings. `docs/protocol.md` shows byte-exact examples.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The protocol version this crate speaks. A daemon refuses a client whose version differs.
/// Version 2: `Welcome.peer` is the peer's id text; `ListPeers` and `KickPeers`.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest frame body accepted before the handshake has succeeded.
pub const HANDSHAKE_MAX_FRAME: usize = 4 * 1024;

/// Default largest frame body accepted after the handshake (configurable on the daemon).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Largest payload carried by one [`DaemonMessage::Output`] frame.
pub const MAX_OUTPUT_CHUNK: usize = 64 * 1024;

/// Length of the frame header (the big-endian body length).
pub const FRAME_HEADER_LEN: usize = 4;

/// A job id, chosen by the daemon: unique and increasing.
pub type JobId = u64;

/// Which output stream of a job a chunk belongs to. The two are never merged.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The job's standard output.
    Stdout,
    /// The job's standard error.
    Stderr,
}

/// A message from a client to the daemon.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// First frame of every connection: protocol version and credentials.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        version: u32,
        /// A free-form client name for logs (e.g. `ferry-cli/0.1.0`).
        client: String,
        /// A shared-secret token, for transports that need one.
        token: Option<String>,
    },
    /// Start a job. Answered with [`DaemonMessage::Accepted`] or [`DaemonMessage::Error`].
    Run {
        /// Client-chosen request id, echoed in the answer.
        request: u64,
        /// Program and arguments; `argv[0]` is looked up in `PATH`.
        argv: Vec<ByteBuf>,
        /// Working directory; the daemon's own when absent.
        cwd: Option<ByteBuf>,
        /// The whole environment of the job; the daemon's own when absent.
        env: Option<Vec<(ByteBuf, ByteBuf)>>,
        /// Whether the client will send [`ClientMessage::Stdin`] (otherwise stdin is `/dev/null`).
        stdin: bool,
        /// Kill the job (TERM, then KILL) after this many milliseconds.
        timeout_ms: Option<u64>,
        /// Send the job's process group SIGHUP if this connection closes before the job ends.
        hangup_on_disconnect: bool,
        /// Stream the job's output and exit to this connection from the start.
        follow: bool,
        /// Run in this sandbox (a path from `SandboxReady`) instead of `cwd`.
        #[serde(default)]
        sandbox: Option<ByteBuf>,
        /// The job runs on the client's own stdin, stdout and stderr: three fds sent with this
        /// frame (SCM_RIGHTS on its first byte; Unix sockets only). No output frames follow,
        /// only `Exit`; `stdin` must be false.
        #[serde(default)]
        pass_stdio: bool,
        /// Run `argv`, joined by spaces, as a command line of this session's shell (see
        /// `SessionNew`), in the state the session's earlier commands left.
        #[serde(default)]
        session: Option<String>,
    },
    /// Bytes for a job's stdin.
    Stdin {
        /// The job.
        job: JobId,
        /// The bytes, in order.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// End of the job's stdin: the child reads EOF once earlier bytes are consumed.
    CloseStdin {
        /// The job.
        job: JobId,
    },
    /// Subscribe to a job's output.
    Attach {
        /// Client-chosen request id.
        request: u64,
        /// The job.
        job: JobId,
        /// Replay stored output from the start (otherwise only output from now on).
        replay: bool,
        /// Keep following live output until the job exits (otherwise stop at the stored end
        /// with [`DaemonMessage::LogEnd`]).
        follow: bool,
    },
    /// List every job the daemon knows.
    ListJobs {
        /// Client-chosen request id.
        request: u64,
        /// Every job in the history, not only this daemon run's (absent: false).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        all: bool,
    },
    /// Remove ended jobs from the history (records and logs): answered with `Pruned`.
    Prune {
        /// Client-chosen request id.
        request: u64,
        /// Remove jobs submitted longer ago than this many milliseconds.
        older_than_ms: Option<u64>,
        /// Keep only the newest this many ended jobs.
        keep: Option<u64>,
    },
    /// Send a signal to a job's whole process group (or cancel it while queued).
    Signal {
        /// Client-chosen request id.
        request: u64,
        /// The job.
        job: JobId,
        /// Signal number (Linux numbering).
        signal: i32,
    },
    /// Ask the daemon to shut down gracefully.
    Shutdown {
        /// Client-chosen request id.
        request: u64,
    },
    /// Start sending a file into the daemon's file area. Answered with `Done` (send the data)
    /// or `Error`.
    PutStart {
        /// Client-chosen request id; the `PutData` and `PutEnd` frames repeat it.
        request: u64,
        /// Path relative to the file area (no `..`, not absolute).
        path: ByteBuf,
        /// Exact size in bytes.
        size: u64,
        /// Permission bits (the daemon keeps at most 0o777).
        mode: u32,
    },
    /// A chunk of a file being put, in order.
    PutData {
        /// The `PutStart` request id.
        request: u64,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The end of a file being put: the daemon checks size and checksum, then moves the file to
    /// its name and answers `Done`, or removes it and answers `Error`.
    PutEnd {
        /// The `PutStart` request id.
        request: u64,
        /// XXH3-128 of the whole file (16 bytes, big-endian; see `ferry_common::checksum`).
        checksum: ByteBuf,
    },
    /// Create a fresh, empty sandbox directory in the file area: answered with `SandboxReady`.
    Sandbox {
        /// Client-chosen request id.
        request: u64,
        /// Keep it after this connection closes (otherwise the daemon removes it then).
        keep: bool,
    },
    /// List the regular files under a directory of the file area: answered with `Listing`.
    List {
        /// Client-chosen request id.
        request: u64,
        /// Directory relative to the file area.
        path: ByteBuf,
    },
    /// Fetch a file from the daemon's file area: answered with `FileStart`, `FileData`...,
    /// `FileEnd`, or `Error`.
    Get {
        /// Client-chosen request id.
        request: u64,
        /// Path relative to the file area.
        path: ByteBuf,
    },
    /// Make a stateful shell session: answered with `SessionReady`.
    SessionNew {
        /// Client-chosen request id.
        request: u64,
        /// The session's first working directory (the daemon's when absent).
        cwd: Option<ByteBuf>,
    },
    /// Ask for a session's state: answered with `SessionInfo`.
    SessionState {
        /// Client-chosen request id.
        request: u64,
        /// The session.
        session: String,
    },
    /// End a session and forget its state: answered with `Done`.
    SessionClose {
        /// Client-chosen request id.
        request: u64,
        /// The session.
        session: String,
    },
    /// List the daemon's peers (every connection, whatever its dialect): answered with
    /// `Peers`. The daemon's owner only.
    ListPeers {
        /// Client-chosen request id.
        request: u64,
    },
    /// Disconnect a peer, or every peer but this one: answered with `Kicked`. Each is told in
    /// its own dialect; its jobs go on. The daemon's owner only.
    KickPeers {
        /// Client-chosen request id.
        request: u64,
        /// The peer's id; absent: every peer but this connection.
        peer: Option<String>,
    },
}

/// A message from the daemon to a client.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum DaemonMessage {
    /// Answer to a successful [`ClientMessage::Hello`].
    Welcome {
        /// The daemon's [`PROTOCOL_VERSION`].
        version: u32,
        /// The peer id the daemon gave this connection (see `ListPeers`).
        peer: String,
        /// Daemon name and version, for display.
        daemon: String,
        /// Optional features this daemon serves.
        capabilities: Vec<String>,
        /// Largest frame body the daemon accepts from now on.
        max_frame: u64,
    },
    /// A [`ClientMessage::Run`] was accepted.
    Accepted {
        /// The request id of the `Run`.
        request: u64,
        /// The job's id.
        job: JobId,
        /// True when the job waits for a free slot (the running-jobs limit is reached).
        queued: bool,
    },
    /// A [`ClientMessage::Attach`] succeeded; output frames follow.
    Attached {
        /// The request id of the `Attach`.
        request: u64,
        /// The job's state at the time of attaching.
        info: JobInfo,
    },
    /// A chunk of a job's output (at most [`MAX_OUTPUT_CHUNK`] bytes).
    Output {
        /// The job.
        job: JobId,
        /// Which stream.
        stream: Stream,
        /// Byte offset of `data` within that stream.
        offset: u64,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A job ended (sent to every connection following it).
    Exit {
        /// The job.
        job: JobId,
        /// How it ended.
        exit: JobExit,
    },
    /// End of stored output for an `Attach` with `follow: false`.
    LogEnd {
        /// The request id of the `Attach`.
        request: u64,
        /// The job.
        job: JobId,
    },
    /// Answer to [`ClientMessage::ListJobs`].
    Jobs {
        /// The request id.
        request: u64,
        /// Every known job, oldest first.
        jobs: Vec<JobInfo>,
    },
    /// A request without a more specific answer succeeded.
    Done {
        /// The request id.
        request: u64,
    },
    /// A request failed, or the connection is being closed for a protocol error.
    Error {
        /// The request id, when the error answers a request.
        request: Option<u64>,
        /// Machine-readable kind.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// A sandbox was created.
    SandboxReady {
        /// The `Sandbox` request id.
        request: u64,
        /// Its path relative to the file area (use it in `PutStart`, `Run`, `List`, `Get`).
        path: ByteBuf,
    },
    /// The regular files under a directory (answering `List`), sorted by path.
    Listing {
        /// The `List` request id.
        request: u64,
        /// The files.
        entries: Vec<FileEntry>,
        /// The other entries that are not directories (symbolic links, FIFOs, sockets,
        /// devices), which are never transferred, sorted by path (absent: none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        others: Vec<OtherEntry>,
    },
    /// The start of a file sent by the daemon (answering `Get`).
    FileStart {
        /// The `Get` request id.
        request: u64,
        /// Exact size in bytes.
        size: u64,
        /// Permission bits.
        mode: u32,
    },
    /// A chunk of a file sent by the daemon, in order.
    FileData {
        /// The `Get` request id.
        request: u64,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The end of a file sent by the daemon.
    FileEnd {
        /// The `Get` request id.
        request: u64,
        /// XXH3-128 of the whole file (16 bytes, big-endian; see `ferry_common::checksum`).
        checksum: ByteBuf,
    },
    /// What a `Prune` removed.
    Pruned {
        /// The `Prune` request id.
        request: u64,
        /// Jobs removed.
        jobs: u64,
        /// Log bytes freed.
        bytes: u64,
    },
    /// A session was made (answering `SessionNew`).
    SessionReady {
        /// The `SessionNew` request id.
        request: u64,
        /// Its id, for `Run.session`.
        session: String,
    },
    /// A session's state (answering `SessionState`).
    SessionInfo {
        /// The `SessionState` request id.
        request: u64,
        /// The session's working directory.
        cwd: ByteBuf,
        /// The exit status of its last command.
        status: i32,
        /// Its variables that differ from a fresh shell's in the daemon's environment, as the
        /// shell's own `declare -p` lines.
        changed: Vec<ByteBuf>,
        /// Names of the fresh shell's variables the session has unset.
        unset: Vec<ByteBuf>,
    },
    /// The daemon's peers (answering `ListPeers`), in the order they connected.
    Peers {
        /// The `ListPeers` request id.
        request: u64,
        /// The peers.
        peers: Vec<PeerInfo>,
    },
    /// The peers a `KickPeers` disconnected.
    Kicked {
        /// The `KickPeers` request id.
        request: u64,
        /// Their ids.
        peers: Vec<String>,
    },
    /// A notice not tied to any job.
    Notice {
        /// What kind of notice.
        kind: NoticeKind,
        /// Human-readable text.
        message: String,
    },
}

/// Machine-readable error kinds carried by [`DaemonMessage::Error`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The bytes received are not a valid frame or message.
    BadFrame,
    /// A frame's declared length is over the limit.
    FrameTooLarge,
    /// The first frame was not a valid `Hello`, or it came too late.
    BadHandshake,
    /// Client and daemon protocol versions differ.
    VersionMismatch,
    /// The peer is not allowed to connect or to do this.
    PermissionDenied,
    /// No job has that id.
    UnknownJob,
    /// The request is well-formed but makes no sense (empty argv, stdin to a job without it...).
    InvalidRequest,
    /// A configured limit was reached (connections, queued jobs...).
    LimitReached,
    /// The daemon is shutting down and takes no new work.
    ShuttingDown,
    /// Something failed inside the daemon.
    Internal,
    /// A code this version does not know (sent by a newer daemon).
    #[serde(other)]
    Unknown,
}

/// Kinds of [`DaemonMessage::Notice`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    /// The daemon is going down: running jobs are being terminated.
    ShuttingDown,
    /// The daemon's owner disconnected this client; its jobs go on.
    Kicked,
    /// A kind this version does not know.
    #[serde(other)]
    Unknown,
}

/// One regular file in a `Listing`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the listed directory.
    pub path: ByteBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, in nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// An entry of a `Listing` that is not a regular file nor a directory.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OtherEntry {
    /// Path relative to the listed directory.
    pub path: ByteBuf,
    /// What it is: "a symbolic link", "a FIFO", "a socket", "a device".
    pub kind: String,
}

/// How a job ended.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct JobExit {
    /// Exit code, when the job exited normally.
    pub code: Option<i32>,
    /// Signal number, when the job was killed by a signal.
    pub signal: Option<i32>,
    /// Wall-clock run time in microseconds (from spawn to exit).
    pub wall_us: u64,
    /// True when the job was terminated because its timeout expired.
    pub timed_out: bool,
    /// Set when the job never ran (spawn failed, or cancelled while queued), or what became
    /// of a lost job.
    pub error: Option<String>,
    /// The signal that ended it was sent by a client or by a shutdown (absent: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub killed: bool,
    /// The daemon stopped while the job ran: how it ended is unknown (absent: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

impl JobExit {
    /// The status a shell would report (see [`ferry_common::shell_status`]).
    pub fn shell_status(&self) -> i32 {
        ferry_common::shell_status(self.code, self.signal, self.error.is_some())
    }
}

/// Where a job is in its life.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a free running slot.
    Queued,
    /// Spawned and not yet finished.
    Running,
    /// Ended: see the job's exit.
    Finished,
    /// The daemon stopped while the job was queued or running (a record from the history).
    Lost,
}

/// A job's description, as listed by `ferry ps`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// Program and arguments.
    pub argv: Vec<ByteBuf>,
    /// Process id of the job's leader (also its process group id), once spawned.
    pub pid: Option<u32>,
    /// When the job was submitted, in milliseconds since the Unix epoch.
    pub submitted_ms: u64,
    /// When the job was spawned, in milliseconds since the Unix epoch.
    pub started_ms: Option<u64>,
    /// Run time so far (or in all, once finished), in microseconds.
    pub run_us: u64,
    /// How it ended, once finished.
    pub exit: Option<JobExit>,
    /// Output bytes that were delivered live but not stored (past the daemon's cap).
    pub unstored_bytes: u64,
    /// Who it belongs to: `owner`, `cert:NAME`, `token:LABEL` (absent: the owner).
    #[serde(default = "owner")]
    pub principal: String,
}

fn owner() -> String {
    "owner".into()
}

/// A connected peer, as `ferry peers` lists it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub id: String,
    /// Who it is: the Unix user, a client certificate's name, the token's label, or what its
    /// dialect says.
    pub name: String,
    /// Where it connects from.
    pub address: String,
    /// The dialect it speaks (`ferry`, `fanos`...).
    pub dialect: String,
    /// Who it acts for (`owner`, `cert:NAME`, `token:LABEL`); empty until it authenticated.
    #[serde(default)]
    pub principal: String,
    /// When it connected, in milliseconds since the Unix epoch.
    pub connected_ms: u64,
    /// Jobs it started, in all.
    pub jobs_started: u64,
    /// The newest of them (at most 100).
    pub jobs: Vec<JobId>,
    /// Events waiting in its outbox, and the outbox's room.
    pub outbox: (u64, u64),
    /// Events dropped because its outbox was full.
    pub dropped_events: u64,
    /// This is the connection that asked.
    pub you: bool,
}

/// Errors from the frame codec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The declared body length is over the limit in force.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    FrameTooLarge {
        /// Declared length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// A frame with an empty body.
    #[error("empty frame")]
    EmptyFrame,
    /// The body is not valid CBOR for any known message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The body holds bytes after the message.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
    /// A message could not be encoded (only for values that cannot be represented).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Appends one frame holding `message` to `out`.
pub fn encode_frame<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    ciborium::ser::into_writer(message, &mut *out).map_err(|e| {
        out.truncate(start);
        WireError::Encode(e.to_string())
    })?;
    set_body_len(out, start, 0)
}

/// Writes the length header of the frame that starts at `start` in `out`: the bytes after the
/// header, plus `more` bytes the caller will send after them. Removes the frame on failure.
fn set_body_len(out: &mut Vec<u8>, start: usize, more: usize) -> Result<(), WireError> {
    let body_len = out.len() - start - FRAME_HEADER_LEN + more;
    let Ok(body_len) = u32::try_from(body_len) else {
        out.truncate(start);
        return Err(WireError::Encode(format!(
            "body of {body_len} bytes does not fit a frame"
        )));
    };
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&body_len.to_be_bytes());
    Ok(())
}

/// Appends the frame of a [`DaemonMessage::Output`] up to (not including) its data.
///
/// The appended bytes followed by `data_len` bytes of data are exactly what [`encode_frame`]
/// produces for the whole message, so a sender can write the data from where it already lies
/// (a vectored write) instead of copying it into the frame.
pub fn encode_output_head(
    job: JobId,
    stream: Stream,
    offset: u64,
    data_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let start = out.len();
    encode_frame(
        &DaemonMessage::Output {
            job,
            stream,
            offset,
            data: Vec::new(),
        },
        out,
    )?;
    // `data` is the last field: the encoding ends with the empty byte string's header.
    if out.pop() != Some(0x40) {
        out.truncate(start);
        return Err(WireError::Encode("unexpected Output encoding".into()));
    }
    let len = data_len as u64;
    match len {
        0..=23 => out.push(0x40 | len as u8),
        24..=0xff => out.extend_from_slice(&[0x58, len as u8]),
        0x100..=0xffff => {
            out.push(0x59);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x5a);
            let Ok(len) = u32::try_from(len) else {
                out.truncate(start);
                return Err(WireError::Encode(format!(
                    "{data_len} bytes of output in one frame"
                )));
            };
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    set_body_len(out, start, data_len)
}

/// Tries to decode one frame from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (read more and call again),
/// `Ok(Some((message, consumed)))` when it does, and an error when the frame is over
/// `max_frame` or its body is not a valid message. The length is checked before the body is
/// awaited, so a huge length prefix is refused at once.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    max_frame: usize,
) -> Result<Option<(T, usize)>, WireError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; FRAME_HEADER_LEN];
    len_bytes.copy_from_slice(header);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > max_frame {
        return Err(WireError::FrameTooLarge {
            len,
            max: max_frame,
        });
    }
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    let Some(mut body) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Ok(None);
    };
    let message: T =
        ciborium::de::from_reader(&mut body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !body.is_empty() {
        return Err(WireError::TrailingBytes(body.len()));
    }
    Ok(Some((message, FRAME_HEADER_LEN + len)))
}

/// The native frame format as a [`crate::Decoder`]: messages of type `T` in frames of at most
/// `max` body bytes.
#[derive(Debug)]
pub struct NativeDecoder<T> {
    /// Largest body accepted.
    pub max: usize,
    message: std::marker::PhantomData<fn() -> T>,
}

impl<T> NativeDecoder<T> {
    /// A decoder of frames up to `max` body bytes.
    pub fn new(max: usize) -> NativeDecoder<T> {
        NativeDecoder {
            max,
            message: std::marker::PhantomData,
        }
    }
}

impl<T: DeserializeOwned> crate::Decoder for NativeDecoder<T> {
    type Message = T;
    type Error = WireError;

    fn decode(&mut self, buf: &[u8], _eof: bool) -> Result<Option<(T, usize)>, WireError> {
        decode_frame(buf, self.max)
    }

    fn message_len_at_least(&self, buf: &[u8]) -> usize {
        match buf.get(..FRAME_HEADER_LEN) {
            Some(header) => {
                let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                FRAME_HEADER_LEN.saturating_add(len as usize)
            }
            None => FRAME_HEADER_LEN,
        }
    }
}

/// Lossy display of a byte string (for argv in listings and logs).
pub fn display_bytes(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(message: &T) {
        let mut buf = Vec::new();
        encode_frame(message, &mut buf).expect("encode");
        let (decoded, used) = decode_frame::<T>(&buf, DEFAULT_MAX_FRAME)
            .expect("decode")
            .expect("whole frame");
        assert_eq!(used, buf.len());
        assert_eq!(&decoded, message);
    }

    #[test]
    fn hello_roundtrips() {
        roundtrip(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            client: "t".into(),
            token: None,
        });
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let mut buf = Vec::new();
        encode_frame(
            &ClientMessage::ListJobs {
                request: 7,
                all: false,
            },
            &mut buf,
        )
        .expect("encode");
        for cut in 0..buf.len() {
            assert_eq!(
                decode_frame::<ClientMessage>(&buf[..cut], DEFAULT_MAX_FRAME),
                Ok(None),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn huge_length_is_refused_before_the_body_arrives() {
        let buf = [0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            decode_frame::<ClientMessage>(&buf, 1024),
            Err(WireError::FrameTooLarge {
                len: 0xffff_ffff,
                max: 1024
            })
        );
    }

    #[test]
    fn unknown_variant_is_malformed() {
        // {"Frobnicate": {}}
        let body = [
            0xa1, 0x6a, b'F', b'r', b'o', b'b', b'n', b'i', b'c', b'a', b't', b'e', 0xa0,
        ];
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&body);
        assert!(matches!(
            decode_frame::<ClientMessage>(&buf, 1024),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut buf = Vec::new();
        encode_frame(
            &ClientMessage::ListJobs {
                request: 1,
                all: false,
            },
            &mut buf,
        )
        .expect("encode");
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) + 1;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        buf.push(0);
        assert_eq!(
            decode_frame::<ClientMessage>(&buf, 1024),
            Err(WireError::TrailingBytes(1))
        );
    }

    #[test]
    fn shell_status_follows_shell_conventions() {
        let exit = |code, signal, error: Option<&str>| JobExit {
            code,
            signal,
            error: error.map(String::from),
            ..JobExit::default()
        };
        assert_eq!(exit(Some(3), None, None).shell_status(), 3);
        assert_eq!(exit(None, Some(9), None).shell_status(), 137);
        assert_eq!(exit(None, None, Some("no such file")).shell_status(), 127);
    }
}
