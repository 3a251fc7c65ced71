//! Fuzzes the FANOS netstring decoder and request parser: no input may panic, a decoded
//! payload lies within its netstring, re-encoding it gives back the bytes consumed, and the
//! least length a bounded reader goes by never passes the netstring's end;
//! a connection's netstrings decode the same whole and in pieces.

#![no_main]

use ferry_wire::fanos::{
    decode_netstring, encode_netstring, netstring_len_at_least, parse_request,
};
use libfuzzer_sys::fuzz_target;

#[path = "../common/stream.rs"]
mod stream;

/// Checks the netstring at the start of `data` (as a reader before and at end of input);
/// returns the bytes it took.
fn one(data: &[u8]) -> Option<usize> {
    let mut took = None;
    for eof in [false, true] {
        if let Ok(Some((range, used))) = decode_netstring(data, 4096, eof) {
            took = Some(used);
            assert!(range.end < used && used <= data.len());
            let mut again = Vec::new();
            encode_netstring(&data[range.clone()], &mut again);
            // Leading zeros in the length are accepted but not produced.
            if data[0] != b'0' || used == 3 {
                assert_eq!(&again[..], &data[..used]);
            }
            let _ = parse_request(&data[range]);
            // A reader bounded by the least length never reads past this netstring.
            for have in 0..used {
                let least = netstring_len_at_least(&data[..have]);
                assert!(least > have && least <= used);
            }
        }
    }
    took
}

fuzz_target!(|data: &[u8]| {
    stream::split_agrees(|| ferry_wire::fanos::NetstringDecoder { max: 4096 }, data);
    // A connection's requests, one netstring after another.
    stream::walk(data, one);
});
