//! `ferry put` and `ferry get`: files into and out of the daemon's file area, streamed in
//! chunks (bounded memory for any size), verified with a checksum (XXH3-128), with a progress
//! bar on a terminal. A file fetched appears under its name only once whole and verified.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ferry_client::{Client, Endpoint};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{GetArgs, PutArgs};

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

/// Sends the local file `local` to `remote` in the file area.
pub(crate) async fn upload(
    client: &mut Client,
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
    let bar = progress(size, quiet, remote);
    let sent = client
        .put(
            remote,
            &mut file,
            size,
            meta.permissions().mode() & 0o777,
            |done| bar.set_position(done),
        )
        .await;
    bar.finish_and_clear();
    Ok(sent?)
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
    client: &mut Client,
    remote: &str,
    local: &Path,
    quiet: bool,
) -> Result<()> {
    let dir = match local.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
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
    let bar = progress(0, quiet, remote);
    let got = client
        .get(remote, &mut out, |done, size| {
            bar.set_length(size);
            bar.set_position(done);
        })
        .await;
    bar.finish_and_clear();
    let meta = got?;
    out.sync_all()?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(meta.mode & 0o777))?;
    std::fs::rename(&temp, local)
        .with_context(|| format!("cannot move the file to {}", local.display()))?;
    partial.done = true;
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
