//! The CBSD dialect's text protocol (seed 000, a socket daemon for the CBSD jail manager).
//!
//! A client writes lines, `<type> <command> [args]`:
//!
//! ```text
//! command NAME [ARGS...]      run a catalog command; answered with its id
//! input ID SIZE               SIZE bytes for the command's stdin follow (0: the end of input)
//! attach ID                   receive another command's output
//! kill ID                     end a command
//! list                        the commands
//! ```
//!
//! The daemon answers with frames `<id> <type> <size> <payload>` in ASCII decimal, one space
//! apart, as the seed's `Message(1, 3, "opala")` is `1 3 5 opala`; ferry ends each frame with a
//! newline (not counted in the size), so that it reads well by hand. Notices that concern no
//! command carry id 0. Long outputs are split into frames of at most [`MAX_PAYLOAD`] bytes.

/// The longest request line.
pub const MAX_LINE: usize = 4096;

/// The largest payload of one frame (long outputs are split).
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// The largest stdin chunk an `input` may announce.
pub const MAX_INPUT: u64 = 1 << 20;

/// Frame types.
pub mod kind {
    /// The command was accepted: its id, and the command line as the payload.
    pub const ACCEPTED: u32 = 0;
    /// Its stdout.
    pub const STDOUT: u32 = 1;
    /// Its stderr.
    pub const STDERR: u32 = 2;
    /// It ended: the payload is its exit status.
    pub const EXIT: u32 = 3;
    /// A request failed: the payload says why.
    pub const ERROR: u32 = 4;
    /// A notice that concerns no command (id 0): the daemon is going down.
    pub const NOTICE: u32 = 5;
    /// One line of `list`: `ID STATE COMMAND...`; an empty one with id 0 ends the list.
    pub const LISTED: u32 = 6;
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `command NAME ARGS...`.
    Command(Vec<String>),
    /// `input ID SIZE` and its bytes (empty: the end of input).
    Input {
        /// The command.
        id: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `attach ID`.
    Attach(u64),
    /// `kill ID`.
    Kill(u64),
    /// `list`.
    List,
}

/// A daemon's frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command it concerns (0: none).
    pub id: u64,
    /// Its type (see [`kind`]).
    pub kind: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Why bytes are not a CBSD request or frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CbsdError {
    /// A line longer than [`MAX_LINE`].
    #[error("a request line is at most {MAX_LINE} bytes")]
    LineTooLong,
    /// The line is not UTF-8.
    #[error("a request line is text (UTF-8)")]
    NotText,
    /// An unknown request type.
    #[error("unknown request '{0}' (command, input, attach, kill or list)")]
    UnknownType(String),
    /// A request's words are wrong.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// An `input` announcing too much.
    #[error("an input is at most {MAX_INPUT} bytes at a time")]
    InputTooLarge,
    /// A frame that is not `<id> <type> <size> <payload>`.
    #[error("not a frame: {0}")]
    BadFrame(&'static str),
}

/// The request at the start of `buf`, and the bytes it took; `None` until it is whole.
pub fn decode_request(buf: &[u8]) -> Result<Option<(Request, usize)>, CbsdError> {
    let Some(end) = buf.iter().position(|b| *b == b'\n') else {
        return if buf.len() > MAX_LINE {
            Err(CbsdError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    if end > MAX_LINE {
        return Err(CbsdError::LineTooLong);
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| CbsdError::NotText)?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |word: Option<&&str>, usage| -> Result<u64, CbsdError> {
        word.and_then(|w| w.parse().ok())
            .ok_or(CbsdError::Usage(usage))
    };
    let request = match words.first().copied() {
        Some("command") if words.len() >= 2 => {
            Request::Command(words[1..].iter().map(|w| (*w).to_owned()).collect())
        }
        Some("command") => return Err(CbsdError::Usage("command NAME [ARGS...]")),
        Some("input") if words.len() == 3 => {
            let id = number(words.get(1), "input ID SIZE")?;
            let size = number(words.get(2), "input ID SIZE")?;
            if size > MAX_INPUT {
                return Err(CbsdError::InputTooLarge);
            }
            let size = size as usize;
            let start = end + 1;
            if buf.len() < start + size {
                return Ok(None);
            }
            return Ok(Some((
                Request::Input {
                    id,
                    data: buf[start..start + size].to_vec(),
                },
                start + size,
            )));
        }
        Some("input") => return Err(CbsdError::Usage("input ID SIZE")),
        Some("attach") if words.len() == 2 => Request::Attach(number(words.get(1), "attach ID")?),
        Some("attach") => return Err(CbsdError::Usage("attach ID")),
        Some("kill") if words.len() == 2 => Request::Kill(number(words.get(1), "kill ID")?),
        Some("kill") => return Err(CbsdError::Usage("kill ID")),
        Some("list") if words.len() == 1 => Request::List,
        Some("list") => return Err(CbsdError::Usage("list")),
        Some(other) => return Err(CbsdError::UnknownType(other.chars().take(32).collect())),
        None => {
            return Err(CbsdError::Usage(
                "command NAME [ARGS...] | input ID SIZE | attach ID | kill ID | list",
            ))
        }
    };
    Ok(Some((request, end + 1)))
}

/// A connection's requests as a [`crate::Decoder`] (what the daemon reads).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestDecoder;

impl crate::Decoder for RequestDecoder {
    type Message = Request;
    type Error = CbsdError;

    fn decode(
        &mut self,
        buf: &[u8],
        _input: crate::Input,
    ) -> Result<Option<(Request, usize)>, CbsdError> {
        decode_request(buf)
    }
}

/// A frame's bytes: `<id> <type> <size> <payload>` and a newline.
pub fn encode_frame(id: u64, kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{id} {kind} {} ", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out.push(b'\n');
    out
}

/// Output as frames of at most [`MAX_PAYLOAD`] bytes each.
pub fn encode_output(id: u64, kind: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    for chunk in data.chunks(MAX_PAYLOAD) {
        out.extend_from_slice(&encode_frame(id, kind, chunk));
    }
    out
}

/// The frame at the start of `buf` (for clients), and the bytes it took; `None` until whole.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, CbsdError> {
    let mut fields = [0u64; 3];
    let mut at = 0;
    for (index, field) in fields.iter_mut().enumerate() {
        let digits = buf[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return if at + digits == buf.len() {
                Ok(None)
            } else {
                Err(CbsdError::BadFrame("a field is not a decimal number"))
            };
        }
        if digits > 20 {
            return Err(CbsdError::BadFrame("a number is too long"));
        }
        let text = std::str::from_utf8(&buf[at..at + digits])
            .map_err(|_| CbsdError::BadFrame("not ASCII"))?;
        *field = text
            .parse()
            .map_err(|_| CbsdError::BadFrame("a number is too large"))?;
        at += digits;
        match buf.get(at) {
            None => return Ok(None),
            Some(b' ') => at += 1,
            Some(_) if index < 3 => return Err(CbsdError::BadFrame("fields are one space apart")),
            Some(_) => {}
        }
    }
    let [id, kind, size] = fields;
    let kind = u32::try_from(kind).map_err(|_| CbsdError::BadFrame("a type is too large"))?;
    let size = usize::try_from(size).map_err(|_| CbsdError::BadFrame("a size is too large"))?;
    if size > MAX_PAYLOAD {
        return Err(CbsdError::BadFrame("a payload over the limit"));
    }
    if buf.len() < at + size + 1 {
        return Ok(None);
    }
    if buf[at + size] != b'\n' {
        return Err(CbsdError::BadFrame("a frame ends with a newline"));
    }
    let frame = Frame {
        id,
        kind,
        payload: buf[at..at + size].to_vec(),
    };
    Ok(Some((frame, at + size + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_vector() {
        assert_eq!(encode_frame(1, 3, b"opala"), b"1 3 5 opala\n");
        assert_eq!(
            decode_frame(b"1 3 5 opala\n"),
            Ok(Some((
                Frame {
                    id: 1,
                    kind: 3,
                    payload: b"opala".to_vec()
                },
                12
            )))
        );
    }

    #[test]
    fn requests_parse_and_wait_for_their_bytes() {
        assert_eq!(
            decode_request(b"command jstart myjail\n"),
            Ok(Some((
                Request::Command(vec!["jstart".into(), "myjail".into()]),
                22
            )))
        );
        assert_eq!(decode_request(b"input 7 3\nab"), Ok(None));
        assert_eq!(
            decode_request(b"input 7 3\nabc"),
            Ok(Some((
                Request::Input {
                    id: 7,
                    data: b"abc".to_vec()
                },
                13
            )))
        );
        assert_eq!(
            decode_request(b"input 7 0\n"),
            Ok(Some((
                Request::Input {
                    id: 7,
                    data: Vec::new()
                },
                10
            )))
        );
        assert_eq!(
            decode_request(b"attach 2\n"),
            Ok(Some((Request::Attach(2), 9)))
        );
        assert_eq!(
            decode_request(b"kill 2\r\n"),
            Ok(Some((Request::Kill(2), 8)))
        );
        assert_eq!(decode_request(b"list\n"), Ok(Some((Request::List, 5))));
        assert_eq!(decode_request(b"lis"), Ok(None));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert_eq!(
            decode_request(b"frob x\n"),
            Err(CbsdError::UnknownType("frob".into()))
        );
        assert_eq!(
            decode_request(b"command\n"),
            Err(CbsdError::Usage("command NAME [ARGS...]"))
        );
        assert_eq!(
            decode_request(b"input x 3\n"),
            Err(CbsdError::Usage("input ID SIZE"))
        );
        assert_eq!(
            decode_request(b"input 1 99999999999\n"),
            Err(CbsdError::InputTooLarge)
        );
        assert_eq!(
            decode_request(&[b'a'; MAX_LINE + 1]),
            Err(CbsdError::LineTooLong)
        );
        assert_eq!(decode_request(b"\xff\n"), Err(CbsdError::NotText));
    }

    #[test]
    fn long_outputs_are_split() {
        let data = vec![b'x'; MAX_PAYLOAD * 2 + 1];
        let bytes = encode_output(4, kind::STDOUT, &data);
        let mut at = 0;
        let mut joined = Vec::new();
        while at < bytes.len() {
            let (frame, used) = decode_frame(&bytes[at..]).expect("ok").expect("whole");
            assert!(frame.payload.len() <= MAX_PAYLOAD);
            joined.extend_from_slice(&frame.payload);
            at += used;
        }
        assert_eq!(joined, data);
    }
}
