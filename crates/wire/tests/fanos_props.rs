//! Property tests for the FANOS netstring codec: round trips, any split of a stream decodes the
//! same once whole, and no input panics or reads out of bounds.

use ferry_wire::fanos::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn netstrings_roundtrip(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = Vec::new();
        encode_netstring(&payload, &mut buf);
        let (range, used) = decode_netstring(&buf, 1 << 20, true).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(&buf[range], &payload[..]);
    }

    /// A reader bounded by `netstring_len_at_least` never reads past a netstring's end.
    #[test]
    fn the_least_length_never_passes_the_message_end(
        payload in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let mut buf = Vec::new();
        encode_netstring(&payload, &mut buf);
        for have in 0..buf.len() {
            let least = netstring_len_at_least(&buf[..have]);
            prop_assert!(least > have && least <= buf.len(), "{} of {}", have, buf.len());
        }
    }

    #[test]
    fn split_streams_decode_once_whole(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..5),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            encode_netstring(p, &mut stream);
        }
        let cut = cut.index(stream.len() + 1);
        let mut pending = stream[..cut].to_vec();
        let mut rest = &stream[cut..];
        let mut decoded = Vec::new();
        loop {
            match decode_netstring(&pending, 1 << 20, rest.is_empty()).unwrap() {
                Some((range, used)) => {
                    decoded.push(pending[range].to_vec());
                    pending.drain(..used);
                }
                None if !rest.is_empty() => {
                    pending.extend_from_slice(rest);
                    rest = &[];
                }
                None => break,
            }
        }
        prop_assert_eq!(decoded, payloads);
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200),
                                   max in 0usize..300, eof in any::<bool>()) {
        if let Ok(Some((range, used))) = decode_netstring(&buf, max, eof) {
            prop_assert!(range.end < used && used <= buf.len());
            prop_assert!(range.len() <= max);
        }
        let _ = parse_request(&buf);
    }
}
