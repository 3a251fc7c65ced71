//! The job log: every chunk a job writes, in order, with its stream; stored on disk up to a
//! cap, and kept in memory for a short while so that live readers need not touch the disk.
//!
//! Records live in one append-only file per job: a 5-byte header (stream byte, then the data
//! length as a little-endian u32) followed by the data. Positions are counted over the whole
//! record sequence ("log positions"); the file holds the records from position 0 up to the
//! stored length, at most [`LogLimits::max_stored`] bytes. Records past the cap are not stored
//! (issue-5 retention will keep a tail too); the progress says how many data bytes were not.
//!
//! The most recent records also stay in memory, in a window of about
//! [`LogLimits::window_bytes`], shared by reference. A reader takes records from the file while
//! its position is in the stored part, from the window otherwise. A reader that falls behind
//! both (only possible past the cap) skips ahead to the window; the per-stream offsets in the
//! chunks it then yields show the jump.
//!
//! A *holding* reader (the job's own client) never skips: the writer does not evict unstored
//! records it has not read, and waits instead, so the job blocks on its pipe as it would
//! writing into a pipe to a slow consumer. Other readers never slow the job.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{IoSlice, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::{ExitReport, OutputStream};

/// Length of a record header in the log file.
const RECORD_HEADER_LEN: usize = 5;

/// Largest data length of one record (one pump read).
pub const MAX_RECORD_DATA: usize = 64 * 1024;

/// How many bytes a reader takes from the file at a time.
const READ_BATCH: usize = 4 * MAX_RECORD_DATA;

/// Size limits of a job log.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Bytes of records stored in the file; later records are delivered live only.
    pub max_stored: u64,
    /// Bytes of recent record data kept in memory.
    pub window_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits {
            max_stored: 64 * 1024 * 1024,
            window_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What the writer has published so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogProgress {
    /// Log position after the last record.
    pub end: u64,
    /// Bytes of whole records stored in the file (a prefix of the log).
    pub stored: u64,
    /// Bytes of stdout data written so far.
    pub stdout_len: u64,
    /// Bytes of stderr data written so far.
    pub stderr_len: u64,
    /// Data bytes that were not stored (past the cap, or lost to a failing disk).
    pub unstored: u64,
    /// Set once the job has ended: no more records will come.
    pub exit: Option<ExitReport>,
}

/// A record held in the in-memory window.
#[derive(Debug, Clone)]
struct WindowRecord {
    /// The record's log position.
    pos: u64,
    stream: OutputStream,
    /// Offset of `data` within its stream.
    offset: u64,
    data: Bytes,
}

impl WindowRecord {
    fn end(&self) -> u64 {
        self.pos + (RECORD_HEADER_LEN + self.data.len()) as u64
    }
}

#[derive(Debug, Default)]
struct Window {
    records: VecDeque<WindowRecord>,
    bytes: usize,
    /// Positions of the holding readers (by reader id) that the writer must not outrun.
    holders: Vec<(u64, u64)>,
    next_reader: u64,
    /// Set once the job ended: the writer is gone and never waits again.
    closed: bool,
}

impl Window {
    /// Frees the records once the job has ended and no holding reader needs them (readers
    /// that come later read the stored part only).
    fn release_if_unneeded(&mut self) {
        if self.closed && self.holders.is_empty() {
            self.records = VecDeque::new();
            self.bytes = 0;
        }
    }
}

/// The window and the condition the writer waits on for holding readers.
#[derive(Debug, Default)]
struct Shared {
    window: Mutex<Window>,
    advanced: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Window> {
        // The window holds no invariant that a panic could break half-way.
        self.window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The log file, created on the first record stored (a job without output never touches the
/// disk).
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: OnceLock<File>,
}

impl LogFile {
    fn get_or_create(&self) -> std::io::Result<&File> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&self.path)?;
        Ok(self.file.get_or_init(|| file))
    }
}

/// A job's log: its file, the recent-records window and the published progress.
#[derive(Debug)]
pub(crate) struct JobLog {
    path: PathBuf,
    file: Arc<LogFile>,
    shared: Arc<Shared>,
    progress: watch::Sender<LogProgress>,
    limits: LogLimits,
}

impl JobLog {
    /// A log whose file will be `path` (created, or truncated, when the first record is
    /// stored).
    pub fn new(path: &Path, limits: LogLimits) -> JobLog {
        JobLog {
            path: path.to_owned(),
            file: Arc::new(LogFile {
                path: path.to_owned(),
                file: OnceLock::new(),
            }),
            shared: Arc::default(),
            progress: watch::Sender::new(LogProgress::default()),
            limits,
        }
    }

    /// A writer for the pump thread.
    pub fn writer(&self) -> LogWriter {
        LogWriter {
            file: Arc::clone(&self.file),
            shared: Arc::clone(&self.shared),
            progress: self.progress.clone(),
            limits: self.limits,
            store_failed: false,
        }
    }

    /// Publishes the job's end; readers see it after the last record.
    pub fn finish(&self, exit: ExitReport) {
        {
            let mut window = self.shared.lock();
            window.closed = true;
            window.release_if_unneeded();
        }
        self.shared.advanced.notify_all();
        self.progress.send_modify(|p| p.exit = Some(exit));
    }

    /// Data bytes not stored so far.
    pub fn unstored(&self) -> u64 {
        self.progress.borrow().unstored
    }

    /// A reader from the start (`replay`) or from the current end. A `holding` reader is never
    /// outrun by the writer (see the module documentation).
    pub fn reader(&self, replay: bool, follow: bool, holding: bool) -> LogReader {
        let rx = self.progress.subscribe();
        let (pos, offsets) = if replay {
            (0, [0, 0])
        } else {
            let p = rx.borrow();
            (p.end, [p.stdout_len, p.stderr_len])
        };
        let holder = holding.then(|| {
            let mut window = self.shared.lock();
            let id = window.next_reader;
            window.next_reader += 1;
            window.holders.push((id, pos));
            id
        });
        LogReader {
            file: Arc::clone(&self.file),
            shared: Arc::clone(&self.shared),
            rx,
            pos,
            offsets,
            follow,
            holder,
            pending: VecDeque::new(),
            done: false,
        }
    }

    /// Removes the log file (when the job is forgotten).
    pub fn remove(&self) {
        if self.file.file.get().is_none() {
            return; // never created
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), "cannot remove job log: {e}");
        }
    }
}

