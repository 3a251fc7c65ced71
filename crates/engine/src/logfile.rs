//! The job log's on-disk format, as the log writer and readers ([`crate::log`]) and the
//! history store's recovery ([`crate::store`]) both read and write it.
//!
//! One file per job, `LOG_DIR/ID.log`: a header naming the job (`FERRYLOG`, a little-endian
//! u32 length, a CBOR [`LogHeader`]), then records: a 5-byte record header (a kind byte, then
//! the data length as a little-endian u32) followed by the data. Kinds: 1 stdout, 2 stderr,
//! 3 the bytes dropped between head and tail (16 bytes: stdout then stderr, u64 LE), 4 the
//! job's end (a CBOR [`ExitReport`]). A file cut short by a crash holds whole records up to
//! the cut; [`summarize`] reads what it holds.

use std::fs::File;
use std::io::{IoSlice, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::principal::Principal;
use crate::types::{ExitReport, OutputStream};

/// Length of a record header in the log file.
pub const RECORD_HEADER_LEN: usize = 5;

/// Largest data length of one record (one pump read).
pub const MAX_RECORD_DATA: usize = 64 * 1024;

/// The log file of job `id` in `log_dir`.
pub fn log_path(log_dir: &Path, id: u64) -> PathBuf {
    log_dir.join(format!("{id}.log"))
}

/// What a job's log file says of the job, first thing in the file.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct LogHeader {
    /// The job id.
    pub id: u64,
    /// Program and arguments.
    pub argv: Vec<serde_bytes::ByteBuf>,
    /// Working directory, if given.
    #[serde(default)]
    pub cwd: Option<serde_bytes::ByteBuf>,
    /// Where the request came from (the connection's address).
    #[serde(default)]
    pub owner: String,
    /// Through which dialect.
    #[serde(default)]
    pub dialect: String,
    /// When it was submitted (ms since the Unix epoch).
    pub submitted_ms: u64,
    /// Who it belongs to (absent in logs written before principals: the owner's).
    #[serde(default)]
    pub principal: Principal,
    /// It ran on its client's own fds (a terminal): its output went there, and no log of it
    /// was kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_client_fds: bool,
}

/// The magic bytes that open a log file.
pub const LOG_MAGIC: &[u8; 8] = b"FERRYLOG";

/// Encodes a log file's header.
pub fn encode_header(header: &LogHeader) -> Vec<u8> {
    let mut body = Vec::new();
    // Plain data into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(header, &mut body);
    let mut bytes = LOG_MAGIC.to_vec();
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

/// Decodes a log file's header from its first bytes: the header and where records start.
pub fn decode_header(buf: &[u8]) -> Result<(LogHeader, usize), LogError> {
    let damaged = |what: &str| LogError::Damaged(format!("its header {what}"));
    let magic = buf.get(..8).ok_or_else(|| damaged("is cut short"))?;
    if magic != LOG_MAGIC {
        return Err(damaged("is not a ferry log's"));
    }
    let len = buf.get(8..12).ok_or_else(|| damaged("is cut short"))?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_HEADER {
        return Err(damaged("is too long"));
    }
    let body = buf
        .get(12..12 + len)
        .ok_or_else(|| damaged("is cut short"))?;
    let header =
        ciborium::de::from_reader(body).map_err(|e| damaged(&format!("is unreadable ({e})")))?;
    Ok((header, 12 + len))
}

/// Largest log header accepted.
const MAX_HEADER: usize = 1024 * 1024;

/// Errors while reading a job log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be read.
    #[error("cannot read job log: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not hold what the writer published.
    #[error("job log is damaged: {0}")]
    Damaged(String),
    /// The file is gone.
    #[error("job log {0} is missing")]
    Missing(String),
}

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Output data of a stream.
    Output(OutputStream),
    /// Output bytes dropped between head and tail: 16 bytes, stdout then stderr, u64 LE.
    Dropped,
    /// The job's end: a CBOR [`ExitReport`].
    End,
}

/// A parsed record: its kind and where its data lies in the parsed buffer.
pub type RecordSpan = (RecordKind, Range<usize>);

/// Parses the whole records at the start of `buf` (bytes of a log file from a record
/// boundary): each record's kind and the range of its data in `buf`, and how many bytes the
/// whole records span. A record cut off by the end of `buf` is left out (read it with more
/// bytes). A header that cannot be a record is an error carrying its offset in `buf`.
pub fn parse_records(buf: &[u8]) -> Result<(Vec<RecordSpan>, usize), usize> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = buf.get(at..at + RECORD_HEADER_LEN) {
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let kind = match header[0] {
            1 => RecordKind::Output(OutputStream::Stdout),
            2 => RecordKind::Output(OutputStream::Stderr),
            3 => RecordKind::Dropped,
            4 => RecordKind::End,
            _ => return Err(at),
        };
        let valid = match kind {
            RecordKind::Output(_) | RecordKind::End => len > 0 && len <= MAX_RECORD_DATA,
            RecordKind::Dropped => len == 16,
        };
        if !valid {
            return Err(at);
        }
        let data_start = at + RECORD_HEADER_LEN;
        if data_start + len > buf.len() {
            break;
        }
        records.push((kind, data_start..data_start + len));
        at = data_start + len;
    }
    Ok((records, at))
}

