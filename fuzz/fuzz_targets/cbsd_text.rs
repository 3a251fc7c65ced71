//! Fuzzes the CBSD text decoders: no input may panic; what decodes takes no more than the
//! buffer; a decoded frame re-encodes to the bytes it took; a connection's requests decode the
//! same whole and in pieces.

#![no_main]

use ferry_wire::cbsd::{decode_frame, decode_request, encode_frame};
use libfuzzer_sys::fuzz_target;

#[path = "../common/stream.rs"]
mod stream;

fuzz_target!(|data: &[u8]| {
    // A connection's requests, as the daemon's reader takes them.
    stream::split_agrees(|| ferry_wire::cbsd::RequestDecoder, data);
    // A connection's requests, one after another.
    stream::walk(data, |rest| {
        let (_, used) = decode_request(rest).ok()??;
        assert!(used <= rest.len());
        Some(used)
    });
    if let Ok(Some((frame, used))) = decode_frame(data) {
        assert!(used <= data.len());
        let again = encode_frame(frame.id, frame.kind, &frame.payload);
        // Leading zeros are read but not written.
        if data[0] != b'0' || data.get(1) == Some(&b' ') {
            assert!(again.len() <= used);
        }
    }
});
