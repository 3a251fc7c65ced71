//! Property tests for HTTP/1.1 as the HTTP listener speaks it: requests (with and without
//! bodies, one after another on a connection) decode the same whole and split anywhere; every
//! proper prefix of a request waits for more rather than failing; a response's head and body
//! read back with `httparse`; arbitrary bytes never panic the decoder.

use ferry_wire::http::*;
use ferry_wire::{decode_chunks, Decoder, Input};
use proptest::prelude::*;

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

/// `stream` cut at `cuts`.
fn pieces<'a>(stream: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    at.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

proptest! {
    #[test]
    fn requests_on_one_connection_decode_the_same_however_they_come(
        requests in proptest::collection::vec(request(), 1..5),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let stream: Vec<u8> = requests.iter().flat_map(|(bytes, _)| bytes.clone()).collect();
        let expected: Vec<Request> = requests.into_iter().map(|(_, request)| request).collect();
        let whole = decode_chunks(&mut RequestDecoder, &[&stream]).expect("whole");
        let split = decode_chunks(&mut RequestDecoder, &pieces(&stream, &cuts)).expect("split");
        prop_assert_eq!(whole.left, 0);
        prop_assert_eq!(split.left, 0);
        prop_assert_eq!(&whole.messages, &expected);
        prop_assert_eq!(&split.messages, &expected);
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
    fn no_input_panics_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        for input in [Input::Open, Input::Paused, Input::Ended] {
            if let Ok(Some((_, used))) = RequestDecoder.decode(&bytes, input) {
                prop_assert!(used <= bytes.len());
            }
        }
    }
}
