//! The job log: every chunk a job writes, in order, with its stream; stored on disk up to a
//! cap, and kept in memory for a short while so that live readers need not touch the disk.
//!
//! One append-only file per job, in the format of [`crate::logfile`]: a header naming the
//! job, then records (stdout, stderr, dropped bytes, the job's end).
//!
//! Output positions ("log positions") are counted over the output records from the header's
//! end. While the job runs, the file holds the records from position 0 up to the stored length,
//! at most the head part of [`LogLimits::max_stored`]; the latest records past it are kept in
//! memory as the tail (a quarter of the cap, at most [`MAX_TAIL`]). When the job ends, the file
//! gets a dropped-bytes record, the tail's records and the end record. A finished job's log
//! is read whole by [`LogReader::stored`]: head, the gap (shown as a jump in the stream
//! offsets), tail.
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
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use crate::logfile::{
    encode_dropped, encode_end, encode_header, record_header, stream_slot, write_record,
    RecordKind, RECORD_HEADER_LEN,
};
pub use crate::logfile::{LogError, LogHeader, MAX_RECORD_DATA};
pub use read::{LogReader, OutputEvent};

mod read;
use crate::types::{ExitReport, OutputStream};

/// Largest tail kept per job (in memory while it runs).
pub const MAX_TAIL: u64 = 8 * 1024 * 1024;

/// How many bytes a reader takes from the file at a time.
const READ_BATCH: usize = 4 * MAX_RECORD_DATA;

/// Size limits of a job log.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Bytes of output records stored for a job: its output's head, and the tail (see
    /// [`LogLimits::tail_cap`]); what lies between is delivered live only.
    pub max_stored: u64,
    /// Bytes of recent record data kept in memory.
    pub window_bytes: usize,
}

impl LogLimits {
    /// Bytes of records kept from the start of the output.
    pub fn head_cap(&self) -> u64 {
        self.max_stored - self.tail_cap()
    }

    /// Bytes of records kept from the end of the output: a quarter of the cap, at most
    /// [`MAX_TAIL`] (the tail is held in memory while the job runs).
    pub fn tail_cap(&self) -> u64 {
        (self.max_stored / 4).min(MAX_TAIL)
    }
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
    /// Data bytes that were not stored in the head (past its cap, or lost to a failing disk).
    pub unstored: u64,
    /// The same, per stream (stdout, stderr).
    pub unstored_per_stream: [u64; 2],
    /// Why storing output failed, if it did (the first error).
    pub store_error: Option<String>,
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

/// The log file: created at once for a durable log, else on the first record stored (a job
/// without output then never touches the disk). Starts with the header.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    header: Vec<u8>,
    file: Mutex<FileSlot>,
    /// The tail, once output went past the head.
    tail: Mutex<Option<Tail>>,
}

/// The log file's state: not made yet, open while the job runs, closed once it ended (a
/// finished job holds no fd; its log is read by path).
#[derive(Debug)]
enum FileSlot {
    NotCreated,
    Open(Arc<File>),
    Closed { created: bool },
}

impl LogFile {
    fn slot(&self) -> MutexGuard<'_, FileSlot> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get_or_create(&self) -> std::io::Result<Arc<File>> {
        let mut slot = self.slot();
        match &*slot {
            FileSlot::Open(file) => return Ok(Arc::clone(file)),
            FileSlot::Closed { .. } => {
                return Err(std::io::Error::other("the job's log is already complete"))
            }
            FileSlot::NotCreated => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&self.path)?;
        file.write_all(&self.header)?;
        let file = Arc::new(file);
        *slot = FileSlot::Open(Arc::clone(&file));
        Ok(file)
    }

    /// The open file, if it is open.
    fn current(&self) -> Option<Arc<File>> {
        match &*self.slot() {
            FileSlot::Open(file) => Some(Arc::clone(file)),
            _ => None,
        }
    }

    /// Whether the file was ever made.
    fn created(&self) -> bool {
        match &*self.slot() {
            FileSlot::NotCreated => false,
            FileSlot::Open(_) => true,
            FileSlot::Closed { created } => *created,
        }
    }

    /// Closes the file for good (readers then open it by path).
    fn close(&self) {
        let mut slot = self.slot();
        let created = !matches!(&*slot, FileSlot::NotCreated);
        *slot = FileSlot::Closed { created };
    }

    /// The file to read the stored part from: the open one, or the file by its path.
    fn for_reading(&self) -> std::io::Result<Arc<File>> {
        match self.current() {
            Some(file) => Ok(file),
            None => File::open(&self.path).map(Arc::new),
        }
    }

    /// Where output position 0 lies in the file.
    fn base(&self) -> u64 {
        self.header.len() as u64
    }
}

