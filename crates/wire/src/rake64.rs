//! The rake64 dialect (seed 001, the distributed rake of UWA's CITS3002, 2022): 64-byte
//! headers padded with spaces, each `!` and a code letter, then option letters, then the
//! payload's length in decimal; the payload follows.
//!
//! ```text
//! !E                      cost query (answered `!E<len>` + the cost as decimal text)
//! !C<len> / !E<len>       a command (the authors' server / the seed), the command text follows
//! !R                      requirements follow, as a filestream
//! !S<opts><len>           success: S = stdout follows, I = files follow, F = filestream
//! !F<len>                 failure: stderr follows; the authors' server sends a second !F with
//!                         the exit code
//! !SSIF<n>                filestream metadata: the file count (as a payload, in the seed; in
//!                         the header itself, by the authors' server)
//! !N / !Z / !T            filestream requests: name, size, transfer (2 bytes alone, or padded)
//! !S!NF<len> / !S!ZF<len> filestream answers: the name, the size
//! !D                      end of the session
//! ```
//!
//! Headers are sans-IO here: [`Header::encode`] makes the 64 bytes; [`decode_header`] reads
//! one from a buffer; [`RequestDecoder`] reads a client's whole side of the conversation
//! (headers, payloads, the files it sends), as a server's connection reader drives it. A lone code sent without padding (the authors' server sends `!N`, `!Z`
//! and `!T` as two bytes) cannot be told from the start of a padded header until more bytes
//! come or do not: a reader that has waited long enough passes `lone: true`, and the padding
//! of a header that was taken alone is skipped before the next one.

use std::fmt;

/// The length of a padded header.
pub const HEADER_LEN: usize = 64;

/// The largest payload length a header may announce (more is refused, not allocated).
pub const MAX_PAYLOAD: u64 = 1 << 40;

/// A header's code (its first two bytes, `!` and a letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// `!E`: a cost query or its answer, or (with a payload, in the seed) a command.
    Cost,
    /// `!C`: a command (the authors' server).
    Command,
    /// `!R`: requirements follow.
    Requirements,
    /// `!S`: success.
    Success,
    /// `!F`: failure.
    Failure,
    /// `!D`: the session ends.
    Disconnect,
    /// `!N`: a file's name (request, or inside a filestream answer).
    Name,
    /// `!Z`: a file's size.
    Size,
    /// `!T`: a file's bytes.
    Transfer,
}

impl Code {
    /// The code's letter.
    pub fn letter(self) -> u8 {
        match self {
            Code::Cost => b'E',
            Code::Command => b'C',
            Code::Requirements => b'R',
            Code::Success => b'S',
            Code::Failure => b'F',
            Code::Disconnect => b'D',
            Code::Name => b'N',
            Code::Size => b'Z',
            Code::Transfer => b'T',
        }
    }

    /// The code of a letter.
    pub fn from_letter(letter: u8) -> Option<Code> {
        Some(match letter {
            b'E' => Code::Cost,
            b'C' => Code::Command,
            b'R' => Code::Requirements,
            b'S' => Code::Success,
            b'F' => Code::Failure,
            b'D' => Code::Disconnect,
            b'N' => Code::Name,
            b'Z' => Code::Size,
            b'T' => Code::Transfer,
            _ => return None,
        })
    }

    /// Whether it may come alone, two bytes without padding or length.
    pub fn may_be_lone(self) -> bool {
        matches!(
            self,
            Code::Name
                | Code::Size
                | Code::Transfer
                | Code::Disconnect
                | Code::Cost
                | Code::Requirements
        )
    }
}

/// The option letters of a header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Options {
    /// `S`: stdout follows.
    pub stdout: bool,
    /// `I`: files follow.
    pub incoming: bool,
    /// `F`: a filestream packet.
    pub filestream: bool,
}

/// One header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// Its code.
    pub code: Code,
    /// In a filestream answer (`!S!NF7`): the request it answers.
    pub answers: Option<Code>,
    /// Its option letters.
    pub options: Options,
    /// The payload's length (or, in `!SSIF<n>` as the authors' server sends it, the file
    /// count); `None` when the header has no digits.
    pub length: Option<u64>,
}

