//! Fuzzes the hub cluster's message decoders (JSON read off NATS, which anyone holding the
//! cluster's credentials may write): no input may panic; a decoded event re-encodes to bytes
//! that decode to the same event; and applying it, from any daemon, to a registry in a cluster
//! leaves the registry's own member listed once.

#![no_main]

use ferry_engine::peers::cluster::{
    Beat, ClusterEvent, ClusterLink, ClusterWire, RosterPage,
};
use ferry_engine::peers::hub::Accepts;
use ferry_engine::peers::{NewPeer, PeerRegistry};
use libfuzzer_sys::fuzz_target;

fn any_dialect(_: &str) -> Accepts {
    |_| Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = Beat::decode(data);
    let _ = RosterPage::decode(data);
    let Ok(event) = ClusterEvent::decode(data) else {
        return;
    };
    assert_eq!(ClusterEvent::decode(&event.encode()).ok(), Some(event.clone()));
    let registry = PeerRegistry::default();
    let (events, _published) = tokio::sync::mpsc::channel(16);
    let (replays, _requests) = tokio::sync::mpsc::unbounded_channel();
    registry.join_cluster(
        ClusterLink {
            node: "here".into(),
            events,
            replays,
            accepts: any_dialect,
        },
        0,
    );
    let ann = registry.register(NewPeer::default());
    let _ = ann.join(Some("ann".into()), |_| Ok(()));
    for origin in ["here", "there"] {
        registry.apply(1, origin, event.clone());
    }
    let members = registry.members();
    assert_eq!(members.iter().filter(|m| m.id == ann.id()).count(), 1);
});
