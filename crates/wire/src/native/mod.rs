//! The native `ferry` protocol: the frame codec, with the message types in [`messages`].
//!
//! A frame is a 4-byte big-endian body length followed by a CBOR body. The body is one
//! [`ClientMessage`] (client → daemon) or one [`DaemonMessage`] (daemon → client), encoded with
//! serde's default external tagging: a one-entry CBOR map from the variant name to a map of its
//! fields. Payload bytes are CBOR byte strings. `docs/protocol.md` shows byte-exact examples.

use serde::{de::DeserializeOwned, Serialize};

/// The protocol version this crate speaks. A daemon refuses a client whose version differs.
/// Version 2: `Welcome.peer` is the peer's id text; `ListPeers` and `KickPeers`.
/// Version 3: groups, dependencies, labels, `Restart`, `Pause`/`Resume`, `Show`; the job
/// states `paused` and `dependency-failed`.
pub const PROTOCOL_VERSION: u32 = 3;

/// Largest frame body accepted before the handshake has succeeded.
pub const HANDSHAKE_MAX_FRAME: usize = 4 * 1024;

/// Default largest frame body accepted after the handshake (configurable on the daemon).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Largest payload carried by one [`DaemonMessage::Output`] frame.
pub const MAX_OUTPUT_CHUNK: usize = 64 * 1024;

/// Length of the frame header (the big-endian body length).
pub const FRAME_HEADER_LEN: usize = 4;

/// The sender id of a hub message from the daemon itself (`Message.from`); no member goes by
/// its name.
pub const SERVER_PEER: &str = "server";

/// The group of a job that names none (`Run.group` absent, `JobInfo.group` absent).
pub const DEFAULT_GROUP: &str = "default";

/// A job id, chosen by the daemon: unique and increasing.
pub type JobId = u64;

mod messages;

pub use messages::{
    ClientMessage, DaemonMessage, ErrorCode, FileEntry, GroupAction, GroupInfo, HubCluster,
    HubClusterDaemon, HubCounters, HubMember, JobDetails, JobExit, JobInfo, JobState, MissedFrom,
    NoticeKind, OtherEntry, PeerInfo, Stream, TtySize, Undelivered,
};

/// Errors from the frame codec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The declared body length is over the limit in force.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    FrameTooLarge {
        /// Declared length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// A frame with an empty body.
    #[error("empty frame")]
    EmptyFrame,
    /// The body is not valid CBOR for any known message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The body holds bytes after the message.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
    /// A message could not be encoded (only for values that cannot be represented).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Appends one frame holding `message` to `out`.
pub fn encode_frame<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    ciborium::ser::into_writer(message, &mut *out).map_err(|e| {
        out.truncate(start);
        WireError::Encode(e.to_string())
    })?;
    set_body_len(out, start, 0)
}

/// Writes the length header of the frame that starts at `start` in `out`: the bytes after the
/// header, plus `more` bytes the caller will send after them. Removes the frame on failure.
fn set_body_len(out: &mut Vec<u8>, start: usize, more: usize) -> Result<(), WireError> {
    let body_len = out.len() - start - FRAME_HEADER_LEN + more;
    let Ok(body_len) = u32::try_from(body_len) else {
        out.truncate(start);
        return Err(WireError::Encode(format!(
            "body of {body_len} bytes does not fit a frame"
        )));
    };
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&body_len.to_be_bytes());
    Ok(())
}

/// Appends the frame of a [`DaemonMessage::Output`] up to (not including) its data.
///
/// The appended bytes followed by `data_len` bytes of data are exactly what [`encode_frame`]
/// produces for the whole message, so a sender can write the data from where it already lies
/// (a vectored write) instead of copying it into the frame.
pub fn encode_output_head(
    job: JobId,
    stream: Stream,
    offset: u64,
    data_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let start = out.len();
    encode_frame(
        &DaemonMessage::Output {
            job,
            stream,
            offset,
            data: Vec::new(),
        },
        out,
    )?;
    // `data` is the last field: the encoding ends with the empty byte string's header.
    if out.pop() != Some(0x40) {
        out.truncate(start);
        return Err(WireError::Encode("unexpected Output encoding".into()));
    }
    let len = data_len as u64;
    match len {
        0..=23 => out.push(0x40 | len as u8),
        24..=0xff => out.extend_from_slice(&[0x58, len as u8]),
        0x100..=0xffff => {
            out.push(0x59);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x5a);
            let Ok(len) = u32::try_from(len) else {
                out.truncate(start);
                return Err(WireError::Encode(format!(
                    "{data_len} bytes of output in one frame"
                )));
            };
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    set_body_len(out, start, data_len)
}

/// Tries to decode one frame from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (read more and call again),
/// `Ok(Some((message, consumed)))` when it does, and an error when the frame is over
/// `max_frame` or its body is not a valid message. The length is checked before the body is
/// awaited, so a huge length prefix is refused at once.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    max_frame: usize,
) -> Result<Option<(T, usize)>, WireError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; FRAME_HEADER_LEN];
    len_bytes.copy_from_slice(header);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > max_frame {
        return Err(WireError::FrameTooLarge {
            len,
            max: max_frame,
        });
    }
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    let Some(mut body) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Ok(None);
    };
    let message: T =
        ciborium::de::from_reader(&mut body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !body.is_empty() {
        return Err(WireError::TrailingBytes(body.len()));
    }
    Ok(Some((message, FRAME_HEADER_LEN + len)))
}