/// Why bytes are not a rake64 header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rake64Error {
    /// The header does not start with `!`.
    #[error("a rake64 header starts with '!', not {0:?}")]
    NoBang(char),
    /// An unknown code letter.
    #[error("unknown rake64 code '!{0}' (E, C, R, S, F, D, N, Z or T)")]
    UnknownCode(char),
    /// Something other than option letters, digits and padding.
    #[error("unexpected {0:?} in a rake64 header (after the code come the options S, I, F, then the length in digits, then spaces)")]
    Unexpected(char),
    /// The length is too large.
    #[error("a rake64 header announces {0} bytes, over the limit")]
    TooLong(String),
    /// A payload longer than its kind may be.
    #[error("{what} of {len} is over the limit of {max}")]
    PayloadTooLong {
        /// What it is (`a command`, `a file name`...).
        what: &'static str,
        /// What the header announced.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A header that needs a length has none.
    #[error("!{0} needs the length of what follows")]
    NoLength(char),
    /// A file size that is not a number.
    #[error("a file size is a number of bytes, not {0:?}")]
    BadSize(String),
    /// A header a client does not send, or not at this point.
    #[error("a client sends !E, !C, !R, !D, a filestream's !SSIF, !N, !Z, !T or their answers here, not {0}")]
    Misplaced(String),
}

impl Header {
    /// A header of `code` announcing `length` bytes.
    pub fn new(code: Code, length: Option<u64>) -> Header {
        Header {
            code,
            answers: None,
            options: Options::default(),
            length,
        }
    }

    /// A filestream answer to `asked` (`!S!NF<len>`, `!S!ZF<len>`) announcing `length`.
    pub fn filestream_answer(asked: Code, length: u64) -> Header {
        Header {
            answers: Some(asked),
            options: Options {
                filestream: true,
                ..Options::default()
            },
            ..Header::new(Code::Success, Some(length))
        }
    }

    /// The 64 bytes of this header, padded with spaces. An `!S` answer has exactly three
    /// option bytes after its code, each its letter or a space when not set (`!SS  12`,
    /// `!SSI 0`: a reader takes the length from byte 5, as the seed's does); a filestream
    /// answer has the code it answers and `F` there (`!S!NF7`); other codes have none
    /// (`!E8`, `!F3`). (A header's text is at most 2 + 3 + 20 bytes, far under 64.)
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut text = format!("!{}", self.code.letter() as char);
        let o = self.options;
        let letters = [(o.stdout, 'S'), (o.incoming, 'I'), (o.filestream, 'F')];
        if let Some(answers) = self.answers {
            text.push('!');
            text.push(answers.letter() as char);
            if o.filestream {
                text.push('F');
            }
        } else if self.code == Code::Success {
            for (set, letter) in letters {
                text.push(if set { letter } else { ' ' });
            }
        } else {
            for (set, letter) in letters {
                if set {
                    text.push(letter);
                }
            }
        }
        if let Some(length) = self.length {
            text.push_str(&length.to_string());
        }
        let mut header = [b' '; HEADER_LEN];
        header[..text.len()].copy_from_slice(text.as_bytes());
        header
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.encode();
        f.write_str(String::from_utf8_lossy(&bytes).trim_end())
    }
}

/// Reads the header at the start of `buf` (after any spaces: the padding of a header taken
/// alone before): the header and the bytes it took, or `Ok(None)` when more bytes are needed.
/// With `lone`, a code that may come alone and is followed by nothing yet is taken as two
/// bytes (see the module documentation).
pub fn decode_header(buf: &[u8], lone: bool) -> Result<Option<(Header, usize)>, Rake64Error> {
    let skipped = buf.iter().take_while(|b| **b == b' ').count();
    let rest = &buf[skipped..];
    if rest.len() < 2 {
        return Ok(None);
    }
    if rest[0] != b'!' {
        return Err(Rake64Error::NoBang(rest[0] as char));
    }
    let code = Code::from_letter(rest[1]).ok_or(Rake64Error::UnknownCode(rest[1] as char))?;
    if rest.len() == 2 && lone && code.may_be_lone() {
        return Ok(Some((Header::new(code, None), skipped + 2)));
    }
    // The third byte already tells a lone code followed by another header.
    if rest.len() > 2 && rest[2] == b'!' && code.may_be_lone() && code != Code::Success {
        return Ok(Some((Header::new(code, None), skipped + 2)));
    }
    if rest.len() < HEADER_LEN {
        // A partial header's bytes are checked as far as they go.
        parse_fields(code, &rest[2..])?;
        return Ok(None);
    }
    let header = parse_fields(code, &rest[2..HEADER_LEN])?;
    Ok(Some((header, skipped + HEADER_LEN)))
}

