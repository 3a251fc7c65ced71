//! Fuzzes the hub cluster's message decoders (JSON read off NATS, which anyone holding the
//! cluster's credentials may write): no input may panic, and a decoded message re-encodes to
//! bytes that decode to the same message. (What the registry does with any event from any
//! daemon is the engine's property test `any_events_from_any_nodes_keep_the_member_list_whole`.)

#![no_main]

use ferry_wire::cluster::{decode, Beat, Event, Message, RosterPage};
use libfuzzer_sys::fuzz_target;

/// Decodes `T`; whatever decodes survives its own encoding.
fn check<T: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(message) = decode::<T>(data) {
        assert_eq!(decode::<T>(&message.encode()).ok(), Some(message));
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Event>(data);
    check::<Beat>(data);
    check::<RosterPage>(data);
});
