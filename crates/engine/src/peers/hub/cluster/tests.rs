//! Unit and property tests of the cluster's side of the registry: daemons simulated by
//! registries whose published events are applied to all of them in one order, as the stream
//! does, and any events from any daemon.

use proptest::prelude::*;

use super::*;
use crate::peers::hub::{Accepts, ResumeError, SendError};
use crate::peers::tests::peer;
use crate::peers::{NewPeer, PeerEvent, PeerHandle, PeerRegistry};
use crate::principal::Principal;

/// One daemon of a simulated cluster: its registry and what it published, not yet in the
/// stream.
struct Node {
    name: String,
    registry: PeerRegistry,
    published: mpsc::Receiver<ClusterEvent>,
    replays: mpsc::UnboundedReceiver<Replay>,
}

/// Members of every dialect take every text here.
fn any_dialect(_: &str) -> Accepts {
    |_| Ok(())
}

/// A cluster of registries and its stream.
struct Stream {
    nodes: Vec<Node>,
    events: Vec<(String, ClusterEvent)>,
}

impl Stream {
    fn new(names: &[&str]) -> Stream {
        let nodes = names
            .iter()
            .map(|name| {
                let registry = PeerRegistry::default();
                let (events, published) = mpsc::channel(1024);
                let (replays, replay_requests) = mpsc::unbounded_channel();
                registry.join_cluster(
                    ClusterLink {
                        node: (*name).to_owned(),
                        events,
                        replays,
                        accepts: any_dialect,
                    },
                    0,
                );
                Node {
                    name: (*name).to_owned(),
                    registry,
                    published,
                    replays: replay_requests,
                }
            })
            .collect();
        Stream {
            nodes,
            events: Vec::new(),
        }
    }

    /// Moves what every node published into the stream, and applies the new events to every
    /// node, in the stream's order; answers replays from the stream.
    fn flow(&mut self) {
        let mut new = Vec::new();
        for node in &mut self.nodes {
            while let Ok(event) = node.published.try_recv() {
                new.push((node.name.clone(), event));
            }
        }
        for (origin, event) in new {
            self.events.push((origin.clone(), event.clone()));
            let seq = self.events.len() as u64;
            for node in &self.nodes {
                node.registry.apply(seq, &origin, event.clone());
            }
        }
        for node in &mut self.nodes {
            while let Ok(replay) = node.replays.try_recv() {
                let events = (replay.from..=replay.to)
                    .filter_map(|seq| {
                        let (origin, event) = self.events.get(seq as usize - 1)?;
                        Some((seq, origin.clone(), event.clone()))
                    })
                    .collect();
                node.registry.replayed(&replay.id, events, 0);
            }
        }
    }

    /// As [`Stream::flow`], but node `behind` does not read the new events yet: they are
    /// returned, for [`Stream::catch_up`].
    fn flow_but(&mut self, behind: &str) -> Vec<(u64, String, ClusterEvent)> {
        let mut new = Vec::new();
        for node in &mut self.nodes {
            while let Ok(event) = node.published.try_recv() {
                new.push((node.name.clone(), event));
            }
        }
        let mut unread = Vec::new();
        for (origin, event) in new {
            self.events.push((origin.clone(), event.clone()));
            let seq = self.events.len() as u64;
            for node in self.nodes.iter().filter(|n| n.name != behind) {
                node.registry.apply(seq, &origin, event.clone());
            }
            unread.push((seq, origin, event));
        }
        unread
    }

    /// Node `behind` reads what it had not.
    fn catch_up(&self, behind: &str, unread: Vec<(u64, String, ClusterEvent)>) {
        for (seq, origin, event) in unread {
            self.registry(behind).apply(seq, &origin, event);
        }
    }

    fn registry(&self, name: &str) -> &PeerRegistry {
        &self
            .nodes
            .iter()
            .find(|n| n.name == name)
            .expect("node")
            .registry
    }
}

fn member(registry: &PeerRegistry, name: &str) -> PeerHandle {
    let handle = peer(registry, name);
    handle.join(None, |_| Ok(())).expect("join");
    handle
}