/// Parses what follows the code: `!X` of a filestream answer, options, digits, padding.
fn parse_fields(code: Code, mut fields: &[u8]) -> Result<Header, Rake64Error> {
    let mut header = Header::new(code, None);
    if code == Code::Success && fields.first() == Some(&b'!') {
        if let Some(letter) = fields.get(1) {
            header.answers =
                Some(Code::from_letter(*letter).ok_or(Rake64Error::UnknownCode(*letter as char))?);
            fields = &fields[2..];
        } else {
            return Ok(header);
        }
    }
    let mut digits = String::new();
    let mut padding = false;
    for &byte in fields {
        match byte {
            b' ' => padding = !digits.is_empty() || padding,
            // A filestream answer (`!S!NF7`) has room for `F` alone.
            b'F' if digits.is_empty() && !padding => header.options.filestream = true,
            b'S' | b'I' if digits.is_empty() && !padding && header.answers.is_none() => {
                match byte {
                    b'S' => header.options.stdout = true,
                    _ => header.options.incoming = true,
                }
            }
            b'0'..=b'9' if !padding => digits.push(byte as char),
            other => return Err(Rake64Error::Unexpected(other as char)),
        }
    }
    if !digits.is_empty() {
        let length: u64 = digits
            .parse()
            .ok()
            .filter(|n| *n <= MAX_PAYLOAD)
            .ok_or(Rake64Error::TooLong(digits))?;
        header.length = Some(length);
    }
    Ok(header)
}

/// The bytes of a filestream's file count after its `!SSIF` header announcing `announced`:
/// the seed's form sends the count as a payload of `announced` digits. How many bytes a reader
/// should wait for (briefly: the authors' form sends nothing more).
pub fn count_payload_len(announced: u64) -> usize {
    usize::try_from(announced).unwrap_or(usize::MAX).min(20)
}

/// A filestream's file count, from its `!SSIF` header announcing `announced` and the bytes
/// that followed it: `(count, bytes taken)`. The seed's form (the count as a payload of
/// [`count_payload_len`] digits) when those bytes are there and are digits; otherwise the
/// authors' form (the count is the header's own number; nothing taken).
pub fn file_count(announced: u64, following: &[u8]) -> (u64, usize) {
    let digits = count_payload_len(announced);
    match following.get(..digits) {
        Some(payload) if digits > 0 && payload.iter().all(u8::is_ascii_digit) => {
            let count = std::str::from_utf8(payload)
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0);
            (count, digits)
        }
        _ => (announced, 0),
    }
}

/// The length a text payload announces: its characters when it is UTF-8 (the authors' server
/// counts characters, and for ASCII they are its bytes), else its bytes. File contents (after
/// `!T`) are counted in bytes, by their `!Z` size.
pub fn text_len(text: &[u8]) -> u64 {
    match std::str::from_utf8(text) {
        Ok(text) => text.chars().count() as u64,
        Err(_) => text.len() as u64,
    }
}

