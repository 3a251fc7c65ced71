//! Async framing of the native protocol over any byte stream, shared by daemon and clients.
//!
//! [`FrameReader`] turns an `AsyncRead` into a sequence of decoded messages, with the frame-size
//! limit chosen per call (small before the handshake, larger after). [`write_frame`] encodes and
//! writes one message. The codec itself is `ferry_wire::native`; this crate only does the I/O.
//! [`pem`] reads TLS credentials for both sides; [`fdpass`] passes file descriptors over Unix
//! sockets.

pub mod fdpass;
pub mod pem;

use bytes::{Buf, BytesMut};
use ferry_wire::native::{decode_frame, encode_frame, WireError};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How much room to make in the read buffer before each read.
const READ_RESERVE: usize = 128 * 1024;

/// Errors while reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer sent bytes that are not a valid frame.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({0} bytes unread)")]
    Truncated(usize),
    /// The stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads native frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    /// Stream offset of `buf`'s first byte.
    offset: u64,
    /// Stream offsets of the last frame returned.
    last_frame: (u64, u64),
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a stream.
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_RESERVE),
            offset: 0,
            last_frame: (0, 0),
        }
    }

    /// Where the last frame returned by [`FrameReader::next`] lay in the stream: the offsets
    /// of its first byte and just past its last (for matching fds received with it).
    pub fn last_frame_span(&self) -> (u64, u64) {
        self.last_frame
    }

    /// The next message: `Ok(None)` on a clean end of stream between frames.
    pub async fn next<T: DeserializeOwned>(
        &mut self,
        max_frame: usize,
    ) -> Result<Option<T>, FrameError> {
        loop {
            if let Some((message, used)) = decode_frame::<T>(&self.buf, max_frame)? {
                self.buf.advance(used);
                self.last_frame = (self.offset, self.offset + used as u64);
                self.offset += used as u64;
                return Ok(Some(message));
            }
            self.buf.reserve(READ_RESERVE);
            let read = match self.inner.read_buf(&mut self.buf).await {
                // A TLS peer that leaves without close_notify: between frames, that is
                // simply the end of the conversation (the frames say when a message ends).
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                other => other?,
            };
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated(self.buf.len()))
                };
            }
        }
    }
}

/// Encodes `message` as one frame.
pub fn frame<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let mut buf = Vec::new();
    encode_frame(message, &mut buf)?;
    Ok(buf)
}

/// Encodes and writes one frame, and flushes it (a TLS stream holds written bytes until then).
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    message: &T,
) -> Result<(), FrameError> {
    writer.write_all(&frame(message)?).await?;
    writer.flush().await?;
    Ok(())
}
