//! File transfers with a daemon's file area: [`Client::put`] streams a source in 256 KiB
//! chunks and ends with its checksum, which the daemon checks; [`Client::get`] streams a file
//! into a sink, checking its size and checksum (XXH3-128, `ferry_common::checksum`).

use std::io::{Read, Write};

use ferry_common::checksum::FileChecksum;
use ferry_wire::native::{ClientMessage, DaemonMessage};
use serde_bytes::ByteBuf;

use crate::{Client, ClientError, Queued};

/// Bytes per `PutData` frame.
const CHUNK: usize = 256 * 1024;

/// A file's size and permission bits, as the daemon announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Its size in bytes.
    pub size: u64,
    /// Its permission bits.
    pub mode: u32,
}

/// What a failed local read or write is, as a transfer error.
fn local(what: String) -> impl FnOnce(std::io::Error) -> ClientError {
    move |e| ClientError::Transfer(format!("{what}: {e}"))
}

impl Client {
    /// Puts `size` bytes read from `source` at `remote` in the file area, with permission bits
    /// `mode`; `progress` hears the bytes sent so far. The file appears under its name only
    /// once the daemon has it whole and verified.
    pub async fn put(
        &mut self,
        remote: &str,
        source: &mut impl Read,
        size: u64,
        mode: u32,
        mut progress: impl FnMut(u64),
    ) -> Result<(), ClientError> {
        let request = self.sender.next_request();
        let start = ClientMessage::PutStart {
            request,
            path: ByteBuf::from(remote.as_bytes().to_vec()),
            size,
            mode,
        };
        self.sender.queue(Queued::Plain(start)).await?;
        self.done(request).await?;
        let mut checksum = FileChecksum::new();
        let mut sent = 0u64;
        while sent < size {
            let want = CHUNK.min(usize::try_from(size - sent).unwrap_or(CHUNK));
            let mut data = vec![0u8; want];
            source.read_exact(&mut data).map_err(local(format!(
                "the source of {remote} shrank while it was sent"
            )))?;
            checksum.update(&data);
            self.sender
                .queue(Queued::Plain(ClientMessage::PutData { request, data }))
                .await?;
            sent += want as u64;
            progress(sent);
        }
        let end = ClientMessage::PutEnd {
            request,
            checksum: ByteBuf::from(checksum.digest().to_vec()),
        };
        self.sender.queue(Queued::Plain(end)).await?;
        // A failure mid-way was answered already: the first answer tells.
        self.done(request).await
    }

    /// Gets `remote` from the file area into `sink`, checking its size and checksum;
    /// `progress` hears the bytes received so far and the size. Returns the file's size and
    /// mode. On error, what `sink` holds is not the file: throw it away.
    pub async fn get(
        &mut self,
        remote: &str,
        sink: &mut impl Write,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<FileMeta, ClientError> {
        let request = self.sender.next_request();
        let message = ClientMessage::Get {
            request,
            path: ByteBuf::from(remote.as_bytes().to_vec()),
        };
        self.sender.queue(Queued::Plain(message)).await?;
        let meta = self
            .answer(request, |message| match message {
                DaemonMessage::FileStart { size, mode, .. } => Some(FileMeta { size, mode }),
                _ => None,
            })
            .await?;
        progress(0, meta.size);
        let mut checksum = FileChecksum::new();
        let mut received = 0u64;
        // Each answer is one chunk, or the end with the checksum.
        let mut failure = None;
        let sent_checksum = self
            .answer(request, |message| match message {
                DaemonMessage::FileData { data, .. } if failure.is_none() => {
                    received += data.len() as u64;
                    if received > meta.size {
                        failure = Some(ClientError::Transfer(format!(
                            "the daemon sent more than the {} bytes it announced",
                            meta.size
                        )));
                    } else if let Err(e) = sink.write_all(&data) {
                        failure = Some(local(format!("cannot write {remote}"))(e));
                    }
                    checksum.update(&data);
                    progress(received, meta.size);
                    None
                }
                DaemonMessage::FileEnd { checksum, .. } => Some(checksum),
                _ => None,
            })
            .await?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        if received != meta.size {
            return Err(ClientError::Transfer(format!(
                "{received} bytes arrived, {} announced",
                meta.size
            )));
        }
        if !checksum.matches(&sent_checksum) {
            return Err(ClientError::Transfer(
                "the checksum (XXH3-128) does not match: the file was corrupted on the way".into(),
            ));
        }
        Ok(meta)
    }
}