/// Three nodes, ann a member of a and cat of c: the stream, ann, cat, ann's resume token,
/// and the stream position b had read before anything was sent to ann.
fn ann_on_a_and_cat_on_c() -> (Stream, PeerHandle, PeerHandle, String, u64) {
    let mut stream = Stream::new(&["a", "b", "c"]);
    let ann = member(stream.registry("a"), "ann");
    let cat = member(stream.registry("c"), "cat");
    stream.flow();
    let token = ann.join(None, |_| Ok(())).expect("join again").resume;
    let before = stream.registry("b").cluster_processed();
    (stream, ann, cat, token, before)
}

/// The messages waiting for `handle`: (sender name, text).
fn texts(handle: &mut PeerHandle) -> Vec<(String, String)> {
    std::iter::from_fn(|| handle.try_next_event())
        .filter_map(|event| match event {
            PeerEvent::Message(m) => Some((m.from_name.clone(), m.text.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn every_node_delivers_in_the_stream_s_order_and_names_are_qualified() {
    let mut stream = Stream::new(&["a", "b"]);
    let ann = member(stream.registry("a"), "ann");
    let mut bob = member(stream.registry("b"), "bob");
    stream.flow();
    assert_eq!(
        stream
            .registry("b")
            .members()
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["bob@b", "ann@a"]
    );
    for i in 0..5 {
        let delivery = ann.send(None, format!("m{i}")).expect("send");
        assert_eq!(delivery.delivered, 1);
    }
    // Nothing is delivered until the stream brings it back.
    assert!(texts(&mut bob).is_empty());
    stream.flow();
    let got = texts(&mut bob);
    assert_eq!(got.len(), 5);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, (from, text))| from == "ann@a" && *text == format!("m{i}")));
    // By qualified name, by bare name, and an unknown one.
    ann.send(Some("bob@b"), "direct".into()).expect("send");
    ann.send(Some("bob"), "bare".into()).expect("send");
    assert!(matches!(
        ann.send(Some("nobody"), "x".into()),
        Err(SendError::NoSuchPeer(_))
    ));
    stream.flow();
    let got: Vec<String> = texts(&mut bob).into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, ["direct", "bare"]);
}

#[test]
fn a_node_speaks_for_its_own_members_only() {
    let mut stream = Stream::new(&["a", "b", "c"]);
    let ann = member(stream.registry("a"), "ann");
    let mut cat = member(stream.registry("c"), "cat");
    stream.flow();
    texts(&mut cat);
    // b claims a message from ann, a member of a: the others ignore it (what b does with
    // its own members is b's).
    let forged = ClusterEvent::Message {
        from: ann.id().to_owned(),
        from_name: "ann".into(),
        principal: "owner".into(),
        to: None,
        sent_ms: 0,
        text: "forged".into(),
    };
    for node in ["a", "c"] {
        stream.registry(node).apply(100, "b", forged.clone());
    }
    assert!(texts(&mut cat).is_empty());
    // Nor may b say she left.
    let left = ClusterEvent::Left {
        id: ann.id().to_owned(),
        name: "ann".into(),
        dialect: "ferry".into(),
        reason: "forged".into(),
    };
    stream.registry("c").apply(101, "b", left);
    assert!(stream
        .registry("c")
        .members()
        .iter()
        .any(|m| m.name == "ann@a"));
}

#[test]
fn a_held_member_resumes_on_another_node_with_what_was_sent_meanwhile() {
    let mut stream = Stream::new(&["a", "b", "c"]);
    let ann = member(stream.registry("a"), "ann");
    let cat = member(stream.registry("c"), "cat");
    let joined_ann = ann.id().to_owned();
    stream.flow();
    // Joining again changes nothing but tells the token.
    let token = ann.join(None, |_| Ok(())).expect("join again").resume;
    drop(ann);
    stream.flow();
    cat.send(Some("ann"), "one".into()).expect("send");
    cat.send(None, "two".into()).expect("send");
    stream.flow();
    let fresh = peer(stream.registry("b"), "x");
    let (mut again, joined) = fresh.resume(&token, None).expect("resume on b");
    assert_eq!(joined.id, joined_ann);
    assert_eq!(joined.name, "ann@b");
    cat.send(Some(&joined_ann), "three".into()).expect("send");
    stream.flow();
    let got: Vec<String> = texts(&mut again).into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, ["one", "two", "three"]);
    // a gave her place up; everyone lists her on b, once.
    for node in ["a", "b", "c"] {
        let names: Vec<String> = stream
            .registry(node)
            .members()
            .into_iter()
            .filter(|m| m.id == joined_ann)
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["ann@b"], "on {node}");
    }
    // Another principal cannot take a place.
    let other = stream.registry("c").register(NewPeer {
        principal: Some(Principal::Token("other".into())),
        ..NewPeer::default()
    });
    drop(again);
    stream.flow();
    assert!(matches!(
        other.resume(&token, None),
        Err(ResumeError::NotYours)
    ));
}

