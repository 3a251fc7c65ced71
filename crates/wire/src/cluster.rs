//! The hub cluster's messages on NATS (docs/protocol.md, "The hub cluster on NATS"): JSON,
//! read by every daemon of the cluster and by a person with `nats sub`.
//!
//! Three kinds travel: an [`Event`] in the cluster's JetStream stream (what a daemon tells
//! the others of its members: joins, leaves, held places, messages), a [`Beat`] every second
//! on core NATS, and a [`RosterPage`] answering a daemon that joins and asks who is there.
//! The origin daemon is never in a message: it is the subject the message came on, which NATS
//! permissions can tie to a daemon's credentials.
//!
//! Anyone holding the cluster's credentials may write into these subjects, so [`decode`]
//! takes any bytes and either gives a whole message or says why not; it never panics.

use serde::{Deserialize, Serialize};

/// Why bytes from the cluster are not one of its messages.
#[derive(Debug, thiserror::Error)]
#[error("not a ferry hub-cluster message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

/// A message of the cluster: [`Event`], [`Beat`] or [`RosterPage`].
pub trait Message: Serialize + for<'de> Deserialize<'de> + sealed::Sealed {
    /// The message as published.
    fn encode(&self) -> Vec<u8> {
        // These types hold strings, numbers and lists: serializing them cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The message from bytes read off NATS.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// `T` from bytes read off NATS (see [`Message::decode`]).
pub fn decode<T: Message>(bytes: &[u8]) -> Result<T, DecodeError> {
    T::decode(bytes)
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Event {}
    impl Sealed for super::Beat {}
    impl Sealed for super::RosterPage {}
}

impl Message for Event {}
impl Message for Beat {}
impl Message for RosterPage {}

/// A daemon's beat, on core NATS every second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// Its run (a restarted daemon is a new one).
    pub boot: String,
    /// The last stream position it applied.
    pub processed: u64,
}

/// One page of a daemon's answer to a roster request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterPage {
    /// The daemon.
    pub node: String,
    /// Its run.
    pub boot: String,
    /// Some of its members.
    pub roster: Roster,
}

/// A daemon's members, for a daemon that joins the cluster (or sees it again).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// Its members, and for each one held, the stream position it had taken.
    pub members: Vec<(Member, Option<u64>)>,
    /// The last stream position the daemon had applied.
    pub processed: u64,
}

/// A member as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id (unique in the cluster).
    pub id: String,
    /// Its name, unqualified.
    pub name: String,
    /// The dialect its connection speaks.
    pub dialect: String,
    /// When it joined, in milliseconds since the epoch.
    pub since_ms: u64,
    /// Who it acts for, as its daemon authenticated it.
    pub principal: String,
    /// SHA-256 of its resume token, in hex: another daemon can take its held place for the
    /// token's holder without ever seeing the token.
    pub place: String,
}

/// What a daemon tells the cluster, in its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A member of the origin joined.
    Joined(Member),
    /// A member of the origin left (or its held place ended).
    Left {
        /// Its id.
        id: String,
        /// Its name, unqualified.
        name: String,
        /// Its dialect.
        dialect: String,
        /// Why.
        reason: String,
    },
    /// A member's connection ended; the origin holds its place. It had taken every message
    /// up to stream position `taken`.
    Away {
        /// Its id.
        id: String,
        /// The last stream position it had taken.
        taken: u64,
    },
    /// A held member came back to the origin.
    Back {
        /// Its id.
        id: String,
    },
    /// A held member resumed on the origin (its old daemon drops its place).
    Moved(Member),
    /// A message from a member of the origin (or from the origin itself: the sender `server`).
    Message {
        /// The sender's id.
        from: String,
        /// The sender's name, unqualified.
        from_name: String,
        /// Who the sender acts for, as the origin authenticated it.
        principal: String,
        /// The receiver's id; none: everyone.
        to: Option<String>,
        /// When it was sent, in milliseconds since the epoch.
        sent_ms: u64,
        /// Its text.
        text: String,
    },
    /// The origin is stopping: its members are held everywhere for the grace period.
    Stopping,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex(".{0,12}").expect("regex")
    }

    fn member_strategy() -> impl Strategy<Value = Member> {
        (text(), text(), text(), any::<u64>(), text(), text()).prop_map(
            |(id, name, dialect, since_ms, principal, place)| Member {
                id,
                name,
                dialect,
                since_ms,
                principal,
                place,
            },
        )
    }

    fn event_strategy() -> impl Strategy<Value = Event> {
        prop_oneof![
            member_strategy().prop_map(Event::Joined),
            member_strategy().prop_map(Event::Moved),
            (text(), text(), text(), text()).prop_map(|(id, name, dialect, reason)| {
                Event::Left {
                    id,
                    name,
                    dialect,
                    reason,
                }
            }),
            (text(), any::<u64>()).prop_map(|(id, taken)| Event::Away { id, taken }),
            text().prop_map(|id| Event::Back { id }),
            (
                text(),
                text(),
                text(),
                proptest::option::of(text()),
                any::<u64>(),
                text()
            )
                .prop_map(|(from, from_name, principal, to, sent_ms, text)| {
                    Event::Message {
                        from,
                        from_name,
                        principal,
                        to,
                        sent_ms,
                        text,
                    }
                }),
            Just(Event::Stopping),
        ]
    }

    #[test]
    fn events_are_the_json_the_protocol_documents() {
        let away = Event::Away {
            id: "x1".into(),
            taken: 7,
        };
        assert_eq!(away.encode(), br#"{"kind":"away","id":"x1","taken":7}"#);
        assert_eq!(Event::Stopping.encode(), br#"{"kind":"stopping"}"#);
        let page = RosterPage {
            node: "b1".into(),
            boot: "r".into(),
            roster: Roster {
                members: vec![(
                    Member {
                        id: "x1".into(),
                        name: "ann".into(),
                        dialect: "ferry".into(),
                        since_ms: 5,
                        principal: "owner".into(),
                        place: "ab".into(),
                    },
                    Some(3),
                )],
                processed: 9,
            },
        };
        assert_eq!(
            String::from_utf8_lossy(&page.encode()),
            r#"{"node":"b1","boot":"r","roster":{"members":[[{"id":"x1","name":"ann","dialect":"ferry","since_ms":5,"principal":"owner","place":"ab"},3]],"processed":9}}"#
        );
        let documented = br#"{"kind":"message","from":"Xk3d9QpL2m","from_name":"ann","principal":"token:ci","to":null,"sent_ms":1796601600000,"text":"build 812 is green"}"#;
        let event = decode::<Event>(documented).expect("the protocol's example");
        assert_eq!(event.encode(), documented);
        let error = decode::<Event>(br#"{"kind":"joined"}"#).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("not a ferry hub-cluster message: missing field"),
            "{error}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn events_survive_their_encoding(event in event_strategy()) {
            prop_assert_eq!(decode::<Event>(&event.encode()).ok(), Some(event));
        }

        #[test]
        fn rosters_survive_their_encoding(
            members in proptest::collection::vec((member_strategy(), proptest::option::of(any::<u64>())), 0..5),
            processed in any::<u64>(),
            node in text(),
        ) {
            let page = RosterPage { node, boot: "b".into(), roster: Roster { members, processed } };
            prop_assert_eq!(decode::<RosterPage>(&page.encode()).ok(), Some(page));
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Event>(&bytes);
            let _ = decode::<Beat>(&bytes);
            let _ = decode::<RosterPage>(&bytes);
        }
    }
}
