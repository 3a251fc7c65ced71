//! Fuzzes the job-log record parser (the on-disk format read back by `ferry log` and replays):
//! no input may panic, parsed records lie within the bytes they span, and re-encoding the
//! parsed records gives back exactly those bytes.

#![no_main]

use ferry_engine::{encode_record, parse_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((records, used)) = parse_records(data) {
        assert!(used <= data.len());
        let mut again = Vec::new();
        for (stream, range) in &records {
            assert!(range.end <= used);
            encode_record(*stream, &data[range.clone()], &mut again);
        }
        assert_eq!(&again[..], &data[..used]);
    }
});
