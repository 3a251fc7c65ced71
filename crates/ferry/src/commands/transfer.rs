//! `ferry put` and `ferry get`: files into and out of the daemon's file area, streamed in
//! chunks (bounded memory for any size), verified with a checksum (XXH3-128), with a progress bar on a
//! terminal. A file fetched appears under its name only once whole and verified.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ferry_client::{Client, Endpoint, Receiver, Sender};
use ferry_common::checksum::FileChecksum;
use ferry_wire::native::{ClientMessage, DaemonMessage};
use indicatif::{ProgressBar, ProgressStyle};
use serde_bytes::ByteBuf;

use crate::cli::{GetArgs, PutArgs};

/// Bytes per `PutData` frame.
const CHUNK: usize = 256 * 1024;

fn progress(size: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// A connection the transfer helpers talk over: a whole client, or the halves of a split one.
pub(crate) trait Conn {
    /// Sends one message.
    async fn send(&mut self, message: &ClientMessage) -> Result<()>;
    /// Receives one message; `None` once the daemon closed the connection.
    async fn recv(&mut self) -> Result<Option<DaemonMessage>>;
    /// A fresh request id.
    fn request_id(&mut self) -> u64;
}

impl Conn for Client {
    async fn send(&mut self, message: &ClientMessage) -> Result<()> {
        Ok(Client::send(self, message).await?)
    }
    async fn recv(&mut self) -> Result<Option<DaemonMessage>> {
        Ok(Client::recv(self).await?)
    }
    fn request_id(&mut self) -> u64 {
        Client::request_id(self)
    }
}

/// The halves of a split client, with request ids of their own.
pub(crate) struct SplitConn<'a> {
    pub sender: &'a Sender,
    pub receiver: &'a mut Receiver,
    pub next_request: u64,
}

impl Conn for SplitConn<'_> {
    async fn send(&mut self, message: &ClientMessage) -> Result<()> {
        Ok(self.sender.send(message.clone()).await?)
    }
    async fn recv(&mut self) -> Result<Option<DaemonMessage>> {
        Ok(self.receiver.recv().await?)
    }
    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }
}

/// Receives until the answer to `request`: `pick` recognizes it (and turns it into the
/// result); an `Error` for the request, or for the connection, fails.
async fn answer_to<T>(
    conn: &mut impl Conn,
    request: u64,
    mut pick: impl FnMut(DaemonMessage) -> Option<T>,
) -> Result<T> {
    loop {
        match conn.recv().await? {
            Some(DaemonMessage::Error {
                message,
                request: r,
                ..
            }) if r == Some(request) || r.is_none() => bail!("{message}"),
            Some(message) => {
                if let Some(answer) = pick(message) {
                    return Ok(answer);
                }
            }
            None => bail!("the daemon closed the connection"),
        }
    }
}

/// Waits for the `Done` (or `Error`) that answers `request`.
async fn done(conn: &mut impl Conn, request: u64) -> Result<()> {
    answer_to(conn, request, |message| {
        matches!(message, DaemonMessage::Done { request: r } if r == request).then_some(())
    })
    .await
}

/// Sends the local file `local` to `remote` in the file area.
pub(crate) async fn upload(
    conn: &mut impl Conn,
    local: &Path,
    remote: &str,
    quiet: bool,
) -> Result<()> {
    let mut file = File::open(local).with_context(|| format!("cannot open {}", local.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("{} is not a regular file", local.display());
    }
    let size = meta.len();
    let request = conn.request_id();
    conn.send(&ClientMessage::PutStart {
        request,
        path: ByteBuf::from(remote.as_bytes().to_vec()),
        size,
        mode: meta.permissions().mode() & 0o777,
    })
    .await?;
    done(conn, request).await?;
    let bar = progress(size, quiet, remote);
    let mut hasher = FileChecksum::new();
    let mut left = size;
    // One buffer for every chunk: the message is encoded from it and it comes back.
    let mut message = ClientMessage::PutData {
        request,
        data: Vec::with_capacity(CHUNK),
    };
    while left > 0 {
        let want = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
        if let ClientMessage::PutData { data, .. } = &mut message {
            data.resize(want, 0);
            file.read_exact(data)
                .with_context(|| format!("{} shrank while it was sent", local.display()))?;
            hasher.update(data);
        }
        left -= want as u64;
        conn.send(&message).await?;
        bar.inc(want as u64);
    }
    let checksum = ByteBuf::from(hasher.digest().to_vec());
    conn.send(&ClientMessage::PutEnd { request, checksum })
        .await?;
    // A failure mid-way was answered already; the first answer tells.
    let verdict = done(conn, request).await;
    bar.finish_and_clear();
    verdict
}

/// Sends a local file.
pub fn put(target: &Endpoint, args: PutArgs) -> Result<i32> {
    let remote = match &args.remote {
        Some(remote) => remote.clone(),
        None => args
            .local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow!("{} has no file name; give REMOTE", args.local.display()))?,
    };
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        upload(&mut client, &args.local, &remote, args.quiet).await?;
        Ok(0)
    })
}