#[test]
fn a_member_of_a_killed_node_resumes_after_the_last_message_it_was_shown() {
    let (mut stream, mut ann, cat, token, before) = ann_on_a_and_cat_on_c();
    for text in ["one", "two", "three"] {
        cat.send(Some("ann"), text.into()).expect("send");
    }
    stream.flow();
    let shown: Vec<u64> = std::iter::from_fn(|| ann.try_next_event())
        .filter_map(|event| match event {
            PeerEvent::Message(m) => Some(m.seq),
            _ => None,
        })
        .collect();
    assert_eq!(shown.len(), 3);
    // a is killed: its last beat said it had read up to `before`, behind what ann was shown.
    for node in ["b", "c"] {
        stream.registry(node).node_gone("a", before);
    }
    let fresh = peer(stream.registry("b"), "x");
    let (mut again, _) = fresh
        .resume(&token, shown.last().copied())
        .expect("resume on b");
    cat.send(Some("ann"), "four".into()).expect("send");
    stream.flow();
    let got: Vec<String> = texts(&mut again).into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, ["four"], "nothing she was shown again");
    // Her connection to b ends cleanly: b says exactly where she was, so a resume without
    // `seen` replays nothing she was shown either.
    drop(again);
    stream.flow();
    let fresh = peer(stream.registry("c"), "y");
    let (mut third, _) = fresh.resume(&token, None).expect("resume on c");
    stream.flow();
    let got: Vec<String> = texts(&mut third).into_iter().map(|(_, t)| t).collect();
    assert!(got.is_empty(), "b said exactly where she was: {got:?}");
}

#[test]
fn a_node_behind_the_stream_does_not_deliver_again_what_a_resumed_member_was_shown() {
    let (mut stream, mut ann, cat, token, before) = ann_on_a_and_cat_on_c();
    cat.send(Some("ann"), "one".into()).expect("send");
    // b has not read "one" when ann, shown it on a, resumes there.
    let unread = stream.flow_but("b");
    let seen = std::iter::from_fn(|| ann.try_next_event()).find_map(|event| match event {
        PeerEvent::Message(m) => Some(m.seq),
        _ => None,
    });
    stream.registry("b").node_gone("a", before);
    let fresh = peer(stream.registry("b"), "x");
    let (mut again, _) = fresh.resume(&token, seen).expect("resume on b");
    stream.catch_up("b", unread);
    cat.send(Some("ann"), "two".into()).expect("send");
    stream.flow();
    let got: Vec<String> = texts(&mut again).into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, ["two"]);
}

#[test]
fn a_gap_in_the_stream_is_told_to_every_member() {
    let stream = Stream::new(&["a"]);
    let mut ann = member(stream.registry("a"), "ann");
    stream.registry("a").apply(5, "b", ClusterEvent::Stopping);
    let missed = std::iter::from_fn(|| ann.try_next_event()).find_map(|e| match e {
        PeerEvent::Missed(m) => Some(m.total),
        _ => None,
    });
    assert_eq!(missed, Some(4));
    // A position read without an event (what was there was none) is no gap.
    stream.registry("a").skip(6);
    stream.registry("a").apply(7, "b", ClusterEvent::Stopping);
    assert!(!std::iter::from_fn(|| ann.try_next_event()).any(|e| matches!(e, PeerEvent::Missed(_))));
}