/// The native frame format as a [`crate::Decoder`]: messages of type `T` in frames of at most
/// `max` body bytes.
#[derive(Debug)]
pub struct NativeDecoder<T> {
    /// Largest body accepted.
    pub max: usize,
    message: std::marker::PhantomData<fn() -> T>,
}

impl<T> NativeDecoder<T> {
    /// A decoder of frames up to `max` body bytes.
    pub fn new(max: usize) -> NativeDecoder<T> {
        NativeDecoder {
            max,
            message: std::marker::PhantomData,
        }
    }
}

impl<T: DeserializeOwned> crate::Decoder for NativeDecoder<T> {
    type Message = T;
    type Error = WireError;

    fn decode(
        &mut self,
        buf: &[u8],
        _input: crate::Input,
    ) -> Result<Option<(T, usize)>, WireError> {
        decode_frame(buf, self.max)
    }

    fn message_len_at_least(&self, buf: &[u8]) -> usize {
        match buf.get(..FRAME_HEADER_LEN) {
            Some(header) => {
                let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                FRAME_HEADER_LEN.saturating_add(len as usize)
            }
            None => FRAME_HEADER_LEN,
        }
    }
}

/// Lossy display of a byte string (for argv in listings and logs).
pub fn display_bytes(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(message: &T) {
        let mut buf = Vec::new();
        encode_frame(message, &mut buf).expect("encode");
        let (decoded, used) = decode_frame::<T>(&buf, DEFAULT_MAX_FRAME)
            .expect("decode")
            .expect("whole frame");
        assert_eq!(used, buf.len());
        assert_eq!(&decoded, message);
    }

    #[test]
    fn a_messages_name_is_its_tag_on_the_wire() {
        for message in [
            ClientMessage::ListJobs {
                request: 1,
                all: false,
            },
            ClientMessage::CloseStdin { job: 2 },
            ClientMessage::KickPeers {
                request: 3,
                peer: None,
            },
        ] {
            let mut body = Vec::new();
            ciborium::ser::into_writer(&message, &mut body).expect("encode");
            let value: ciborium::Value = ciborium::de::from_reader(&body[..]).expect("decode");
            let tag = value.as_map().and_then(|map| map[0].0.as_text());
            assert_eq!(tag, Some(message.name()));
        }
        assert_eq!(DaemonMessage::Done { request: 9 }.request(), Some(9));
        let notice = DaemonMessage::Notice {
            kind: NoticeKind::Kicked,
            message: String::new(),
        };
        assert_eq!(notice.request(), None);
    }

    #[test]
    fn hello_roundtrips() {
        roundtrip(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            client: "t".into(),
            token: None,
        });
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let mut buf = Vec::new();
        encode_frame(
            &ClientMessage::ListJobs {
                request: 7,
                all: false,
            },
            &mut buf,
        )
        .expect("encode");
        for cut in 0..buf.len() {
            assert_eq!(
                decode_frame::<ClientMessage>(&buf[..cut], DEFAULT_MAX_FRAME),
                Ok(None),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn huge_length_is_refused_before_the_body_arrives() {
        let buf = [0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            decode_frame::<ClientMessage>(&buf, 1024),
            Err(WireError::FrameTooLarge {
                len: 0xffff_ffff,
                max: 1024
            })
        );
    }

    #[test]
    fn unknown_variant_is_malformed() {
        // {"Frobnicate": {}}
        let body = [
            0xa1, 0x6a, b'F', b'r', b'o', b'b', b'n', b'i', b'c', b'a', b't', b'e', 0xa0,
        ];
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&body);
        assert!(matches!(
            decode_frame::<ClientMessage>(&buf, 1024),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut buf = Vec::new();
        encode_frame(
            &ClientMessage::ListJobs {
                request: 1,
                all: false,
            },
            &mut buf,
        )
        .expect("encode");
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) + 1;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        buf.push(0);
        assert_eq!(
            decode_frame::<ClientMessage>(&buf, 1024),
            Err(WireError::TrailingBytes(1))
        );
    }

    #[test]
    fn shell_status_follows_shell_conventions() {
        let exit = |code, signal, error: Option<&str>| JobExit {
            code,
            signal,
            error: error.map(String::from),
            ..JobExit::default()
        };
        assert_eq!(exit(Some(3), None, None).shell_status(), 3);
        assert_eq!(exit(None, Some(9), None).shell_status(), 137);
        assert_eq!(exit(None, None, Some("no such file")).shell_status(), 127);
    }
}
