//! File transfers and sandboxes on a native connection: `PutStart`/`PutData`/`PutEnd`, `Get`,
//! `Sandbox` and `List`, over the connection's file area.

use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::Arc;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_engine::files::{check_name, FileArea, FileError};
use ferry_io::frame;
use ferry_wire::native::{ClientMessage, DaemonMessage, FileEntry, OtherEntry};
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use super::{error_code, Connection};
use crate::dialects::Receiving;
use crate::outbox::Outbox;
use crate::policy::{Answer, Refusal, RefusalKind};

/// Files being put at once on one connection.
const MAX_UPLOADS: usize = 32;

/// Most files a `Listing` holds.
const MAX_LISTING: usize = 100_000;

/// Bytes per `FileData` frame.
const FILE_CHUNK: usize = 256 * 1024;

/// A file being put, written (and hashed) by a blocking task of its own while the connection
/// goes on decoding the next chunks: receiving and writing overlap.
pub(super) struct UploadPipe {
    chunks: mpsc::Sender<Vec<u8>>,
    writer: tokio::task::JoinHandle<Result<Receiving, FileError>>,
    /// The file's name, to say which one stalled.
    name: String,
    /// When its last bytes came (or it started).
    last_data: Instant,
}

/// Chunks queued for an upload's writer.
const UPLOAD_QUEUE: usize = 8;

impl UploadPipe {
    pub(super) fn start(mut upload: Receiving, name: String) -> UploadPipe {
        let (chunks, mut queue) = mpsc::channel::<Vec<u8>>(UPLOAD_QUEUE);
        let writer = tokio::task::spawn_blocking(move || {
            while let Some(data) = queue.blocking_recv() {
                upload.write(&data)?;
            }
            Ok(upload)
        });
        UploadPipe {
            chunks,
            writer,
            name,
            last_data: Instant::now(),
        }
    }

    /// Waits for every queued chunk to be written; the upload back, or why it failed.
    pub(super) async fn finish_writing(self) -> Result<Receiving, FileError> {
        drop(self.chunks);
        self.writer.await.map_err(task_failed)?
    }
}

/// Resolves with the put that has gone longest without a byte, once it has gone `limit`
/// without one; never when there is no limit or no put.
pub(super) async fn stalled(uploads: &HashMap<u64, UploadPipe>, limit: Option<Duration>) -> u64 {
    let oldest = uploads
        .iter()
        .min_by_key(|(_, pipe)| pipe.last_data)
        .map(|(request, pipe)| (*request, pipe.last_data));
    match (limit, oldest) {
        (Some(limit), Some((request, since))) => {
            tokio::time::sleep_until((since + limit).into()).await;
            request
        }
        _ => std::future::pending().await,
    }
}

impl Connection {
    pub(super) async fn file_request(&mut self, request: ClientMessage) {
        match request {
            ClientMessage::PutStart {
                request,
                path,
                size,
                mode,
            } => self.put_start(request, path.into_vec(), size, mode).await,
            ClientMessage::PutData { request, data } => self.put_data(request, data).await,
            ClientMessage::PutEnd { request, checksum } => self.put_end(request, checksum).await,
            ClientMessage::Get { request, path } => self.get(request, path.into_vec()),
            ClientMessage::Sandbox { request, keep } => self.sandbox(request, keep).await,
            ClientMessage::List { request, path } => self.list(request, path.into_vec()).await,
            ClientMessage::Link { request, from, to } => self.link(request, from, to).await,
            ClientMessage::Remove {
                request,
                path,
                recursive,
            } => self.remove(request, path, recursive).await,
            _ => {}
        }
    }

    async fn file_error(&self, request: u64, error: FileError) {
        tracing::info!(
            peer = self.peer_id(),
            request,
            "file transfer refused or failed: {error}"
        );
        self.refuse(Some(request), error.refusal()).await;
    }

    /// Refuses a request for a reason of this module's own.
    async fn refuse_file(&self, request: u64, kind: RefusalKind, message: String) {
        self.refuse(Some(request), Refusal::new(kind, message))
            .await;
    }

    async fn remove(&mut self, request: u64, path: Vec<u8>, recursive: bool) {
        let area = Arc::clone(&self.files);
        let removed =
            tokio::task::spawn_blocking(move || area.remove(check_name(&path)?, recursive)).await;
        match removed {
            Ok(Ok(())) => self.send(&DaemonMessage::Done { request }).await,
            Ok(Err(error)) => self.file_error(request, error).await,
            Err(e) => self.file_error(request, task_failed(e)).await,
        }
    }

    async fn link(&mut self, request: u64, from: Vec<u8>, to: Vec<u8>) {
        let area = Arc::clone(&self.files);
        let linked =
            tokio::task::spawn_blocking(move || area.link(check_name(&from)?, check_name(&to)?))
                .await;
        match linked {
            Ok(Ok(())) => self.send(&DaemonMessage::Done { request }).await,
            Ok(Err(error)) => self.file_error(request, error).await,
            Err(e) => self.file_error(request, task_failed(e)).await,
        }
    }

