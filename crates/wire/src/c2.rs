//! The C2 dialect (seed 004, KubOS's command and control daemon, kubos/kubos): CSP packets on
//! a named-pipe pair (or TCP), carrying CBOR maps.
//!
//! A frame is what libcsp's FIFO interface writes of a packet: its length (u16), its CSP id
//! (u32), both little-endian as the x86 structure lies in memory, then `length` bytes of data.
//! The CSP id packs, from the least significant bit: flags (8 bits), source port (6),
//! destination port (6), destination address (5), source address (5), priority (2).
//!
//! The data is a CBOR map. Requests (`MSG_TYPE` 0) name `COMMAND_NAME` and carry `ARGS` (an
//! array of text, or, as KubOS's client sends it, one text string) and `ARG_COUNT`. KubOS's
//! client declares more pairs in the map's header than it writes, and sends its whole buffer,
//! zeros after the CBOR: a request map ends at its declared count, at the end of the data, or
//! at the first key that is not text, whichever comes first. Responses are maps of
//! `MSG_TYPE` 1 (`RETURN_CODE` as a CBOR simple value, as KubOS's daemon encodes it and its
//! client reads it; `EXEC_TIME` as a float64 of milliseconds; `OUTPUT` text) or `MSG_TYPE` 2
//! (`ERROR_MSG` text).

/// Bytes before a frame's data: its length and its CSP id.
pub const FRAME_HEADER_LEN: usize = 6;

/// The most data one frame holds (its length is a u16).
pub const MAX_FRAME_DATA: usize = u16::MAX as usize;

/// A CSP packet's id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CspId {
    /// Priority (2 bits).
    pub priority: u8,
    /// Source address (5 bits).
    pub source: u8,
    /// Destination address (5 bits).
    pub destination: u8,
    /// Destination port (6 bits).
    pub destination_port: u8,
    /// Source port (6 bits).
    pub source_port: u8,
    /// Flags (8 bits).
    pub flags: u8,
}

impl CspId {
    /// The id as a u32.
    pub fn encode(self) -> u32 {
        u32::from(self.flags)
            | u32::from(self.source_port & 0x3f) << 8
            | u32::from(self.destination_port & 0x3f) << 14
            | u32::from(self.destination & 0x1f) << 20
            | u32::from(self.source & 0x1f) << 25
            | u32::from(self.priority & 0x03) << 30
    }

    /// The id of a u32.
    pub fn decode(raw: u32) -> CspId {
        CspId {
            flags: (raw & 0xff) as u8,
            source_port: ((raw >> 8) & 0x3f) as u8,
            destination_port: ((raw >> 14) & 0x3f) as u8,
            destination: ((raw >> 20) & 0x1f) as u8,
            source: ((raw >> 25) & 0x1f) as u8,
            priority: ((raw >> 30) & 0x03) as u8,
        }
    }

    /// The id of the answer to a packet with this id: addresses swapped, from `port` to the
    /// port the answer goes to.
    pub fn answer(self, from_port: u8, to_port: u8) -> CspId {
        CspId {
            priority: self.priority,
            source: self.destination,
            destination: self.source,
            destination_port: to_port,
            source_port: from_port,
            flags: 0,
        }
    }
}

/// Why bytes are not a C2 frame or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum C2Error {
    /// The data is longer than a frame holds.
    #[error("{0} bytes are more than one C2 frame holds ({MAX_FRAME_DATA})")]
    TooLong(usize),
    /// The data is not the CBOR expected.
    #[error("bad CBOR: {0}")]
    Cbor(String),
    /// The map has no `MSG_TYPE`, or not the one expected.
    #[error("{0}")]
    Message(String),
}

/// A frame's bytes: length, id, data.
pub fn encode_frame(id: CspId, data: &[u8]) -> Result<Vec<u8>, C2Error> {
    let len = u16::try_from(data.len()).map_err(|_| C2Error::TooLong(data.len()))?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + data.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&id.encode().to_le_bytes());
    frame.extend_from_slice(data);
    Ok(frame)
}

