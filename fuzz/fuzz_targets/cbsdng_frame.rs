//! Fuzzes the cbsdng frame decoder: no input may panic; a decoded frame re-encodes to the bytes
//! it took; a connection's frames decode the same whole and in pieces.

#![no_main]

use ferry_wire::cbsdng::{decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

#[path = "../common/stream.rs"]
mod stream;

fuzz_target!(|data: &[u8]| {
    stream::split_agrees(|| ferry_wire::cbsdng::FrameDecoder, data);
    stream::walk(data, |rest| {
        let (frame, used) = decode_frame(rest).ok()??;
        assert_eq!(encode_frame(&frame), &rest[..used]);
        Some(used)
    });
});
