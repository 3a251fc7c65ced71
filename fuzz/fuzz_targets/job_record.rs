//! Fuzzes the history store's record decoder (CBOR job records, read back by `ps --all`,
//! recovery and retention): no input may panic, and a decoded record re-encodes to bytes that
//! decode to the same record.

#![no_main]

use ferry_engine::store::JobRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = JobRecord::decode(data) {
        let again = record.encode();
        assert_eq!(JobRecord::decode(&again).ok(), Some(record));
    }
});