/// The bytes that hold the first `chars` characters of `buf` (UTF-8), for a text payload whose
/// length counts characters (see [`text_len`]): `None` until they are all there. A byte that
/// does not start a valid character counts as one.
pub fn bytes_of_chars(buf: &[u8], chars: u64) -> Option<usize> {
    let mut count = 0u64;
    let mut index = 0;
    while count < chars {
        let byte = *buf.get(index)?;
        let width = match byte {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        if width > 1 {
            let tail = buf.get(index + 1..index + width);
            match tail {
                // Not all there yet: wait, unless what is there already is no continuation.
                None => {
                    let present = &buf[index + 1..];
                    if present.iter().all(|b| b & 0xc0 == 0x80) {
                        return None;
                    }
                    index += 1;
                }
                Some(tail) if tail.iter().all(|b| b & 0xc0 == 0x80) => index += width,
                Some(_) => index += 1,
            }
        } else {
            index += 1;
        }
        count += 1;
    }
    Some(index)
}

/// The longest command a server takes, in characters.
pub const MAX_COMMAND: u64 = 64 * 1024;

/// The longest file name a filestream carries, in characters.
pub const MAX_NAME: u64 = 4096;

/// The most digits a file size has.
const MAX_SIZE_DIGITS: u64 = 20;

/// The most bytes of a file one [`Incoming::Data`] carries.
pub const DATA_CHUNK: usize = 256 * 1024;

/// What a rake64 client sends, as the server reads it, in the order of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// `!E` alone (or announcing 0 bytes): a cost poll.
    Cost,
    /// `!C<len>` (the authors' server) or `!E<len>` (the seed), and the command's text.
    Command(Vec<u8>),
    /// `!R`: a filestream of requirements follows.
    Requirements,
    /// A filestream's metadata: how many files follow (either form, see [`file_count`]).
    FileCount(u64),
    /// A request for the next part of a file the server sends: `!N`, `!Z` or `!T`.
    Ask(Code),
    /// The answer to the server's `!N` (`!S!NF<len>`): a file's name.
    Name(Vec<u8>),
    /// The answer to the server's `!Z` (`!S!ZF<len>`): a file's size. Its bytes follow (once
    /// the server asks with `!T`) as [`Incoming::Data`].
    Size(u64),
    /// Bytes of the file whose size came last; `last` ends it (a file of 0 bytes is one
    /// empty `Data`).
    Data {
        /// The bytes.
        bytes: Vec<u8>,
        /// They end the file.
        last: bool,
    },
    /// `!D`: the session ends.
    Disconnect,
}

/// `items` with each file's [`Incoming::Data`] pieces joined: what a conversation says,
/// however its bytes came (the decoder hands a file's bytes out in the pieces that came).
pub fn joined_data(items: Vec<Incoming>) -> Vec<Incoming> {
    let mut joined: Vec<Incoming> = Vec::with_capacity(items.len());
    for item in items {
        match (joined.last_mut(), item) {
            (
                Some(Incoming::Data {
                    bytes,
                    last: last @ false,
                }),
                Incoming::Data {
                    bytes: more,
                    last: ends,
                },
            ) => {
                bytes.extend_from_slice(&more);
                *last = ends;
            }
            (_, item) => joined.push(item),
        }
    }
    joined
}

/// A client's side of the conversation as a [`crate::Decoder`] (what the server reads): its
/// headers and their payloads, the filestream's count in either form, and the bytes of each
/// file it sends, in chunks. Lone codes (two bytes, no padding) and the count of the
/// authors' `!SSIF<n>` (no payload follows) are taken at a pause.
#[derive(Debug, Clone)]
pub struct RequestDecoder {
    /// The largest file taken.
    max_file: u64,
    /// Bytes of the file being sent still to come (after its [`Incoming::Size`]).
    data: Option<u64>,
}

impl RequestDecoder {
    /// A decoder taking files of at most `max_file` bytes.
    pub fn new(max_file: u64) -> RequestDecoder {
        RequestDecoder {
            max_file,
            data: None,
        }
    }

    /// The next file bytes, when a file is coming.
    fn data(&mut self, buf: &[u8], remaining: u64) -> Option<(Incoming, usize)> {
        if remaining > 0 && buf.is_empty() {
            return None;
        }
        let take = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len())
            .min(DATA_CHUNK);
        let left = remaining - take as u64;
        self.data = (left > 0).then_some(left);
        let bytes = buf[..take].to_vec();
        Some((
            Incoming::Data {
                bytes,
                last: left == 0,
            },
            take,
        ))
    }
}

/// The text payload of `chars` characters after `used` bytes of `buf`, if it is all there.
fn text_after(buf: &[u8], used: usize, chars: u64) -> Option<(Vec<u8>, usize)> {
    let rest = &buf[used..];
    let len = bytes_of_chars(rest, chars)?;
    Some((rest[..len].to_vec(), used + len))
}

