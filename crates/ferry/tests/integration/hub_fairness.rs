//! Fair delivery on the hub: one member flooding another takes only its share of that
//! member's outbox, the member is told what it missed from whom, a third member's messages
//! still arrive, and the daemon's (its owner's) go ahead of members' traffic.

use ferry_client::{Client, Endpoint};
use ferry_wire::native::{ClientMessage, DaemonMessage};

use crate::helper::Daemon;
use crate::hub::runtime;

/// A member over TLS with the daemon's token (a token principal, not the owner).
async fn token_member(daemon: &Daemon, name: &str) -> Client {
    let tls = daemon.tls_dir();
    let token = std::fs::read_to_string(tls.join("token")).expect("token");
    let config = ferry_client::tls::client_config(&tls.join("ca.pem"), None).expect("TLS config");
    let endpoint = Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port: daemon.ports("tls")[0],
        tls: Some(config),
        token: Some(token.trim().to_owned()),
    };
    let mut client = Client::connect(&endpoint, "fairness-test")
        .await
        .expect("connect");
    client.join(Some(name), None).await.expect("join");
    client
}

#[test]
fn a_flood_takes_only_its_share_of_a_slow_members_outbox_and_the_member_is_told() {
    // Outboxes of 64: one member may hold 16 of another's. Under the drop policy the slow
    // member stays, whatever it misses.
    let daemon = Daemon::start_networked(
        &["--hub-outbox", "64", "--slow-consumer", "drop"],
        &["ferry:tls:127.0.0.1:0"],
    );
    // The slow member joins and reads nothing until the flood is over.
    let mut slow = daemon.raw();
    slow.send(&ClientMessage::Join {
        request: 1,
        name: Some("slow".into()),
        resume: None,
        seen: None,
    });
    assert!(matches!(slow.recv(), Some(DaemonMessage::Joined { .. })));
    let text = "f".repeat(2000);
    let (flooded, dropped) = runtime().block_on(async {
        let mut flood = token_member(&daemon, "flood").await;
        let mut calm = token_member(&daemon, "calm").await;
        let mut dropped = 0;
        let sent = 3000;
        for k in 0..sent {
            let said = flood
                .say(Some("slow"), &format!("{k} {text}"), false)
                .await
                .expect("say");
            dropped += said.dropped.len() as u64;
        }
        assert!(dropped > 0, "the flood overflowed its share");
        // Another member's message still finds room, and so does the owner's.
        let said = calm
            .say(Some("slow"), "calm words", false)
            .await
            .expect("say");
        assert_eq!((said.delivered, said.dropped.len()), (1, 0));
        let out = daemon.run(&["peers", "msg", "slow", "from", "the", "owner"]);
        assert!(out.status.success(), "{out:?}");
        (sent, dropped)
    });
    // Now the slow member reads everything.
    let (mut missed, mut flood_seen, mut calm_at, mut owner_at) = (0u64, 0u64, None, None);
    let mut order = 0usize;
    while calm_at.is_none() || owner_at.is_none() || missed < dropped {
        match slow.recv() {
            Some(DaemonMessage::Message { name, text, .. }) => {
                order += 1;
                match name.as_str() {
                    "flood" => flood_seen += 1,
                    "calm" => calm_at = Some(order),
                    "server" => {
                        assert_eq!(text, "from the owner");
                        owner_at = Some(order);
                    }
                    other => panic!("a message from {other}"),
                }
            }
            Some(DaemonMessage::Missed { total, from }) => {
                assert_eq!(from.len(), 1, "{from:?}");
                assert_eq!((from[0].name.as_str(), from[0].count), ("flood", total));
                missed += total;
            }
            Some(DaemonMessage::Presence { .. }) => {}
            other => panic!("unexpected {other:?} (missed {missed} of {dropped})"),
        }
    }
    // Every message of the flood arrived or was counted, and the notice told all of it.
    assert_eq!(missed, dropped);
    assert_eq!(flood_seen + dropped, flooded);
    // The owner's message went ahead of the flood still queued, and calm's came after it.
    let (calm_at, owner_at) = (calm_at.unwrap_or(0), owner_at.unwrap_or(0));
    assert!(owner_at < calm_at, "owner {owner_at}, calm {calm_at}");
    assert!(
        (owner_at as u64) < flood_seen,
        "the owner's message ({owner_at}) waited behind the whole flood ({flood_seen})"
    );
    daemon.assert_serving();
}
