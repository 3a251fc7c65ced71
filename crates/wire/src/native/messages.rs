//! The native protocol's messages: what a client sends ([`ClientMessage`]), what the daemon
//! answers ([`DaemonMessage`]), and the values they carry. `docs/protocol.md` lists every
//! field.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::JobId;

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
        /// The client's [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).
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
        /// Run under this group's limit (absent: the default group).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// A label for listings and filters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// Start only once these earlier jobs have ended successfully (any outcome with
        /// `after_any`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        after: Vec<JobId>,
        /// See `after`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        after_any: bool,
        /// Run on a pseudo-terminal of the daemon's, of this size (as `ssh -t`): its output
        /// comes as `stdout`, `Stdin` is typed at it, `Resize` changes its size. Needs
        /// `stdin: true`; no `pass_stdio`, no `session`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tty: Option<TtySize>,
    },
    /// The new size of a job's pseudo-terminal (the client's terminal was resized).
    Resize {
        /// The job.
        job: JobId,
        /// Its size now.
        size: TtySize,
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
    /// Ask for the dashboard's one-time URL (the owner only): the daemon opens an HTTP
    /// listener on a free loopback port if it has none. Answered with `Web`.
    Web {
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
    /// Join the peer hub: from now on this connection gets `Message`s and `Presence`, and is
    /// pinged when silent. Answered with `Joined`.
    Join {
        /// Client-chosen request id.
        request: u64,
        /// The name to be known by (default: the connection's principal's name).
        name: Option<String>,
        /// A resume token from an earlier `Joined`: take that place again (within its grace
        /// period), with the messages sent to it meanwhile.
        resume: Option<String>,
        /// With `resume`, in a hub cluster: the `seq` of the last `Message` this member was
        /// shown. Resuming on another daemon, its messages are replayed from the one after
        /// (without it, from where its old daemon last said it had got to).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seen: Option<u64>,
    },
    /// Send a message to one member of the hub (by id or name) or to every other member.
    /// Answered with `Said`.
    Say {
        /// Client-chosen request id.
        request: u64,
        /// The receiver's id or name; absent: everyone.
        to: Option<String>,
        /// The text (UTF-8, at most 64 KiB).
        text: String,
        /// Send it as the daemon itself (sender `server`): the daemon's owner only.
        #[serde(default)]
        as_daemon: bool,
    },
    /// List the hub's members: answered with `Members`. Any peer may ask.
    Members {
        /// Client-chosen request id.
        request: u64,
    },
    /// Leave the hub at once (the others see it; no place is held): answered with `Done`.
    Leave {
        /// Client-chosen request id.
        request: u64,
    },
    /// Give a regular file of the file area a second name there (a hard link; e.g. a cached
    /// input into a sandbox): answered with `Done`.
    Link {
        /// Client-chosen request id.
        request: u64,
        /// The file (relative to the file area).
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        /// Its new name (must not exist).
        #[serde(with = "serde_bytes")]
        to: Vec<u8>,
    },
    /// Remove a file of the file area, or with `recursive` a directory and all it holds:
    /// answered with `Done`. A symbolic link is removed, never followed.
    Remove {
        /// Client-chosen request id.
        request: u64,
        /// What to remove (relative to the file area).
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// A directory and everything under it.
        recursive: bool,
    },
    /// How busy the daemon is, and what one more job costs there: answered with `Cost`. Any
    /// peer may ask.
    Cost {
        /// Client-chosen request id.
        request: u64,
    },
    /// Run an ended job again as it ran (command, directory, environment, limit, group,
    /// label; no stdin): answered with `Accepted` (then, with `follow`, its output).
    Restart {
        /// Client-chosen request id.
        request: u64,
        /// The ended job.
        job: JobId,
        /// Stream the new job's output and exit to this connection.
        follow: bool,
    },
    /// Stop a running job (SIGSTOP), or pause a group (its running jobs stopped, its queued
    /// jobs kept waiting): answered with `Done`.
    Pause {
        /// Client-chosen request id.
        request: u64,
        /// The job, or a group by name: exactly one of the two.
        job: Option<JobId>,
        /// See `job`.
        group: Option<String>,
    },
    /// Continue what `Pause` stopped: answered with `Done`.
    Resume {
        /// Client-chosen request id.
        request: u64,
        /// The job, or a group by name: exactly one of the two.
        job: Option<JobId>,
        /// See `job`.
        group: Option<String>,
    },
    /// A job's whole description: answered with `Details`.
    Show {
        /// Client-chosen request id.
        request: u64,
        /// The job.
        job: JobId,
        /// Send its environment's values, not only their names.
        env: bool,
    },
    /// Make a group, change its limit, or remove it: answered with `Done`. Adding,
    /// changing and removing are the owner's.
    Group {
        /// Client-chosen request id.
        request: u64,
        /// The group's name.
        name: String,
        /// What to do.
        action: GroupAction,
    },
    /// List the groups: answered with `Groups`. Any peer may ask.
    ListGroups {
        /// Client-chosen request id.
        request: u64,
    },
    /// The answer to a `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}

impl ClientMessage {
    /// The message's name, as the protocol document writes it (for errors and logs).
    pub fn name(&self) -> &'static str {
        match self {
            ClientMessage::Hello { .. } => "Hello",
            ClientMessage::Run { .. } => "Run",
            ClientMessage::Stdin { .. } => "Stdin",
            ClientMessage::CloseStdin { .. } => "CloseStdin",
            ClientMessage::Attach { .. } => "Attach",
            ClientMessage::ListJobs { .. } => "ListJobs",
            ClientMessage::Signal { .. } => "Signal",
            ClientMessage::Shutdown { .. } => "Shutdown",
            ClientMessage::Web { .. } => "Web",
            ClientMessage::PutStart { .. } => "PutStart",
            ClientMessage::PutData { .. } => "PutData",
            ClientMessage::PutEnd { .. } => "PutEnd",
            ClientMessage::Get { .. } => "Get",
            ClientMessage::Sandbox { .. } => "Sandbox",
            ClientMessage::List { .. } => "List",
            ClientMessage::Prune { .. } => "Prune",
            ClientMessage::SessionNew { .. } => "SessionNew",
            ClientMessage::SessionState { .. } => "SessionState",
            ClientMessage::SessionClose { .. } => "SessionClose",
            ClientMessage::ListPeers { .. } => "ListPeers",
            ClientMessage::KickPeers { .. } => "KickPeers",
            ClientMessage::Join { .. } => "Join",
            ClientMessage::Say { .. } => "Say",
            ClientMessage::Members { .. } => "Members",
            ClientMessage::Leave { .. } => "Leave",
            ClientMessage::Pong { .. } => "Pong",
            ClientMessage::Cost { .. } => "Cost",
            ClientMessage::Link { .. } => "Link",
            ClientMessage::Remove { .. } => "Remove",
            ClientMessage::Restart { .. } => "Restart",
            ClientMessage::Pause { .. } => "Pause",
            ClientMessage::Resume { .. } => "Resume",
            ClientMessage::Show { .. } => "Show",
            ClientMessage::Group { .. } => "Group",
            ClientMessage::ListGroups { .. } => "ListGroups",
            ClientMessage::Resize { .. } => "Resize",
        }
    }
}

/// A message from the daemon to a client.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum DaemonMessage {
    /// Answer to a successful [`ClientMessage::Hello`].
    Welcome {
        /// The daemon's [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).
        version: u32,
        /// The peer id the daemon gave this connection (see `ListPeers`).
        peer: String,
        /// Daemon name and version, for display.
        daemon: String,
        /// Optional features this daemon serves.
        capabilities: Vec<String>,
        /// Largest frame body the daemon accepts from now on.
        max_frame: u64,
        /// Something the daemon's owner should know, said once (to the first owner's client
        /// after a start): the previous daemon stopped unexpectedly, and what it lost.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notice: Option<String>,
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
    /// A chunk of a job's output (at most [`MAX_OUTPUT_CHUNK`](super::MAX_OUTPUT_CHUNK) bytes).
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
        /// Every known job, oldest first (a long list comes in several `Jobs`: this part).
        jobs: Vec<JobInfo>,
        /// More `Jobs` of this request follow (a list longer than one frame holds).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
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
        /// The hub's counters.
        #[serde(default)]
        hub: HubCounters,
        /// The hub's cluster, as this daemon sees it; absent outside a cluster.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cluster: Option<HubCluster>,
    },
    /// Answer to `Join`: this connection is in the hub.
    Joined {
        /// The `Join` request id.
        request: u64,
        /// Its peer id in the hub (an earlier one when it resumed).
        peer: String,
        /// Its name.
        name: String,
        /// The token to resume with after the connection ends (keep it secret).
        resume: String,
        /// Every member (itself included), or in a hub larger than the daemon's
        /// `--hub-presence-max` the first that many.
        members: Vec<HubMember>,
        /// Messages dropped for it while it was away (resuming only).
        missed: u64,
        /// How many members the hub has (more than `members` holds in a large hub).
        #[serde(default)]
        total_members: u64,
    },
    /// Answer to `Say`: what became of the message.
    Said {
        /// The `Say` request id.
        request: u64,
        /// Receivers whose outbox took it.
        delivered: u64,
        /// Receivers whose dialect cannot carry it, and why.
        refused: Vec<Undelivered>,
        /// Receivers whose outbox was full (they lost it; see the slow-consumer policy).
        dropped: Vec<String>,
    },
    /// Answer to `Members`.
    Members {
        /// The `Members` request id.
        request: u64,
        /// The members, in the order they connected.
        members: Vec<HubMember>,
    },
    /// A message from another member of the hub (or from the daemon: `from` is `server`).
    Message {
        /// The sender's id.
        from: String,
        /// The sender's name.
        name: String,
        /// When it was sent, in milliseconds since the Unix epoch.
        sent_ms: u64,
        /// The text.
        text: String,
        /// It was sent to this member alone (not to everyone).
        direct: bool,
        /// In a hub cluster: its position in the cluster's stream, rising (absent: 0, outside
        /// a cluster, and for a message from the daemon or its owner, which goes ahead of
        /// members' messages). A member resuming elsewhere names the highest it was shown.
        #[serde(default, skip_serializing_if = "is_zero")]
        seq: u64,
    },
    /// Events were dropped for this member (its outbox, or one sender's share of it, was
    /// full): how many, from whom. Sent at its next read once its outbox is empty, or at most
    /// once a second while it is still behind.
    Missed {
        /// How many, in all.
        total: u64,
        /// How many from whom (`server` for the daemon's own events), in the order first
        /// missed.
        from: Vec<MissedFrom>,
    },
    /// A member joined or left the hub.
    Presence {
        /// Its id.
        peer: String,
        /// Its name.
        name: String,
        /// Its dialect.
        dialect: String,
        /// Joined (`true`) or left.
        joined: bool,
        /// Why it left (empty for a join).
        reason: String,
    },
    /// Answer to `Cost`.
    Cost {
        /// The `Cost` request id.
        request: u64,
        /// What one more job costs here, in thousandths: (running + queued) * 1000 / slots.
        cost: u64,
        /// Jobs running.
        running: u64,
        /// Jobs queued.
        queued: u64,
        /// Job slots (jobs that may run at once).
        slots: u64,
    },
    /// A job's whole description (answers `Show`).
    Details {
        /// The `Show` request id.
        request: u64,
        /// The job, as listings show it.
        info: JobInfo,
        /// The rest of it.
        details: JobDetails,
    },
    /// The groups (answers `ListGroups`).
    Groups {
        /// The request id.
        request: u64,
        /// Every group, by name.
        groups: Vec<GroupInfo>,
    },
    /// The dashboard's one-time URL (answers `Web`): it carries the daemon's web token, which
    /// the page turns into a cookie.
    Web {
        /// The request id.
        request: u64,
        /// `http://127.0.0.1:PORT/?token=TOKEN`.
        url: String,
    },
    /// The daemon checks that a silent member is alive: answer with `Pong`.
    Ping {
        /// Echo it in the `Pong`.
        nonce: u64,
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

impl DaemonMessage {
    /// The request this message answers: `None` for the `Welcome` and for what the daemon
    /// sends on its own (output, exits, notices, and errors about no request).
    pub fn request(&self) -> Option<u64> {
        match self {
            DaemonMessage::Accepted { request, .. }
            | DaemonMessage::Attached { request, .. }
            | DaemonMessage::LogEnd { request, .. }
            | DaemonMessage::Jobs { request, .. }
            | DaemonMessage::Done { request }
            | DaemonMessage::SandboxReady { request, .. }
            | DaemonMessage::Listing { request, .. }
            | DaemonMessage::FileStart { request, .. }
            | DaemonMessage::FileData { request, .. }
            | DaemonMessage::FileEnd { request, .. }
            | DaemonMessage::Pruned { request, .. }
            | DaemonMessage::SessionReady { request, .. }
            | DaemonMessage::SessionInfo { request, .. }
            | DaemonMessage::Peers { request, .. }
            | DaemonMessage::Kicked { request, .. }
            | DaemonMessage::Joined { request, .. }
            | DaemonMessage::Said { request, .. }
            | DaemonMessage::Members { request, .. }
            | DaemonMessage::Cost { request, .. }
            | DaemonMessage::Details { request, .. }
            | DaemonMessage::Groups { request, .. }
            | DaemonMessage::Web { request, .. } => Some(*request),
            DaemonMessage::Error { request, .. } => *request,
            DaemonMessage::Welcome { .. }
            | DaemonMessage::Output { .. }
            | DaemonMessage::Exit { .. }
            | DaemonMessage::Notice { .. }
            | DaemonMessage::Message { .. }
            | DaemonMessage::Presence { .. }
            | DaemonMessage::Missed { .. }
            | DaemonMessage::Ping { .. } => None,
        }
    }
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
    /// The exit of a command that ran elsewhere and reported only its return code: a
    /// negative one is the number of the signal that ended it, negated (as Python reports
    /// it, and rake64 servers pass it on).
    pub fn reported(code: i32) -> JobExit {
        let (code, signal) = if code < 0 {
            (None, Some(-code))
        } else {
            (Some(code), None)
        };
        JobExit {
            code,
            signal,
            wall_us: 0,
            timed_out: false,
            error: None,
            killed: false,
            lost: false,
        }
    }

    /// The status a shell would report (see [`ferry_common::shell_status`]).
    pub fn shell_status(&self) -> i32 {
        ferry_common::shell_status(self.code, self.signal, self.error.is_some())
    }
}

/// Where a job is in its life.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Stopped by `Pause` (it holds its slot).
    Paused,
    /// It never ran: a job it waited for did not succeed.
    #[serde(rename = "dependency-failed")]
    DependencyFailed,
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
    /// It ran on its client's own fds (a terminal): its output went there, and no log was
    /// kept (absent: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_log: bool,
    /// Its group.
    #[serde(default = "default_group")]
    pub group: String,
    /// Its label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The jobs it waits or waited for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<JobId>,
    /// Microseconds it spent stopped by `Pause` (counted in `run_us` too).
    #[serde(default)]
    pub paused_us: u64,
    /// When it ended (ms since the Unix epoch).
    #[serde(default)]
    pub ended_ms: Option<u64>,
}

fn default_group() -> String {
    super::DEFAULT_GROUP.into()
}

/// A terminal's size, in characters.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
    /// The client terminal's type (its `TERM`), for the job's `TERM`: letters, digits and
    /// `.+-_`, at most 64 bytes (absent in `Resize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
}

