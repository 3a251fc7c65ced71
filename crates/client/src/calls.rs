//! The typed calls of a [`Client`]: each builds its request, owns its request id, and waits for
//! its answer (events arriving meanwhile wait in the client's queue).

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_common::SessionState;
use ferry_wire::native::{
    ClientMessage, DaemonMessage, FileEntry, HubCluster, HubCounters, HubMember, JobId, JobInfo,
    OtherEntry, PeerInfo, Undelivered,
};
use serde_bytes::ByteBuf;

use crate::{Client, ClientError, Sender};

/// A job to run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest<'a> {
    /// Program and arguments (in a session: the words of one command line).
    pub argv: Vec<OsString>,
    /// Its working directory (a local daemon's own when `None`; remote daemons ignore it).
    pub cwd: Option<PathBuf>,
    /// Its whole environment (the daemon's when `None`; remote daemons ignore it).
    pub env: Option<Vec<(OsString, OsString)>>,
    /// Stdin will be sent with [`Sender::blocking_stdin`] (otherwise `/dev/null`).
    pub stdin: bool,
    /// Terminate it (TERM, then KILL) after this long.
    pub timeout: Option<Duration>,
    /// It gets SIGHUP if this client goes away before it ends.
    pub hangup_on_disconnect: bool,
    /// Its output and exit come to this client as events.
    pub follow: bool,
    /// Run in this sandbox (from [`Client::sandbox`]).
    pub sandbox: Option<String>,
    /// Run as a command line of this session.
    pub session: Option<String>,
    /// Run on these fds (stdin, stdout, stderr), passed over the Unix socket.
    pub pass_stdio: Option<[BorrowedFd<'a>; 3]>,
    /// Run under this group's limit (the default group when `None`).
    pub group: Option<String>,
    /// A label for listings and filters.
    pub label: Option<String>,
    /// Start once these jobs have ended successfully (whatever their outcome with
    /// `after_any`).
    pub after: Vec<JobId>,
    /// See `after`.
    pub after_any: bool,
    /// Run on a pseudo-terminal of the daemon's of this size (rows, columns), as `ssh -t`.
    pub tty: Option<(u16, u16)>,
    /// With `tty`: the terminal's type, for the job's `TERM`.
    pub term: Option<String>,
}

impl RunRequest<'_> {
    /// Its `Run` message, with a fresh request id.
    pub(crate) fn message(&self, sender: &Sender) -> (u64, ClientMessage) {
        let request = sender.next_request();
        let bytes = |s: &OsString| ByteBuf::from(s.as_bytes().to_vec());
        let message = ClientMessage::Run {
            request,
            argv: self.argv.iter().map(bytes).collect(),
            cwd: self
                .cwd
                .as_ref()
                .map(|c| ByteBuf::from(c.as_os_str().as_bytes().to_vec())),
            env: self
                .env
                .as_ref()
                .map(|env| env.iter().map(|(k, v)| (bytes(k), bytes(v))).collect()),
            stdin: self.stdin,
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            hangup_on_disconnect: self.hangup_on_disconnect,
            follow: self.follow,
            sandbox: self
                .sandbox
                .as_ref()
                .map(|s| ByteBuf::from(s.as_bytes().to_vec())),
            pass_stdio: self.pass_stdio.is_some(),
            session: self.session.clone(),
            group: self.group.clone(),
            label: self.label.clone(),
            after: self.after.clone(),
            after_any: self.after_any,
            tty: self.tty.map(|(rows, cols)| ferry_wire::native::TtySize {
                rows,
                cols,
                term: self.term.clone(),
            }),
        };
        (request, message)
    }
}

/// A job the daemon accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// Its id.
    pub job: JobId,
    /// It waits in the queue for a free slot.
    pub queued: bool,
}

/// What lies under a directory of the file area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Its regular files, sorted by path.
    pub files: Vec<FileEntry>,
    /// The entries that are neither regular files nor directories (symbolic links...).
    pub others: Vec<OtherEntry>,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Jobs removed.
    pub jobs: u64,
    /// Log bytes freed.
    pub bytes: u64,
}

impl Client {
    /// Queues `run`'s message (with its fds, if it passes any); its request id.
    pub(crate) async fn send_run(&mut self, run: &RunRequest<'_>) -> Result<u64, ClientError> {
        let (request, message) = run.message(&self.sender);
        match &run.pass_stdio {
            Some(fds) => self.sender.queue_with_fds(message, fds).await?,
            None => self.sender.queue(crate::Queued::Plain(message)).await?,
        }
        Ok(request)
    }