    async fn put_start(&mut self, request: u64, path: Vec<u8>, size: u64, mode: u32) {
        if self.uploads.len() >= MAX_UPLOADS {
            let message = format!("at most {MAX_UPLOADS} files may be put at once on a connection");
            self.failed_uploads.insert(request);
            return self
                .refuse_file(request, RefusalKind::LimitReached, message)
                .await;
        }
        let limit = self.server.config.max_file_size;
        if size > limit {
            let message =
                format!("a file of {size} bytes is over the daemon's limit of {limit} bytes");
            self.failed_uploads.insert(request);
            return self
                .refuse_file(request, RefusalKind::LimitReached, message)
                .await;
        }
        let area = Arc::clone(&self.files);
        let daemon = Arc::clone(&self.server);
        let principal = self.access.principal().clone();
        let shown = String::from_utf8_lossy(&path).into_owned();
        let opened = tokio::task::spawn_blocking(move || {
            let name = check_name(&path).map_err(|e| FileError::from(e).refusal())?;
            Receiving::start(&daemon, &principal, &area, name, size, mode)
        })
        .await;
        match opened {
            Ok(Ok(upload)) => {
                self.uploads
                    .insert(request, UploadPipe::start(upload, shown));
                self.send(&DaemonMessage::Done { request }).await;
            }
            Ok(Err(refusal)) => {
                self.failed_uploads.insert(request);
                tracing::info!(
                    peer = self.peer_id(),
                    request,
                    "file transfer refused: {}",
                    refusal.message
                );
                self.refuse(Some(request), refusal).await;
            }
            Err(e) => {
                self.failed_uploads.insert(request);
                self.refuse_file(request, RefusalKind::Internal, e.to_string())
                    .await;
            }
        }
    }

    /// Drops a put that went too long without a byte: its temporary file and its room go,
    /// and the client is told; the rest of its frames are dropped quietly.
    pub(super) async fn drop_stalled(&mut self, request: u64) {
        let Some(pipe) = self.uploads.remove(&request) else {
            return;
        };
        self.failed_uploads.insert(request);
        let limit = self.server.config.upload_idle_timeout.unwrap_or_default();
        let message = format!(
            "{}: no bytes came for {}s: the transfer was dropped",
            pipe.name,
            limit.as_secs_f32()
        );
        tracing::info!(peer = self.peer_id(), request, "{message}");
        // Dropping its writer's queue ends it; the upload it holds goes with it.
        drop(pipe);
        self.refuse_file(request, RefusalKind::LimitReached, message)
            .await;
    }

    async fn put_data(&mut self, request: u64, data: Vec<u8>) {
        let Some(pipe) = self.uploads.get_mut(&request) else {
            if !self.failed_uploads.contains(&request) {
                let message = format!("no file transfer {request} is in progress");
                self.failed_uploads.insert(request);
                self.refuse_file(request, RefusalKind::InvalidRequest, message)
                    .await;
            }
            return;
        };
        pipe.last_data = Instant::now();
        if pipe.chunks.send(data).await.is_err() {
            // The writer stopped: it failed. Report why; the rest of this put is dropped.
            if let Some(pipe) = self.uploads.remove(&request) {
                self.failed_uploads.insert(request);
                match pipe.finish_writing().await {
                    Err(error) => self.file_error(request, error).await,
                    Ok(_) => {
                        let message = "the file writer stopped".to_owned();
                        self.refuse_file(request, RefusalKind::Internal, message)
                            .await;
                    }
                }
            }
        }
    }

    async fn put_end(&mut self, request: u64, checksum: ByteBuf) {
        let Some(pipe) = self.uploads.remove(&request) else {
            if !self.failed_uploads.remove(&request) {
                let message = format!("no file transfer {request} is in progress");
                self.refuse_file(request, RefusalKind::InvalidRequest, message)
                    .await;
            }
            return;
        };
        let upload = match pipe.finish_writing().await {
            Ok(upload) => upload,
            Err(error) => return self.file_error(request, error).await,
        };
        match tokio::task::spawn_blocking(move || upload.finish(&checksum)).await {
            Ok(Ok(())) => self.send(&DaemonMessage::Done { request }).await,
            Ok(Err(error)) => self.file_error(request, error).await,
            Err(e) => {
                self.refuse_file(request, RefusalKind::Internal, e.to_string())
                    .await
            }
        }
    }