/// What `Group` does.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GroupAction {
    /// Make it, with this limit.
    Add {
        /// Jobs of it that may run at once.
        parallel: u64,
    },
    /// Change its limit.
    Set {
        /// Jobs of it that may run at once.
        parallel: u64,
    },
    /// Remove it (refused while it has jobs, and for `default`).
    Remove,
}

/// A group, as `Groups` lists it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// Jobs of it that may run at once.
    pub parallel: u64,
    /// Jobs of it running now.
    pub running: u64,
    /// Jobs of it waiting.
    pub queued: u64,
    /// Paused: its waiting jobs do not start.
    pub paused: bool,
}

/// What `Details` tells beyond a job's `JobInfo`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct JobDetails {
    /// The program and arguments it ran, where they differ from `JobInfo.argv` (a
    /// session's command line is shown; its shell runs).
    pub command: Option<Vec<ByteBuf>>,
    /// Its working directory.
    pub cwd: Option<ByteBuf>,
    /// Its environment: names, with values only when `Show.env` asked (null: the daemon's
    /// own environment).
    pub env: Option<Vec<(ByteBuf, Option<ByteBuf>)>>,
    /// The connection that submitted it.
    pub connection: String,
    /// The dialect it came through.
    pub dialect: String,
    /// It runs after its `after` jobs whatever their outcome.
    pub after_any: bool,
    /// Its time limit.
    pub timeout_ms: Option<u64>,
    /// The session it ran in.
    pub session: Option<String>,
    /// Its stdin came from its client.
    pub stdin: bool,
    /// Bytes of output it wrote: stdout, stderr.
    pub stdout_bytes: u64,
    /// See `stdout_bytes`.
    pub stderr_bytes: u64,
    /// Bytes its log file takes (once it ended).
    pub log_bytes: u64,
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
    /// It joined the hub.
    #[serde(default)]
    pub member: bool,
    /// Its connection ended; the hub holds its place for the grace period.
    #[serde(default)]
    pub away: bool,
}

