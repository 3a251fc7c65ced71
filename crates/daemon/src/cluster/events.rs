//! The cluster's messages as NATS carries them (`ferry_wire::cluster`, JSON) mapped onto the
//! registry's events and rosters, and back: the link is the cluster's adapter, the one part
//! that knows both the engine and the wire.

use ferry_engine::peers::cluster::{ClusterEvent, ClusterMember, Roster};
use ferry_wire::cluster::{self as wire, DecodeError, Message};

/// `event` as published into the stream.
pub(super) fn encode(event: ClusterEvent) -> Vec<u8> {
    to_wire(event).encode()
}

/// The event in `bytes` read from the stream.
pub(super) fn decode(bytes: &[u8]) -> Result<ClusterEvent, DecodeError> {
    wire::decode::<wire::Event>(bytes).map(from_wire)
}

/// A roster as a page of this daemon's answer.
pub(super) fn roster_to_wire(roster: Roster) -> wire::Roster {
    wire::Roster {
        members: roster
            .members
            .into_iter()
            .map(|(member, taken)| (member_to_wire(member), taken))
            .collect(),
        processed: roster.processed,
    }
}

/// A roster from another daemon's answer.
pub(super) fn roster_from_wire(roster: wire::Roster) -> Roster {
    Roster {
        members: roster
            .members
            .into_iter()
            .map(|(member, taken)| (member_from_wire(member), taken))
            .collect(),
        processed: roster.processed,
    }
}

fn to_wire(event: ClusterEvent) -> wire::Event {
    match event {
        ClusterEvent::Joined(member) => wire::Event::Joined(member_to_wire(member)),
        ClusterEvent::Left {
            id,
            name,
            dialect,
            reason,
        } => wire::Event::Left {
            id,
            name,
            dialect,
            reason,
        },
        ClusterEvent::Away { id, taken } => wire::Event::Away { id, taken },
        ClusterEvent::Back { id } => wire::Event::Back { id },
        ClusterEvent::Moved(member) => wire::Event::Moved(member_to_wire(member)),
        ClusterEvent::Message {
            from,
            from_name,
            principal,
            to,
            sent_ms,
            text,
        } => wire::Event::Message {
            from,
            from_name,
            principal,
            to,
            sent_ms,
            text,
        },
        ClusterEvent::Stopping => wire::Event::Stopping,
    }
}

fn from_wire(event: wire::Event) -> ClusterEvent {
    match event {
        wire::Event::Joined(member) => ClusterEvent::Joined(member_from_wire(member)),
        wire::Event::Left {
            id,
            name,
            dialect,
            reason,
        } => ClusterEvent::Left {
            id,
            name,
            dialect,
            reason,
        },
        wire::Event::Away { id, taken } => ClusterEvent::Away { id, taken },
        wire::Event::Back { id } => ClusterEvent::Back { id },
        wire::Event::Moved(member) => ClusterEvent::Moved(member_from_wire(member)),
        wire::Event::Message {
            from,
            from_name,
            principal,
            to,
            sent_ms,
            text,
        } => ClusterEvent::Message {
            from,
            from_name,
            principal,
            to,
            sent_ms,
            text,
        },
        wire::Event::Stopping => ClusterEvent::Stopping,
    }
}

fn member_to_wire(member: ClusterMember) -> wire::Member {
    let ClusterMember {
        id,
        name,
        dialect,
        since_ms,
        principal,
        place,
    } = member;
    wire::Member {
        id,
        name,
        dialect,
        since_ms,
        principal,
        place,
    }
}

fn member_from_wire(member: wire::Member) -> ClusterMember {
    let wire::Member {
        id,
        name,
        dialect,
        since_ms,
        principal,
        place,
    } = member;
    ClusterMember {
        id,
        name,
        dialect,
        since_ms,
        principal,
        place,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> ClusterMember {
        ClusterMember {
            id: id.into(),
            name: "ann".into(),
            dialect: "tsockm".into(),
            since_ms: 17,
            principal: "token:ci".into(),
            place: "9f".into(),
        }
    }

    #[test]
    fn every_event_survives_the_wire_with_every_field() {
        let events = [
            ClusterEvent::Joined(member("a")),
            ClusterEvent::Left {
                id: "a".into(),
                name: "ann".into(),
                dialect: "ferry".into(),
                reason: "bye".into(),
            },
            ClusterEvent::Away {
                id: "a".into(),
                taken: 41,
            },
            ClusterEvent::Back { id: "a".into() },
            ClusterEvent::Moved(member("b")),
            ClusterEvent::Message {
                from: "a".into(),
                from_name: "ann".into(),
                principal: "owner".into(),
                to: Some("b".into()),
                sent_ms: 99,
                text: "hi".into(),
            },
            ClusterEvent::Stopping,
        ];
        for event in events {
            let bytes = encode(event.clone());
            assert_eq!(decode(&bytes).ok(), Some(event), "{bytes:?}");
        }
        let roster = Roster {
            members: vec![(member("a"), Some(3)), (member("b"), None)],
            processed: 12,
        };
        assert_eq!(roster_from_wire(roster_to_wire(roster.clone())), roster);
    }

    #[test]
    fn a_message_reads_as_the_protocol_writes_it() {
        let bytes = br#"{"kind":"message","from":"Xk3d9QpL2m","from_name":"ann","principal":"token:ci","to":null,"sent_ms":1796601600000,"text":"build 812 is green"}"#;
        let Ok(ClusterEvent::Message { from, to, text, .. }) = decode(bytes) else {
            panic!("not a message");
        };
        assert_eq!(
            (from.as_str(), to, text.as_str()),
            ("Xk3d9QpL2m", None, "build 812 is green")
        );
    }
}