/// Appends records to a job log; owned by the job's pump thread.
pub(crate) struct LogWriter {
    file: Arc<LogFile>,
    shared: Arc<Shared>,
    progress: watch::Sender<LogProgress>,
    limits: LogLimits,
    store_failed: bool,
}

impl LogWriter {
    /// Appends `data` (1 to [`MAX_RECORD_DATA`] bytes) as a record of `stream` and publishes
    /// it. Waits while a holding reader has not read the unstored records the window must
    /// drop. A failing disk stops storing (the error is returned once); live readers still
    /// get every record.
    pub fn append(&mut self, stream: OutputStream, data: Bytes) -> std::io::Result<()> {
        debug_assert!(!data.is_empty() && data.len() <= MAX_RECORD_DATA);
        let record_len = (RECORD_HEADER_LEN + data.len()) as u64;
        // Only this writer changes the progress, so what it reads here stays true.
        let (pos, stored, offset) = {
            let p = self.progress.borrow();
            let offset = match stream {
                OutputStream::Stdout => p.stdout_len,
                OutputStream::Stderr => p.stderr_len,
            };
            (p.end, p.stored, offset)
        };
        let mut result = Ok(());
        let store =
            !self.store_failed && stored == pos && pos + record_len <= self.limits.max_stored;
        if store {
            let mut header = [0u8; RECORD_HEADER_LEN];
            header[0] = stream_tag(stream);
            // `data.len()` is at most MAX_RECORD_DATA, which fits a u32.
            header[1..].copy_from_slice(&(data.len() as u32).to_le_bytes());
            result = self
                .file
                .get_or_create()
                .and_then(|file| write_record(file, &header, &data));
            self.store_failed = result.is_err();
        }
        let stored_now = store && result.is_ok();
        let len = data.len();
        self.push_to_window(WindowRecord {
            pos,
            stream,
            offset,
            data,
        });
        self.progress.send_modify(|p| {
            p.end += record_len;
            if stored_now {
                p.stored += record_len;
            } else {
                p.unstored += len as u64;
            }
            match stream {
                OutputStream::Stdout => p.stdout_len += len as u64,
                OutputStream::Stderr => p.stderr_len += len as u64,
            }
        });
        result
    }