/// Encodes one output record as it is stored (for tests and tools; the writer uses a
/// vectored write).
pub fn encode_record(stream: OutputStream, data: &[u8], out: &mut Vec<u8>) {
    encode_record_of(RecordKind::Output(stream), data, out);
}

/// Encodes one record of any kind.
pub fn encode_record_of(kind: RecordKind, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&record_header(kind, data.len()));
    out.extend_from_slice(data);
}

/// The 5-byte header of a record of `kind` holding `len` bytes (at most [`MAX_RECORD_DATA`]
/// for output and end records).
pub fn record_header(kind: RecordKind, len: usize) -> [u8; RECORD_HEADER_LEN] {
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[0] = match kind {
        RecordKind::Output(stream) => stream_tag(stream),
        RecordKind::Dropped => 3,
        RecordKind::End => 4,
    };
    header[1..].copy_from_slice(&(len as u32).to_le_bytes());
    header
}

/// Writes one record (its header, then its data from where it lies) at the file's end.
pub fn write_record(mut file: &File, header: &[u8], data: &[u8]) -> std::io::Result<()> {
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

pub(crate) fn stream_tag(stream: OutputStream) -> u8 {
    match stream {
        OutputStream::Stdout => 1,
        OutputStream::Stderr => 2,
    }
}

pub(crate) fn stream_slot(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

/// The data of a dropped-bytes record: the output bytes dropped per stream (stdout, stderr).
pub fn encode_dropped(dropped: [u64; 2]) -> [u8; 16] {
    let mut data = [0u8; 16];
    data[..8].copy_from_slice(&dropped[0].to_le_bytes());
    data[8..].copy_from_slice(&dropped[1].to_le_bytes());
    data
}

/// The dropped bytes per stream a dropped-bytes record's data holds.
pub fn decode_dropped(data: &[u8]) -> [u64; 2] {
    let mut counts = [0u64; 2];
    for (slot, bytes) in data.chunks_exact(8).take(2).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        counts[slot] = u64::from_le_bytes(word);
    }
    counts
}

/// The data of an end record.
pub fn encode_end(exit: &ExitReport) -> Vec<u8> {
    let mut body = Vec::new();
    // Plain data into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(exit, &mut body);
    body
}

/// What a log file says of its job: its header, output sizes, and its end if it has one.
#[derive(Debug)]
pub struct LogSummary {
    /// The header.
    pub header: LogHeader,
    /// Stdout bytes the file holds.
    pub stdout: u64,
    /// Stderr bytes the file holds.
    pub stderr: u64,
    /// The end record, if the job's end was written.
    pub end: Option<ExitReport>,
    /// The file's size.
    pub bytes: u64,
}

/// Reads a whole log file for what it says of its job (after a crash, say).
pub fn summarize(path: &Path) -> Result<LogSummary, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let (header, at) = decode_header(&bytes).map_err(|e| e.to_string())?;
    let mut summary = LogSummary {
        header,
        stdout: 0,
        stderr: 0,
        end: None,
        bytes: bytes.len() as u64,
    };
    // A crash may leave a record half-written at the end: whole records count.
    let (records, _) = parse_records(&bytes[at..]).unwrap_or_default();
    for (kind, range) in records {
        let data = &bytes[at + range.start..at + range.end];
        match kind {
            RecordKind::Output(OutputStream::Stdout) => summary.stdout += data.len() as u64,
            RecordKind::Output(OutputStream::Stderr) => summary.stderr += data.len() as u64,
            RecordKind::Dropped => {}
            RecordKind::End => summary.end = ciborium::de::from_reader(data).ok(),
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
            for ((kind, range), (err, data)) in parsed.iter().zip(&records) {
                prop_assert_eq!(*kind == RecordKind::Output(OutputStream::Stderr), *err);
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

    proptest! {
        #[test]
        fn headers_roundtrip_and_never_panic(
            id in any::<u64>(),
            argv in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..4),
            owner in ".{0,12}",
            submitted_ms in any::<u64>(),
            on_client_fds in any::<bool>(),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let header = LogHeader {
                id,
                argv: argv.into_iter().map(serde_bytes::ByteBuf::from).collect(),
                cwd: None,
                owner,
                dialect: "ferry".into(),
                submitted_ms,
                principal: Principal::Token("ci".into()),
                on_client_fds,
            };
            let mut bytes = encode_header(&header);
            let len = bytes.len();
            bytes.extend_from_slice(&noise);
            let (decoded, used) = decode_header(&bytes).expect("header");
            prop_assert_eq!(decoded, header);
            prop_assert_eq!(used, len);
            // Any cut of it is an error, never a panic.
            for cut in 0..len {
                prop_assert!(decode_header(&bytes[..cut]).is_err());
            }
            let _ = decode_header(&noise);
        }
    }
}
