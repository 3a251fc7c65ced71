//! `ferry chat` whose connection is lost without a word (cut in the network between it and
//! the daemon, which stays down a while) takes its place in the hub back: the same id, no
//! leave seen by the others, what was sent to its held place shown once, and nothing shown
//! twice.

use std::io::{BufRead, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::Event;

use super::hub::{member, next, runtime, sees_join};
use super::relay::Relay;
use crate::helper::{wait_until, Daemon};

const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn a_chat_whose_connection_is_cut_takes_its_place_back_with_what_came_meanwhile() {
    let daemon = Daemon::start_networked(&[], &["ferry:tls:127.0.0.1:0"]);
    let relay = Relay::to(([127, 0, 0, 1], daemon.port("tls")).into());
    let mut far = daemon
        .remote_at(relay.port)
        .args(["chat", "--name", "far", "--stay"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("chat");
    let printed = Arc::new(Mutex::new(String::new()));
    let (stdout, sink) = (far.stdout.take().expect("stdout"), Arc::clone(&printed));
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let mut text = sink.lock().expect("lock");
            text.push_str(&line);
            text.push('\n');
        }
    });
    let shown = |needle: &str| {
        let printed = Arc::clone(&printed);
        let needle = needle.to_owned();
        wait_until(
            &format!("the chat to show {needle:?}"),
            PATIENCE,
            || {
                printed
                    .lock()
                    .expect("lock")
                    .contains(&needle)
                    .then_some(())
            },
            || printed.lock().expect("lock").clone(),
        );
    };
    runtime().block_on(async {
        let (mut local, _) = member(&daemon, "local").await;
        let far_id = sees_join(&mut local, "far").await;
        local.say(None, "one", false).await.expect("say");
        shown("local: one");
        // The network goes down for a while: the daemon holds far's place, and what is sent
        // meanwhile waits in it.
        relay.refuse(true);
        relay.cut();
        let table = || String::from_utf8_lossy(&daemon.run(&["peers"]).stdout).into_owned();
        wait_until(
            "far's place to be held",
            PATIENCE,
            || table().contains("far (away)").then_some(()),
            table,
        );
        local.say(None, "two", false).await.expect("say");
        relay.refuse(false);
        shown("* back as far");
        shown("local: two");
        writeln!(far.stdin.as_mut().expect("stdin"), "after").expect("write");
        // local hears far again, the same member, and never saw it leave.
        let heard = next(&mut local, "far's line", |e| match e {
            Event::Presence {
                name,
                joined: false,
                ..
            } if name == "far" => panic!("far was seen to leave"),
            Event::Message { from, text, .. } => Some((from, text)),
            _ => None,
        })
        .await;
        assert_eq!(heard, (far_id, "after".to_owned()));
    });
    let printed = printed.lock().expect("lock").clone();
    for line in ["local: one", "local: two"] {
        assert_eq!(
            printed.matches(line).count(),
            1,
            "{line} once in:\n{printed}"
        );
    }
    assert!(
        printed.contains("; taking your place again (for up to 15 s)"),
        "{printed}"
    );
    let _ = far.kill();
    let _ = far.wait();
}
