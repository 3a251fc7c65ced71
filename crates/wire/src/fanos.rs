//! The FANOS dialect (seed 003, Oils' coprocess protocol): netstrings, and the requests and
//! replies they carry.
//!
//! A message is a netstring `<len>:<payload>,` (the length in ASCII decimal). On the socket the
//! payload travels with `sendmsg`, possibly carrying file descriptors; that is the transport's
//! business, not this module's. Requests are `GETPID`, `EVAL <code>`, `ARGV <NUL-separated
//! argv>` and `STATE`; replies are `OK <text>`, `STATUS <code>` and `ERROR <message>`.

use std::ops::Range;

/// Most length digits accepted (a length of up to 9 999 999 999 bytes is far over any limit).
const MAX_LENGTH_DIGITS: usize = 10;

/// Why bytes are not a netstring. The texts are Oils' own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetstringError {
    /// The message does not start with a decimal length.
    #[error("Expected netstring length")]
    ExpectedLength,
    /// The length is not followed by `:`.
    #[error("Expected : after netstring length")]
    ExpectedColon,
    /// The payload is not followed by `,`.
    #[error("Expected ,")]
    ExpectedComma,
    /// The stream ended inside a netstring.
    #[error("Unexpected EOF")]
    UnexpectedEof,
    /// The declared length is over the limit.
    #[error("netstring of {len} bytes is over the limit of {max} bytes")]
    TooLong {
        /// The declared length.
        len: u64,
        /// The limit.
        max: usize,
    },
}

/// Appends `payload` as a netstring.
pub fn encode_netstring(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(payload);
    out.push(b',');
}

/// Tries to decode one netstring from the start of `buf`.
///
/// Returns the payload's range in `buf` and the bytes consumed, `Ok(None)` when more bytes are
/// needed (or, at `eof`, when `buf` is empty: a clean end), or an error. `eof` says that no
/// more bytes will come, so an incomplete netstring is an error rather than a wait.
pub fn decode_netstring(
    buf: &[u8],
    max: usize,
    eof: bool,
) -> Result<Option<(Range<usize>, usize)>, NetstringError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err(NetstringError::ExpectedLength);
    }
    if digits > MAX_LENGTH_DIGITS {
        return Err(NetstringError::TooLong { len: u64::MAX, max });
    }
    let len: u64 = buf[..digits]
        .iter()
        .fold(0, |n, d| n * 10 + u64::from(d - b'0'));
    if len > max as u64 {
        return Err(NetstringError::TooLong { len, max });
    }
    let Some(&separator) = buf.get(digits) else {
        return if eof {
            Err(NetstringError::UnexpectedEof)
        } else {
            Ok(None)
        };
    };
    if separator != b':' {
        return Err(NetstringError::ExpectedColon);
    }
    // `len` is at most `max`, a usize.
    let start = digits + 1;
    let end = start + len as usize;
    if buf.len() < end {
        return if eof {
            Err(NetstringError::UnexpectedEof)
        } else {
            Ok(None)
        };
    }
    match buf.get(end) {
        Some(b',') => Ok(Some((start..end, end + 1))),
        Some(_) => Err(NetstringError::ExpectedComma),
        None if eof => Err(NetstringError::ExpectedComma),
        None => Ok(None),
    }
}

/// The fewest bytes the netstring starting `buf` can take in all, as far as `buf` tells: its
/// whole length once the `:` is in, else what the digits so far allow (`0:,` is the shortest).
pub fn netstring_len_at_least(buf: &[u8]) -> usize {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    let value = buf[..digits.min(MAX_LENGTH_DIGITS)]
        .iter()
        .fold(0usize, |n, d| {
            n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
        });
    // Length digits, separator, payload, comma; more digits only make it longer.
    let least = digits.saturating_add(2).saturating_add(value);
    if buf.get(digits) == Some(&b':') {
        least
    } else {
        least.max(3)
    }
}

/// Netstrings as a [`crate::Decoder`]: each message is a payload of at most `max` bytes.
#[derive(Debug, Clone, Copy)]
pub struct NetstringDecoder {
    /// Largest payload accepted.
    pub max: usize,
}

impl crate::Decoder for NetstringDecoder {
    type Message = Vec<u8>;
    type Error = NetstringError;

    fn decode(
        &mut self,
        buf: &[u8],
        input: crate::Input,
    ) -> Result<Option<(Vec<u8>, usize)>, NetstringError> {
        let ended = input == crate::Input::Ended;
        Ok(
            decode_netstring(buf, self.max, ended)?
                .map(|(range, used)| (buf[range].to_vec(), used)),
        )
    }

    fn message_len_at_least(&self, buf: &[u8]) -> usize {
        netstring_len_at_least(buf)
    }
}

/// A FANOS request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanosRequest {
    /// `GETPID`: answered `OK <pid>`.
    GetPid,
    /// `EVAL <code>`: run shell code in the connection's session on the passed fds.
    Eval(Vec<u8>),
    /// `ARGV <arg>\0<arg>...`: run a command, statelessly (like `sh -c`).
    Argv(Vec<Vec<u8>>),
    /// `STATE`: the session's state.
    State,
    /// Anything else (answered with an error naming it).
    Unknown(Vec<u8>),
}

