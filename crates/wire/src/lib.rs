//! Sans-IO codecs for every wire format ferry speaks.
//!
//! This crate holds pure encode/decode functions over byte buffers: no sockets, no async runtime,
//! no clock. The daemon and the clients wrap these functions in their own I/O loops; property
//! tests and fuzz targets drive them directly.
//!
//! - [`native`]: the native `ferry` protocol (4-byte big-endian length + CBOR body).
//! - [`c2`]: KubOS C2's CSP frames and CBOR maps (seed 004).
//! - [`cluster`]: the hub cluster's JSON messages on NATS.
//! - [`cbsd`]: the CBSD socket daemon's text lines and frames (seed 000).
//! - [`cbsdng`]: CBSD's later daemon's binary frames.
//! - [`fanos`]: the FANOS dialect's netstrings, requests and replies (seed 003).
//! - [`http`]: HTTP/1.1 requests and responses, for the HTTP listener.
//! - [`tsockm`]: TsockM's `::`-separated messages (seed 002).
//! - [`rake64`]: the distributed rake's 64-byte headers (seed 001).
//!
//! Every stream format implements [`Decoder`], which is all a reader needs to split a byte
//! stream into messages.

pub mod c2;
pub mod cbsd;
pub mod cbsdng;
pub mod cluster;
pub mod fanos;
pub mod http;
pub mod native;
pub mod rake64;
pub mod tsockm;

pub use native::{
    decode_frame, display_bytes, encode_frame, encode_output_head, ClientMessage, DaemonMessage,
    ErrorCode, FileEntry, JobExit, JobId, JobInfo, JobState, NativeDecoder, NoticeKind, OtherEntry,
    PeerInfo, Stream, WireError, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN, HANDSHAKE_MAX_FRAME,
    MAX_OUTPUT_CHUNK, PROTOCOL_VERSION,
};

/// What a reader knows of the bytes that follow those it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// More may come.
    Open,
    /// None came for the dialect's pause: a format without delimiters may take what it holds
    /// as a whole message now (see [`Decoder::ends_at_pause`]).
    Paused,
    /// None will come: the stream ended.
    Ended,
}

/// A message format on a byte stream, as a reader drives it: the sans-IO half of every
/// dialect's connection. A decoder may keep state between messages (a conversation whose next
/// message depends on the last, as rake64's filestream), so a reader calls it on the bytes it
/// holds, in order, and hands each message on as it comes.
pub trait Decoder {
    /// What one message decodes to.
    type Message;
    /// Why bytes are not a message.
    type Error;

    /// Decodes the message at the start of `buf`: the message and the bytes it took, or
    /// `Ok(None)` when more bytes are needed. `input` says whether more may come; at
    /// [`Input::Ended`] a format may report an incomplete message as its own error (otherwise
    /// the reader reports it), and `Ok(None)` with an empty `buf` is a clean end.
    fn decode(
        &mut self,
        buf: &[u8],
        input: Input,
    ) -> Result<Option<(Self::Message, usize)>, Self::Error>;

    /// The fewest bytes the message starting `buf` can take in all, as far as `buf` tells (it
    /// may be a partial message, or empty). A reader that must not read past the end of a
    /// message (fds ride on particular bytes, see `ferry_io::fdpass`) reads at most this many
    /// bytes less those it holds. A format of delimited text cannot tell: one more byte.
    fn message_len_at_least(&self, buf: &[u8]) -> usize {
        buf.len() + 1
    }

    /// Whether a pause in the stream would complete the message `buf` starts (a format with
    /// no delimiter, where silence is the end), or give it up (a partial frame a dead client
    /// left): the reader then waits for its dialect's pause and decodes with
    /// [`Input::Paused`].
    fn ends_at_pause(&self, _buf: &[u8]) -> bool {
        false
    }
}

/// What [`decode_chunks`] made of a stream.
#[derive(Debug)]
pub struct Decoded<M> {
    /// Every whole message, in order.
    pub messages: Vec<M>,
    /// Bytes left over at the end that are no whole message.
    pub left: usize,
}

/// Decodes a stream that arrives in `chunks` as a connection's reader takes it: after each
/// chunk, every whole message the bytes held so far make; after the last, a pause where the
/// decoder waits for one, then the end. A stream decodes to the same messages however it is
/// split (the property the codecs' tests and fuzz targets check), except where a pause
/// between the chunks would have ended a message.
pub fn decode_chunks<D: Decoder>(
    decoder: &mut D,
    chunks: &[&[u8]],
) -> Result<Decoded<D::Message>, D::Error> {
    let mut buf = Vec::new();
    let mut messages = Vec::new();
    // A message may take no bytes (rake64's empty file), but never two in a row.
    let mut empty_before = false;
    let mut take = |buf: &mut Vec<u8>, input: Input, decoder: &mut D| -> Result<bool, D::Error> {
        match decoder.decode(buf, input)? {
            Some((message, used)) => {
                buf.drain(..used.min(buf.len()));
                messages.push(message);
                let stuck = used == 0 && empty_before;
                empty_before = used == 0;
                Ok(!stuck)
            }
            None => Ok(false),
        }
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while take(&mut buf, Input::Open, decoder)? {}
    }
    loop {
        if take(&mut buf, Input::Open, decoder)? {
            continue;
        }
        if decoder.ends_at_pause(&buf) && take(&mut buf, Input::Paused, decoder)? {
            continue;
        }
        if buf.is_empty() || !take(&mut buf, Input::Ended, decoder)? {
            break;
        }
    }
    Ok(Decoded {
        messages,
        left: buf.len(),
    })
}
