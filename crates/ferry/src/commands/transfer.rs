//! `ferry put` and `ferry get`: files into and out of the daemon's file area, streamed in
//! chunks (bounded memory for any size), verified with a checksum (XXH3-128), with a progress
//! bar on a terminal. A file fetched appears under its name only once whole and verified.

use std::fs::File;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ferry_client::{Client, Endpoint, FileEntry};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{GetArgs, PutArgs};
use crate::landing::{refused_files, Landed, Landing};

fn progress(size: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    if let Ok(style) =
        // The name takes what the terminal's width leaves (cut, never wrapped).
        ProgressStyle::with_template(
            "{wide_msg} [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
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

/// Whether a fetched file is flushed to disk before it takes its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Flushed first (`ferry get`, a sandbox's results): after a power cut the name holds the
    /// whole file or the previous one.
    Durable,
    /// Not flushed, as a compiler leaves its outputs (`ferry rake`'s results, which the next
    /// run makes again): one `fsync` less on each action's path.
    AsMakeDoes,
}

/// Fetches `remote` from the file area into `landed`, which takes its name only once whole
/// and verified, with the mode the daemon sent; the bytes fetched.
pub(crate) async fn download(
    client: &mut Client,
    remote: &str,
    mut landed: Landed,
    quiet: bool,
    flush: Flush,
) -> Result<u64> {
    let bar = progress(0, quiet, remote);
    let got = client
        .get(remote, landed.file(), |done, size| {
            bar.set_length(size);
            bar.set_position(done);
        })
        .await;
    bar.finish_and_clear();
    let meta = got?;
    if flush == Flush::Durable {
        landed.file().sync_all()?;
    }
    landed.commit(meta.mode)?;
    Ok(meta.size)
}

/// Fetches the regular files `entries` of the directory `dir` in the file area into
/// `landing`, each under its path there; the bytes fetched. A name that may not land fails the
/// whole, naming every such name (the others are fetched).
pub(crate) async fn download_into(
    client: &mut Client,
    dir: &str,
    entries: &[&FileEntry],
    landing: &Landing,
    quiet: bool,
    flush: Flush,
) -> Result<u64> {
    let mut received = 0;
    let mut refused = Vec::new();
    for entry in entries {
        let path = String::from_utf8_lossy(&entry.path);
        match landing.create(&entry.path) {
            Ok(landed) => {
                received +=
                    download(client, &format!("{dir}/{path}"), landed, quiet, flush).await?;
            }
            Err(refusal) => refused.push(refusal),
        }
    }
    if !refused.is_empty() {
        bail!("{}", refused_files(&refused));
    }
    Ok(received)
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
    // The file lands in the directory the user named, under its name, and only there: over a
    // regular file or nothing, never through a symbolic link.
    let dir = match local.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = local
        .file_name()
        .ok_or_else(|| anyhow!("{} names no file", local.display()))?;
    if !args.force && local.symlink_metadata().is_ok() {
        bail!(
            "{} exists: --force replaces it (ferry get never overwrites otherwise)",
            local.display()
        );
    }
    let landing =
        Landing::open(&dir, &[]).with_context(|| format!("cannot open {}", dir.display()))?;
    let landed = landing.create(file_name.as_bytes())?;
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        download(
            &mut client,
            &args.remote,
            landed,
            args.quiet,
            Flush::Durable,
        )
        .await?;
        Ok(0)
    })
}
