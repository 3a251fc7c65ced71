//! Property tests for every dialect's connection decoder (what the daemon's one stream reader
//! drives): a stream of requests split anywhere, in any number of pieces, decodes to the same
//! requests as the stream whole; arbitrary bytes never panic a decoder and never make it
//! take more than it holds.

use ferry_wire::{decode_chunks, Decoder, Input};
use proptest::prelude::*;

/// `stream` cut at `cuts` (indices into it, any order, repeats allowed).
fn pieces<'a>(stream: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    at.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

/// Decodes `stream` whole and in `cuts` pieces with fresh decoders; both must agree, take
/// everything and give `expected`.
fn same_whole_and_split<D, M>(
    make: impl Fn() -> D,
    stream: &[u8],
    cuts: &[prop::sample::Index],
    expected: &[M],
) -> Result<(), TestCaseError>
where
    D: Decoder<Message = M>,
    D::Error: std::fmt::Debug,
    M: PartialEq + std::fmt::Debug,
{
    let whole = decode_chunks(&mut make(), &[stream]).expect("whole stream");
    let split = decode_chunks(&mut make(), &pieces(stream, cuts)).expect("split stream");
    prop_assert_eq!(whole.left, 0);
    prop_assert_eq!(split.left, 0);
    prop_assert_eq!(&whole.messages[..], expected);
    prop_assert_eq!(&split.messages[..], expected);
    Ok(())
}

/// Feeds arbitrary bytes in arbitrary pieces, with every kind of input after each: no panic,
/// never more taken than held.
fn survives<D: Decoder>(mut decoder: D, bytes: &[u8], cuts: &[prop::sample::Index]) {
    let mut buf = Vec::new();
    for piece in pieces(bytes, cuts) {
        buf.extend_from_slice(piece);
        for input in [Input::Open, Input::Paused, Input::Ended] {
            let _ = decoder.ends_at_pause(&buf);
            let _ = decoder.message_len_at_least(&buf);
            match decoder.decode(&buf, input) {
                Ok(Some((_, used))) => {
                    assert!(used <= buf.len(), "took {used} of {}", buf.len());
                    buf.drain(..used);
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }
    }
}

/// Arbitrary bytes decode the same whole and in pieces: the same messages and left-over, or
/// refused both ways.
fn agrees<D, M>(
    make: impl Fn() -> D,
    bytes: &[u8],
    cuts: &[prop::sample::Index],
) -> Result<(), TestCaseError>
where
    D: Decoder<Message = M>,
    M: PartialEq + std::fmt::Debug,
{
    agrees_as(make, bytes, cuts, |messages| messages)
}

/// As [`agrees`], comparing the messages as `canonical` makes them (rake64 hands a file's
/// bytes out in the pieces that came).
fn agrees_as<D, M>(
    make: impl Fn() -> D,
    bytes: &[u8],
    cuts: &[prop::sample::Index],
    canonical: impl Fn(Vec<M>) -> Vec<M>,
) -> Result<(), TestCaseError>
where
    D: Decoder<Message = M>,
    M: PartialEq + std::fmt::Debug,
{
    let whole = decode_chunks(&mut make(), &[bytes]);
    let split = decode_chunks(&mut make(), &pieces(bytes, cuts));
    match (whole, split) {
        (Ok(whole), Ok(split)) => {
            prop_assert_eq!(canonical(whole.messages), canonical(split.messages));
            prop_assert_eq!(whole.left, split.left);
        }
        (Err(_), Err(_)) => {}
        (whole, split) => prop_assert!(
            false,
            "whole {:?}, split {:?}",
            whole.is_ok(),
            split.is_ok()
        ),
    }
    Ok(())
}

fn cuts() -> impl Strategy<Value = Vec<prop::sample::Index>> {
    proptest::collection::vec(any::<prop::sample::Index>(), 0..6)
}

fn word() -> impl Strategy<Value = String> {
    "[a-z0-9._/-]{1,12}"
}

mod cbsd {
    use super::*;
    use ferry_wire::cbsd::{Request, RequestDecoder};

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            proptest::collection::vec(word(), 1..4).prop_map(Request::Command),
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..100))
                .prop_map(|(id, data)| Request::Input { id, data }),
            any::<u64>().prop_map(Request::Attach),
            any::<u64>().prop_map(Request::Kill),
            Just(Request::List),
        ]
    }

    fn line(request: &Request) -> Vec<u8> {
        match request {
            Request::Command(words) => format!("command {}\n", words.join(" ")).into_bytes(),
            Request::Input { id, data } => {
                let mut bytes = format!("input {id} {}\n", data.len()).into_bytes();
                bytes.extend_from_slice(data);
                bytes
            }
            Request::Attach(id) => format!("attach {id}\n").into_bytes(),
            Request::Kill(id) => format!("kill {id}\n").into_bytes(),
            Request::List => b"list\n".to_vec(),
        }
    }

    proptest! {
        #[test]
        fn requests_split_anywhere(requests in proptest::collection::vec(request(), 1..6), cuts in cuts()) {
            let stream: Vec<u8> = requests.iter().flat_map(line).collect();
            same_whole_and_split(|| RequestDecoder, &stream, &cuts, &requests)?;
        }

        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), cuts in cuts()) {
            survives(RequestDecoder, &bytes, &cuts);
            agrees(|| RequestDecoder, &bytes, &cuts)?;
        }
    }
}