/// A header's length, checked against the limit of its kind.
fn limited(header: &Header, what: &'static str, max: u64) -> Result<u64, Rake64Error> {
    let len = header
        .length
        .ok_or(Rake64Error::NoLength(header.code.letter() as char))?;
    if len > max {
        return Err(Rake64Error::PayloadTooLong { what, len, max });
    }
    Ok(len)
}

impl crate::Decoder for RequestDecoder {
    type Message = Incoming;
    type Error = Rake64Error;

    fn decode(
        &mut self,
        buf: &[u8],
        input: crate::Input,
    ) -> Result<Option<(Incoming, usize)>, Rake64Error> {
        if let Some(remaining) = self.data {
            return Ok(self.data(buf, remaining));
        }
        let paused = input != crate::Input::Open;
        let Some((header, used)) = decode_header(buf, paused)? else {
            return Ok(None);
        };
        let whole = |item: Incoming| Ok(Some((item, used)));
        match (header.code, header.answers) {
            (Code::Cost, None) if header.length.unwrap_or(0) == 0 => whole(Incoming::Cost),
            (Code::Cost | Code::Command, None) => {
                let chars = limited(&header, "a command", MAX_COMMAND)?;
                Ok(
                    text_after(buf, used, chars)
                        .map(|(text, used)| (Incoming::Command(text), used)),
                )
            }
            (Code::Requirements, None) => whole(Incoming::Requirements),
            (Code::Disconnect, None) => whole(Incoming::Disconnect),
            (Code::Name | Code::Size | Code::Transfer, None) => whole(Incoming::Ask(header.code)),
            (Code::Success, Some(Code::Name)) => {
                let chars = limited(&header, "a file name", MAX_NAME)?;
                Ok(text_after(buf, used, chars).map(|(text, used)| (Incoming::Name(text), used)))
            }
            (Code::Success, Some(Code::Size)) => {
                let chars = limited(&header, "a file size", MAX_SIZE_DIGITS)?;
                let Some((text, used)) = text_after(buf, used, chars) else {
                    return Ok(None);
                };
                let text = String::from_utf8_lossy(&text).into_owned();
                let size: u64 = text
                    .trim()
                    .parse()
                    .map_err(|_| Rake64Error::BadSize(text.clone()))?;
                if size > self.max_file {
                    return Err(Rake64Error::PayloadTooLong {
                        what: "a file",
                        len: size,
                        max: self.max_file,
                    });
                }
                self.data = Some(size);
                Ok(Some((Incoming::Size(size), used)))
            }
            (Code::Success, None) if header.options.filestream => {
                let announced = header.length.unwrap_or(0);
                let rest = &buf[used..];
                let digits = count_payload_len(announced);
                let settled =
                    rest.len() >= digits || rest.iter().any(|b| !b.is_ascii_digit()) || paused;
                if !settled {
                    return Ok(None);
                }
                let (count, took) = file_count(announced, rest);
                Ok(Some((Incoming::FileCount(count), used + took)))
            }
            _ => Err(Rake64Error::Misplaced(header.to_string())),
        }
    }

