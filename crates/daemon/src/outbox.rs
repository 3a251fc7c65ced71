//! A connection's outbox: everything written to a peer goes through it, from whichever task
//! has something to say (the adapter, a job's follower, the reader's notices), and one writer
//! task per connection writes it in order at the peer's pace.
//!
//! The writer either batches (whatever waits goes in one vectored write, so a burst of small
//! frames costs few system calls) or paces (one message per write, at least a gap apart, each
//! within a time limit: for a dialect whose client takes one `read()` as one message). It
//! ends when every sender is gone, or at [`Outbox::end`], and closes the writing half. A peer
//! that does not read cannot hold it: [`Outbox::end`] stops it after its limit, and the
//! connection layer after [`FLUSH_WAIT`] once the connection is over.

use std::io::IoSlice;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};

use crate::transport::BoxWrite;

/// Items queued per connection before senders wait for the peer.
pub(crate) const OUTBOX_ITEMS: usize = 64;

/// How long what is queued when a connection ends may take to be written.
pub(crate) const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Items written together at most, and about how many bytes.
const BATCH_ITEMS: usize = 64;
const BATCH_BYTES: usize = 256 * 1024;

/// How a dialect's answers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writes {
    /// What waits is written together.
    Batched,
    /// One message per write, `gap` apart at least, each within `timeout` (a peer that does
    /// not read is let go).
    Paced {
        /// The least time between two writes.
        gap: Duration,
        /// The most one write may take.
        timeout: Duration,
    },
}

/// One item of an outbox.
pub(crate) enum Outgoing {
    /// A whole encoded message.
    Frame(Vec<u8>),
    /// A message in two parts: its encoded head, then data from where it already lies (boxed,
    /// so that every queue slot stays small: an idle connection's queue costs little).
    Output(Box<(Vec<u8>, Bytes)>),
    /// Bytes shared with other connections (a broadcast message), or a file's chunk.
    Shared(Bytes),
    /// The connection ends: what came before is written, then it closes.
    End,
}

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Frame(bytes) => bytes.len(),
            Outgoing::Output(output) => output.0.len() + output.1.len(),
            Outgoing::Shared(bytes) => bytes.len(),
            Outgoing::End => 0,
        }
    }
}

impl From<Vec<u8>> for Outgoing {
    fn from(bytes: Vec<u8>) -> Outgoing {
        Outgoing::Frame(bytes)
    }
}

/// The sending side of a connection's outbox. Cheap to clone; the connection's writer ends
/// once every clone is dropped.
#[derive(Clone)]
pub(crate) struct Outbox {
    sender: mpsc::Sender<Outgoing>,
    writer: AbortHandle,
}

impl Outbox {
    /// An outbox writing to `write` as `writes` says; the writer task's handle, which ends
    /// once the writing half is closed.
    pub fn start(write: BoxWrite, writes: Writes) -> (Outbox, JoinHandle<()>) {
        let (sender, items) = mpsc::channel(OUTBOX_ITEMS);
        let writer = match writes {
            Writes::Batched => tokio::spawn(write_batched(write, items)),
            Writes::Paced { gap, timeout } => tokio::spawn(write_paced(write, items, gap, timeout)),
        };
        let outbox = Outbox {
            sender,
            writer: writer.abort_handle(),
        };
        (outbox, writer)
    }

    /// Queues `item`, waiting for room; `false` when the peer is gone (nothing more will be
    /// written).
    pub async fn send(&self, item: impl Into<Outgoing>) -> bool {
        self.sender.send(item.into()).await.is_ok()
    }

    /// Queues `item` if there is room now; whether it was queued.
    pub fn try_send(&self, item: impl Into<Outgoing>) -> bool {
        self.sender.try_send(item.into()).is_ok()
    }

    /// Waits until there is room for an item (without taking it); `false` when the peer is
    /// gone. For what is worth taking only once it can be written (a hub event left in the
    /// registry's outbox stays under the slow-consumer policy).
    pub async fn room(&self) -> bool {
        self.sender.reserve().await.is_ok()
    }

    /// Items that fit now.
    pub fn capacity(&self) -> usize {
        self.sender.capacity()
    }

    /// Ends the connection: what is queued now is written within `limit`, then it closes
    /// (at once if the queue is full: a peer that does not read is not waited for).
    pub fn end(&self, limit: Duration) {
        let _ = self.sender.try_send(Outgoing::End);
        let writer = self.writer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            writer.abort();
        });
    }
}

/// Writes a batch with as few system calls as the stream allows (one vectored write when it
/// takes it all).
async fn write_batch(
    writer: &mut (impl AsyncWrite + Unpin),
    batch: &[Outgoing],
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(batch.len() * 2);
    for item in batch {
        match item {
            Outgoing::Frame(bytes) => slices.push(IoSlice::new(bytes)),
            Outgoing::Output(output) => {
                slices.push(IoSlice::new(&output.0));
                slices.push(IoSlice::new(&output.1));
            }
            Outgoing::Shared(bytes) => slices.push(IoSlice::new(bytes)),
            Outgoing::End => {}
        }
    }
    slices.retain(|s| !s.is_empty());
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = writer.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// The batching writer (see the module documentation).
async fn write_batched(mut write: BoxWrite, mut items: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::new();
    'items: while let Some(first) = items.recv().await {
        let mut ended = matches!(first, Outgoing::End);
        let mut bytes = first.len();
        batch.push(first);
        while !ended && batch.len() < BATCH_ITEMS && bytes < BATCH_BYTES {
            match items.try_recv() {
                Ok(item) => {
                    ended = matches!(item, Outgoing::End);
                    bytes += item.len();
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let written = write_batch(&mut write, &batch).await;
        batch.clear();
        if written.is_err() || ended {
            break 'items;
        }
        // A TLS stream holds written bytes until flushed: flush whenever nothing else is
        // waiting to be written.
        if items.is_empty() && write.flush().await.is_err() {
            return;
        }
    }
    let _ = write.flush().await;
    let _ = write.shutdown().await;
}

/// The pacing writer (see the module documentation).
async fn write_paced(
    mut write: BoxWrite,
    mut items: mpsc::Receiver<Outgoing>,
    gap: Duration,
    timeout: Duration,
) {
    let mut last: Option<tokio::time::Instant> = None;
    while let Some(item) = items.recv().await {
        if let Outgoing::End = item {
            break;
        }
        if let Some(last) = last {
            tokio::time::sleep_until(last + gap).await;
        }
        let written = tokio::time::timeout(timeout, async {
            write_batch(&mut write, std::slice::from_ref(&item)).await?;
            write.flush().await
        })
        .await;
        last = Some(tokio::time::Instant::now());
        if !matches!(written, Ok(Ok(()))) {
            return;
        }
    }
    let _ = write.shutdown().await;
}
