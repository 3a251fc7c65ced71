//! Property tests for the C2 codec: CSP ids and frames round-trip, requests round-trip with
//! any trailing padding, and no input panics.

use ferry_wire::c2::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn csp_ids_roundtrip(priority in 0u8..4, source in 0u8..32, destination in 0u8..32,
                         destination_port in 0u8..64, source_port in 0u8..64, flags in any::<u8>()) {
        let id = CspId { priority, source, destination, destination_port, source_port, flags };
        prop_assert_eq!(CspId::decode(id.encode()), id);
    }

    #[test]
    fn frames_roundtrip_split_anywhere(raw in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..600),
                                       cut in any::<prop::sample::Index>()) {
        let id = CspId::decode(raw);
        let frame = encode_frame(id, &data).expect("frame");
        let cut = cut.index(frame.len());
        prop_assert_eq!(decode_frame(&frame[..cut]), None);
        let (decoded, range, used) = decode_frame(&frame).expect("whole");
        prop_assert_eq!(decoded, id);
        prop_assert_eq!(&frame[range], &data[..]);
        prop_assert_eq!(used, frame.len());
    }

    #[test]
    fn requests_roundtrip_with_padding(command in "[a-z][a-z0-9_-]{0,12}", args in proptest::collection::vec(".{0,16}", 0..5),
                                       padding in 0usize..64) {
        let mut data = encode_request(&command, &args);
        data.resize(data.len() + padding, 0);
        let request = decode_request(&data).expect("request");
        prop_assert_eq!(request.command, Some(command));
        prop_assert_eq!(request.args, args);
    }

    #[test]
    fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_request(&bytes);
        if let Some((_, range, used)) = decode_frame(&bytes) {
            prop_assert!(range.end == used && used <= bytes.len());
        }
    }
}