/// The frame at the start of `buf`: its id, its data's range and the bytes it took, or
/// `None` until it is whole.
pub fn decode_frame(buf: &[u8]) -> Option<(CspId, std::ops::Range<usize>, usize)> {
    if buf.len() < FRAME_HEADER_LEN {
        return None;
    }
    let len = usize::from(u16::from_le_bytes([buf[0], buf[1]]));
    let id = CspId::decode(u32::from_le_bytes([buf[2], buf[3], buf[4], buf[5]]));
    let end = FRAME_HEADER_LEN + len;
    (buf.len() >= end).then_some((id, FRAME_HEADER_LEN..end, end))
}

/// A frame toward the daemon: its CSP id and its data (the CBOR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its CSP id.
    pub id: CspId,
    /// Its data.
    pub data: Vec<u8>,
}

/// A connection's frames as a [`crate::Decoder`] (what the daemon reads).
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameDecoder;

impl crate::Decoder for FrameDecoder {
    type Message = Frame;
    type Error = std::convert::Infallible;

    fn decode(
        &mut self,
        buf: &[u8],
        _input: crate::Input,
    ) -> Result<Option<(Frame, usize)>, Self::Error> {
        Ok(decode_frame(buf).map(|(id, range, used)| {
            let data = buf[range].to_vec();
            (Frame { id, data }, used)
        }))
    }

    fn message_len_at_least(&self, buf: &[u8]) -> usize {
        match buf.get(..2) {
            Some(len) => FRAME_HEADER_LEN + usize::from(u16::from_le_bytes([len[0], len[1]])),
            None => FRAME_HEADER_LEN,
        }
    }
}

/// A request, as ferry takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `COMMAND_NAME` (absent: the first word of a one-string `ARGS`, as KubOS's client sends
    /// the whole command line there).
    pub command: Option<String>,
    /// The arguments.
    pub args: Vec<String>,
    /// `ARGS` was one text string (split on white space into `args`).
    pub args_as_one_string: bool,
    /// `ARG_COUNT`, when given.
    pub arg_count: Option<u64>,
}

/// A value of a request map.
enum Value {
    Unsigned(u64),
    Text(String),
    Texts(Vec<String>),
    Other,
}

