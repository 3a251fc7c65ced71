//! Unit tests of the registry and the hub, without sockets.

use super::*;

const OUTBOX: usize = 1024;

/// A peer of a token principal (the owner's messages take the daemon's lane: see
/// `owner`).
pub(super) fn peer(registry: &PeerRegistry, name: &str) -> PeerHandle {
    registry.register(NewPeer {
        name: name.into(),
        address: "test".into(),
        dialect: "ferry".into(),
        principal: Some(Principal::Token("test".into())),
    })
}

#[test]
fn ids_are_long_unique_and_peers_leave_with_their_handles() {
    let registry = PeerRegistry::default();
    let handles: Vec<PeerHandle> = (0..50).map(|i| peer(&registry, &i.to_string())).collect();
    let mut ids: Vec<String> = handles.iter().map(|h| h.id().to_owned()).collect();
    assert!(ids.iter().all(|id| id.len() >= 10), "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    assert_eq!(registry.list().len(), 50);
    drop(handles);
    assert!(registry.list().is_empty());
    // Never reused: the next id is new.
    assert!(!ids.contains(&peer(&registry, "late").id().to_owned()));
}

#[tokio::test]
async fn a_full_outbox_drops_and_counts_and_never_blocks() {
    let registry = PeerRegistry::default();
    let mut slow = peer(&registry, "slow");
    for _ in 0..3 {
        registry.tell_all_going_down();
        // One notice is pending at a time: the others are not queued twice.
    }
    assert_eq!(registry.list()[0].outbox_used, 1);
    assert_eq!(slow.next_event().await, Some(PeerEvent::ShuttingDown));
    slow.shutdown_told();
    // Fill the outbox behind the registry's back, then push once more.
    {
        let mut peers = registry.shared.lock();
        let entry = peers.entries.values_mut().next().expect("entry");
        for _ in 0..OUTBOX {
            assert_eq!(entry.push(PeerEvent::ShuttingDown), Pushed::Queued);
        }
    }
    assert_eq!(registry.tell_all_going_down(), 0);
    let info = &registry.list()[0];
    assert_eq!(info.outbox_used, OUTBOX);
    assert_eq!(info.dropped_events, 1);
    // Nothing is pending: every notice queued was told.
    assert!(registry.wait_until_told(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn kicks_reach_their_peers_and_jobs_are_remembered() {
    let registry = PeerRegistry::default();
    let one = peer(&registry, "one");
    let two = peer(&registry, "two");
    let me = peer(&registry, "me");
    registry.started(one.id(), 7);
    registry.started(one.id(), 8);
    let listed = registry.list();
    assert_eq!(listed[0].jobs, vec![7, 8]);
    assert_eq!(listed[0].jobs_started, 2);
    assert!(registry.kick(one.id(), "bye"));
    assert!(!registry.kick("nobody", "bye"));
    assert_eq!(one.kick().kicked().await, "bye");
    assert_eq!(registry.kick_all(me.id(), "all").len(), 2);
    assert_eq!(two.kick().kicked().await, "all");
}

#[tokio::test]
async fn waiting_for_notices_ends_when_told_or_gone() {
    let registry = PeerRegistry::default();
    let mut reader = peer(&registry, "reader");
    let gone = peer(&registry, "gone");
    assert_eq!(registry.tell_all_going_down(), 2);
    assert_eq!(reader.next_event().await, Some(PeerEvent::ShuttingDown));
    reader.shutdown_told();
    assert!(!registry.wait_until_told(Duration::from_millis(1)).await);
    drop(gone);
    assert!(registry.wait_until_told(Duration::from_secs(5)).await);
}

fn registry_with(config: HubConfig) -> PeerRegistry {
    PeerRegistry::new(config)
}

fn accept_all(_: &str) -> Result<(), String> {
    Ok(())
}

fn no_colons(text: &str) -> Result<(), String> {
    if text.contains("::") {
        Err("cannot carry '::'".into())
    } else {
        Ok(())
    }
}

fn member(registry: &PeerRegistry, name: &str) -> PeerHandle {
    let handle = peer(registry, name);
    handle.join(Some(name.into()), accept_all).expect("join");
    handle
}

/// Everything waiting in a handle's outbox.
fn drain(handle: &mut PeerHandle) -> Vec<PeerEvent> {
    std::iter::from_fn(|| handle.try_next_event()).collect()
}

fn texts(events: &[PeerEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            PeerEvent::Message(m) => Some(format!("{}:{}", m.from_name, m.text)),
            _ => None,
        })
        .collect()
}

fn presence(events: &[PeerEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            PeerEvent::Presence(p) => {
                Some(format!("{}{}", if p.joined { "+" } else { "-" }, p.name))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn members_see_joins_messages_in_order_and_leaves() {
    let registry = PeerRegistry::default();
    let mut ann = member(&registry, "ann");
    let mut bob = member(&registry, "bob");
    let outsider = peer(&registry, "outsider");
    assert_eq!(presence(&drain(&mut ann)), vec!["+bob"]);
    assert!(drain(&mut bob).is_empty());
    for i in 0..10 {
        let delivery = ann.send(None, format!("m{i}")).expect("send");
        assert_eq!(delivery.delivered, 1, "only bob is another member");
    }
    ann.send(Some("bob"), "by name".into()).expect("by name");
    ann.send(Some(bob.id()), "by id".into()).expect("by id");
    let expected: Vec<String> = (0..10)
        .map(|i| format!("ann:m{i}"))
        .chain(["ann:by name".into(), "ann:by id".into()])
        .collect();
    assert_eq!(texts(&drain(&mut bob)), expected);
    assert!(drain(&mut ann).is_empty(), "no echo to the sender");
    assert_eq!(
        ann.send(Some(outsider.id()), "x".into()),
        Err(SendError::NoSuchPeer(outsider.id().into()))
    );
    assert_eq!(ann.send(None, String::new()), Err(SendError::Empty));
    let long = "x".repeat(MAX_MESSAGE_TEXT + 1);
    assert_eq!(
        ann.send(None, long),
        Err(SendError::TooLong(MAX_MESSAGE_TEXT + 1))
    );
    bob.leave("bye");
    drop(bob);
    assert_eq!(presence(&drain(&mut ann)), vec!["-bob"]);
    let stats = registry.stats();
    assert_eq!((stats.messages, stats.deliveries), (12, 12));
}

#[test]
fn names_that_clash_need_ids_and_dialects_refuse_what_they_cannot_carry() {
    let registry = PeerRegistry::default();
    let ann = member(&registry, "ann");
    let mut twin1 = member(&registry, "twin");
    let twin2 = peer(&registry, "twin");
    // A name is one member's: the second twin is told its own.
    let joined = twin2.join(Some("twin".into()), accept_all).expect("join");
    assert_eq!(joined.name, "twin#2");
    drain(&mut twin1);
    ann.send(Some("twin"), "hi".into())
        .expect("to the first twin");
    assert_eq!(texts(&drain(&mut twin1)), vec!["ann:hi"]);
    assert!(twin2.join(Some("Server".into()), accept_all).is_err());
    let picky = peer(&registry, "picky");
    picky.join(None, no_colons).expect("join");
    let delivery = ann.send(None, "a::b".into()).expect("send");
    assert_eq!(delivery.delivered, 2);
    drop(twin1);
    assert_eq!(delivery.refused.len(), 1);
    assert_eq!(delivery.refused[0].name, "picky");
    assert_eq!(registry.stats().refused, 1);
    assert!(picky.join(Some("tab\there".into()), no_colons).is_err());
    assert!(picky.join(Some(" padded".into()), no_colons).is_err());
    assert!(picky.join(Some("ann smith".into()), no_colons).is_ok());
}

#[test]
fn a_slow_consumer_is_disconnected_and_counted_without_holding_anyone_up() {
    let config = HubConfig {
        outbox: 4,
        slow_consumer: SlowConsumer::Disconnect {
            after: Duration::ZERO,
        },
        ..HubConfig::default()
    };
    let registry = registry_with(config);
    let slow = member(&registry, "slow");
    let mut quick = member(&registry, "quick");
    let senders: Vec<PeerHandle> = (0..6)
        .map(|i| member(&registry, &format!("s{i}")))
        .collect();
    drain(&mut quick);
    // Each sender may hold one of its four places: four fill it, the others are dropped.
    for (i, sender) in senders.iter().enumerate() {
        sender.send(Some("slow"), format!("m{i}")).expect("send");
        sender.send(Some("quick"), format!("m{i}")).expect("send");
        assert_eq!(texts(&drain(&mut quick)), vec![format!("s{i}:m{i}")]);
    }
    let listed = registry.list();
    let slow_info = listed.iter().find(|p| p.name == "slow").expect("listed");
    assert_eq!(
        slow_info.dropped_events,
        2 + 3,
        "two messages, and three of the seven joins"
    );
    assert_eq!(registry.stats().slow_disconnects, 1);
    let reason = futures_now(slow.kick().kicked());
    assert!(reason.starts_with("as a slow consumer"), "{reason}");
}

#[test]
fn one_flooding_member_loses_its_own_messages_and_the_slow_member_is_told() {
    let registry = registry_with(HubConfig {
        outbox: 8,
        ..HubConfig::default()
    });
    let mut slow = member(&registry, "slow");
    let flood = member(&registry, "flood");
    let calm = member(&registry, "calm");
    let owner = registry.register(NewPeer {
        name: "owner".into(),
        address: "test".into(),
        dialect: "ferry".into(),
        principal: Some(Principal::Owner),
    });
    owner.join(None, accept_all).expect("join");
    drain(&mut slow);
    for i in 0..100 {
        flood.send(Some("slow"), format!("f{i}")).expect("send");
    }
    calm.send(Some("slow"), "calm".into()).expect("send");
    owner
        .send(Some("slow"), "from the owner".into())
        .expect("send");
    registry
        .send_from_server(Some("slow"), "from the daemon".into())
        .expect("send");
    // Never disconnected: its outbox is not full, one sender's share is.
    assert_eq!(registry.stats().slow_disconnects, 0);
    let events = drain(&mut slow);
    match &events[0] {
        PeerEvent::Missed(missed) => {
            assert_eq!(missed.total, 98);
            assert_eq!(missed.from.len(), 1);
            assert_eq!(
                (missed.from[0].name.as_str(), missed.from[0].count),
                ("flood", 98)
            );
        }
        other => panic!("expected the notice first, got {other:?}"),
    }
    assert_eq!(
        texts(&events),
        vec![
            "owner:from the owner",
            "server:from the daemon",
            "flood:f0",
            "flood:f1",
            "calm:calm"
        ]
    );
}

#[test]
fn under_the_drop_policy_a_slow_consumer_stays_and_loses_only_what_did_not_fit() {
    let config = HubConfig {
        outbox: 8,
        slow_consumer: SlowConsumer::Drop,
        ..HubConfig::default()
    };
    let registry = registry_with(config);
    let senders: Vec<PeerHandle> = (0..3)
        .map(|i| member(&registry, &format!("s{i}")))
        .collect();
    let mut slow = member(&registry, "slow");
    for round in 0..4 {
        for sender in &senders {
            sender
                .send(Some("slow"), format!("m{round}"))
                .expect("send");
        }
    }
    // Each sender may hold two of the eight places.
    let events = drain(&mut slow);
    assert_eq!(
        texts(&events),
        vec!["s0:m0", "s1:m0", "s2:m0", "s0:m1", "s1:m1", "s2:m1"]
    );
    assert_eq!(registry.stats().slow_disconnects, 0);
    assert_eq!(registry.stats().dropped, 6);
}

#[test]
fn a_member_whose_connection_ends_is_held_and_resumes_with_its_messages() {
    let registry = PeerRegistry::default();
    let mut ann = member(&registry, "ann");
    let bob = member(&registry, "bob");
    drain(&mut ann);
    let bob_id = bob.id().to_owned();
    let token = bob.join(None, accept_all).expect("join again").resume;
    drop(bob);
    // Held: listed as away, no leave seen.
    assert!(drain(&mut ann).is_empty());
    assert!(registry.members().iter().any(|m| m.id == bob_id && m.away));
    ann.send(Some("bob"), "while away 1".into())
        .expect("to a held place");
    ann.send(None, "while away 2".into()).expect("to all");
    let fresh = peer(&registry, "bob-again");
    assert_eq!(
        fresh.resume("wrong", None).unwrap_err(),
        ResumeError::NoSuchToken
    );
    let (mut resumed, joined) = fresh.resume(&token, None).expect("resume");
    drop(fresh);
    assert_eq!(resumed.id(), bob_id);
    assert_eq!(joined.name, "bob");
    assert_eq!(joined.missed, 0);
    assert_eq!(
        texts(&drain(&mut resumed)),
        vec!["ann:while away 1", "ann:while away 2"]
    );
    assert!(drain(&mut ann).is_empty(), "others saw no leave");
    // A second resume while connected is refused.
    let other = peer(&registry, "other");
    assert_eq!(
        other.resume(&token, None).unwrap_err(),
        ResumeError::StillConnected
    );
    assert_eq!(registry.stats().resumed, 1);
}

#[test]
fn a_held_place_ends_after_the_grace_and_others_see_the_leave() {
    let config = HubConfig {
        grace: Duration::from_secs(13),
        ..HubConfig::default()
    };
    let registry = registry_with(config);
    let mut ann = member(&registry, "ann");
    let bob = member(&registry, "bob");
    drain(&mut ann);
    let token = bob.join(None, accept_all).expect("join").resume;
    drop(bob);
    assert_eq!(registry.expire_away(Instant::now()), 0);
    assert_eq!(
        registry.expire_away(Instant::now() + Duration::from_secs(14)),
        1
    );
    assert_eq!(presence(&drain(&mut ann)), vec!["-bob"]);
    let fresh = peer(&registry, "late");
    assert_eq!(
        fresh.resume(&token, None).unwrap_err(),
        ResumeError::NoSuchToken
    );
    assert_eq!(registry.stats().expired, 1);
}

#[test]
fn places_ending_together_are_not_told_of_each_other_and_count_toward_a_trim() {
    let flow = Arc::new(crate::memory::OutputFlow::default());
    let registry = PeerRegistry::counting_traffic(HubConfig::default(), Arc::clone(&flow));
    let mut ann = member(&registry, "ann");
    let (bob, cat) = (member(&registry, "bob"), member(&registry, "cat"));
    drain(&mut ann);
    drop((bob, cat));
    flow.take();
    let later = Instant::now() + HubConfig::default().grace + Duration::from_secs(1);
    assert_eq!(registry.expire_away(later), 2);
    assert_eq!(presence(&drain(&mut ann)), vec!["-bob", "-cat"]);
    assert_eq!(registry.stats().expired, 2);
    // Two ended places, and a notice each to ann only (bob's place was not told of cat's leave).
    assert_eq!(
        flow.take(),
        2 * crate::memory::CONNECTION_END_WEIGHT as u64 + 2 * 128
    );
}

#[test]
fn kicked_leavers_and_ping_timeouts_leave_at_once() {
    let registry = PeerRegistry::default();
    let mut ann = member(&registry, "ann");
    let bob = member(&registry, "bob");
    let cat = member(&registry, "cat");
    drain(&mut ann);
    assert!(registry.kick(bob.id(), "test"));
    drop(bob);
    cat.missed_pings("missed 3 pings");
    drop(cat);
    assert_eq!(presence(&drain(&mut ann)), vec!["-bob", "-cat"]);
    assert_eq!(registry.stats().ping_timeouts, 1);
    assert!(registry.members().iter().all(|m| m.name == "ann"));
}

#[test]
fn the_server_sends_as_itself() {
    let registry = PeerRegistry::default();
    let mut ann = member(&registry, "ann");
    registry
        .send_from_server(None, "maintenance at noon".into())
        .expect("send");
    assert_eq!(texts(&drain(&mut ann)), vec!["server:maintenance at noon"]);
    assert_eq!(registry.name_of(SERVER_ID).as_deref(), Some("server"));
}

/// Polls a future that is ready now.
fn futures_now<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}
