//! Recording what peers send (`ferry daemon --record-wire DIR`, or `FERRY_RECORD_WIRE`): a
//! debugging and testing aid. Each read the daemon makes of a connection is written to its
//! own file, `DIR/DIALECT/PEER-ID/NNNNNN` (numbered in order, so that `cat` gives the whole
//! stream and each file is one read: what a dialect that takes one read as one message sees),
//! up to [`RECORD_LIMIT`] bytes and [`RECORD_READS`] reads per connection. A real client's
//! exchange can be read afterwards, and the fuzz corpora are seeded with real exchanges this
//! way (`fuzz/seed`). Recordings hold whatever the peer sent, tokens included: the daemon
//! warns when it records.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::BoxRead;

/// The most bytes recorded of one connection (the fuzz targets look at small inputs).
pub const RECORD_LIMIT: usize = 64 * 1024;
/// The most reads recorded of one connection.
pub const RECORD_READS: usize = 256;

/// `read`, recording what it yields into `DIR/DIALECT/PEER/` when `dir` is set; `read` as it
/// is otherwise, or when the directory cannot be made (a warning is logged).
pub(crate) fn recorded(read: BoxRead, dir: Option<&Path>, dialect: &str, peer: &str) -> BoxRead {
    let Some(dir) = dir else { return read };
    let dir = dir.join(dialect).join(peer);
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Box::new(Recorder {
            inner: read,
            dir,
            reads: 0,
            bytes_left: RECORD_LIMIT,
        }),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot record a connection: {e}");
            read
        }
    }
}

/// A reading half that writes each read to a file of its own.
struct Recorder {
    inner: BoxRead,
    dir: PathBuf,
    reads: usize,
    bytes_left: usize,
}

impl AsyncRead for Recorder {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let take = (buf.filled().len() - before).min(self.bytes_left);
            if take > 0 && self.reads < RECORD_READS {
                let file = self.dir.join(format!("{:06}", self.reads));
                // A small blocking write to a local file: a debugging aid, not a hot path.
                let written = std::fs::write(file, &buf.filled()[before..before + take]);
                self.reads += 1;
                self.bytes_left = if written.is_ok() {
                    self.bytes_left - take
                } else {
                    0
                };
            }
        }
        polled
    }
}