/// A minimal CBOR reader for request maps.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, C2Error> {
        let byte = *self
            .buf
            .get(self.at)
            .ok_or_else(|| C2Error::Cbor("the data ends inside the map".into()))?;
        self.at += 1;
        Ok(byte)
    }

    /// A head's major type and argument.
    fn head(&mut self) -> Result<(u8, u64), C2Error> {
        let first = self.byte()?;
        let (major, info) = (first >> 5, first & 0x1f);
        let argument = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.byte()?),
            25 => u64::from(u16::from_be_bytes([self.byte()?, self.byte()?])),
            26 => u64::from(u32::from_be_bytes([
                self.byte()?,
                self.byte()?,
                self.byte()?,
                self.byte()?,
            ])),
            27 => {
                let mut bytes = [0u8; 8];
                for b in &mut bytes {
                    *b = self.byte()?;
                }
                u64::from_be_bytes(bytes)
            }
            _ => {
                return Err(C2Error::Cbor(format!(
                    "indefinite or reserved length (0x{first:02x})"
                )))
            }
        };
        Ok((major, argument))
    }

    fn text_of(&mut self, len: u64) -> Result<String, C2Error> {
        let len = usize::try_from(len).map_err(|_| C2Error::Cbor("a text too long".into()))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.buf.len());
        let end = end.ok_or_else(|| C2Error::Cbor("a text runs past the data".into()))?;
        let text = std::str::from_utf8(&self.buf[self.at..end])
            .map_err(|_| C2Error::Cbor("a text string is not UTF-8".into()))?;
        self.at = end;
        Ok(text.to_owned())
    }

    /// Skips one value of any type (nested at most a few levels).
    fn skip(&mut self, depth: u8) -> Result<(), C2Error> {
        if depth > 8 {
            return Err(C2Error::Cbor("values nested too deep".into()));
        }
        let (major, argument) = self.head()?;
        match major {
            0 | 1 | 7 => Ok(()),
            2 | 3 => {
                let len = usize::try_from(argument).unwrap_or(usize::MAX);
                if self.buf.len().saturating_sub(self.at) < len {
                    return Err(C2Error::Cbor("a string runs past the data".into()));
                }
                self.at += len;
                Ok(())
            }
            4 | 5 => {
                let items = argument.saturating_mul(if major == 5 { 2 } else { 1 });
                for _ in 0..items {
                    self.skip(depth + 1)?;
                }
                Ok(())
            }
            _ => self.skip(depth + 1),
        }
    }

    /// The next key of a map, or `None` where the map ends early: at the end of the data,
    /// or at a key that is not text (KubOS's client's zeros after its map).
    fn next_key(&mut self) -> Result<Option<String>, C2Error> {
        match self.buf.get(self.at) {
            Some(first) if first >> 5 == 3 => {
                let (_, len) = self.head()?;
                self.text_of(len).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Opens the map that `data` holds: the reader, and the pairs it declares.
    fn map<'a>(data: &'a [u8], what: &str) -> Result<(Reader<'a>, u64), C2Error> {
        let mut reader = Reader { buf: data, at: 0 };
        let (major, declared) = reader.head()?;
        if major != 5 {
            return Err(C2Error::Cbor(format!("a {what} is a CBOR map")));
        }
        Ok((reader, declared))
    }

    fn value(&mut self) -> Result<Value, C2Error> {
        let start = self.at;
        let (major, argument) = self.head()?;
        Ok(match major {
            0 => Value::Unsigned(argument),
            3 => Value::Text(self.text_of(argument)?),
            4 => {
                let mut texts = Vec::new();
                for _ in 0..argument {
                    let (major, len) = self.head()?;
                    if major != 3 {
                        return Err(C2Error::Cbor("ARGS holds something other than text".into()));
                    }
                    texts.push(self.text_of(len)?);
                }
                Value::Texts(texts)
            }
            _ => {
                self.at = start;
                self.skip(0)?;
                Value::Other
            }
        })
    }
}

/// Parses a request map (see the module documentation for what is tolerated).
pub fn decode_request(data: &[u8]) -> Result<Request, C2Error> {
    let (mut reader, declared) = Reader::map(data, "request")?;
    let mut msg_type = None;
    let mut request = Request {
        command: None,
        args: Vec::new(),
        args_as_one_string: false,
        arg_count: None,
    };
    for _ in 0..declared {
        let Some(key) = reader.next_key()? else { break };
        let value = reader.value()?;
        match (key.as_str(), value) {
            ("MSG_TYPE", Value::Unsigned(n)) => msg_type = Some(n),
            ("COMMAND_NAME", Value::Text(name)) => request.command = Some(name),
            ("ARG_COUNT", Value::Unsigned(n)) => request.arg_count = Some(n),
            ("ARGS", Value::Texts(args)) => request.args = args,
            ("ARGS", Value::Text(line)) => {
                request.args_as_one_string = true;
                request.args = line.split_whitespace().map(str::to_owned).collect();
            }
            ("MSG_TYPE" | "COMMAND_NAME" | "ARG_COUNT" | "ARGS", _) => {
                return Err(C2Error::Cbor(format!(
                    "{key} has a value of the wrong type"
                )))
            }
            // Other keys are not ferry's business.
            _ => {}
        }
    }
    match msg_type {
        Some(0) | None => {}
        Some(other) => {
            return Err(C2Error::Message(format!(
                "MSG_TYPE {other} is not a request (0)"
            )))
        }
    }
    if request.command.is_none() && request.args_as_one_string && !request.args.is_empty() {
        request.command = Some(request.args.remove(0));
    }
    if request.command.as_deref().is_none_or(str::is_empty) {
        return Err(C2Error::Message(
            "the request names no command (COMMAND_NAME)".into(),
        ));
    }
    Ok(request)
}

fn put_head(out: &mut Vec<u8>, major: u8, argument: u64) {
    let major = major << 5;
    match argument {
        0..=23 => out.push(major | argument as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, argument as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(argument as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(argument as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&argument.to_be_bytes());
        }
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_head(out, 3, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// The CBOR of a command's result. `RETURN_CODE` is a simple value, as KubOS encodes it
/// (`0xE3` for 3; 32 to 255 in two bytes); the codes 20 to 31, which a simple value cannot
/// carry (they are false, true, null, undefined and reserved), go as an unsigned integer.
pub fn encode_result(return_code: u8, exec_time_ms: f64, output: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + output.len());
    put_head(&mut out, 5, 4);
    put_text(&mut out, "MSG_TYPE");
    put_head(&mut out, 0, 1);
    put_text(&mut out, "RETURN_CODE");
    match return_code {
        0..=19 => out.push(0xe0 | return_code),
        20..=31 => put_head(&mut out, 0, u64::from(return_code)),
        _ => out.extend_from_slice(&[0xf8, return_code]),
    }
    put_text(&mut out, "EXEC_TIME");
    out.push(0xfb);
    out.extend_from_slice(&exec_time_ms.to_be_bytes());
    put_text(&mut out, "OUTPUT");
    put_text(&mut out, output);
    out
}

/// The CBOR of a command's result whose output continues in `more` frames after this one
/// (ferry's continuation: the result map gains `OUTPUT_MORE`; KubOS's client reads the first
/// frame's `OUTPUT` and ignores the key).
pub fn encode_result_continued(
    return_code: u8,
    exec_time_ms: f64,
    output: &str,
    more: u64,
) -> Vec<u8> {
    let mut out = encode_result(return_code, exec_time_ms, output);
    if more > 0 {
        // Five pairs instead of four; the fifth follows the others.
        out[0] = 0xa5;
        put_text(&mut out, "OUTPUT_MORE");
        put_head(&mut out, 0, more);
    }
    out
}

/// The CBOR of a continuation of a result's output (`MSG_TYPE` 3).
pub fn encode_continuation(output: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + output.len());
    put_head(&mut out, 5, 2);
    put_text(&mut out, "MSG_TYPE");
    put_head(&mut out, 0, 3);
    put_text(&mut out, "OUTPUT");
    put_text(&mut out, output);
    out
}

/// The most output text one result or continuation frame carries (a frame's data less room
/// for the map around it).
pub const MAX_OUTPUT_PER_FRAME: usize = MAX_FRAME_DATA - 128;

/// Splits an output into pieces of at most [`MAX_OUTPUT_PER_FRAME`] bytes, on character
/// boundaries: the first goes in the result, the others in continuations.
pub fn split_output(output: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = output;
    loop {
        if rest.len() <= MAX_OUTPUT_PER_FRAME {
            pieces.push(rest);
            return pieces;
        }
        let mut end = MAX_OUTPUT_PER_FRAME;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        pieces.push(&rest[..end]);
        rest = &rest[end..];
    }
}

/// A response, as `ferry c2` reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A command's result.
    Result {
        /// Its exit status.
        return_code: u64,
        /// Its wall time in milliseconds.
        exec_time_ms: f64,
        /// Its output (the first piece).
        output: String,
        /// Continuation frames that follow.
        more: u64,
    },
    /// More of a result's output.
    Continuation {
        /// The piece.
        output: String,
    },
    /// A processing error.
    Error {
        /// Its message.
        message: String,
    },
}

/// Parses a response map.
pub fn decode_response(data: &[u8]) -> Result<Response, C2Error> {
    let (mut reader, declared) = Reader::map(data, "response")?;
    let (mut msg_type, mut code, mut time, mut output, mut more, mut message) =
        (None, None, 0.0, String::new(), 0, String::new());
    for _ in 0..declared {
        let Some(key) = reader.next_key()? else { break };
        match key.as_str() {
            "EXEC_TIME" => {
                let head = reader.byte()?;
                let bytes: Vec<u8> = match head {
                    0xfb => (0..8).map(|_| reader.byte()).collect::<Result<_, _>>()?,
                    _ => return Err(C2Error::Cbor("EXEC_TIME is not a float64".into())),
                };
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&bytes);
                time = f64::from_be_bytes(raw);
            }
            "RETURN_CODE" => {
                let (major, argument) = reader.head()?;
                // A simple value (KubOS's encoding) or an unsigned integer.
                if major != 7 && major != 0 {
                    return Err(C2Error::Cbor("RETURN_CODE is not a simple value".into()));
                }
                code = Some(argument);
            }
            _ => match (key.as_str(), reader.value()?) {
                ("MSG_TYPE", Value::Unsigned(n)) => msg_type = Some(n),
                ("OUTPUT", Value::Text(text)) => output = text,
                ("OUTPUT_MORE", Value::Unsigned(n)) => more = n,
                ("ERROR_MSG", Value::Text(text)) => message = text,
                _ => {}
            },
        }
    }
    match msg_type {
        Some(1) => Ok(Response::Result {
            return_code: code
                .ok_or_else(|| C2Error::Message("a result without RETURN_CODE".into()))?,
            exec_time_ms: time,
            output,
            more,
        }),
        Some(2) => Ok(Response::Error { message }),
        Some(3) => Ok(Response::Continuation { output }),
        other => Err(C2Error::Message(format!(
            "unknown response MSG_TYPE {other:?}"
        ))),
    }
}

/// The CBOR of a processing error.
pub fn encode_error(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + message.len());
    put_head(&mut out, 5, 2);
    put_text(&mut out, "MSG_TYPE");
    put_head(&mut out, 0, 2);
    put_text(&mut out, "ERROR_MSG");
    put_text(&mut out, message);
    out
}

