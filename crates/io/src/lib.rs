//! Async framing over any byte stream, shared by daemon and clients.
//!
//! [`FrameReader`] turns an `AsyncRead` into a sequence of messages of any format that
//! implements [`ferry_wire::Decoder`] (native frames with [`FrameReader::next`], FANOS
//! netstrings, ...), knowing where each message lay in the stream. [`write_frame`] encodes and
//! writes one native message. The codecs themselves live in `ferry_wire`; this crate only does
//! the I/O. [`pem`] reads TLS credentials for both sides; [`fdpass`] passes file descriptors
//! over Unix sockets; [`private`] holds the rules of whom a Unix socket may belong to.

pub mod fdpass;
pub mod pem;
pub mod private;

use bytes::{Buf, BytesMut};
use ferry_wire::native::{encode_frame, NativeDecoder, WireError};
use ferry_wire::{Decoder, Input};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most room made in the read buffer before a read: a stream that keeps filling what it
/// is given gets this much.
const READ_RESERVE_MAX: usize = 128 * 1024;

/// The least room made before a read, and what an idle connection's buffer holds.
const READ_RESERVE_MIN: usize = 4 * 1024;

/// Most bytes a bounded read takes: a whole frame of job data, so that a frame costs two
/// reads (its length, then the rest).
const BOUNDED_READ_MAX: usize = 1024 * 1024;

/// Errors while reading messages: `E` is the format's own decoding error.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    /// The peer sent bytes that are not a valid message.
    #[error(transparent)]
    Decode(E),
    /// The stream ended in the middle of a message.
    #[error("connection closed in the middle of a frame ({0} bytes unread)")]
    Truncated(usize),
    /// The stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Errors while reading or writing native frames.
pub type FrameError = ReadError<WireError>;

impl From<WireError> for FrameError {
    fn from(error: WireError) -> FrameError {
        ReadError::Decode(error)
    }
}

/// Reads messages from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    /// Stream offset of `buf`'s first byte.
    offset: u64,
    /// Stream offsets of the last message returned.
    last_frame: (u64, u64),
    /// Never read past the end of the message being read (see [`FrameReader::bounded`]).
    bounded: bool,
    /// The room to make before the next unbounded read: doubled when a read fills it,
    /// halved when reads take little, so a busy stream reads in large gulps and an idle
    /// connection holds a small buffer.
    reserve: usize,
    /// The stream has ended.
    eof: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a stream; reads take whatever is there.
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: BytesMut::new(),
            offset: 0,
            last_frame: (0, 0),
            bounded: false,
            reserve: READ_RESERVE_MIN,
            eof: false,
        }
    }

    /// Wraps a stream that may carry fds (a Unix socket read through
    /// [`fdpass::FdReadHalf`]): no read goes past the end of the message being read, so the
    /// fds a read brings belong to that one message, however the sender split or joined its
    /// writes (the kernel hands fds over with the read that takes the first byte their
    /// `sendmsg` carried). Costs two reads per message (its length, then the rest), as Oils'
    /// own FANOS reader does.
    pub fn bounded(inner: R) -> FrameReader<R> {
        FrameReader {
            bounded: true,
            ..FrameReader::new(inner)
        }
    }

    /// Where the last message returned lay in the stream: the offsets of its first byte and
    /// just past its last (for matching fds received with it).
    pub fn last_frame_span(&self) -> (u64, u64) {
        self.last_frame
    }

    /// The next native message: `Ok(None)` on a clean end of stream between frames.
    pub async fn next<T: DeserializeOwned>(
        &mut self,
        max_frame: usize,
    ) -> Result<Option<T>, FrameError> {
        self.next_with(&mut NativeDecoder::new(max_frame)).await
    }

    /// The next message of `decoder`'s format: `Ok(None)` on a clean end of stream between
    /// messages.
    pub async fn next_with<D: Decoder>(
        &mut self,
        decoder: &mut D,
    ) -> Result<Option<D::Message>, ReadError<D::Error>> {
        loop {
            let input = if self.eof { Input::Ended } else { Input::Open };
            if let Some(message) = self.decode_buffered(decoder, input)? {
                return Ok(Some(message));
            }
            if self.eof {
                return Ok(None);
            }
            self.fill(decoder).await?;
        }
    }

    /// One read into the buffer: the bytes it took (0: the stream has ended, see
    /// [`FrameReader::ended`]). A bounded reader reads no further than the end of the message
    /// being read, as `decoder` tells it. Cancel-safe: bytes are only taken by a read that
    /// completes.
    pub async fn fill<D: Decoder>(&mut self, decoder: &D) -> std::io::Result<usize> {
        let read = if self.bounded {
            let want = decoder
                .message_len_at_least(&self.buf)
                .saturating_sub(self.buf.len())
                .clamp(1, BOUNDED_READ_MAX);
            self.buf.reserve(want);
            (&mut self.inner)
                .take(want as u64)
                .read_buf(&mut self.buf)
                .await
        } else {
            self.make_room();
            let room = self.buf.capacity() - self.buf.len();
            let read = self.inner.read_buf(&mut self.buf).await;
            if let Ok(n) = read {
                self.reserve = if n >= room {
                    (self.reserve * 2).min(READ_RESERVE_MAX)
                } else if n < room / 4 {
                    (self.reserve / 2).max(READ_RESERVE_MIN)
                } else {
                    self.reserve
                };
            }
            read
        };
        let read = match read {
            // A TLS peer that leaves without close_notify: between frames, that is
            // simply the end of the conversation (the frames say when a message ends).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            other => other?,
        };
        if read == 0 {
            // The next decode, with `Input::Ended`, lets the format name what is missing.
            self.eof = true;
        }
        Ok(read)
    }

    /// Decodes the next message from the bytes already read, told `input` of what follows
    /// (a stream that ended is always [`Input::Ended`]): `Ok(None)` when they hold none
    /// (at the end: they were none at all; bytes left over are
    /// [`ReadError::Truncated`]).
    pub fn decode_buffered<D: Decoder>(
        &mut self,
        decoder: &mut D,
        input: Input,
    ) -> Result<Option<D::Message>, ReadError<D::Error>> {
        let input = if self.eof { Input::Ended } else { input };
        match decoder
            .decode(&self.buf, input)
            .map_err(ReadError::Decode)?
        {
            Some((message, used)) => {
                let used = used.min(self.buf.len());
                self.buf.advance(used);
                self.last_frame = (self.offset, self.offset + used as u64);
                self.offset += used as u64;
                Ok(Some(message))
            }
            None if self.eof && !self.buf.is_empty() => Err(ReadError::Truncated(self.buf.len())),
            None => Ok(None),
        }
    }

    /// The bytes read and not yet decoded.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the bytes read and not yet decoded (a partial message given up); how many.
    pub fn discard(&mut self) -> usize {
        let dropped = self.buf.len();
        self.buf.clear();
        self.offset += dropped as u64;
        dropped
    }

    /// Whether the stream has ended (a read took no bytes).
    pub fn ended(&self) -> bool {
        self.eof
    }
}

