//! The FIFO-pair transport (C2's): requests come on one named pipe, answers go on the other.
//! There is no connection to accept: the pair is served as one connection at a time, opened
//! read-write (so that a client that closes its end is not an end of file, and an open never
//! waits for the other side), and opened again when that connection ends.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::DaemonError;

/// A bound FIFO pair.
pub(crate) struct FifoPair {
    input: PathBuf,
    output: PathBuf,
    /// One connection at a time.
    gate: Arc<Semaphore>,
}

/// One "connection" of a FIFO pair: its halves, and its place (released when the reading half
/// is dropped).
pub(crate) struct FifoConnection {
    pub read: PermitRead,
    pub write: pipe::Sender,
    pub address: String,
}

/// A reading half that holds the pair's place as long as it lives.
pub(crate) struct PermitRead {
    inner: pipe::Receiver,
    _place: OwnedSemaphorePermit,
}

impl AsyncRead for PermitRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Makes `path` a FIFO of mode 0600 if nothing is there; refuses anything else that is.
fn ensure_fifo(spec: &str, path: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(DaemonError::Config(format!(
            "listener {spec}: {} exists and is not a FIFO",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => rustix::fs::mkfifoat(
            rustix::fs::CWD,
            path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .map_err(|e| DaemonError::Io {
            context: format!("listener {spec}: cannot make the FIFO {}", path.display()),
            source: e.into(),
        }),
        Err(source) => Err(DaemonError::Io {
            context: format!("listener {spec}: {}", path.display()),
            source,
        }),
    }
}

impl FifoPair {
    /// Binds the pair `input`, `output` (made if absent).
    pub(crate) fn bind(spec: &str, input: &Path, output: &Path) -> Result<FifoPair, DaemonError> {
        ensure_fifo(spec, input)?;
        ensure_fifo(spec, output)?;
        Ok(FifoPair {
            input: input.to_owned(),
            output: output.to_owned(),
            gate: Arc::new(Semaphore::new(1)),
        })
    }

    /// The next connection: once the previous one has ended.
    pub(crate) async fn accept(&self) -> std::io::Result<FifoConnection> {
        let place = Arc::clone(&self.gate)
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let inner = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&self.input)?;
        let write = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&self.output)?;
        Ok(FifoConnection {
            read: PermitRead {
                inner,
                _place: place,
            },
            write,
            address: format!("fifo {},{}", self.input.display(), self.output.display()),
        })
    }
}