/// The CBOR of a request (for `ferry c2`): `MSG_TYPE` 0, `COMMAND_NAME`, `ARG_COUNT`, `ARGS`
/// as an array.
pub fn encode_request(command: &str, args: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    put_head(&mut out, 5, 4);
    put_text(&mut out, "MSG_TYPE");
    put_head(&mut out, 0, 0);
    put_text(&mut out, "COMMAND_NAME");
    put_text(&mut out, command);
    put_text(&mut out, "ARG_COUNT");
    put_head(&mut out, 0, args.len() as u64);
    put_text(&mut out, "ARGS");
    put_head(&mut out, 4, args.len() as u64);
    for arg in args {
        put_text(&mut out, arg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_ids_pack_as_libcsp_does() {
        let id = CspId {
            priority: 2,
            source: 2,
            destination: 1,
            destination_port: 11,
            source_port: 40,
            flags: 0,
        };
        let raw = id.encode();
        assert_eq!(
            raw,
            (2 << 30) | (2 << 25) | (1 << 20) | (11 << 14) | (40 << 8)
        );
        assert_eq!(CspId::decode(raw), id);
        let answer = id.answer(11, 40);
        assert_eq!(
            (
                answer.source,
                answer.destination,
                answer.source_port,
                answer.destination_port
            ),
            (1, 2, 11, 40)
        );
    }

    #[test]
    fn frames_are_length_id_data() {
        let id = CspId {
            destination: 1,
            source: 2,
            destination_port: 11,
            ..CspId::default()
        };
        let frame = encode_frame(id, b"abc").expect("frame");
        assert_eq!(&frame[..2], &[3, 0]);
        assert_eq!(decode_frame(&frame), Some((id, 6..9, 9)));
        assert_eq!(decode_frame(&frame[..8]), None);
        assert_eq!(
            encode_frame(id, &vec![0; MAX_FRAME_DATA + 1]),
            Err(C2Error::TooLong(MAX_FRAME_DATA + 1))
        );
    }

    /// KubOS's client: a map declaring five pairs, four written, ARGS as one string, then its
    /// buffer's zeros.
    #[test]
    fn the_kubos_clients_request_is_taken() {
        let mut data = Vec::new();
        put_head(&mut data, 5, 5);
        put_text(&mut data, "MSG_TYPE");
        put_head(&mut data, 0, 0);
        put_text(&mut data, "COMMAND_NAME");
        put_text(&mut data, "echo");
        put_text(&mut data, "ARG_COUNT");
        put_head(&mut data, 0, 1);
        put_text(&mut data, "ARGS");
        put_text(&mut data, "hello");
        data.resize(data.len() + 200, 0);
        let request = decode_request(&data).expect("request");
        assert_eq!(request.command.as_deref(), Some("echo"));
        assert_eq!(request.args, ["hello"]);
        assert!(request.args_as_one_string);
        // An ARGS of "" with ARG_COUNT 0: no arguments.
        let mut data = Vec::new();
        put_head(&mut data, 5, 3);
        put_text(&mut data, "COMMAND_NAME");
        put_text(&mut data, "uptime");
        put_text(&mut data, "ARG_COUNT");
        put_head(&mut data, 0, 0);
        put_text(&mut data, "ARGS");
        put_text(&mut data, "");
        assert_eq!(
            decode_request(&data).expect("request").args,
            Vec::<String>::new()
        );
    }

    #[test]
    fn requests_round_trip_and_bad_ones_are_named() {
        let args = vec!["-l".to_owned(), "two words".to_owned()];
        let request = decode_request(&encode_request("ls", &args)).expect("request");
        assert_eq!(
            (request.command.as_deref(), request.args.clone()),
            (Some("ls"), args)
        );
        assert!(matches!(decode_request(&[0x80]), Err(C2Error::Cbor(_))));
        assert!(matches!(
            decode_request(&encode_error("x")),
            Err(C2Error::Message(_))
        ));
        let mut no_command = Vec::new();
        put_head(&mut no_command, 5, 1);
        put_text(&mut no_command, "MSG_TYPE");
        put_head(&mut no_command, 0, 0);
        assert!(
            matches!(decode_request(&no_command), Err(C2Error::Message(m)) if m.contains("no command"))
        );
    }

    #[test]
    fn responses_decode_and_long_outputs_continue() {
        assert_eq!(
            decode_response(&encode_result(3, 2.5, "out")),
            Ok(Response::Result {
                return_code: 3,
                exec_time_ms: 2.5,
                output: "out".into(),
                more: 0
            })
        );
        assert_eq!(
            decode_response(&encode_result_continued(25, 1.0, "a", 2)),
            Ok(Response::Result {
                return_code: 25,
                exec_time_ms: 1.0,
                output: "a".into(),
                more: 2
            })
        );
        assert_eq!(
            decode_response(&encode_continuation("b")),
            Ok(Response::Continuation { output: "b".into() })
        );
        assert_eq!(
            decode_response(&encode_error("no")),
            Ok(Response::Error {
                message: "no".into()
            })
        );
        let long = "é".repeat(MAX_OUTPUT_PER_FRAME);
        let pieces = split_output(&long);
        assert!(pieces.len() >= 2, "{}", pieces.len());
        assert_eq!(pieces.concat(), long);
        assert!(pieces.iter().all(|p| p.len() <= MAX_OUTPUT_PER_FRAME));
    }

    #[test]
    fn results_encode_the_return_code_as_kubos_does() {
        let result = encode_result(3, 1.5, "hi");
        let code = result
            .windows(12)
            .position(|w| w == b"\x6bRETURN_CODE")
            .expect("key")
            + 12;
        assert_eq!(result[code], 0xe3);
        let big = encode_result(200, 0.0, "");
        let code = big
            .windows(12)
            .position(|w| w == b"\x6bRETURN_CODE")
            .expect("key")
            + 12;
        assert_eq!(&big[code..code + 2], &[0xf8, 200]);
    }
}
