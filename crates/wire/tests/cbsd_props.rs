//! Property tests for the CBSD text protocol: frames round-trip and a stream of them split
//! anywhere decodes the same once whole; requests with their input bytes likewise; no input
//! panics.

use ferry_wire::cbsd::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn frames_roundtrip_split_anywhere(frames in proptest::collection::vec((any::<u64>(), 0u32..10, proptest::collection::vec(any::<u8>(), 0..200)), 1..5),
                                       cut in any::<prop::sample::Index>()) {
        let stream: Vec<u8> = frames.iter().flat_map(|(id, kind, payload)| encode_frame(*id, *kind, payload)).collect();
        let cut = cut.index(stream.len());
        let mut at = 0;
        let mut decoded = Vec::new();
        while let Ok(Some((frame, used))) = decode_frame(&stream[at..cut]) {
            decoded.push(frame);
            at += used;
        }
        while at < stream.len() {
            let (frame, used) = decode_frame(&stream[at..]).expect("ok").expect("whole");
            decoded.push(frame);
            at += used;
        }
        let expected: Vec<Frame> = frames.into_iter().map(|(id, kind, payload)| Frame { id, kind, payload }).collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn inputs_wait_for_their_bytes(id in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..300), cut in any::<prop::sample::Index>()) {
        let mut bytes = format!("input {id} {}\n", data.len()).into_bytes();
        bytes.extend_from_slice(&data);
        let cut = cut.index(bytes.len());
        prop_assert_eq!(decode_request(&bytes[..cut]), Ok(None));
        prop_assert_eq!(decode_request(&bytes), Ok(Some((Request::Input { id, data }, bytes.len()))));
    }

    #[test]
    fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(Some((_, used))) = decode_request(&bytes) {
            prop_assert!(used <= bytes.len());
        }
        if let Ok(Some((_, used))) = decode_frame(&bytes) {
            prop_assert!(used <= bytes.len());
        }
    }
}
