//! Property tests for the TsockM codec: messages round-trip whatever their fields hold (but
//! the separator outside the body), any bytes decode or fail without panicking, and an error
//! always names a status TsockM knows.

use ferry_wire::tsockm::*;
use proptest::prelude::*;

fn field() -> impl Strategy<Value = String> {
    // Any text without the separator (a single ':' is fine).
    "[^:]{0,12}(:[^:]{1,8})?"
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Req), Just(Kind::Res), Just(Kind::Err)]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Comm),
        Just(Action::CommEnd),
        Just(Action::Msg),
        Just(Action::GetPeer),
        Just(Action::None)
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Ok),
        Just(Status::BadRequest),
        Just(Status::NotFound),
        Just(Status::MethodNotAllowed),
        Just(Status::BadGateway)
    ]
}

proptest! {
    #[test]
    fn messages_roundtrip(
        kind in kind(), action in action(), status in status(),
        id in field(), src in field(), dst in field(), body in ".{0,200}",
    ) {
        let message = Message::new(kind, action, status, &id, &src, &dst, &body);
        let bytes = message.encode();
        prop_assume!(bytes.len() <= MAX_REQUEST);
        prop_assert!(fields_complete(&bytes));
        prop_assert_eq!(decode(&bytes).unwrap(), message);
    }

    #[test]
    fn any_bytes_decode_or_fail_with_a_status(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        match decode(&bytes) {
            Ok(message) => prop_assert_eq!(message.encode(), bytes),
            Err(e) => prop_assert!(matches!(e.status(), Status::BadRequest | Status::MethodNotAllowed)),
        }
    }

    /// A message cut anywhere before its sixth separator is never taken as complete.
    #[test]
    fn a_cut_message_is_incomplete_until_its_seventh_field(body in "[a-z ]{0,40}", cut in any::<prop::sample::Index>()) {
        let bytes = Message::new(Kind::Req, Action::Msg, Status::Ok, "id", "client", "127.0.0.1:6969", &body).encode();
        let head = bytes.len() - body.len();
        let cut = cut.index(head);
        prop_assert!(!fields_complete(&bytes[..cut]));
    }

    #[test]
    fn what_carries_fits_a_client_read(body in ".{0,400}") {
        if carries(&body).is_ok() {
            let message = Message::new(Kind::Res, Action::Msg, Status::Ok, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "[::ffff:127.0.0.1]:65535", "[::ffff:127.0.0.1]:65535", &body);
            prop_assert!(message.encode().len() <= CLIENT_READ);
            prop_assert!(!message.encode().contains(&CLIENT_END_BYTE));
        }
    }
}