    /// Streams a file to the client from a task of its own (at the client's pace).
    fn get(&mut self, request: u64, path: Vec<u8>) {
        let area = Arc::clone(&self.files);
        let out = self.out.clone();
        let peer = self.peer_id().to_owned();
        self.followers.spawn(async move {
            if let Err(error) = send_file(&area, request, path, &out).await {
                tracing::info!(peer, request, "file transfer refused or failed: {error}");
                let refusal = DaemonMessage::Error {
                    request: Some(request),
                    code: error_code(error.kind()),
                    message: error.to_string(),
                };
                queue(&out, refusal).await;
            }
        });
    }

    /// The absolute directory of a sandbox named by a client.
    pub(super) async fn sandbox_dir(&self, name: Vec<u8>) -> Result<PathBuf, FileError> {
        let area = Arc::clone(&self.files);
        tokio::task::spawn_blocking(move || area.directory(check_name(&name)?))
            .await
            .map_err(task_failed)?
    }

    async fn sandbox(&mut self, request: u64, keep: bool) {
        let area = Arc::clone(&self.files);
        match tokio::task::spawn_blocking(move || area.create_sandbox()).await {
            Ok(Ok(path)) => {
                if !keep {
                    self.sandboxes.push(path.clone());
                }
                let path = ByteBuf::from(path.into_os_string().into_vec());
                self.send(&DaemonMessage::SandboxReady { request, path })
                    .await;
            }
            Ok(Err(error)) => self.file_error(request, error).await,
            Err(e) => {
                self.refuse_file(request, RefusalKind::Internal, e.to_string())
                    .await
            }
        }
    }

    async fn list(&mut self, request: u64, path: Vec<u8>) {
        let area = Arc::clone(&self.files);
        // An empty path lists the whole area (the client's part of it).
        let listed = tokio::task::spawn_blocking(move || {
            let dir = if path.is_empty() {
                std::path::Path::new(".")
            } else {
                check_name(&path)?
            };
            area.list(dir, MAX_LISTING)
        })
        .await;
        let bytes = |path: PathBuf| ByteBuf::from(path.into_os_string().into_vec());
        match listed.map_err(task_failed) {
            Ok(Ok(found)) => {
                let entries = found
                    .files
                    .into_iter()
                    .map(|file| FileEntry {
                        path: bytes(file.path),
                        size: file.size,
                        mtime_ns: file.mtime_ns,
                    })
                    .collect();
                let others = found
                    .others
                    .into_iter()
                    .map(|(path, kind)| OtherEntry {
                        path: bytes(path),
                        kind: kind.into(),
                    })
                    .collect();
                self.send(&DaemonMessage::Listing {
                    request,
                    entries,
                    others,
                })
                .await;
            }
            Ok(Err(error)) | Err(error) => self.file_error(request, error).await,
        }
    }

    /// Removes the sandboxes made on this connection that were not to be kept.
    pub(super) async fn remove_sandboxes(&mut self) {
        let sandboxes = std::mem::take(&mut self.sandboxes);
        if sandboxes.is_empty() {
            return;
        }
        let area = Arc::clone(&self.files);
        let _ = tokio::task::spawn_blocking(move || {
            for sandbox in sandboxes {
                if let Err(e) = area.remove_sandbox(&sandbox) {
                    tracing::warn!("cannot remove sandbox: {e}");
                }
            }
        })
        .await;
    }
}

/// Queues a message in a connection's outbox; whether the client is still there.
async fn queue(out: &Outbox, message: DaemonMessage) -> bool {
    match frame(&message) {
        Ok(bytes) => out.send(bytes).await,
        Err(_) => false,
    }
}

/// A blocking task's failure, as a file error.
fn task_failed(error: tokio::task::JoinError) -> FileError {
    FileError::Io {
        name: "file transfer".into(),
        source: std::io::Error::other(error.to_string()),
    }
}

/// Sends file `path` of `area` as `FileStart`, `FileData`... and `FileEnd` answering
/// `request`; stops quietly if the client goes away.
async fn send_file(
    area: &Arc<FileArea>,
    request: u64,
    path: Vec<u8>,
    out: &Outbox,
) -> Result<(), FileError> {
    let area = Arc::clone(area);
    let mut download = tokio::task::spawn_blocking(move || area.download(check_name(&path)?))
        .await
        .map_err(task_failed)??;
    let (size, mode) = (download.size, download.mode);
    if !queue(
        out,
        DaemonMessage::FileStart {
            request,
            size,
            mode,
        },
    )
    .await
    {
        return Ok(());
    }
    loop {
        let (data, next) = tokio::task::spawn_blocking(move || {
            download.read_chunk(FILE_CHUNK).map(|data| (data, download))
        })
        .await
        .map_err(task_failed)??;
        download = next;
        if data.is_empty() {
            let checksum = ByteBuf::from(download.checksum());
            queue(out, DaemonMessage::FileEnd { request, checksum }).await;
            return Ok(());
        }
        if !queue(out, DaemonMessage::FileData { request, data }).await {
            return Ok(());
        }
    }
}
