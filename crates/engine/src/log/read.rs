//! Reading a job's log: live from a running job (the file's stored part, then the in-memory
//! window, following progress), or a finished job's whole file (head, gap, tail). See the
//! parent module for how the parts fit.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::{LogFile, LogProgress, Shared, READ_BATCH};
use crate::logfile::{
    decode_dropped, decode_header, parse_records, stream_slot, LogError, RecordKind,
};
use crate::types::{ExitReport, OutputStream};

/// One thing a reader yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputEvent {
    /// A chunk of output.
    Chunk {
        /// Which stream.
        stream: OutputStream,
        /// Byte offset of `data` in that stream (a jump means bytes were skipped).
        offset: u64,
        /// The bytes (at most [`MAX_RECORD_DATA`]).
        data: Bytes,
    },
    /// The job ended; nothing follows.
    Exit(ExitReport),
    /// A non-following reader reached the end of what it can read now; nothing follows.
    End,
    /// Storing the output failed (a full disk, a file-size limit): it still arrives live,
    /// but the log will not hold it. Yielded once, to live readers.
    StoreFailed(String),
}

/// Reads a job's output: live from a running job's log, or a finished job's whole log file.
#[derive(Debug)]
pub struct LogReader(ReaderKind);

#[derive(Debug)]
enum ReaderKind {
    Live(LiveReader),
    Stored(StoredReader),
}

impl LogReader {
    /// A live reader of a job's log from stream position `at` (log position and per-stream
    /// offsets), following it to its end with `follow`; `holder` is its id among the holding
    /// readers, if it is one.
    pub(super) fn live(
        file: Arc<LogFile>,
        shared: Arc<Shared>,
        rx: watch::Receiver<LogProgress>,
        at: (u64, [u64; 2]),
        follow: bool,
        holder: Option<u64>,
    ) -> LogReader {
        LogReader(ReaderKind::Live(LiveReader {
            file,
            shared,
            rx,
            pos: at.0,
            offsets: at.1,
            follow,
            holder,
            pending: VecDeque::new(),
            done: false,
            warned: false,
        }))
    }

    /// Reads a finished job's log file `path` whole, then yields `exit`. With `missing_ok`, a
    /// file that does not exist means the job stored no output.
    pub fn stored(path: &Path, exit: ExitReport, missing_ok: bool) -> LogReader {
        LogReader(ReaderKind::Stored(StoredReader {
            path: Some(path.to_owned()),
            missing_ok,
            pos: None,
            offsets: [0, 0],
            exit: Some(exit),
            pending: VecDeque::new(),
        }))
    }

    /// Yields only `exit` (for a finished job read without replay).
    pub fn exit_only(exit: ExitReport) -> LogReader {
        LogReader(ReaderKind::Stored(StoredReader {
            path: None,
            missing_ok: true,
            pos: None,
            offsets: [0, 0],
            exit: Some(exit),
            pending: VecDeque::new(),
        }))
    }

    /// The next event, or `None` once the exit (or end) has been yielded.
    pub async fn next(&mut self) -> Result<Option<OutputEvent>, LogError> {
        match &mut self.0 {
            ReaderKind::Live(reader) => reader.next().await,
            ReaderKind::Stored(reader) => reader.next().await,
        }
    }
}

/// Queues an output chunk at its stream's offset and moves that offset past it.
fn push_chunk(
    pending: &mut VecDeque<OutputEvent>,
    offsets: &mut [u64; 2],
    stream: OutputStream,
    data: Bytes,
) {
    let slot = stream_slot(stream);
    let len = data.len() as u64;
    pending.push_back(OutputEvent::Chunk {
        stream,
        offset: offsets[slot],
        data,
    });
    offsets[slot] += len;
}

/// Reads a finished job's log file, header to end.
#[derive(Debug)]
struct StoredReader {
    /// The log file; none: only the exit is read.
    path: Option<PathBuf>,
    missing_ok: bool,
    /// File offset of the next record; `None` before the header is read.
    pos: Option<u64>,
    offsets: [u64; 2],
    /// Yielded last (taken then).
    exit: Option<ExitReport>,
    pending: VecDeque<OutputEvent>,
}

impl StoredReader {
    async fn next(&mut self) -> Result<Option<OutputEvent>, LogError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let Some(exit) = self.exit.as_ref() else {
                return Ok(None);
            };
            let Some(path) = self.path.clone() else {
                let exit = exit.clone();
                self.exit = None;
                return Ok(Some(OutputEvent::Exit(exit)));
            };
            let start = self.pos.unwrap_or(0);
            let shown = path.display().to_string();
            let buf = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                let file = File::open(&path)?;
                let mut buf = vec![0; READ_BATCH];
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read_at(&mut buf[filled..], start + filled as u64)? {
                        0 => break,
                        n => filled += n,
                    }
                }
                buf.truncate(filled);
                Ok(buf)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            let buf = match buf {
                Ok(buf) => Bytes::from(buf),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if self.missing_ok && self.pos.is_none() {
                        let exit = exit.clone();
                        self.exit = None;
                        return Ok(Some(OutputEvent::Exit(exit)));
                    }
                    return Err(LogError::Missing(shown));
                }
                Err(e) => return Err(e.into()),
            };
            let Some(pos) = self.pos else {
                let (_, len) = decode_header(&buf)?;
                self.pos = Some(len as u64);
                continue;
            };
            if buf.is_empty() {
                let exit = exit.clone();
                self.exit = None;
                return Ok(Some(OutputEvent::Exit(exit)));
            }
            let (records, at) = parse_records(&buf).map_err(|bad| {
                LogError::Damaged(format!("bad record at byte {}", pos + bad as u64))
            })?;
            if at == 0 {
                return Err(LogError::Damaged(format!(
                    "it is cut short at byte {} (a record is incomplete)",
                    pos + buf.len() as u64
                )));
            }
            for (kind, range) in records {
                match kind {
                    RecordKind::Output(stream) => push_chunk(
                        &mut self.pending,
                        &mut self.offsets,
                        stream,
                        buf.slice(range),
                    ),
                    RecordKind::Dropped => {
                        let dropped = decode_dropped(&buf[range]);
                        self.offsets[0] += dropped[0];
                        self.offsets[1] += dropped[1];
                    }
                    RecordKind::End => {}
                }
            }
            self.pos = Some(pos + at as u64);
        }
    }
}