impl<R> FrameReader<R> {
    /// Makes room for an unbounded read: an empty buffer much larger than what reads take
    /// now is given back (an idle connection keeps a small one), then `reserve` bytes.
    fn make_room(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 2 * self.reserve {
            self.buf = BytesMut::new();
        }
        self.buf.reserve(self.reserve);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_wire::fanos::{encode_netstring, NetstringDecoder, NetstringError};

    #[tokio::test]
    async fn bounded_reads_stop_at_every_message_end() {
        // A reader that records how much each read took.
        struct Counting<'a>(&'a [u8], Vec<usize>);
        impl AsyncRead for Counting<'_> {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let n = buf.remaining().min(self.0.len());
                buf.put_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                self.1.push(n);
                std::task::Poll::Ready(Ok(()))
            }
        }
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for payload in [&b"GETPID"[..], b"", b"EVAL echo hi", &[b'x'; 1000]] {
            encode_netstring(payload, &mut stream);
            ends.push(stream.len());
        }
        let mut reader = FrameReader::bounded(Counting(&stream, Vec::new()));
        let mut decoder = NetstringDecoder { max: 4096 };
        let mut got = Vec::new();
        while let Some(payload) = reader.next_with(&mut decoder).await.expect("decode") {
            got.push(payload);
            assert_eq!(reader.last_frame_span().1 as usize, ends[got.len() - 1]);
        }
        assert_eq!(got.len(), 4);
        // No read crossed a message end.
        let mut at = 0;
        for n in reader.inner.1 {
            let next_end = ends.iter().find(|&&e| e > at).copied().unwrap_or(at);
            assert!(
                at + n <= next_end,
                "a read of {n} at {at} crossed {next_end}"
            );
            at += n;
        }
    }

    #[tokio::test]
    async fn an_unbounded_reader_takes_what_is_there() {
        let mut stream = Vec::new();
        for payload in [&b"GETPID"[..], b"EVAL echo hi", b"STATE"] {
            encode_netstring(payload, &mut stream);
        }
        let mut reader = FrameReader::new(&stream[..]);
        let mut decoder = NetstringDecoder { max: 4096 };
        assert!(reader
            .next_with(&mut decoder)
            .await
            .expect("decode")
            .is_some());
        // The first read took every message: nothing is left in the stream.
        assert!(
            reader.inner.is_empty(),
            "{} bytes unread",
            reader.inner.len()
        );
    }

    #[tokio::test]
    async fn an_incomplete_message_at_the_end_is_the_formats_error() {
        let mut reader = FrameReader::new(&b"5:abc"[..]);
        let result = reader.next_with(&mut NetstringDecoder { max: 10 }).await;
        assert!(matches!(
            result,
            Err(ReadError::Decode(NetstringError::UnexpectedEof))
        ));
        let mut reader = FrameReader::new(&[0u8, 0, 0, 9, 1][..]);
        let result = reader.next::<ferry_wire::ClientMessage>(100).await;
        assert!(matches!(result, Err(ReadError::Truncated(5))), "{result:?}");
    }
}
