//! Property tests for the rake64 headers: every header round-trips through its 64 bytes, a
//! stream of headers split anywhere decodes the same once whole, and no input panics.

use ferry_wire::rake64::*;
use proptest::prelude::*;

fn code() -> impl Strategy<Value = Code> {
    prop_oneof![
        Just(Code::Cost),
        Just(Code::Command),
        Just(Code::Requirements),
        Just(Code::Success),
        Just(Code::Failure),
        Just(Code::Disconnect),
        Just(Code::Name),
        Just(Code::Size),
        Just(Code::Transfer),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (
        code(),
        proptest::option::of(prop_oneof![Just(Code::Name), Just(Code::Size)]),
        any::<(bool, bool, bool)>(),
        proptest::option::of(0u64..=MAX_PAYLOAD),
    )
        .prop_map(|(code, answers, (stdout, incoming, filestream), length)| {
            let answers = answers.filter(|_| code == Code::Success);
            Header {
                code,
                answers,
                // A filestream answer (`!S!NF7`) has room for `F` alone.
                options: Options {
                    stdout: stdout && answers.is_none(),
                    incoming: incoming && answers.is_none(),
                    filestream,
                },
                length,
            }
        })
}

proptest! {
    #[test]
    fn headers_roundtrip(header in header()) {
        let bytes = header.encode();
        prop_assert_eq!(decode_header(&bytes, false), Ok(Some((header, HEADER_LEN))));
    }

    #[test]
    fn a_split_stream_decodes_the_same_once_whole(headers in proptest::collection::vec(header(), 1..5), cut in any::<prop::sample::Index>()) {
        let stream: Vec<u8> = headers.iter().flat_map(|h| h.encode()).collect();
        let cut = cut.index(stream.len());
        // Whatever the first part holds decodes to a prefix of the headers, or waits.
        let mut taken = 0;
        let mut decoded = Vec::new();
        while let Ok(Some((header, used))) = decode_header(&stream[taken..cut], false) {
            decoded.push(header);
            taken += used;
        }
        while let Some((header, used)) = decode_header(&stream[taken..], false).expect("whole") {
            decoded.push(header);
            taken += used;
            if taken == stream.len() {
                break;
            }
        }
        prop_assert_eq!(decoded, headers);
    }

    #[test]
    fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..130), lone in any::<bool>()) {
        if let Ok(Some((_, used))) = decode_header(&bytes, lone) {
            prop_assert!(used <= bytes.len());
        }
        let _ = bytes_of_chars(&bytes, 40);
    }
}
