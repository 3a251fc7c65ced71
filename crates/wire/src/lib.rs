//! Sans-IO codecs for every wire format ferry speaks.
//!
//! This crate holds pure encode/decode functions over byte buffers: no sockets, no async runtime,
//! no clock. The daemon and the clients wrap these functions in their own I/O loops; property
//! tests and fuzz targets drive them directly.
//!
//! - [`native`]: the native `ferry` protocol (4-byte big-endian length + CBOR body).
//! - [`c2`]: KubOS C2's CSP frames and CBOR maps (seed 004).
//! - [`cbsd`]: the CBSD socket daemon's text lines and frames (seed 000).
//! - [`cbsdng`]: CBSD's later daemon's binary frames.
//! - [`fanos`]: the FANOS dialect's netstrings, requests and replies (seed 003).
//! - [`tsockm`]: TsockM's `::`-separated messages (seed 002).
//! - [`rake64`]: the distributed rake's 64-byte headers (seed 001).
//!
//! Every stream format implements [`Decoder`], which is all a reader needs to split a byte
//! stream into messages.

pub mod c2;
pub mod cbsd;
pub mod cbsdng;
pub mod fanos;
pub mod native;
pub mod rake64;
pub mod tsockm;

pub use native::{
    decode_frame, display_bytes, encode_frame, encode_output_head, ClientMessage, DaemonMessage,
    ErrorCode, FileEntry, JobExit, JobId, JobInfo, JobState, NativeDecoder, NoticeKind, OtherEntry,
    PeerInfo, Stream, WireError, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN, HANDSHAKE_MAX_FRAME,
    MAX_OUTPUT_CHUNK, PROTOCOL_VERSION,
};

/// A message format on a byte stream, as a reader drives it.
pub trait Decoder {
    /// What one message decodes to.
    type Message;
    /// Why bytes are not a message.
    type Error;

    /// Decodes the message at the start of `buf`: the message and the bytes it took, or
    /// `Ok(None)` when more bytes are needed. `eof` says no more bytes will come (a format may
    /// then report an incomplete message as its own error; otherwise the reader reports it).
    fn decode(
        &mut self,
        buf: &[u8],
        eof: bool,
    ) -> Result<Option<(Self::Message, usize)>, Self::Error>;

    /// The fewest bytes the message starting `buf` can take in all, as far as `buf` tells (it
    /// may be a partial message, or empty). A reader that must not read past the end of a
    /// message (fds ride on particular bytes, see `ferry_io::fdpass`) reads at most this many
    /// bytes less those it holds.
    fn message_len_at_least(&self, buf: &[u8]) -> usize;
}
