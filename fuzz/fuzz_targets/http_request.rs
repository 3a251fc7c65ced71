//! Fuzzes the HTTP/1.1 request decoder: no input may panic; what decodes takes no more than
//! the buffer; a connection's requests decode the same whole and in pieces; a request's body
//! is exactly the length it declared.

#![no_main]

use ferry_wire::http::{decode_request, RequestDecoder};
use libfuzzer_sys::fuzz_target;

#[path = "../common/stream.rs"]
mod stream;

fuzz_target!(|data: &[u8]| {
    stream::split_agrees(|| RequestDecoder, data);
    stream::walk(data, |rest| {
        let (request, used) = decode_request(rest).ok()??;
        assert!(used <= rest.len());
        let declared = request
            .header_text("content-length")
            .map_or(0, |len| len.trim().parse::<usize>().expect("a checked length"));
        assert_eq!(request.body.len(), declared);
        Some(used)
    });
});
