//! Fuzzes the TsockM decoder: no input may panic; what decodes re-encodes to the same bytes;
//! every error answers with a status TsockM knows; a body that `carries` accepts fits one of
//! TsockM's client reads;
//! a connection's one request decodes the same whole and in pieces.

#![no_main]

use ferry_wire::tsockm::{
    carries, decode, fields_complete, Action, Kind, Message, Status, CLIENT_READ,
};
use libfuzzer_sys::fuzz_target;

#[path = "../common/stream.rs"]
mod stream;

fuzz_target!(|data: &[u8]| {
    // A connection's one request, as the daemon's reader takes it.
    stream::split_agrees(ferry_wire::tsockm::RequestDecoder::default, data);
    let _ = fields_complete(data);
    match decode(data) {
        Ok(message) => {
            assert_eq!(message.encode(), data);
            if carries(&message.body).is_ok() {
                let push = Message::new(
                    Kind::Res,
                    Action::Msg,
                    Status::Ok,
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                    "127.0.0.1:65535",
                    "127.0.0.1:65535",
                    &message.body,
                );
                assert!(push.encode().len() <= CLIENT_READ);
            }
        }
        Err(e) => assert!(matches!(
            e.status(),
            Status::BadRequest | Status::MethodNotAllowed
        )),
    }
});