/// Reads a job log from some position, following it live when asked.
#[derive(Debug)]
struct LiveReader {
    file: Arc<LogFile>,
    shared: Arc<Shared>,
    rx: watch::Receiver<LogProgress>,
    pos: u64,
    offsets: [u64; 2],
    follow: bool,
    holder: Option<u64>,
    pending: VecDeque<OutputEvent>,
    done: bool,
    /// Whether the store failure was reported.
    warned: bool,
}

impl Drop for LiveReader {
    fn drop(&mut self) {
        if let Some(id) = self.holder {
            let mut window = self.shared.lock();
            window.holders.retain(|&(holder, _)| holder != id);
            window.release_if_unneeded();
            drop(window);
            self.shared.advanced.notify_all();
        }
    }
}

impl LiveReader {
    /// The next event, or `None` once the exit (or end) has been yielded.
    async fn next(&mut self) -> Result<Option<OutputEvent>, LogError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            let progress = self.rx.borrow_and_update().clone();
            if let (false, Some(error)) = (self.warned, &progress.store_error) {
                self.warned = true;
                self.pending
                    .push_back(OutputEvent::StoreFailed(error.clone()));
            }
            if self.pos < progress.end {
                if self.pos < progress.stored {
                    self.read_batch(progress.stored).await?;
                } else {
                    self.take_from_window(progress.end);
                }
                if !self.pending.is_empty() {
                    continue;
                }
            }
            if let Some(exit) = progress.exit {
                self.done = true;
                return Ok(Some(OutputEvent::Exit(exit)));
            }
            if !self.follow && self.pending.is_empty() {
                self.done = true;
                return Ok(Some(OutputEvent::End));
            }
            if self.rx.changed().await.is_err() {
                // The job was dropped without an exit (engine gone): end the stream.
                self.done = true;
                return Ok(Some(OutputEvent::End));
            }
        }
    }

    /// Queues the window's records from the reader's position on (skipping ahead to the
    /// window's start if the reader fell behind it) and records the new position.
    fn take_from_window(&mut self, end: u64) {
        let mut window = self.shared.lock();
        let start = window
            .records
            .iter()
            .position(|record| record.end() > self.pos);
        if let Some(start) = start {
            for record in window.records.range(start..) {
                if record.pos < self.pos {
                    continue; // cannot happen: records are whole; kept for safety
                }
                self.pending.push_back(OutputEvent::Chunk {
                    stream: record.stream,
                    offset: record.offset,
                    data: record.data.clone(),
                });
                self.pos = record.end();
                self.offsets[stream_slot(record.stream)] = record.offset + record.data.len() as u64;
            }
        } else if window.records.is_empty() && self.pos < end {
            // Only after the job ended (the window was emptied) with unstored records left.
            self.pos = end;
        }
        if let Some(id) = self.holder {
            let pos = self.pos;
            if let Some(entry) = window.holders.iter_mut().find(|(h, _)| *h == id) {
                entry.1 = pos;
            }
            drop(window);
            self.shared.advanced.notify_all();
        }
    }

    async fn read_batch(&mut self, stored: u64) -> Result<(), LogError> {
        let start = self.pos;
        let want = (stored - start).min(READ_BATCH as u64) as usize;
        let file = Arc::clone(&self.file);
        let buf = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut buf = vec![0; want];
            let base = file.base();
            file.for_reading()?.read_exact_at(&mut buf, base + start)?;
            Ok(buf)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        let buf = Bytes::from(buf);
        let damaged = |at: u64| LogError::Damaged(format!("bad record at output byte {at}"));
        let (records, at) = parse_records(&buf).map_err(|bad| damaged(start + bad as u64))?;
        if at == 0 {
            return Err(damaged(start));
        }
        for (kind, data) in records {
            let RecordKind::Output(stream) = kind else {
                return Err(damaged(start + data.start as u64));
            };
            push_chunk(
                &mut self.pending,
                &mut self.offsets,
                stream,
                buf.slice(data),
            );
        }
        self.pos = start + at as u64;
        if let Some(id) = self.holder {
            let pos = self.pos;
            if let Some(entry) = self
                .shared
                .lock()
                .holders
                .iter_mut()
                .find(|(h, _)| *h == id)
            {
                entry.1 = pos;
            }
            self.shared.advanced.notify_all();
        }
        Ok(())
    }
}