/// Parses a request payload. The verb ends at the first space or NUL: `ARGV` takes both the
/// form `ARGV arg\0arg...` and the seed's `ARGV\0arg\0arg...` (a trailing NUL allowed).
pub fn parse_request(payload: &[u8]) -> FanosRequest {
    let (verb, rest) = match payload.iter().position(|&b| b == b' ' || b == 0) {
        Some(at) => (&payload[..at], Some(&payload[at + 1..])),
        None => (payload, None),
    };
    let spaced = payload.get(verb.len()) == Some(&b' ');
    match (verb, rest) {
        (b"GETPID", None) => FanosRequest::GetPid,
        (b"STATE", None) => FanosRequest::State,
        (b"EVAL", Some(code)) if spaced => FanosRequest::Eval(code.to_vec()),
        (b"ARGV", Some(args)) => {
            let args = args.strip_suffix(b"\0").unwrap_or(args);
            if args.is_empty() {
                return FanosRequest::Unknown(payload.to_vec());
            }
            FanosRequest::Argv(args.split(|&b| b == 0).map(<[u8]>::to_vec).collect())
        }
        _ => FanosRequest::Unknown(payload.to_vec()),
    }
}

/// A FANOS reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanosReply {
    /// `OK <text>` (`OK` alone when the text is empty).
    Ok(Vec<u8>),
    /// `STATUS <code>`.
    Status(i32),
    /// `ERROR <message>`.
    Error(String),
}

impl FanosReply {
    /// The reply's payload (to be sent as a netstring).
    pub fn payload(&self) -> Vec<u8> {
        match self {
            FanosReply::Ok(text) if text.is_empty() => b"OK".to_vec(),
            FanosReply::Ok(text) => [b"OK ".as_slice(), text].concat(),
            FanosReply::Status(code) => format!("STATUS {code}").into_bytes(),
            FanosReply::Error(message) => format!("ERROR {message}").into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Option<(Vec<u8>, usize)>, NetstringError> {
        decode_netstring(bytes, 1 << 20, true)
            .map(|found| found.map(|(range, used)| (bytes[range].to_vec(), used)))
    }

    #[test]
    fn the_bad_netstrings_get_oils_error_texts() {
        for (input, text) in [
            (&b":"[..], "Expected netstring length"),
            (b"zzz", "Expected netstring length"),
            (b"34", "Unexpected EOF"),
            (b"34foo", "Expected : after netstring length"),
            (b"3:foo", "Expected ,"),
            (b"3:fooX", "Expected ,"),
            (b"5:foo", "Unexpected EOF"),
        ] {
            let error = decode_all(input).expect_err("bad netstring");
            assert_eq!(error.to_string(), text, "{input:?}");
        }
    }

    #[test]
    fn good_netstrings_decode() {
        assert_eq!(decode_all(b"6:GETPID,"), Ok(Some((b"GETPID".to_vec(), 9))));
        assert_eq!(decode_all(b"0:,"), Ok(Some((Vec::new(), 3))));
        assert_eq!(decode_all(b""), Ok(None));
        assert_eq!(decode_netstring(b"3:fo", 100, false), Ok(None));
        assert!(matches!(
            decode_netstring(b"99999:", 100, false),
            Err(NetstringError::TooLong { len: 99999, .. })
        ));
    }

    #[test]
    fn the_least_length_never_passes_the_message_end() {
        for payload in [&b""[..], b"x", b"GETPID", &[b'a'; 12], &[b'b'; 1234]] {
            let mut message = Vec::new();
            encode_netstring(payload, &mut message);
            for have in 0..message.len() {
                let least = netstring_len_at_least(&message[..have]);
                assert!(
                    least > have && least <= message.len(),
                    "{have} of {message:?}"
                );
            }
            let colon = message.iter().position(|&b| b == b':').expect(":");
            assert_eq!(netstring_len_at_least(&message[..=colon]), message.len());
        }
    }

    #[test]
    fn requests_parse_and_replies_encode() {
        assert_eq!(parse_request(b"GETPID"), FanosRequest::GetPid);
        assert_eq!(parse_request(b"STATE"), FanosRequest::State);
        assert_eq!(
            parse_request(b"EVAL cd /tmp"),
            FanosRequest::Eval(b"cd /tmp".to_vec())
        );
        assert_eq!(
            parse_request(b"ARGV ls\0-l"),
            FanosRequest::Argv(vec![b"ls".to_vec(), b"-l".to_vec()])
        );
        for seed_form in [&b"ARGV\0ls\0-l"[..], b"ARGV\0ls\0-l\0", b"ARGV ls\0-l\0"] {
            assert_eq!(
                parse_request(seed_form),
                FanosRequest::Argv(vec![b"ls".to_vec(), b"-l".to_vec()]),
                "{seed_form:?}"
            );
        }
        // An empty argument in the middle stays; nothing after ARGV is no command.
        assert_eq!(
            parse_request(b"ARGV\0echo\0\0x"),
            FanosRequest::Argv(vec![b"echo".to_vec(), Vec::new(), b"x".to_vec()])
        );
        assert!(matches!(parse_request(b"ARGV\0"), FanosRequest::Unknown(_)));
        assert!(matches!(parse_request(b"ARGV"), FanosRequest::Unknown(_)));
        assert!(matches!(
            parse_request(b"EVAL\0ls"),
            FanosRequest::Unknown(_)
        ));
        assert_eq!(
            parse_request(b"ECHO hi"),
            FanosRequest::Unknown(b"ECHO hi".to_vec())
        );
        assert_eq!(FanosReply::Ok(b"42".to_vec()).payload(), b"OK 42");
        assert_eq!(FanosReply::Ok(Vec::new()).payload(), b"OK");
        assert_eq!(FanosReply::Status(3).payload(), b"STATUS 3");
        assert_eq!(FanosReply::Error("bad".into()).payload(), b"ERROR bad");
    }
}
