//! Fuzzes the rake64 decoders: no input may panic; a decoded header takes no more than the
//! buffer, and a padded header it decodes re-encodes to a header that decodes the same; a
//! client's side of a conversation decodes the same whole and in pieces.

#![no_main]

use ferry_wire::rake64::{bytes_of_chars, decode_header};
use libfuzzer_sys::fuzz_target;

#[path = "../common/stream.rs"]
mod stream;

/// Checks the header at the start of `data` (read padded, then lone); returns the bytes the
/// padded reading took.
fn one(data: &[u8]) -> Option<usize> {
    let mut took = None;
    for lone in [true, false] {
        if let Ok(Some((header, used))) = decode_header(data, lone) {
            assert!(used <= data.len());
            let again = header.encode();
            assert_eq!(
                decode_header(&again, false),
                Ok(Some((header, again.len())))
            );
            took = Some(used);
        }
    }
    took
}

fuzz_target!(|data: &[u8]| {
    // A client's side of a conversation, as the daemon's reader takes it.
    stream::split_agrees_as(
        || ferry_wire::rake64::RequestDecoder::new(1 << 20),
        data,
        ferry_wire::rake64::joined_data,
    );
    stream::walk(data, one);
    if let Some(n) = bytes_of_chars(data, 16) {
        assert!(n <= data.len());
    }
});