    /// Waits for the answer to the `Run` with id `request`.
    pub(crate) async fn started(&mut self, request: u64) -> Result<Started, ClientError> {
        self.answer(request, |message| match message {
            DaemonMessage::Accepted {
                request: r,
                job,
                queued,
            } if r == request => Some(Started { job, queued }),
            _ => None,
        })
        .await
    }

    /// Runs a job; with `follow`, its output and exit come as events.
    pub async fn run(&mut self, run: &RunRequest<'_>) -> Result<Started, ClientError> {
        let request = self.send_run(run).await?;
        self.started(request).await
    }

    /// Attaches to job `job`: its output from the start (`replay`) or from now, until it ends
    /// (`follow`) or to the end of what is stored. The output comes as events; returns the
    /// job as it stands.
    pub async fn attach(
        &mut self,
        job: JobId,
        replay: bool,
        follow: bool,
    ) -> Result<JobInfo, ClientError> {
        self.call(
            |request| ClientMessage::Attach {
                request,
                job,
                replay,
                follow,
            },
            |message| match message {
                DaemonMessage::Attached { info, .. } => Some(info),
                _ => None,
            },
        )
        .await
    }

    /// The jobs of this daemon run, or (`all`) every job in its history.
    pub async fn jobs(&mut self, all: bool) -> Result<Vec<JobInfo>, ClientError> {
        // A long list comes in parts.
        let mut listed = Vec::new();
        self.call(
            |request| ClientMessage::ListJobs { request, all },
            |message| match message {
                DaemonMessage::Jobs { jobs, more, .. } => {
                    listed.extend(jobs);
                    (!more).then_some(())
                }
                _ => None,
            },
        )
        .await?;
        Ok(listed)
    }

    /// Sends `signal` to job `job`'s process group (or cancels it if it is queued).
    pub async fn signal(&mut self, job: JobId, signal: i32) -> Result<(), ClientError> {
        let request = self.sender.next_request();
        let message = ClientMessage::Signal {
            request,
            job,
            signal,
        };
        self.sender.queue(crate::Queued::Plain(message)).await?;
        self.done(request).await
    }

    /// Removes ended jobs older than `older_than`, and all but the newest `keep`.
    pub async fn prune(
        &mut self,
        older_than: Option<Duration>,
        keep: Option<u64>,
    ) -> Result<Pruned, ClientError> {
        let older_than_ms = older_than.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.call(
            |request| ClientMessage::Prune {
                request,
                older_than_ms,
                keep,
            },
            |message| match message {
                DaemonMessage::Pruned { jobs, bytes, .. } => Some(Pruned { jobs, bytes }),
                _ => None,
            },
        )
        .await
    }

    /// Asks the daemon to shut down (see [`Client::wait_closed`] to wait until it has).
    pub async fn shutdown(&mut self) -> Result<(), ClientError> {
        let request = self.sender.next_request();
        let message = ClientMessage::Shutdown { request };
        self.sender.queue(crate::Queued::Plain(message)).await?;
        self.done(request).await
    }

    /// The dashboard's one-time URL (the owner only): the daemon opens an HTTP listener on a
    /// free loopback port if it has none.
    pub async fn web_url(&mut self) -> Result<String, ClientError> {
        self.call(
            |request| ClientMessage::Web { request },
            |message| match message {
                DaemonMessage::Web { url, .. } => Some(url),
                _ => None,
            },
        )
        .await
    }

    /// Makes a fresh sandbox in the file area (kept after this connection with `keep`); its
    /// path there.
    pub async fn sandbox(&mut self, keep: bool) -> Result<String, ClientError> {
        self.call(
            |request| ClientMessage::Sandbox { request, keep },
            |message| match message {
                DaemonMessage::SandboxReady { path, .. } => {
                    Some(String::from_utf8_lossy(&path).into_owned())
                }
                _ => None,
            },
        )
        .await
    }

    /// What lies under `path` in the file area: its regular files, and the other entries
    /// that are not directories (which are never transferred).
    pub async fn list(&mut self, path: &str) -> Result<Listing, ClientError> {
        let path = ByteBuf::from(path.as_bytes().to_vec());
        self.call(
            |request| ClientMessage::List { request, path },
            |message| match message {
                DaemonMessage::Listing {
                    entries, others, ..
                } => Some(Listing {
                    files: entries,
                    others,
                }),
                _ => None,
            },
        )
        .await
    }

