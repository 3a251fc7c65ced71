//! Fuzzes the native frame decoder with both message directions: no input may panic, and any
//! frame that decodes must re-encode to bytes that decode to the same message, and the least
//! length a bounded reader goes by never passes the frame's end;
//! a connection's frames decode the same whole and in pieces.

#![no_main]

use ferry_wire::native::{decode_frame, encode_frame, ClientMessage, DaemonMessage, NativeDecoder};
use ferry_wire::Decoder;
use libfuzzer_sys::fuzz_target;

#[path = "../common/stream.rs"]
mod stream;

/// Checks the frame at the start of `data`; returns the bytes it took.
fn check<T>(data: &[u8]) -> Option<usize>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut took = None;
    for limit in [64, 4096, 1 << 20] {
        if let Ok(Some((message, used))) = decode_frame::<T>(data, limit) {
            took = Some(used);
            assert!(used <= data.len());
            let mut again = Vec::new();
            encode_frame(&message, &mut again).expect("a decoded message encodes");
            let (back, _) = decode_frame::<T>(&again, usize::MAX)
                .expect("re-encoded frame decodes")
                .expect("whole frame");
            assert_eq!(back, message);
            // A reader bounded by the least length never reads past this frame.
            let decoder = NativeDecoder::<T>::new(limit);
            for have in 0..used {
                let least = decoder.message_len_at_least(&data[..have]);
                assert!(least > have && least <= used);
            }
        }
    }
    took
}

fuzz_target!(|data: &[u8]| {
    stream::split_agrees(
        || ferry_wire::native::NativeDecoder::<ferry_wire::ClientMessage>::new(1 << 16),
        data,
    );
    stream::walk(data, check::<ClientMessage>);
    stream::walk(data, check::<DaemonMessage>);
});
