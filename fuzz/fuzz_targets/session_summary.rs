//! Fuzzes the session summary parser (the state dump a session's shell leaves, read back by
//! `ferry session state` and FANOS `STATE`): no input may panic, and whatever parses re-encodes
//! to a summary that parses to the same thing.

#![no_main]

use ferry_engine::sessions::{encode_summary, parse_summary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((cwd, status, declarations)) = parse_summary(data) {
        let again = encode_summary(&cwd, status, &declarations);
        assert_eq!(parse_summary(&again), Some((cwd, status, declarations)));
    }
});