mod cbsdng {
    use super::*;
    use ferry_wire::cbsdng::{encode_frame, Frame, FrameDecoder};

    proptest! {
        #[test]
        fn frames_split_anywhere(frames in proptest::collection::vec((any::<u32>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..100)), 1..6), cuts in cuts()) {
            let frames: Vec<Frame> = frames.into_iter().map(|(id, kind, payload)| Frame { id, kind, payload }).collect();
            let stream: Vec<u8> = frames.iter().flat_map(encode_frame).collect();
            same_whole_and_split(|| FrameDecoder, &stream, &cuts, &frames)?;
        }

        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), cuts in cuts()) {
            survives(FrameDecoder, &bytes, &cuts);
            agrees(|| FrameDecoder, &bytes, &cuts)?;
        }
    }
}

mod c2 {
    use super::*;
    use ferry_wire::c2::{encode_frame, CspId, Frame, FrameDecoder};

    proptest! {
        #[test]
        fn frames_split_anywhere(frames in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 0..100)), 1..6), cuts in cuts()) {
            let frames: Vec<Frame> = frames
                .into_iter()
                .map(|(raw, data)| Frame { id: CspId::decode(raw), data })
                .collect();
            let stream: Vec<u8> = frames
                .iter()
                .flat_map(|f| encode_frame(f.id, &f.data).expect("fits"))
                .collect();
            same_whole_and_split(|| FrameDecoder, &stream, &cuts, &frames)?;
        }

        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), cuts in cuts()) {
            survives(FrameDecoder, &bytes, &cuts);
            agrees(|| FrameDecoder, &bytes, &cuts)?;
        }
    }
}

mod fanos {
    use super::*;
    use ferry_wire::fanos::{encode_netstring, NetstringDecoder};

    proptest! {
        #[test]
        fn netstrings_split_anywhere(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 1..6), cuts in cuts()) {
            let mut stream = Vec::new();
            for payload in &payloads {
                encode_netstring(payload, &mut stream);
            }
            same_whole_and_split(|| NetstringDecoder { max: 1000 }, &stream, &cuts, &payloads)?;
        }

        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), cuts in cuts()) {
            survives(NetstringDecoder { max: 100 }, &bytes, &cuts);
            agrees(|| NetstringDecoder { max: 100 }, &bytes, &cuts)?;
        }
    }
}

mod tsockm {
    use super::*;
    use ferry_wire::tsockm::{Action, Incoming, Kind, Message, RequestDecoder, Status};

    fn text() -> impl Strategy<Value = String> {
        // Any text, `::` and all: the body is everything after the sixth separator.
        "[a-zA-Z0-9 :é!?-]{0,40}"
    }

    fn request() -> impl Strategy<Value = Message> {
        (
            prop_oneof![
                Just(Action::Msg),
                Just(Action::GetPeer),
                Just(Action::CommEnd)
            ],
            word(),
            text(),
        )
            .prop_map(|(action, sender, body)| {
                Message::new(
                    Kind::Req,
                    action,
                    Status::Ok,
                    &sender,
                    "client",
                    "127.0.0.1:6969",
                    &body,
                )
            })
    }