/// A member of the hub, as `Joined` and `Members` list it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HubMember {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its dialect.
    pub dialect: String,
    /// When it joined, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Its connection ended; its place is held.
    pub away: bool,
}

/// Events a member missed from one sender (in `Missed`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MissedFrom {
    /// The sender's id.
    pub peer: String,
    /// Its name.
    pub name: String,
    /// How many.
    pub count: u64,
}

/// A receiver that could not take a message (in `Said`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    /// Its id.
    pub peer: String,
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The hub's cluster as a daemon in it sees it (in `Peers`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct HubCluster {
    /// This daemon's name in it.
    pub node: String,
    /// Its link to NATS is up.
    pub connected: bool,
    /// The last position of the cluster's stream it applied.
    pub position: u64,
    /// The other daemons it knows.
    pub daemons: Vec<HubClusterDaemon>,
    /// Events it handed to NATS.
    pub published: u64,
    /// Events it could not publish: its link was behind.
    pub unpublished: u64,
    /// Stream positions that held no event of the cluster.
    pub undecodable: u64,
    /// Events ignored: a daemon spoke for, or claimed, a member not its own.
    pub ignored: u64,
    /// Events missed: holes in the stream, replays it no longer held.
    pub missed: u64,
}

/// Another daemon of the hub's cluster (in [`HubCluster`]).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct HubClusterDaemon {
    /// Its name.
    pub node: String,
    /// It stopped or fell silent; its members are held until their grace ends.
    pub gone: bool,
    /// Its members.
    pub members: u64,
    /// Those of them whose places are held.
    pub held: u64,
}

/// The hub's counters since the daemon started (in `Peers`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubCounters {
    /// Messages sent.
    pub messages: u64,
    /// Messages queued for a receiver.
    pub deliveries: u64,
    /// Deliveries refused: the receiver's dialect cannot carry the message.
    pub refused: u64,
    /// Deliveries dropped: the receiver's outbox was full.
    pub dropped: u64,
    /// Members disconnected as slow consumers.
    pub slow_disconnects: u64,
    /// Members removed for missing their pings.
    pub ping_timeouts: u64,
    /// Members that came back within their grace period.
    pub resumed: u64,
    /// Members whose grace period ended.
    pub expired: u64,
    /// Joins and leaves not announced: the hub was larger than `--hub-presence-max`.
    #[serde(default)]
    pub unannounced: u64,
}

/// Whether a count is 0 (left out of a frame).
fn is_zero(n: &u64) -> bool {
    *n == 0
}