    fn push_to_window(&self, record: WindowRecord) {
        let stored = self.progress.borrow().stored;
        let mut window = self.shared.lock();
        window.bytes += record.data.len();
        window.records.push_back(record);
        while window.bytes > self.limits.window_bytes && window.records.len() > 1 {
            let Some(oldest) = window.records.front() else {
                break;
            };
            let needed =
                oldest.pos >= stored && window.holders.iter().any(|&(_, at)| at <= oldest.pos);
            if needed && !window.closed {
                window = self
                    .shared
                    .advanced
                    .wait(window)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            if let Some(old) = window.records.pop_front() {
                window.bytes -= old.data.len();
            }
        }
    }
}

/// A parsed record: its stream and where its data lies in the parsed buffer.
pub type RecordSpan = (OutputStream, Range<usize>);

/// Parses the whole records at the start of `buf` (bytes of a log file from a record
/// boundary): each record's stream and the range of its data in `buf`, and how many bytes the
/// whole records span. A record cut off by the end of `buf` is left out (read it with more
/// bytes). A header that cannot be a record is an error carrying its offset in `buf`.
pub fn parse_records(buf: &[u8]) -> Result<(Vec<RecordSpan>, usize), usize> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = buf.get(at..at + RECORD_HEADER_LEN) {
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let stream = match header[0] {
            1 => OutputStream::Stdout,
            2 => OutputStream::Stderr,
            _ => return Err(at),
        };
        if len == 0 || len > MAX_RECORD_DATA {
            return Err(at);
        }
        let data_start = at + RECORD_HEADER_LEN;
        if data_start + len > buf.len() {
            break;
        }
        records.push((stream, data_start..data_start + len));
        at = data_start + len;
    }
    Ok((records, at))
}

