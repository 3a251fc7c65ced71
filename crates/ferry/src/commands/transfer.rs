//! `ferry put` and `ferry get`: files into and out of the daemon's file area, streamed in
//! chunks (bounded memory for any size), verified with SHA-256, with a progress bar on a
//! terminal. A file fetched appears under its name only once whole and verified.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ferry_client::Endpoint;
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

/// Sends a local file.
pub fn put(target: &Endpoint, args: PutArgs) -> Result<i32> {
    let mut file =
        File::open(&args.local).with_context(|| format!("cannot open {}", args.local.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("{} is not a regular file", args.local.display());
    }
    let size = meta.len();
    let mode = meta.permissions().mode() & 0o777;
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
        let request = client.request_id();
        client
            .send(&ClientMessage::PutStart {
                request,
                path: ByteBuf::from(remote.as_bytes().to_vec()),
                size,
                mode,
            })
            .await?;
        answer(&mut client.recv().await?, request)?;
        let (mut receiver, sender) = client.split();
        // The daemon may refuse mid-way (disk full): watch for its answer while sending.
        let mut verdict = tokio::spawn(async move {
            loop {
                let mut message = receiver.recv().await?;
                if answer(&mut message, request)? {
                    return Ok::<(), anyhow::Error>(());
                }
            }
        });
        let bar = progress(size, args.quiet, &remote);
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut left = size;
        while left > 0 {
            let want = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
            let mut data = vec![0u8; want];
            file.read_exact(&mut data)
                .with_context(|| format!("{} shrank while it was sent", args.local.display()))?;
            hasher.update(&data);
            left -= want as u64;
            if verdict.is_finished() {
                break;
            }
            sender
                .send(ClientMessage::PutData { request, data })
                .await?;
            bar.inc(want as u64);
        }
        if !verdict.is_finished() {
            let sha256 = ByteBuf::from(hasher.finish().as_ref().to_vec());
            sender
                .send(ClientMessage::PutEnd { request, sha256 })
                .await?;
        }
        let result = (&mut verdict).await.map_err(|e| anyhow!("{e}"))?;
        bar.finish_and_clear();
        result.map(|()| 0)
    })
}

/// Reads a `Done` or `Error` for `request`: `Ok(true)` for done, `Ok(false)` for anything
/// else, an error for an error.
fn answer(message: &mut Option<DaemonMessage>, request: u64) -> Result<bool> {
    match message.take() {
        Some(DaemonMessage::Done { request: r }) if r == request => Ok(true),
        Some(DaemonMessage::Error {
            message,
            request: r,
            ..
        }) if r == Some(request) || r.is_none() => Err(anyhow!("{message}")),
        Some(_) => Ok(false),
        None => Err(anyhow!("the daemon closed the connection")),
    }
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
    let dir = match local.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let request = client.request_id();
        client
            .send(&ClientMessage::Get {
                request,
                path: ByteBuf::from(args.remote.as_bytes().to_vec()),
            })
            .await?;
        let (size, mode) = loop {
            match client.recv().await? {
                Some(DaemonMessage::FileStart {
                    request: r,
                    size,
                    mode,
                }) if r == request => break (size, mode),
                Some(DaemonMessage::Error { message, .. }) => bail!("{message}"),
                Some(_) => {}
                None => bail!("the daemon closed the connection"),
            }
        };
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
        let bar = progress(size, args.quiet, &args.remote);
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut received = 0u64;
        loop {
            match client.recv().await? {
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
                Some(DaemonMessage::FileEnd { request: r, sha256 }) if r == request => {
                    if received != size {
                        bail!("{received} bytes arrived, {size} announced");
                    }
                    if hasher.finish().as_ref() != sha256.as_slice() {
                        bail!("SHA-256 does not match: the file was corrupted on the way");
                    }
                    break;
                }
                Some(DaemonMessage::Error { message, .. }) => bail!("{message}"),
                Some(_) => {}
                None => bail!("the daemon closed the connection mid-transfer"),
            }
        }
        out.sync_all()?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode & 0o777))?;
        std::fs::rename(&temp, &local)
            .with_context(|| format!("cannot move the file to {}", local.display()))?;
        partial.done = true;
        bar.finish_and_clear();
        Ok(0)
    })
}