/// Removes a partly received file unless it was completed.
struct Partial {
    path: PathBuf,
    done: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Fetches `remote` from the file area into `local`; it appears there only once verified.
pub(crate) async fn download(
    conn: &mut impl Conn,
    remote: &str,
    local: &Path,
    quiet: bool,
) -> Result<()> {
    let dir = match local.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let request = conn.request_id();
    conn.send(&ClientMessage::Get {
        request,
        path: ByteBuf::from(remote.as_bytes().to_vec()),
    })
    .await?;
    let (size, mode) = answer_to(conn, request, |message| match message {
        DaemonMessage::FileStart {
            request: r,
            size,
            mode,
        } if r == request => Some((size, mode)),
        _ => None,
    })
    .await?;
    let temp = dir.join(format!(
        ".{}.ferry-part-{}",
        local
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut partial = Partial {
        path: temp.clone(),
        done: false,
    };
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    let bar = progress(size, quiet, remote);
    let mut hasher = FileChecksum::new();
    let mut received = 0u64;
    loop {
        match conn.recv().await? {
            Some(DaemonMessage::FileData { request: r, data }) if r == request => {
                received += data.len() as u64;
                if received > size {
                    bail!("the daemon sent more than the {size} bytes it announced");
                }
                out.write_all(&data)
                    .with_context(|| format!("cannot write {}", temp.display()))?;
                hasher.update(&data);
                bar.inc(data.len() as u64);
            }
            Some(DaemonMessage::FileEnd {
                request: r,
                checksum,
            }) if r == request => {
                if received != size {
                    bail!("{received} bytes arrived, {size} announced");
                }
                if !hasher.matches(&checksum) {
                    bail!(
                        "the checksum (XXH3-128) does not match: the file was corrupted on the way"
                    );
                }
                break;
            }
            Some(DaemonMessage::Error {
                message,
                request: r,
                ..
            }) if r == Some(request) || r.is_none() => {
                bail!("{message}")
            }
            Some(_) => {}
            None => bail!("the daemon closed the connection mid-transfer"),
        }
    }
    out.sync_all()?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode & 0o777))?;
    std::fs::rename(&temp, local)
        .with_context(|| format!("cannot move the file to {}", local.display()))?;
    partial.done = true;
    bar.finish_and_clear();
    Ok(())
}

/// Fetches a file.
pub fn get(target: &Endpoint, args: GetArgs) -> Result<i32> {
    let name = Path::new(&args.remote)
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("'{}' names no file", args.remote))?;
    let local = match &args.local {
        Some(local) if local.is_dir() => local.join(&name),
        Some(local) => local.clone(),
        None => name,
    };
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        download(&mut client, &args.remote, &local, args.quiet).await?;
        Ok(0)
    })
}

/// Asks for a fresh sandbox; returns its path in the file area.
pub(crate) async fn sandbox(conn: &mut impl Conn, keep: bool) -> Result<String> {
    let request = conn.request_id();
    conn.send(&ClientMessage::Sandbox { request, keep }).await?;
    answer_to(conn, request, |message| match message {
        DaemonMessage::SandboxReady { request: r, path } if r == request => {
            Some(String::from_utf8_lossy(&path).into_owned())
        }
        _ => None,
    })
    .await
}

/// The regular files under `path` in the file area: (relative path, size, mtime).
pub(crate) async fn list(conn: &mut impl Conn, path: &str) -> Result<Vec<(String, u64, u64)>> {
    let request = conn.request_id();
    conn.send(&ClientMessage::List {
        request,
        path: ByteBuf::from(path.as_bytes().to_vec()),
    })
    .await?;
    answer_to(conn, request, |message| match message {
        DaemonMessage::Listing {
            request: r,
            entries,
        } if r == request => Some(
            entries
                .into_iter()
                .map(|e| {
                    (
                        String::from_utf8_lossy(&e.path).into_owned(),
                        e.size,
                        e.mtime_ns,
                    )
                })
                .collect(),
        ),
        _ => None,
    })
    .await
}