/// Encodes one record as it is stored (for tests and tools; the writer uses a vectored write).
pub fn encode_record(stream: OutputStream, data: &[u8], out: &mut Vec<u8>) {
    out.push(stream_tag(stream));
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

fn write_record(mut file: &File, header: &[u8], data: &[u8]) -> std::io::Result<()> {
    let total = header.len() + data.len();
    let written = file.write_vectored(&[IoSlice::new(header), IoSlice::new(data)])?;
    if written < header.len() {
        file.write_all(&header[written..])?;
        file.write_all(data)
    } else if written < total {
        file.write_all(&data[written - header.len()..])
    } else {
        Ok(())
    }
}

fn stream_tag(stream: OutputStream) -> u8 {
    match stream {
        OutputStream::Stdout => 1,
        OutputStream::Stderr => 2,
    }
}

fn stream_slot(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

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
}

/// Reads a job log from some position, following it live when asked.
#[derive(Debug)]
pub struct LogReader {
    file: Arc<LogFile>,
    shared: Arc<Shared>,
    rx: watch::Receiver<LogProgress>,
    pos: u64,
    offsets: [u64; 2],
    follow: bool,
    holder: Option<u64>,
    pending: VecDeque<OutputEvent>,
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

impl Drop for LogReader {
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
            let file = file.file.get().ok_or(std::io::ErrorKind::NotFound)?;
            file.read_exact_at(&mut buf, start)?;
            Ok(buf)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        let buf = Bytes::from(buf);
        let (records, at) =
            parse_records(&buf).map_err(|damaged| LogError::Damaged(start + damaged as u64))?;
        if at == 0 {
            return Err(LogError::Damaged(start));
        }
        for (stream, data) in records {
            let slot = stream_slot(stream);
            let len = data.len() as u64;
            self.pending.push_back(OutputEvent::Chunk {
                stream,
                offset: self.offsets[slot],
                data: buf.slice(data),
            });
            self.offsets[slot] += len;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic data for chunk `index`.
    fn chunk(index: usize, len: usize) -> Bytes {
        (0..len)
            .map(|i| (index * 31 + i) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    /// Writes `chunks` on a thread (as the pump does) while `reader` reads; returns what the
    /// reader got per stream, checking that offsets are contiguous.
    fn write_and_read(
        log: &JobLog,
        chunks: &[(bool, usize)],
        mut reader: LogReader,
    ) -> ([Vec<u8>; 2], ExitReport) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut writer = log.writer();
        let owned: Vec<(bool, usize)> = chunks.to_vec();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for (index, (err, len)) in owned.iter().enumerate() {
                    let stream = if *err {
                        OutputStream::Stderr
                    } else {
                        OutputStream::Stdout
                    };
                    writer.append(stream, chunk(index, *len)).expect("append");
                }
                log.finish(ExitReport {
                    code: Some(0),
                    ..ExitReport::default()
                });
            });
            runtime.block_on(async {
                let mut got: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
                loop {
                    match reader.next().await.expect("read") {
                        Some(OutputEvent::Chunk {
                            stream,
                            offset,
                            data,
                        }) => {
                            let slot = stream_slot(stream);
                            assert_eq!(offset, got[slot].len() as u64, "contiguous offsets");
                            got[slot].extend_from_slice(&data);
                        }
                        Some(OutputEvent::Exit(exit)) => return (got, exit),
                        Some(OutputEvent::End) | None => panic!("a follower ends with Exit"),
                    }
                }
            })
        })
    }

    fn expected(chunks: &[(bool, usize)]) -> [Vec<u8>; 2] {
        let mut want: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        for (index, (err, len)) in chunks.iter().enumerate() {
            want[usize::from(*err)].extend_from_slice(&chunk(index, *len));
        }
        want
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The job's own client gets every byte in order, whatever the cap and window.
        #[test]
        fn a_holding_reader_misses_nothing(
            chunks in proptest::collection::vec((any::<bool>(), 1usize..3000), 0..60),
            max_stored in 0u64..40_000,
            window_bytes in 1usize..8000,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = JobLog::new(&dir.path().join("1.log"), LogLimits { max_stored, window_bytes });
            let reader = log.reader(true, true, true);
            let (got, exit) = write_and_read(&log, &chunks, reader);
            prop_assert_eq!(exit.code, Some(0));
            prop_assert_eq!(got, expected(&chunks));
        }

        /// A later reader replays the stored part: a prefix of the output, record by record,
        /// and the progress counts the rest as unstored.
        #[test]
        fn a_late_reader_replays_the_stored_prefix(
            chunks in proptest::collection::vec((any::<bool>(), 1usize..3000), 0..60),
            max_stored in 0u64..40_000,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let limits = LogLimits { max_stored, window_bytes: 1024 };
            let log = JobLog::new(&dir.path().join("1.log"), limits);
            let holder = log.reader(true, true, true);
            write_and_read(&log, &chunks, holder);
            let late = log.reader(true, true, false);
            let (got, _) = write_and_read(&log, &[], late);
            // Which records fit under the cap, in order.
            let mut stored = 0u64;
            let mut stored_chunks = Vec::new();
            let mut unstored = 0u64;
            for &(err, len) in &chunks {
                let record = (RECORD_HEADER_LEN + len) as u64;
                // Storing stops at the first record that does not fit: the file is a prefix.
                if unstored == 0 && stored + record <= max_stored {
                    stored += record;
                    stored_chunks.push((err, len));
                } else {
                    unstored += len as u64;
                }
            }
            prop_assert_eq!(got, expected(&stored_chunks));
            prop_assert_eq!(log.unstored(), unstored);
        }
    }

    proptest! {
        #[test]
        fn records_roundtrip_and_partial_records_wait(
            records in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 1..300)), 0..20),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut buf = Vec::new();
            for (err, data) in &records {
                let stream = if *err { OutputStream::Stderr } else { OutputStream::Stdout };
                encode_record(stream, data, &mut buf);
            }
            let (parsed, used) = parse_records(&buf).expect("valid records");
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(parsed.len(), records.len());
            for ((stream, range), (err, data)) in parsed.iter().zip(&records) {
                prop_assert_eq!(*stream == OutputStream::Stderr, *err);
                prop_assert_eq!(&buf[range.clone()], &data[..]);
            }
            // Any prefix parses to whole records only.
            let cut = cut.index(buf.len() + 1);
            let (prefix, used) = parse_records(&buf[..cut]).expect("valid prefix");
            prop_assert!(used <= cut);
            prop_assert_eq!(&parsed[..prefix.len()], &prefix[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok((records, used)) = parse_records(&buf) {
                prop_assert!(used <= buf.len());
                prop_assert!(records.iter().all(|(_, r)| r.end <= used));
            }
        }
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.log");
        let log = JobLog::new(&path, LogLimits::default());
        let holder = log.reader(true, true, true);
        write_and_read(&log, &[(false, 100), (true, 50)], holder);
        // Corrupt the stream byte of the first record.
        let mut bytes = std::fs::read(&path).expect("log");
        bytes[0] = 9;
        std::fs::write(&path, &bytes).expect("write");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut reader = log.reader(true, false, false);
        let result = runtime.block_on(reader.next());
        assert!(matches!(result, Err(LogError::Damaged(0))), "{result:?}");
    }
}