    proptest! {
        #[test]
        fn a_request_ends_where_its_connection_ends(message in request(), cuts in cuts()) {
            // However its writes come, and a pause between them changes nothing.
            let stream = message.encode();
            let mut decoder = RequestDecoder::default();
            prop_assert!(!decoder.ends_at_pause(&stream));
            prop_assert_eq!(decoder.decode(&stream, Input::Paused).expect("ok"), None);
            same_whole_and_split(RequestDecoder::default, &stream, &cuts, &[Incoming::Message(message)])?;
        }

        #[test]
        fn a_login_ends_at_a_pause_once_its_fields_are_there(name in word(), cut in any::<prop::sample::Index>()) {
            let login = Message::new(Kind::Req, Action::Comm, Status::Ok, "client", "client", "127.0.0.1:6969", &name).encode();
            let cut = cut.index(login.len());
            let mut decoder = RequestDecoder::default();
            let fields = login[..cut].windows(2).filter(|w| w == b"::").count() == 6;
            prop_assert_eq!(decoder.ends_at_pause(&login[..cut]), fields);
            prop_assert!(decoder.ends_at_pause(&login));
            let (taken, used) = decoder.decode(&login, Input::Paused).expect("ok").expect("whole");
            prop_assert_eq!(used, login.len());
            prop_assert!(matches!(taken, Incoming::Message(m) if m.body == name));
            // What follows on a push connection is stray.
            prop_assert_eq!(decoder.decode(b"xy", Input::Open).expect("ok"), Some((Incoming::Stray(2), 2)));
        }

        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), cuts in cuts()) {
            survives(RequestDecoder::default(), &bytes, &cuts);
            agrees(RequestDecoder::default, &bytes, &cuts)?;
        }
    }
}

mod rake64 {
    use super::*;
    use ferry_wire::rake64::{
        joined_data, text_len, Code, Header, Incoming, Options, RequestDecoder,
    };

    fn padded(header: Header) -> Vec<u8> {
        header.encode().to_vec()
    }

    /// One step of a client's side of a conversation: its bytes and what it decodes to.
    fn step() -> impl Strategy<Value = (Vec<u8>, Vec<Incoming>)> {
        let text = "[a-z é]{1,30}";
        prop_oneof![
            Just((padded(Header::new(Code::Cost, None)), vec![Incoming::Cost])),
            (text, any::<bool>()).prop_map(|(command, authors)| {
                let code = if authors { Code::Command } else { Code::Cost };
                let mut bytes = padded(Header::new(code, Some(text_len(command.as_bytes()))));
                bytes.extend_from_slice(command.as_bytes());
                (bytes, vec![Incoming::Command(command.into_bytes())])
            }),
            Just((
                padded(Header::new(Code::Disconnect, None)),
                vec![Incoming::Disconnect]
            )),
            // A filestream of requirements, its count in the header (the authors' form).
            proptest::collection::vec(
                ("[a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..300)),
                0..3
            )
            .prop_map(|files| {
                let mut bytes = padded(Header::new(Code::Requirements, None));
                let mut items = vec![Incoming::Requirements];
                let meta = Header {
                    options: Options {
                        stdout: true,
                        incoming: true,
                        filestream: true,
                    },
                    ..Header::new(Code::Success, Some(files.len() as u64))
                };
                bytes.extend_from_slice(&padded(meta));
                items.push(Incoming::FileCount(files.len() as u64));
                for (name, data) in files {
                    bytes.extend_from_slice(&padded(Header::filestream_answer(
                        Code::Name,
                        name.len() as u64,
                    )));
                    bytes.extend_from_slice(name.as_bytes());
                    let size = data.len().to_string();
                    bytes.extend_from_slice(&padded(Header::filestream_answer(
                        Code::Size,
                        size.len() as u64,
                    )));
                    bytes.extend_from_slice(size.as_bytes());
                    bytes.extend_from_slice(&data);
                    items.push(Incoming::Name(name.into_bytes()));
                    items.push(Incoming::Size(data.len() as u64));
                    items.push(Incoming::Data {
                        bytes: data,
                        last: true,
                    });
                }
                (bytes, items)
            }),
            // Asks for a file the server sends, padded or as two bytes followed by the next.
            Just({
                let mut bytes = b"!N".to_vec();
                bytes.extend_from_slice(&padded(Header::new(Code::Size, None)));
                bytes.extend_from_slice(b"!T");
                bytes.extend_from_slice(&padded(Header::new(Code::Disconnect, None)));
                (
                    bytes,
                    vec![
                        Incoming::Ask(Code::Name),
                        Incoming::Ask(Code::Size),
                        Incoming::Ask(Code::Transfer),
                        Incoming::Disconnect,
                    ],
                )
            }),
        ]
    }

    proptest! {
        #[test]
        fn conversations_split_anywhere(steps in proptest::collection::vec(step(), 1..6), cuts in cuts()) {
            let stream: Vec<u8> = steps.iter().flat_map(|(bytes, _)| bytes.clone()).collect();
            let expected: Vec<Incoming> = steps.into_iter().flat_map(|(_, items)| items).collect();
            let whole = decode_chunks(&mut RequestDecoder::new(1 << 20), &[&stream]).expect("whole");
            let split = decode_chunks(&mut RequestDecoder::new(1 << 20), &pieces(&stream, &cuts)).expect("split");
            prop_assert_eq!(whole.left, 0);
            prop_assert_eq!(split.left, 0);
            prop_assert_eq!(joined_data(whole.messages), expected.clone());
            prop_assert_eq!(joined_data(split.messages), expected);
        }

        #[test]
        fn the_seeds_count_as_a_payload(count in 0u64..1000) {
            let digits = count.to_string();
            let meta = Header {
                options: Options { stdout: true, incoming: true, filestream: true },
                ..Header::new(Code::Success, Some(digits.len() as u64))
            };
            let mut bytes = padded(meta);
            bytes.extend_from_slice(digits.as_bytes());
            let decoded = decode_chunks(&mut RequestDecoder::new(0), &[&bytes]).expect("ok");
            prop_assert_eq!(decoded.messages, vec![Incoming::FileCount(count)]);
        }

        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), cuts in cuts()) {
            survives(RequestDecoder::new(1000), &bytes, &cuts);
            agrees_as(|| RequestDecoder::new(1000), &bytes, &cuts, joined_data)?;
        }
    }
}

