//! Property tests for cbsdng frames: round trips, and a stream split anywhere (a payload over
//! many reads) decodes the same once whole.

use ferry_wire::cbsdng::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn frames_roundtrip_split_anywhere(frames in proptest::collection::vec((any::<u32>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)), 1..5),
                                       cut in any::<prop::sample::Index>()) {
        let frames: Vec<Frame> = frames.into_iter().map(|(id, kind, payload)| Frame { id, kind, payload }).collect();
        let stream: Vec<u8> = frames.iter().flat_map(encode_frame).collect();
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
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        if let Ok(Some((_, used))) = decode_frame(&bytes) {
            prop_assert!(used <= bytes.len());
        }
    }
}
