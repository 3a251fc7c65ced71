//! The append-only job log: every chunk a job writes, in order, with its stream.
//!
//! One file per job. A record is a 5-byte header (stream byte, then the data length as a
//! little-endian u32) followed by the data. The writer (the job's output pump) appends whole
//! records and then publishes the new length through a `watch` channel; readers read the file at
//! their own pace up to the published length, so a slow reader never slows the job or other
//! readers, and nothing is lost. Memory use is bounded by one batch per reader.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::{ExitReport, OutputStream};

/// Length of a record header in the log file.
const RECORD_HEADER_LEN: usize = 5;

/// Largest data length of one record (one pump read).
pub const MAX_RECORD_DATA: usize = 64 * 1024;

/// How many bytes a reader takes from the file at a time.
const READ_BATCH: usize = 4 * MAX_RECORD_DATA;

/// What the writer has published so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogProgress {
    /// Bytes of whole records in the file.
    pub file_len: u64,
    /// Bytes of stdout data written so far.
    pub stdout_len: u64,
    /// Bytes of stderr data written so far.
    pub stderr_len: u64,
    /// Set once the job has ended: no more records will come.
    pub exit: Option<ExitReport>,
}

/// A job's log: its file and the published progress.
#[derive(Debug)]
pub(crate) struct JobLog {
    path: PathBuf,
    file: Arc<File>,
    progress: watch::Sender<LogProgress>,
}

impl JobLog {
    /// Creates (or truncates) the log file at `path`.
    pub fn create(path: &Path) -> std::io::Result<JobLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        Ok(JobLog {
            path: path.to_owned(),
            file: Arc::new(file),
            progress: watch::Sender::new(LogProgress::default()),
        })
    }

    /// A writer for the pump thread.
    pub fn writer(&self) -> LogWriter {
        LogWriter {
            file: Arc::clone(&self.file),
            progress: self.progress.clone(),
            buf: vec![0; RECORD_HEADER_LEN + MAX_RECORD_DATA],
        }
    }

    /// Publishes the job's end; readers see it after the last record.
    pub fn finish(&self, exit: ExitReport) {
        self.progress.send_modify(|p| p.exit = Some(exit));
    }

    /// A reader from the start (`replay`) or from the current end.
    pub fn reader(&self, replay: bool, follow: bool) -> LogReader {
        let rx = self.progress.subscribe();
        let (file_pos, offsets) = if replay {
            (0, [0, 0])
        } else {
            let p = rx.borrow();
            (p.file_len, [p.stdout_len, p.stderr_len])
        };
        LogReader {
            file: Arc::clone(&self.file),
            rx,
            file_pos,
            offsets,
            follow,
            pending: std::collections::VecDeque::new(),
            done: false,
        }
    }

    /// Removes the log file (when the job is forgotten).
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), "cannot remove job log: {e}");
        }
    }
}

/// Appends records to a job log; owned by the job's pump thread.
pub(crate) struct LogWriter {
    file: Arc<File>,
    progress: watch::Sender<LogProgress>,
    buf: Vec<u8>,
}

impl LogWriter {
    /// The buffer to read the next chunk of data into (at most [`MAX_RECORD_DATA`] bytes).
    pub fn data_buf(&mut self) -> &mut [u8] {
        &mut self.buf[RECORD_HEADER_LEN..]
    }

    /// Appends the first `len` bytes of [`Self::data_buf`] as a record of `stream`.
    pub fn commit(&mut self, stream: OutputStream, len: usize) -> std::io::Result<()> {
        debug_assert!(len > 0 && len <= MAX_RECORD_DATA);
        self.buf[0] = stream_tag(stream);
        // `len` is at most MAX_RECORD_DATA, which fits a u32.
        self.buf[1..RECORD_HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
        (&*self.file).write_all(&self.buf[..RECORD_HEADER_LEN + len])?;
        self.progress.send_modify(|p| {
            p.file_len += (RECORD_HEADER_LEN + len) as u64;
            match stream {
                OutputStream::Stdout => p.stdout_len += len as u64,
                OutputStream::Stderr => p.stderr_len += len as u64,
            }
        });
        Ok(())
    }
}

fn stream_tag(stream: OutputStream) -> u8 {
    match stream {
        OutputStream::Stdout => 1,
        OutputStream::Stderr => 2,
    }
}

/// One thing a reader yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputEvent {
    /// A chunk of output.
    Chunk {
        /// Which stream.
        stream: OutputStream,
        /// Byte offset of `data` in that stream.
        offset: u64,
        /// The bytes (at most [`MAX_RECORD_DATA`]).
        data: Vec<u8>,
    },
    /// The job ended; nothing follows.
    Exit(ExitReport),
    /// A non-following reader reached the stored end of a running job; nothing follows.
    End,
}

/// Reads a job log from some position, following it live when asked.
#[derive(Debug)]
pub struct LogReader {
    file: Arc<File>,
    rx: watch::Receiver<LogProgress>,
    file_pos: u64,
    offsets: [u64; 2],
    follow: bool,
    pending: std::collections::VecDeque<OutputEvent>,
    done: bool,
}

/// Errors while reading a job log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be read.
    #[error("cannot read job log: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not hold what the writer published.
    #[error("job log is damaged at byte {0}")]
    Damaged(u64),
}

impl LogReader {
    /// The next event, or `None` once the exit (or end) has been yielded.
    pub async fn next(&mut self) -> Result<Option<OutputEvent>, LogError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            let progress = self.rx.borrow_and_update().clone();
            if self.file_pos < progress.file_len {
                self.read_batch(progress.file_len).await?;
                continue;
            }
            if let Some(exit) = progress.exit {
                self.done = true;
                return Ok(Some(OutputEvent::Exit(exit)));
            }
            if !self.follow {
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

    async fn read_batch(&mut self, file_len: u64) -> Result<(), LogError> {
        let start = self.file_pos;
        let want = (file_len - start).min(READ_BATCH as u64) as usize;
        let file = Arc::clone(&self.file);
        let buf = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut buf = vec![0; want];
            file.read_exact_at(&mut buf, start)?;
            Ok(buf)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        let mut pos = 0;
        while let Some(header) = buf.get(pos..pos + RECORD_HEADER_LEN) {
            let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let stream = match header[0] {
                1 => OutputStream::Stdout,
                2 => OutputStream::Stderr,
                _ => return Err(LogError::Damaged(start + pos as u64)),
            };
            if len > MAX_RECORD_DATA {
                return Err(LogError::Damaged(start + pos as u64));
            }
            let Some(data) = buf.get(pos + RECORD_HEADER_LEN..pos + RECORD_HEADER_LEN + len) else {
                break; // the record continues past this batch: read it next time
            };
            let slot = match stream {
                OutputStream::Stdout => 0,
                OutputStream::Stderr => 1,
            };
            self.pending.push_back(OutputEvent::Chunk {
                stream,
                offset: self.offsets[slot],
                data: data.to_vec(),
            });
            self.offsets[slot] += len as u64;
            pos += RECORD_HEADER_LEN + len;
        }
        if pos == 0 {
            return Err(LogError::Damaged(start));
        }
        self.file_pos = start + pos as u64;
        Ok(())
    }
}