    /// Makes a session starting in `cwd` (the daemon's choice when `None`); its id.
    pub async fn session_new(&mut self, cwd: Option<&Path>) -> Result<String, ClientError> {
        let cwd = cwd.map(|c| ByteBuf::from(c.as_os_str().as_bytes().to_vec()));
        self.call(
            |request| ClientMessage::SessionNew { request, cwd },
            |message| match message {
                DaemonMessage::SessionReady { session, .. } => Some(session),
                _ => None,
            },
        )
        .await
    }

    /// A session's state.
    pub async fn session_state(&mut self, session: &str) -> Result<SessionState, ClientError> {
        let session = session.to_owned();
        self.call(
            |request| ClientMessage::SessionState { request, session },
            |message| match message {
                DaemonMessage::SessionInfo {
                    cwd,
                    status,
                    changed,
                    unset,
                    ..
                } => Some(SessionState {
                    cwd: cwd.into_vec(),
                    status,
                    changed: changed.into_iter().map(ByteBuf::into_vec).collect(),
                    unset: unset.into_iter().map(ByteBuf::into_vec).collect(),
                }),
                _ => None,
            },
        )
        .await
    }

    /// Ends a session.
    pub async fn session_close(&mut self, session: &str) -> Result<(), ClientError> {
        let request = self.sender.next_request();
        let message = ClientMessage::SessionClose {
            request,
            session: session.to_owned(),
        };
        self.sender.queue(crate::Queued::Plain(message)).await?;
        self.done(request).await
    }

    /// The daemon's peers (its owner only).
    pub async fn peers(&mut self) -> Result<Vec<PeerInfo>, ClientError> {
        self.call(
            |request| ClientMessage::ListPeers { request },
            |message| match message {
                DaemonMessage::Peers { peers, .. } => Some(peers),
                _ => None,
            },
        )
        .await
    }

    /// Disconnects peer `peer`, or every peer but this client (`None`); the ids kicked (its
    /// owner only).
    pub async fn kick(&mut self, peer: Option<&str>) -> Result<Vec<String>, ClientError> {
        let peer = peer.map(str::to_owned);
        self.call(
            |request| ClientMessage::KickPeers { request, peer },
            |message| match message {
                DaemonMessage::Kicked { peers, .. } => Some(peers),
                _ => None,
            },
        )
        .await
    }

    /// Joins the peer hub (as `name`, or the connection's own name), or, with `resume`,
    /// takes again the place an earlier connection held. Messages and presence then come as
    /// events; pings are answered by the client as it reads.
    pub async fn join(
        &mut self,
        name: Option<&str>,
        resume: Option<&str>,
    ) -> Result<Joined, ClientError> {
        self.join_as(name.map(str::to_owned), resume.map(str::to_owned), None)
            .await
    }

    /// Takes again the place an earlier connection held in the hub, with its resume token;
    /// `seen` is the `seq` of the last message that connection was shown
    /// ([`Event::Message`](crate::Event::Message)), so that a resume on another daemon of a
    /// hub cluster replays exactly what came after it.
    pub async fn rejoin(&mut self, resume: &str, seen: Option<u64>) -> Result<Joined, ClientError> {
        self.join_as(None, Some(resume.to_owned()), seen).await
    }

    async fn join_as(
        &mut self,
        name: Option<String>,
        resume: Option<String>,
        seen: Option<u64>,
    ) -> Result<Joined, ClientError> {
        self.call(
            |request| ClientMessage::Join {
                request,
                name,
                resume,
                seen,
            },
            |message| match message {
                DaemonMessage::Joined {
                    peer,
                    name,
                    resume,
                    members,
                    missed,
                    total_members,
                    ..
                } => Some(Joined {
                    peer,
                    name,
                    resume,
                    members,
                    missed,
                    total_members,
                }),
                _ => None,
            },
        )
        .await
    }

