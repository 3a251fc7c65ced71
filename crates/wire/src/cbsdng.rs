//! CBSD's later daemon's binary framing (mekanix/cbsdng-cbsdngd, with a Python peer in
//! cbsdng/backend `cbsdng/models/message.py`): a frame is a host-endian (little-endian here)
//! u32 id, u32 type, u32 size, then `size` bytes of payload.
//!
//! Type bits: NONE 0, NOCOLOR 1, JAIL 2, BHYVE 4, EXIT 8, CONNECTION_CLOSED 0x10. A request's
//! payload is a command line; output returns as `(id, 0, chunk)` frames and the end as
//! `(id, 8, "<exit status>")`.

/// Bytes before a frame's payload.
pub const HEADER_LEN: usize = 12;

/// The largest payload taken (a request, an output chunk).
pub const MAX_PAYLOAD: u32 = 1 << 20;

/// Type bits.
pub mod bits {
    /// Plain output.
    pub const NONE: u32 = 0;
    /// Output without colours.
    pub const NOCOLOR: u32 = 1;
    /// A jail command.
    pub const JAIL: u32 = 2;
    /// A bhyve command.
    pub const BHYVE: u32 = 4;
    /// The command ended: the payload is its status.
    pub const EXIT: u32 = 8;
    /// The connection is closing.
    pub const CONNECTION_CLOSED: u32 = 0x10;
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its id.
    pub id: u32,
    /// Its type bits.
    pub kind: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// A payload over [`MAX_PAYLOAD`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cbsdng frame announces {0} bytes, over the limit of {MAX_PAYLOAD}")]
pub struct TooLarge(pub u32);

/// A connection's frames as a [`crate::Decoder`] (what the daemon reads).
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameDecoder;

impl crate::Decoder for FrameDecoder {
    type Message = Frame;
    type Error = TooLarge;

    fn decode(
        &mut self,
        buf: &[u8],
        _input: crate::Input,
    ) -> Result<Option<(Frame, usize)>, TooLarge> {
        decode_frame(buf)
    }

    fn message_len_at_least(&self, buf: &[u8]) -> usize {
        match buf.get(8..HEADER_LEN) {
            Some(size) => HEADER_LEN
                .saturating_add(u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize),
            None => HEADER_LEN,
        }
    }
}

/// A frame's bytes.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + frame.payload.len());
    out.extend_from_slice(&frame.id.to_le_bytes());
    out.extend_from_slice(&frame.kind.to_le_bytes());
    out.extend_from_slice(&(frame.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame.payload);
    out
}

/// The frame at the start of `buf` and the bytes it took; `None` until it is whole.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, TooLarge> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let (id, kind, size) = (word(0), word(4), word(8));
    if size > MAX_PAYLOAD {
        return Err(TooLarge(size));
    }
    let end = HEADER_LEN + size as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((
        Frame {
            id,
            kind,
            payload: buf[HEADER_LEN..end].to_vec(),
        },
        end,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_and_wait_for_their_bytes() {
        let frame = Frame {
            id: 7,
            kind: bits::EXIT,
            payload: b"0".to_vec(),
        };
        let bytes = encode_frame(&frame);
        assert_eq!(bytes, [7, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, b'0']);
        assert_eq!(decode_frame(&bytes), Ok(Some((frame, 13))));
        assert_eq!(decode_frame(&bytes[..12]), Ok(None));
        assert_eq!(
            decode_frame(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            Err(TooLarge(u32::MAX))
        );
    }
}
