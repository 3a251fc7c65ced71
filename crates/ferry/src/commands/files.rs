//! `ferry ls` and `ferry rm`: what the daemon's file area holds (the whole of it for the
//! owner, one's own part over TLS), and removing from it.

use anyhow::Result;
use ferry_client::Endpoint;

use crate::cli::{LsArgs, RmArgs};

/// Lists the file area (or a directory of it).
pub fn ls(target: &Endpoint, args: LsArgs) -> Result<i32> {
    // Empty: the whole area.
    let dir = args.dir.clone().unwrap_or_default();
    let listing = crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        anyhow::Ok(client.list(&dir).await?)
    })?;
    let shown = |path: &[u8]| {
        let path = String::from_utf8_lossy(path);
        match args.dir.as_deref() {
            Some(dir) if !dir.is_empty() => format!("{}/{path}", dir.trim_end_matches('/')),
            _ => path.into_owned(),
        }
    };
    let mut out = String::new();
    if args.json {
        for file in &listing.files {
            let line = serde_json::json!({
                "path": shown(&file.path),
                "size": file.size,
                "mtime_ms": file.mtime_ns / 1_000_000,
            });
            out.push_str(&format!("{line}\n"));
        }
        for other in &listing.others {
            let line = serde_json::json!({ "path": shown(&other.path), "kind": other.kind });
            out.push_str(&format!("{line}\n"));
        }
    } else {
        let mut rows: Vec<[String; 3]> = listing
            .files
            .iter()
            .map(|file| {
                [
                    file.size.to_string(),
                    super::ps::timestamp(file.mtime_ns / 1_000_000),
                    shown(&file.path),
                ]
            })
            .collect();
        rows.extend(
            listing
                .others
                .iter()
                .map(|other| ["-".into(), format!("({})", other.kind), shown(&other.path)]),
        );
        rows.sort_by(|a, b| a[2].cmp(&b[2]));
        out.push_str(&crate::table::render(&["SIZE", "MODIFIED", "PATH"], &rows));
    }
    print!("{out}");
    Ok(0)
}

/// Removes paths from the file area; 1 when any could not be removed (each is said).
pub fn rm(target: &Endpoint, args: RmArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let mut failed = false;
        for path in &args.paths {
            if let Err(e) = client.remove(path, args.recursive).await {
                eprintln!("ferry: rm: {e}");
                failed = true;
            }
        }
        Ok(i32::from(failed))
    })
}