    /// Sends `text` to the member `to` (id or name) or to every other member; what became
    /// of it. With `as_daemon`, the message comes from `server` (the daemon's owner only).
    pub async fn say(
        &mut self,
        to: Option<&str>,
        text: &str,
        as_daemon: bool,
    ) -> Result<Said, ClientError> {
        let (to, text) = (to.map(str::to_owned), text.to_owned());
        self.call(
            |request| ClientMessage::Say {
                request,
                to,
                text,
                as_daemon,
            },
            |message| match message {
                DaemonMessage::Said {
                    delivered,
                    refused,
                    dropped,
                    ..
                } => Some(Said {
                    delivered,
                    refused,
                    dropped,
                }),
                _ => None,
            },
        )
        .await
    }

    /// Queues a message without waiting for its answer (for senders that stream many; the
    /// answers are dropped as they come, and refusals arrive as [`crate::Event::Failed`]).
    pub async fn say_nowait(&self, to: Option<&str>, text: &str) -> Result<(), ClientError> {
        self.sender.say(to, text).await
    }

    /// Gives the file `from` of the file area a second name `to` there (no bytes copied).
    pub async fn link(&mut self, from: &str, to: &str) -> Result<(), ClientError> {
        let request = self.sender.next_request();
        let message = ClientMessage::Link {
            request,
            from: from.as_bytes().to_vec(),
            to: to.as_bytes().to_vec(),
        };
        self.sender.queue(crate::Queued::Plain(message)).await?;
        self.done(request).await
    }

    /// Removes `path` from the file area: a file, or with `recursive` a directory and all it
    /// holds.
    pub async fn remove(&mut self, path: &str, recursive: bool) -> Result<(), ClientError> {
        let request = self.sender.next_request();
        let message = ClientMessage::Remove {
            request,
            path: path.as_bytes().to_vec(),
            recursive,
        };
        self.sender.queue(crate::Queued::Plain(message)).await?;
        self.done(request).await
    }

    /// How busy the daemon is, and what one more job costs there.
    pub async fn cost(&mut self) -> Result<Cost, ClientError> {
        self.call(
            |request| ClientMessage::Cost { request },
            |message| match message {
                DaemonMessage::Cost {
                    cost,
                    running,
                    queued,
                    slots,
                    ..
                } => Some(Cost {
                    cost,
                    running,
                    queued,
                    slots,
                }),
                _ => None,
            },
        )
        .await
    }

    /// The hub's members.
    pub async fn members(&mut self) -> Result<Vec<HubMember>, ClientError> {
        self.call(
            |request| ClientMessage::Members { request },
            |message| match message {
                DaemonMessage::Members { members, .. } => Some(members),
                _ => None,
            },
        )
        .await
    }

    /// Leaves the hub at once (the others see it leave; no place is held).
    pub async fn leave(&mut self) -> Result<(), ClientError> {
        let request = self.sender.next_request();
        self.sender
            .queue(crate::Queued::Plain(ClientMessage::Leave { request }))
            .await?;
        self.done(request).await
    }

    /// The daemon's peers, the hub's counters and, in a cluster, the cluster as the daemon
    /// sees it (its owner only).
    pub async fn peers_and_counters(
        &mut self,
    ) -> Result<(Vec<PeerInfo>, HubCounters, Option<HubCluster>), ClientError> {
        self.call(
            |request| ClientMessage::ListPeers { request },
            |message| match message {
                DaemonMessage::Peers {
                    peers,
                    hub,
                    cluster,
                    ..
                } => Some((peers, hub, cluster)),
                _ => None,
            },
        )
        .await
    }
}

/// How busy a daemon is (`cost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// What one more job costs there, in thousandths: (running + queued) * 1000 / slots.
    pub cost: u64,
    /// Jobs running.
    pub running: u64,
    /// Jobs queued.
    pub queued: u64,
    /// Job slots.
    pub slots: u64,
}

/// What `join` learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// This client's id in the hub (an earlier one when it resumed).
    pub peer: String,
    /// Its name.
    pub name: String,
    /// The token to resume with (keep it secret).
    pub resume: String,
    /// Every member, itself included (the first of them in a large hub).
    pub members: Vec<HubMember>,
    /// Messages dropped for it while it was away.
    pub missed: u64,
    /// How many members the hub has.
    pub total_members: u64,
}

/// What became of a message (`say`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    /// Receivers whose outbox took it.
    pub delivered: u64,
    /// Receivers whose dialect cannot carry it.
    pub refused: Vec<Undelivered>,
    /// Receivers whose outbox was full.
    pub dropped: Vec<String>,
}
