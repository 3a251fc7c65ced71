//! Fuzzes the cbsdng frame decoder: no input may panic; a decoded frame re-encodes to the bytes
//! it took.

#![no_main]

use ferry_wire::cbsdng::{decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((frame, used))) = decode_frame(data) {
        assert_eq!(encode_frame(&frame), &data[..used]);
    }
});