mod native {
    use super::*;
    use ferry_wire::native::{encode_frame, ClientMessage, NativeDecoder};

    fn message() -> impl Strategy<Value = ClientMessage> {
        prop_oneof![
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..200))
                .prop_map(|(job, data)| ClientMessage::Stdin { job, data }),
            any::<u64>().prop_map(|request| ClientMessage::ListPeers { request }),
            (any::<u64>(), word()).prop_map(|(request, text)| ClientMessage::Say {
                request,
                to: None,
                text,
                as_daemon: false
            }),
        ]
    }

    proptest! {
        #[test]
        fn frames_split_anywhere(messages in proptest::collection::vec(message(), 1..6), cuts in cuts()) {
            let mut stream = Vec::new();
            for message in &messages {
                encode_frame(message, &mut stream).expect("encode");
            }
            same_whole_and_split(|| NativeDecoder::<ClientMessage>::new(1 << 16), &stream, &cuts, &messages)?;
        }

        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), cuts in cuts()) {
            survives(NativeDecoder::<ClientMessage>::new(1000), &bytes, &cuts);
            agrees(|| NativeDecoder::<ClientMessage>::new(1000), &bytes, &cuts)?;
        }
    }
}

/// HTTP/1.1 as the HTTP listener takes it: requests (with and without bodies, one after
/// another on a connection) split anywhere; every proper prefix of a request waits for more;
/// a response's head and body read back with `httparse`.
mod http {
    use super::*;
    use ferry_wire::http::*;

