//! Fuzzes the job-log file decoders (the on-disk format read back by `ferry log`, replays and
//! recovery after a crash): the file header and the records after it. No input may panic,
//! parsed records lie within the bytes they span, and re-encoding the parsed records gives back
//! exactly those bytes.

#![no_main]

use ferry_engine::logfile::{decode_header, encode_header, encode_record_of};
use ferry_engine::parse_records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The header, when there is one, re-encodes to the bytes it came from.
    let body = match decode_header(data) {
        Ok((header, len)) => {
            assert!(len <= data.len());
            let again = encode_header(&header);
            assert_eq!(decode_header(&again).ok().map(|(h, _)| h), Some(header));
            &data[len..]
        }
        Err(_) => data,
    };
    if let Ok((records, used)) = parse_records(body) {
        assert!(used <= body.len());
        let mut again = Vec::new();
        for (kind, range) in &records {
            assert!(range.end <= used);
            encode_record_of(*kind, &body[range.clone()], &mut again);
        }
        assert_eq!(&again[..], &body[..used]);
    }
});