#[test]
fn the_status_names_the_other_daemons_and_counts_what_went_wrong() {
    let mut stream = Stream::new(&["a", "b", "c"]);
    let ann = member(stream.registry("a"), "ann");
    let bob = member(stream.registry("b"), "bob");
    stream.flow();
    ann.send(None, "hi".into()).expect("send");
    stream.flow();
    let a = stream.registry("a");
    a.apply_roster("c", Roster::default());
    // c speaks for bob, who is b's; position 100 leaves a hole after 3; 101 is no event.
    let forged = ClusterEvent::Message {
        from: bob.id().to_owned(),
        from_name: "bob".into(),
        principal: "owner".into(),
        to: None,
        sent_ms: 0,
        text: "forged".into(),
    };
    a.apply(100, "c", forged);
    a.skip(101);
    a.node_gone("b", 101);
    let status = a.cluster_status().expect("in a cluster");
    assert_eq!(
        (status.node.as_str(), status.connected, status.position),
        ("a", true, 101)
    );
    let daemons: Vec<(&str, bool, u64, u64)> = status
        .daemons
        .iter()
        .map(|d| (d.node.as_str(), d.gone, d.members, d.held))
        .collect();
    assert_eq!(daemons, [("b", true, 1, 1), ("c", false, 0, 0)]);
    assert_eq!(
        status.counters,
        ClusterCounters {
            published: 2,
            unpublished: 0,
            undecodable: 1,
            ignored: 1,
            missed: 96,
        }
    );
    // b is forgotten once its last held place ends; c, alive, stays.
    a.expire_away(Instant::now() + Duration::from_secs(14));
    let status = a.cluster_status().expect("in a cluster");
    assert_eq!(status.daemons.len(), 1);
    assert_eq!(status.daemons[0].node, "c");
    a.cluster_connected(false);
    assert!(!a.cluster_status().expect("in a cluster").connected);
    assert!(PeerRegistry::default().cluster_status().is_none());
}

fn text() -> impl Strategy<Value = String> {
    "[a-z@# ]{0,12}"
}

fn member_strategy() -> impl Strategy<Value = ClusterMember> {
    (text(), text(), text(), any::<u64>(), text(), text()).prop_map(
        |(id, name, dialect, since_ms, principal, place)| ClusterMember {
            id,
            name,
            dialect,
            since_ms,
            principal,
            place,
        },
    )
}

fn event_strategy() -> impl Strategy<Value = ClusterEvent> {
    prop_oneof![
        member_strategy().prop_map(ClusterEvent::Joined),
        member_strategy().prop_map(ClusterEvent::Moved),
        (text(), text(), text(), text()).prop_map(|(id, name, dialect, reason)| {
            ClusterEvent::Left {
                id,
                name,
                dialect,
                reason,
            }
        }),
        (text(), any::<u64>()).prop_map(|(id, taken)| ClusterEvent::Away { id, taken }),
        text().prop_map(|id| ClusterEvent::Back { id }),
        (
            text(),
            text(),
            text(),
            proptest::option::of(text()),
            any::<u64>(),
            text()
        )
            .prop_map(|(from, from_name, principal, to, sent_ms, text)| {
                ClusterEvent::Message {
                    from,
                    from_name,
                    principal,
                    to,
                    sent_ms,
                    text,
                }
            }),
        Just(ClusterEvent::Stopping),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_events_from_any_nodes_keep_the_member_list_whole(
        events in proptest::collection::vec((0..3usize, event_strategy()), 0..40),
    ) {
        let stream = Stream::new(&["a", "b"]);
        let ann = member(stream.registry("a"), "ann");
        let origins = ["a", "b", "c"];
        for (seq, (origin, mut event)) in events.into_iter().enumerate() {
            // Half of them name a's own member.
            if seq % 2 == 0 {
                match &mut event {
                    ClusterEvent::Joined(m) | ClusterEvent::Moved(m) => m.id = ann.id().into(),
                    ClusterEvent::Left { id, .. }
                    | ClusterEvent::Away { id, .. }
                    | ClusterEvent::Back { id } => *id = ann.id().into(),
                    ClusterEvent::Message { from, .. } => *from = ann.id().into(),
                    ClusterEvent::Stopping => {}
                }
            }
            stream.registry("a").apply(seq as u64 + 1, origins[origin], event);
        }
        // Whatever the others said, a's own member is still there, once, and no member of
        // a is claimed by another node.
        let members = stream.registry("a").members();
        prop_assert_eq!(members.iter().filter(|m| m.id == ann.id()).count(), 1);
        prop_assert!(members
            .iter()
            .filter(|m| m.id != ann.id())
            .all(|m| !m.name.ends_with("@a")));
    }
}