    /// A request as a client would write it, and what it must decode to.
    fn request() -> impl Strategy<Value = (Vec<u8>, Request)> {
        let method = prop::sample::select(vec!["GET", "POST", "DELETE", "PUT", "HEAD", "PATCH"]);
        let path = "/[a-z0-9/_.-]{0,40}(\\?[a-z=&0-9]{1,20})?";
        let field = ("x-[a-z]{1,10}", "[ -~]{0,30}");
        (
            method,
            path,
            proptest::collection::vec(field, 0..6),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
        )
            .prop_map(|(method, path, fields, body, with_body)| {
                let body = if with_body { body } else { Vec::new() };
                let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n");
                let mut headers = vec![("host".to_owned(), b"127.0.0.1:8080".to_vec())];
                for (name, value) in &fields {
                    bytes.push_str(&format!("{name}: {value}\r\n"));
                    // A field's value is taken without the whitespace around it.
                    headers.push((
                        name.clone(),
                        value.trim_matches([' ', '\t']).as_bytes().to_vec(),
                    ));
                }
                if with_body {
                    bytes.push_str(&format!("Content-Length: {}\r\n", body.len()));
                    headers.push(("content-length".into(), body.len().to_string().into_bytes()));
                }
                bytes.push_str("\r\n");
                let mut bytes = bytes.into_bytes();
                bytes.extend_from_slice(&body);
                let request = Request {
                    method: match method {
                        "GET" => Method::Get,
                        "POST" => Method::Post,
                        "DELETE" => Method::Delete,
                        "PUT" => Method::Put,
                        "HEAD" => Method::Head,
                        other => Method::Other(other.into()),
                    },
                    target: path,
                    minor_version: 1,
                    headers,
                    body,
                };
                (bytes, request)
            })
    }

    proptest! {
        /// Any text written as a JSON string reads back the same (as serde_json reads it).
        #[test]
        fn json_strings_read_back_as_they_were(text in any::<String>(), pad in 0usize..9) {
            let text = format!("{}{text}", "x".repeat(pad));
            let mut out = Vec::new();
            write_json_string(&mut out, &text);
            let back: String = serde_json::from_slice(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, text);
        }

        /// Text made of the characters that need escapes, at every alignment.
        #[test]
        fn escapes_are_found_at_every_place(chars in proptest::collection::vec(prop::sample::select(vec!['a', '"', '\\', '\n', '\u{0}', '\u{1f}', ' ', 'é', '\u{7f}']), 0..40)) {
            let text: String = chars.into_iter().collect();
            let mut out = Vec::new();
            write_json_string(&mut out, &text);
            let back: String = serde_json::from_slice(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, text);
        }
    }

    proptest! {
        #[test]
        fn requests_split_anywhere(requests in proptest::collection::vec(request(), 1..5), cuts in cuts()) {
            let stream: Vec<u8> = requests.iter().flat_map(|(bytes, _)| bytes.clone()).collect();
            let expected: Vec<Request> = requests.into_iter().map(|(_, request)| request).collect();
            same_whole_and_split(|| RequestDecoder, &stream, &cuts, &expected)?;
        }

        #[test]
        fn a_request_cut_short_waits_for_the_rest_and_ends_as_truncated(
            (bytes, _) in request(),
            cut in any::<prop::sample::Index>(),
        ) {
            let cut = cut.index(bytes.len());
            prop_assert_eq!(decode_request(&bytes[..cut]), Ok(None));
            let at_end = RequestDecoder.decode(&bytes[..cut], Input::Ended);
            if cut == 0 {
                prop_assert_eq!(at_end, Ok(None));
            } else {
                prop_assert_eq!(at_end, Err(HttpError::Truncated));
            }
        }

        #[test]
        fn a_response_reads_back_as_written(
            status in prop::sample::select(vec![200u16, 201, 400, 401, 403, 404, 413, 500]),
            fields in proptest::collection::vec(("X-[A-Za-z]{1,10}", "[!-~]([ -~]{0,20}[!-~])?"), 0..5),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let borrowed: Vec<(&str, &str)> =
                fields.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let bytes = encode_response(status, &borrowed, &body).expect("fields are clean");
            let mut parsed_fields = [httparse::EMPTY_HEADER; 16];
            let mut parsed = httparse::Response::new(&mut parsed_fields);
            let head = match parsed.parse(&bytes).expect("a response") {
                httparse::Status::Complete(len) => len,
                httparse::Status::Partial => panic!("a whole response"),
            };
            prop_assert_eq!(parsed.code, Some(status));
            for ((name, value), field) in fields.iter().zip(parsed.headers.iter()) {
                prop_assert_eq!(name.as_str(), field.name);
                prop_assert_eq!(value.as_bytes(), field.value);
            }
            prop_assert_eq!(&bytes[head..], &body[..]);
        }

        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), cuts in cuts()) {
            survives(RequestDecoder, &bytes, &cuts);
            agrees(|| RequestDecoder, &bytes, &cuts)?;
        }
    }
}