/// Output past the head: the latest records, kept in memory by reference (the same `Bytes`
/// the window and the readers share: no copy, no disk write while the job runs) until they
/// exceed the tail cap by more than one record. Written to the file when the job ends.
#[derive(Debug, Default)]
struct Tail {
    records: VecDeque<(OutputStream, Bytes)>,
    /// Record bytes (headers included) held.
    bytes: u64,
}

impl Tail {
    /// Keeps a record, forgetting the oldest ones no longer needed to make up `cap` bytes.
    fn push(&mut self, stream: OutputStream, data: Bytes, cap: u64) {
        self.bytes += (RECORD_HEADER_LEN + data.len()) as u64;
        self.records.push_back((stream, data));
        while let Some((_, oldest)) = self.records.front() {
            let oldest_len = (RECORD_HEADER_LEN + oldest.len()) as u64;
            if self.bytes - oldest_len < cap {
                break;
            }
            self.bytes -= oldest_len;
            self.records.pop_front();
        }
    }

    /// The tail's records, oldest first, cut to the last `cap` data-and-header bytes (the
    /// first kept record may lose its front, so that the gap before the tail is contiguous),
    /// as slices of the records held (no copy); and the output bytes per stream they hold.
    fn kept_records(&self, cap: u64) -> (Vec<(OutputStream, Bytes)>, [u64; 2]) {
        // Newest first, until the cap is spent; the last one taken may keep only its end.
        let header = RECORD_HEADER_LEN as u64;
        let mut budget = cap;
        let mut kept_records = Vec::new();
        for (stream, data) in self.records.iter().rev() {
            if budget <= header {
                break;
            }
            let room = usize::try_from(budget - header).unwrap_or(usize::MAX);
            let data = data.slice(data.len().saturating_sub(room)..);
            budget -= header + data.len() as u64;
            kept_records.push((*stream, data));
        }
        kept_records.reverse();
        let mut kept = [0u64; 2];
        for (stream, data) in &kept_records {
            kept[stream_slot(*stream)] += data.len() as u64;
        }
        (kept_records, kept)
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
    durable: bool,
}

impl JobLog {
    /// A log whose file will be `path`, starting with `header`: created now when `durable`
    /// (the file then witnesses the job even if the daemon dies), else when the first record
    /// is stored. A durable log also gets the end record when the job ends.
    pub fn new(
        path: &Path,
        header: &LogHeader,
        limits: LogLimits,
        durable: bool,
    ) -> std::io::Result<JobLog> {
        let log = JobLog {
            path: path.to_owned(),
            file: Arc::new(LogFile {
                path: path.to_owned(),
                header: encode_header(header),
                file: Mutex::new(FileSlot::NotCreated),
                tail: Mutex::new(None),
            }),
            shared: Arc::default(),
            progress: watch::Sender::new(LogProgress::default()),
            limits,
            durable,
        };
        if durable {
            log.file.get_or_create()?;
        }
        Ok(log)
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Output bytes written so far: stdout, stderr.
    pub fn lengths(&self) -> (u64, u64) {
        let p = self.progress.borrow();
        (p.stdout_len, p.stderr_len)
    }

    /// Whether the job's end is published (the file is complete by then).
    pub fn is_finished(&self) -> bool {
        self.progress.borrow().exit.is_some()
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

    /// Completes the file (the tail, the dropped-bytes count, the end record), then publishes
    /// the job's end; readers see it after the last record. Returns the dropped output bytes.
    pub fn finish(&self, exit: ExitReport) -> u64 {
        let dropped = self.complete_file(&exit);
        {
            let mut window = self.shared.lock();
            window.closed = true;
            window.release_if_unneeded();
        }
        self.shared.advanced.notify_all();
        self.progress.send_modify(|p| p.exit = Some(exit));
        dropped
    }

    /// Appends the tail and the end record to the file, then closes it; the output bytes
    /// not kept.
    fn complete_file(&self, exit: &ExitReport) -> u64 {
        let (unstored, unstored_per_stream) = {
            let p = self.progress.borrow();
            (p.unstored, p.unstored_per_stream)
        };
        let tail = self
            .file
            .tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(file) = self.file.current() else {
            self.file.close();
            return unstored; // nothing was stored, and the log is not durable
        };
        let mut dropped_total = unstored;
        let mut failed = None;
        if let Some(tail) = tail {
            let (records, kept) = tail.kept_records(self.limits.tail_cap());
            // Past the head, output went to the tail; what it does not hold is dropped.
            let dropped = [
                unstored_per_stream[0].saturating_sub(kept[0]),
                unstored_per_stream[1].saturating_sub(kept[1]),
            ];
            dropped_total = dropped[0] + dropped[1];
            // Record by record from where the data lies: a tail of megabytes copied into one
            // buffer would be freed as a large mmap, and glibc would then keep that much free
            // memory in every arena for good (its dynamic mmap and trim thresholds rise).
            let counts = encode_dropped(dropped);
            let written = write_record(&file, &record_header(RecordKind::Dropped, 16), &counts)
                .and_then(|()| {
                    records.iter().try_for_each(|(stream, data)| {
                        let header = record_header(RecordKind::Output(*stream), data.len());
                        write_record(&file, &header, data)
                    })
                });
            failed = written.err();
        }
        if self.durable && failed.is_none() {
            let body = encode_end(exit);
            if let Err(e) = write_record(&file, &record_header(RecordKind::End, body.len()), &body)
            {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            tracing::warn!(path = %self.path.display(), "cannot complete job log: {e}");
            self.progress.send_modify(|p| {
                p.store_error.get_or_insert_with(|| e.to_string());
            });
        }
        self.file.close();
        dropped_total
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
        LogReader::live(
            Arc::clone(&self.file),
            Arc::clone(&self.shared),
            rx,
            (pos, offsets),
            follow,
            holder,
        )
    }

    /// Removes the log file (when the job is forgotten).
    pub fn remove(&self) {
        if !self.file.created() {
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
        let header = record_header(RecordKind::Output(stream), data.len());
        let store =
            !self.store_failed && stored == pos && pos + record_len <= self.limits.head_cap();
        if store {
            result = self
                .file
                .get_or_create()
                .and_then(|file| write_record(&file, &header, &data));
        } else if !self.store_failed && self.limits.tail_cap() > 0 {
            result = self.append_to_tail(stream, data.clone());
        }
        if let Err(e) = &result {
            self.store_failed = true;
            let message = e.to_string();
            self.progress.send_modify(|p| {
                p.store_error.get_or_insert(message);
            });
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
                p.unstored_per_stream[stream_slot(stream)] += len as u64;
            }
            match stream {
                OutputStream::Stdout => p.stdout_len += len as u64,
                OutputStream::Stderr => p.stderr_len += len as u64,
            }
        });
        result
    }

    /// Keeps a record past the head in the tail (see [`Tail`]).
    fn append_to_tail(&self, stream: OutputStream, data: Bytes) -> std::io::Result<()> {
        // The main file must exist for the tail to be appended to it at the end.
        self.file.get_or_create()?;
        let mut tail = self.file.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.get_or_insert_with(Tail::default)
            .push(stream, data, self.limits.tail_cap());
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logfile::encode_header;
    use proptest::prelude::*;

    /// A durable log with an empty header.
    fn test_log(path: &Path, limits: LogLimits) -> JobLog {
        JobLog::new(path, &LogHeader::default(), limits, true).expect("log")
    }

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
                        Some(OutputEvent::StoreFailed(e)) => panic!("store failed: {e}"),
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
            let log = test_log(&dir.path().join("1.log"), LogLimits { max_stored, window_bytes });
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
            let log = test_log(&dir.path().join("1.log"), limits);
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
                if unstored == 0 && stored + record <= limits.head_cap() {
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

    #[test]
    fn a_damaged_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.log");
        let log = test_log(&path, LogLimits::default());
        let holder = log.reader(true, true, true);
        write_and_read(&log, &[(false, 100), (true, 50)], holder);
        // Corrupt the kind byte of the first record (after the file's header).
        let mut bytes = std::fs::read(&path).expect("log");
        let base = encode_header(&LogHeader::default()).len();
        bytes[base] = 9;
        std::fs::write(&path, &bytes).expect("write");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut reader = log.reader(true, false, false);
        let result = runtime.block_on(reader.next());
        assert!(
            matches!(&result, Err(LogError::Damaged(m)) if m.contains("byte 0")),
            "{result:?}"
        );
    }
}
