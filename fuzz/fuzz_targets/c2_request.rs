//! Fuzzes the C2 decoders: no input may panic; a frame's data lies within it; a request that
//! decodes re-encodes to one that decodes the same; a connection's frames decode the same whole
//! and in pieces.

#![no_main]

use ferry_wire::c2::{decode_frame, decode_request, encode_request};
use libfuzzer_sys::fuzz_target;

#[path = "../common/stream.rs"]
mod stream;

/// Checks one request's bytes: whatever decodes re-encodes to a request that decodes the same.
fn request(data: &[u8]) {
    if let Ok(request) = decode_request(data) {
        let command = request.command.clone().unwrap_or_default();
        let again = decode_request(&encode_request(&command, &request.args)).expect("re-encoded");
        assert_eq!(again.command.as_deref(), Some(command.as_str()));
        assert_eq!(again.args, request.args);
    }
}

fuzz_target!(|data: &[u8]| {
    stream::split_agrees(|| ferry_wire::c2::FrameDecoder, data);
    // Over TCP: frame after frame, each holding a request.
    stream::walk(data, |rest| {
        let (_, range, used) = decode_frame(rest)?;
        assert!(range.end == used && used <= rest.len());
        request(&rest[range]);
        Some(used)
    });
    // Over the FIFO pair: a bare request.
    request(data);
});