    fn ends_at_pause(&self, buf: &[u8]) -> bool {
        if self.data.is_some() {
            return false;
        }
        // Two bytes of a code that may come alone.
        if buf.iter().filter(|b| **b != b' ').count() == 2 {
            return true;
        }
        // A filestream's metadata whose count may or may not follow as a payload.
        match decode_header(buf, false) {
            Ok(Some((header, used))) => {
                header.code == Code::Success
                    && header.answers.is_none()
                    && header.options.filestream
                    && buf[used..].iter().all(u8::is_ascii_digit)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(text: &str) -> Vec<u8> {
        let mut bytes = text.as_bytes().to_vec();
        bytes.resize(HEADER_LEN, b' ');
        bytes
    }

    #[test]
    fn the_seed_and_the_authors_examples() {
        let command = Header::new(Code::Cost, Some(8));
        assert_eq!(command.encode().to_vec(), padded("!E8"));
        let name = Header {
            answers: Some(Code::Name),
            options: Options {
                filestream: true,
                ..Options::default()
            },
            ..Header::new(Code::Success, Some(7))
        };
        assert_eq!(name.encode().to_vec(), padded("!S!NF7"));
        assert_eq!(
            decode_header(&padded("!S!NF7"), false),
            Ok(Some((name, 64)))
        );
        let meta = decode_header(&padded("!SSIF2"), false)
            .expect("ok")
            .expect("whole")
            .0;
        assert!(meta.options.stdout && meta.options.incoming && meta.options.filestream);
        assert_eq!(meta.length, Some(2));
        let output = decode_header(&padded("!SSI 0"), false)
            .expect("ok")
            .expect("whole")
            .0;
        assert_eq!(
            (
                output.options.stdout,
                output.options.incoming,
                output.length
            ),
            (true, true, Some(0))
        );
        assert_eq!(
            decode_header(&padded("!SSI 0"), false)
                .expect("ok")
                .expect("whole")
                .0
                .to_string(),
            "!SSI 0"
        );
    }

    #[test]
    fn lone_codes_and_their_padding() {
        // Two bytes alone: taken when the reader says it waited, or when a header follows.
        assert_eq!(decode_header(b"!N", false), Ok(None));
        assert_eq!(
            decode_header(b"!N", true),
            Ok(Some((Header::new(Code::Name, None), 2)))
        );
        assert_eq!(
            decode_header(b"!N!Z", false),
            Ok(Some((Header::new(Code::Name, None), 2)))
        );
        // Padding that comes after a lone code is skipped before the next header.
        let mut stream = b"   ".to_vec();
        stream.extend_from_slice(&padded("!T"));
        assert_eq!(
            decode_header(&stream, false),
            Ok(Some((Header::new(Code::Transfer, None), 67)))
        );
        assert_eq!(
            decode_header(b"!C", true),
            Ok(None),
            "a command always has a length"
        );
    }

    #[test]
    fn a_filestream_answer_has_room_for_f_alone() {
        assert_eq!(
            decode_header(&padded("!S!DSI"), false),
            Err(Rake64Error::Unexpected('S'))
        );
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        assert_eq!(decode_header(b"?E", false), Err(Rake64Error::NoBang('?')));
        assert_eq!(
            decode_header(b"!Q", false),
            Err(Rake64Error::UnknownCode('Q'))
        );
        assert_eq!(
            decode_header(&padded("!E1x"), false),
            Err(Rake64Error::Unexpected('x'))
        );
        assert_eq!(
            decode_header(&padded("!E1 2"), false),
            Err(Rake64Error::Unexpected('2'))
        );
        assert!(matches!(
            decode_header(&padded("!E99999999999999999999"), false),
            Err(Rake64Error::TooLong(_))
        ));
        // A fault shows before the header is whole.
        assert_eq!(
            decode_header(b"!E1x", false),
            Err(Rake64Error::Unexpected('x'))
        );
    }

    #[test]
    fn both_forms_of_the_file_count() {
        assert_eq!(
            file_count(1, b"7!N"),
            (7, 1),
            "the seed's: one digit, 7 files"
        );
        assert_eq!(
            file_count(2, b""),
            (2, 0),
            "the authors': two files, nothing follows"
        );
        assert_eq!(file_count(1, b"!S"), (1, 0));
    }

    #[test]
    fn characters_to_bytes() {
        assert_eq!(bytes_of_chars("héllo".as_bytes(), 2), Some(3));
        assert_eq!(bytes_of_chars("hé".as_bytes(), 3), None);
        assert_eq!(bytes_of_chars(&[0xc3], 1), None);
        assert_eq!(bytes_of_chars(b"", 0), Some(0));
        // Not UTF-8: a byte is a character.
        assert_eq!(bytes_of_chars(&[0xc3, b'a', 0xff], 3), Some(3));
        assert_eq!(text_len("héllo".as_bytes()), 5);
        assert_eq!(text_len(&[0xff, 0xfe]), 2);
        for text in ["", "ascii", "héllo wörld", "日本語"] {
            assert_eq!(
                bytes_of_chars(text.as_bytes(), text_len(text.as_bytes())),
                Some(text.len())
            );
        }
    }
}
