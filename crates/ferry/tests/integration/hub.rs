//! The peer hub over the native protocol: messages to one or all, in order and none lost;
//! presence; slow consumers; kicks; pings; resuming within the grace period and not after.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_client::{Client, Endpoint, Event, Joined, NoticeKind};
use ferry_wire::native::{ClientMessage, DaemonMessage};

use crate::helper::{wait_until, Daemon};

/// How long a test waits for what should come at once.
const PATIENCE: Duration = Duration::from_secs(30);

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A client of `daemon` in the hub as `name`.
pub async fn member(daemon: &Daemon, name: &str) -> (Client, Joined) {
    let endpoint = Endpoint::Unix(daemon.socket.clone());
    let mut client = Client::connect(&endpoint, "hub-test")
        .await
        .expect("connect");
    let joined = client.join(Some(name), None).await.expect("join");
    (client, joined)
}

/// The next event that `pick` takes (others are skipped), or a failure after PATIENCE.
pub async fn next<T>(
    client: &mut Client,
    what: &str,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            match client.next_event().await.expect("event") {
                Some(event) => {
                    if let Some(found) = pick(event) {
                        return found;
                    }
                }
                None => panic!("the daemon closed the connection while waiting for {what}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("waited {PATIENCE:?} for {what}"))
}

/// Waits until `client` sees `name` join.
pub async fn sees_join(client: &mut Client, name: &str) -> String {
    next(client, &format!("{name} to join"), |e| match e {
        Event::Presence {
            peer,
            name: n,
            joined: true,
            ..
        } if n == name => Some(peer),
        _ => None,
    })
    .await
}

/// `ferry peers` (table), which ends with the hub's counters.
fn peers_table(daemon: &Daemon) -> String {
    let out = daemon.run(&["peers"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const PEERS: usize = 200;
const EACH: usize = 5;

/// Runs PEERS members of the hub, each sending EACH messages to all and reading everyone
/// else's, checking each sender's order; what each received.
async fn all_peers(daemon: &Daemon) -> Vec<usize> {
    let barrier = Arc::new(tokio::sync::Barrier::new(PEERS));
    let mut tasks = Vec::new();
    for i in 0..PEERS {
        let socket = daemon.socket.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let endpoint = Endpoint::Unix(socket);
            let mut client = Client::connect(&endpoint, "hub-test")
                .await
                .expect("connect");
            client
                .join(Some(&format!("p{i}")), None)
                .await
                .expect("join");
            barrier.wait().await;
            for k in 0..EACH {
                let said = client
                    .say(None, &format!("p{i} {k}"), false)
                    .await
                    .expect("say");
                assert!(
                    said.refused.is_empty() && said.dropped.is_empty(),
                    "{said:?}"
                );
            }
            let mut last: HashMap<String, usize> = HashMap::new();
            let mut got = 0;
            while got < (PEERS - 1) * EACH {
                let text = next(&mut client, "messages", |e| match e {
                    Event::Message { text, .. } => Some(text),
                    _ => None,
                })
                .await;
                let (sender, k) = text.split_once(' ').expect("text");
                let k: usize = k.parse().expect("k");
                let expected = last.get(sender).map_or(0, |n| n + 1);
                assert_eq!(k, expected, "from {sender} to p{i}: out of order");
                last.insert(sender.to_owned(), k);
                got += 1;
            }
            // Stay until everyone is done reading, so no one sees a leave too early.
            barrier.wait().await;
            got
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("peer task"));
    }
    results
}

#[test]
fn two_hundred_peers_exchange_messages_none_lost_each_senders_order_kept() {
    // Every peer gets 995 messages and 199 joins at once: outboxes sized for that burst.
    let daemon = Daemon::start(&[
        "--max-connections",
        "400",
        "--max-handshakes",
        "400",
        "--hub-outbox",
        "4096",
    ]);
    let results = runtime()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(120), all_peers(&daemon)).await
        })
        .expect("200 peers done within 2 minutes");
    assert!(results.iter().all(|&n| n == (PEERS - 1) * EACH));
    let table = peers_table(&daemon);
    assert!(
        table.contains(&format!(
            "{} messages, {} deliveries",
            PEERS * EACH,
            PEERS * EACH * (PEERS - 1)
        )) && table.contains(" 0 dropped"),
        "{table}"
    );
}

#[test]
fn direct_messages_by_id_or_name_presence_and_errors() {
    let daemon = Daemon::start(&[]);
    runtime().block_on(async {
        let (mut ann, _) = member(&daemon, "ann").await;
        let (mut bob, bob_joined) = member(&daemon, "bob").await;
        assert!(bob_joined.members.iter().any(|m| m.name == "ann"));
        let joined = next(&mut ann, "bob's join", |e| match e {
            Event::Presence { name, joined, .. } => Some((name, joined)),
            _ => None,
        })
        .await;
        assert_eq!(joined, ("bob".into(), true));
        ann.say(Some("bob"), "by name", false)
            .await
            .expect("by name");
        ann.say(Some(&bob_joined.peer), "by id", false)
            .await
            .expect("by id");
        for expected in ["by name", "by id"] {
            let (name, text, direct) = next(&mut bob, "a direct message", |e| match e {
                Event::Message {
                    name, text, direct, ..
                } => Some((name, text, direct)),
                _ => None,
            })
            .await;
            assert_eq!(
                (name.as_str(), text.as_str(), direct),
                ("ann", expected, true)
            );
        }
        let err = ann
            .say(Some("nobody"), "x", false)
            .await
            .expect_err("no such peer");
        assert!(
            err.to_string().contains("no peer 'nobody' in the hub"),
            "{err}"
        );
        let err = ann
            .say(None, &"x".repeat(65 * 1024), false)
            .await
            .expect_err("too long");
        assert!(err.to_string().contains("at most 65536 bytes"), "{err}");
        let err = ann.say(None, "x", true).await.err();
        assert!(err.is_none(), "the owner may speak as the daemon: {err:?}");
        let from = next(&mut bob, "the daemon's message", |e| match e {
            Event::Message { from, .. } => Some(from),
            _ => None,
        })
        .await;
        assert_eq!(from, "server");
        let members = bob.members().await.expect("members");
        assert_eq!(members.len(), 2);
        bob.leave().await.expect("leave");
        let (name, reason) = next(&mut ann, "bob's leave", |e| match e {
            Event::Presence {
                name,
                joined: false,
                reason,
                ..
            } => Some((name, reason)),
            _ => None,
        })
        .await;
        assert_eq!((name.as_str(), reason.as_str()), ("bob", "it left"));
    });
}

/// Bytes that arrived on `socket` and wait to be read (FIONREAD).
fn waiting_to_be_read(socket: &impl std::os::fd::AsRawFd) -> i32 {
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at a live c_int of
    // this frame; the fd is borrowed from a live socket.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut waiting) };
    assert_eq!(result, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    waiting
}

/// Opens a raw native connection that joins the hub and then never reads.
fn stuck_member(daemon: &Daemon, name: &str) -> crate::helper::Raw {
    let mut raw = daemon.raw();
    raw.send(&ClientMessage::Join {
        request: 1,
        name: Some(name.into()),
        resume: None,
        seen: None,
    });
    match raw.recv() {
        Some(DaemonMessage::Joined { .. }) => raw,
        other => panic!("expected Joined, got {other:?}"),
    }
}

#[test]
fn a_peer_that_never_reads_delays_no_one_and_the_slow_consumer_policy_counts_it() {
    let daemon = Daemon::start(&["--hub-outbox", "64", "--slow-consumer-after", "0s"]);
    let stuck = stuck_member(&daemon, "stuck");
    let text = "y".repeat(4000);
    runtime().block_on(async {
        let (mut reader, _) = member(&daemon, "reader").await;
        let (mut sender, _) = member(&daemon, "sender").await;
        // A job's output goes on meanwhile.
        let job = tokio::task::spawn_blocking({
            let socket = daemon.socket.clone();
            move || {
                std::process::Command::new(crate::helper::ferry_bin())
                    .arg("--socket")
                    .arg(socket)
                    .args(["run", "--", "seq", "1", "200000"])
                    .output()
                    .expect("ferry run")
            }
        });
        let mut dropped_for_stuck = 0;
        for k in 0..500 {
            let said = sender
                .say(None, &format!("{k} {text}"), false)
                .await
                .expect("say");
            dropped_for_stuck += said.dropped.len();
            let got = next(&mut reader, "the reader's message", |e| match e {
                Event::Message { text, .. } => Some(text),
                _ => None,
            })
            .await;
            assert!(got.starts_with(&format!("{k} ")), "in order, none lost");
        }
        let out = job.await.expect("job task");
        assert!(out.status.success());
        assert_eq!(
            out.stdout.len(),
            (1..=200000)
                .map(|n: u32| n.to_string().len() + 1)
                .sum::<usize>()
        );
        assert!(dropped_for_stuck > 0, "the stuck peer's outbox filled");
    });
    // The daemon wrote to the stuck peer until its socket was full, then let it go.
    assert!(waiting_to_be_read(&stuck.stream) > 100_000);
    let table = wait_until(
        "the slow consumer to be disconnected and held",
        PATIENCE,
        || {
            let table = peers_table(&daemon);
            (table.contains("stuck (away)") && table.contains("1 slow-consumer disconnects"))
                .then_some(table)
        },
        || peers_table(&daemon),
    );
    assert!(!table.contains(" 0 dropped"), "{table}");
}

#[test]
fn kicks_of_one_and_all_are_seen_as_leaves() {
    let daemon = Daemon::start(&[]);
    runtime().block_on(async {
        let (mut ann, _) = member(&daemon, "ann").await;
        let (mut bob, bob_joined) = member(&daemon, "bob").await;
        let (mut cat, _) = member(&daemon, "cat").await;
        let out = daemon.run(&["peers", "kick", &bob_joined.peer]);
        assert!(out.status.success(), "{out:?}");
        let notice = next(&mut bob, "bob's notice", |e| match e {
            Event::Notice {
                kind: NoticeKind::Kicked,
                message,
            } => Some(message),
            _ => None,
        })
        .await;
        assert!(
            notice.contains("disconnected by the daemon's owner"),
            "{notice}"
        );
        let reason = next(&mut ann, "bob's leave", |e| match e {
            Event::Presence {
                name,
                joined: false,
                reason,
                ..
            } if name == "bob" => Some(reason),
            _ => None,
        })
        .await;
        assert!(
            reason.starts_with("disconnected by the daemon's owner"),
            "{reason}"
        );
        let out = daemon.run(&["peers", "kick", "all"]);
        assert!(out.status.success(), "{out:?}");
        for client in [&mut ann, &mut cat] {
            next(client, "the kick", |e| match e {
                Event::Notice {
                    kind: NoticeKind::Kicked,
                    ..
                } => Some(()),
                _ => None,
            })
            .await;
        }
    });
    let table = peers_table(&daemon);
    assert!(
        !table.contains("(hub)") && !table.contains("(away)"),
        "kicked peers hold no place: {table}"
    );
}

#[test]
fn a_member_that_misses_its_pings_is_removed_and_others_see_it_leave() {
    let daemon = Daemon::start(&["--ping-interval", "200ms", "--ping-misses", "2"]);
    let mut silent = stuck_member(&daemon, "silent");
    runtime().block_on(async {
        // This client answers pings as it reads.
        let (mut alive, _) = member(&daemon, "alive").await;
        let reason = next(&mut alive, "the silent peer's leave", |e| match e {
            Event::Presence {
                name,
                joined: false,
                reason,
                ..
            } if name == "silent" => Some(reason),
            _ => None,
        })
        .await;
        assert!(reason.contains("no answer to 2 health checks"), "{reason}");
        // Well past the silence limit, the one that answers is still there.
        let members = alive.members().await.expect("members");
        assert_eq!(
            members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["alive"]
        );
    });
    // The silent peer was pinged, then told.
    let mut pinged = false;
    loop {
        match silent.recv() {
            Some(DaemonMessage::Ping { .. }) => pinged = true,
            Some(DaemonMessage::Notice {
                kind: NoticeKind::Kicked,
                message,
            }) => {
                assert!(
                    message.contains("no answer to 2 health checks"),
                    "{message}"
                );
                break;
            }
            Some(_) => {}
            None => panic!("closed without a notice"),
        }
    }
    assert!(pinged);
    assert!(peers_table(&daemon).contains("1 ping timeouts"));
}

#[test]
fn a_member_that_comes_back_within_the_grace_gets_its_messages_and_no_one_saw_it_leave() {
    let daemon = Daemon::start(&["--hub-grace", "3s"]);
    runtime().block_on(async {
        let (mut bob, _) = member(&daemon, "bob").await;
        let (ann, ann_joined) = member(&daemon, "ann").await;
        drop(ann);
        wait_until(
            "ann's place to be held",
            PATIENCE,
            || peers_table(&daemon).contains("ann (away)").then_some(()),
            || peers_table(&daemon),
        );
        bob.say(Some("ann"), "while you were away", false)
            .await
            .expect("to a held place");
        bob.say(None, "to all", false).await.expect("to all");
        let endpoint = Endpoint::Unix(daemon.socket.clone());
        let mut again = Client::connect(&endpoint, "hub-test")
            .await
            .expect("connect");
        let resumed = again
            .join(None, Some(&ann_joined.resume))
            .await
            .expect("resume");
        assert_eq!(
            (resumed.peer.as_str(), resumed.name.as_str()),
            (ann_joined.peer.as_str(), "ann")
        );
        for expected in ["while you were away", "to all"] {
            let text = next(&mut again, "a held message", |e| match e {
                Event::Message { text, .. } => Some(text),
                _ => None,
            })
            .await;
            assert_eq!(text, expected);
        }
        again.say(Some("bob"), "back", false).await.expect("say");
        // Bob sees ann's message, and no leave before it.
        let first = next(&mut bob, "ann's message", |e| match e {
            Event::Presence {
                joined: false,
                name,
                ..
            } => Some(format!("left: {name}")),
            Event::Message { text, .. } => Some(text),
            _ => None,
        })
        .await;
        assert_eq!(first, "back");
        // After the grace, gone for good: bob sees the leave, and the token is spent.
        drop(again);
        let reason = next(&mut bob, "ann's leave", |e| match e {
            Event::Presence {
                joined: false,
                reason,
                ..
            } => Some(reason),
            _ => None,
        })
        .await;
        assert!(reason.contains("did not come back within 3s"), "{reason}");
        let mut late = Client::connect(&endpoint, "hub-test")
            .await
            .expect("connect");
        let err = late
            .join(None, Some(&ann_joined.resume))
            .await
            .expect_err("too late");
        assert!(err.to_string().contains("no place is held"), "{err}");
    });
    let table = peers_table(&daemon);
    assert!(table.contains("1 resumed, 1 expired"), "{table}");
}

#[test]
fn bad_hub_settings_are_refused_at_start_with_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--slow-consumer", "bogus"],
            "is 'disconnect' or 'drop', not 'bogus'",
        ),
        (
            &["--hub-outbox", "0"],
            "--hub-outbox (hub.outbox) must be at least 1",
        ),
        (
            &["--ping-interval", "0s"],
            "--ping-interval (hub.ping_interval) must be more than 0",
        ),
    ];
    for (args, expected) in cases {
        let out = std::process::Command::new(crate::helper::ferry_bin())
            .args(["daemon", "--state-dir"])
            .arg(dir.path())
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .args(args)
            .output()
            .expect("daemon");
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// `ferry chat --name NAME` on `daemon`, reading a pipe and writing one.
pub(crate) fn chat_from_a_pipe(daemon: &Daemon, name: &str) -> std::process::Child {
    std::process::Command::new(crate::helper::ferry_bin())
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["chat", "--name", name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("chat")
}

#[test]
fn ferry_chat_from_a_pipe_sends_lines_prints_what_arrives_and_leaves_at_the_end() {
    use std::io::{BufRead, Write};
    use std::sync::Mutex;
    let daemon = Daemon::start(&[]);
    let mut chat = chat_from_a_pipe(&daemon, "bot");
    let printed = Arc::new(Mutex::new(String::new()));
    let stdout = chat.stdout.take().expect("stdout");
    let sink = Arc::clone(&printed);
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
    let seen = || printed.lock().expect("lock").clone();
    wait_until(
        "the chat to join",
        PATIENCE,
        || seen().contains("* joined as bot").then_some(()),
        seen,
    );
    runtime().block_on(async {
        let (mut ann, _) = member(&daemon, "ann").await;
        ann.say(Some("bot"), "hello bot", false).await.expect("say");
        wait_until(
            "the chat to print ann's message",
            PATIENCE,
            || seen().contains("ann (to you): hello bot").then_some(()),
            seen,
        );
        let mut input = chat.stdin.take().expect("stdin");
        writeln!(input, "hello ann").expect("write");
        writeln!(input, ":msg ann just you").expect("write");
        drop(input);
        for expected in [("hello ann", false), ("just you", true)] {
            let got = next(&mut ann, "bot's line", |e| match e {
                Event::Message {
                    name, text, direct, ..
                } if name == "bot" => Some((text, direct)),
                _ => None,
            })
            .await;
            assert_eq!((got.0.as_str(), got.1), expected);
        }
        let reason = next(&mut ann, "bot's leave", |e| match e {
            Event::Presence {
                name,
                joined: false,
                reason,
                ..
            } if name == "bot" => Some(reason),
            _ => None,
        })
        .await;
        assert_eq!(reason, "it left");
    });
    assert_eq!(
        crate::helper::wait_with_timeout(&mut chat, PATIENCE),
        Some(0)
    );
}

#[test]
fn a_chat_over_tls_meets_local_members_and_the_owner_speaks_as_the_daemon() {
    use std::io::Write;
    let daemon = Daemon::start_networked(&[], &["ferry:tls:127.0.0.1:0"]);
    runtime().block_on(async {
        let (mut local, _) = member(&daemon, "local").await;
        let mut far = daemon
            .remote()
            .args(["chat", "--name", "far", "--stay"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("remote chat");
        let dialect = next(&mut local, "the remote member's join", |e| match e {
            Event::Presence {
                name,
                dialect,
                joined: true,
                ..
            } if name == "far" => Some(dialect),
            _ => None,
        })
        .await;
        assert_eq!(dialect, "ferry");
        writeln!(far.stdin.as_mut().expect("stdin"), "over tls").expect("write");
        let text = next(&mut local, "the remote member's line", |e| match e {
            Event::Message { name, text, .. } if name == "far" => Some(text),
            _ => None,
        })
        .await;
        assert_eq!(text, "over tls");
        // `ferry peers msg` is the owner's, from the daemon.
        let out = daemon.run(&["peers", "msg", "local", "from", "the", "owner"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "delivered to 1 peer(s)\n"
        );
        let (from, text) = next(&mut local, "the daemon's message", |e| match e {
            Event::Message { from, text, .. } => Some((from, text)),
            _ => None,
        })
        .await;
        assert_eq!((from.as_str(), text.as_str()), ("server", "from the owner"));
        let out = daemon
            .remote()
            .args(["peers", "msg", "all", "hi"])
            .output()
            .expect("remote msg");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("only its owner"),
            "{out:?}"
        );
        let _ = far.kill();
        let _ = far.wait();
    });
}

#[test]
fn a_hub_past_its_presence_size_announces_no_joins_and_lists_its_first_members() {
    let daemon = Daemon::start(&["--hub-presence-max", "2"]);
    runtime().block_on(async {
        let (mut ann, _) = member(&daemon, "ann").await;
        let (_bob, joined) = member(&daemon, "bob").await;
        assert_eq!((joined.members.len(), joined.total_members), (2, 2));
        // Two members: bob's join is announced.
        let seen = next(&mut ann, "bob's join", |e| match e {
            Event::Presence { name, joined, .. } => Some((name, joined)),
            _ => None,
        })
        .await;
        assert_eq!(seen, ("bob".to_owned(), true));
        // A third: its answer lists the first two of three, and no one is told.
        let (_cat, joined) = member(&daemon, "cat").await;
        let listed: Vec<&str> = joined.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!((listed, joined.total_members), (vec!["ann", "bob"], 3));
        let said = ann.say(Some("cat"), "hello", false).await.expect("say");
        assert_eq!(said.delivered, 1);
        // A Presence for cat would have come before ann's Members answer (one outbox, in
        // order), so it would be queued by now: polled once, nothing is there.
        let members = ann.members().await.expect("members");
        assert_eq!(members.len(), 3);
        let pending = tokio::time::timeout(Duration::ZERO, ann.next_event()).await;
        assert!(
            !matches!(pending, Ok(Ok(Some(Event::Presence { .. })))),
            "{pending:?}"
        );
    });
    assert!(peers_table(&daemon).contains("1 joins and leaves unannounced"));
}

/// A member name is one member's while it is there (a second `ann` is `ann#2`, and told so);
/// the daemon's own names are refused; `ferry chat` marks the daemon's lines as no member's,
/// and shows control characters in names and text as visible escapes: a `\n` forges no line,
/// an ESC or OSC reaches no terminal.
#[test]
fn names_are_unique_the_daemons_are_reserved_and_text_cannot_drive_a_terminal() {
    use std::io::Read;
    use std::sync::Mutex;
    let daemon = Daemon::start(&[]);
    let mut chat = chat_from_a_pipe(&daemon, "bot");
    let printed = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = chat.stdout.take().expect("stdout");
    let sink = Arc::clone(&printed);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&chunk[..n]);
        }
    });
    let seen = || String::from_utf8_lossy(&printed.lock().expect("lock")).into_owned();
    wait_until(
        "the chat to join",
        PATIENCE,
        || seen().contains("* joined as bot").then_some(()),
        seen,
    );
    runtime().block_on(async {
        let (mut ann, joined) = member(&daemon, "ann").await;
        assert_eq!(joined.name, "ann");
        let (_twin, second) = member(&daemon, "ann").await;
        assert_eq!(second.name, "ann#2", "a name another member goes by");
        for reserved in ["server", "Ferry", "daemon"] {
            let endpoint = Endpoint::Unix(daemon.socket.clone());
            let mut client = Client::connect(&endpoint, "test").await.expect("connect");
            let refused = client.join(Some(reserved), None).await.expect_err(reserved);
            assert!(
                refused.to_string().contains("the daemon's own name"),
                "{refused}"
            );
        }
        let forged = "hi\n[12:00:00] [daemon] you are fired\u{1b}]0;pwned\u{7}\u{1b}[31mred";
        ann.say(Some("bot"), forged, false).await.expect("say");
        wait_until(
            "the chat to print ann's message",
            PATIENCE,
            || seen().contains("red").then_some(()),
            seen,
        );
    });
    let out = daemon.run(&["peers", "msg", "bot", "from the owner"]);
    assert!(out.status.success(), "{out:?}");
    wait_until(
        "the daemon's line",
        PATIENCE,
        || seen().contains("from the owner").then_some(()),
        seen,
    );
    let text = seen();
    let line = text
        .lines()
        .find(|l| l.contains("you are fired"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(
            "ann (to you): hi\\n[12:00:00] [daemon] you are fired\\e]0;pwned\\x07\\e[31mred"
        ),
        "{line}"
    );
    assert!(
        !printed
            .lock()
            .expect("lock")
            .iter()
            .any(|b| *b < 0x20 && *b != b'\n'),
        "a raw control byte reached the output: {text:?}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("] [daemon] (to you) from the owner")),
        "{text}"
    );
    drop(chat.stdin.take());
    assert_eq!(
        crate::helper::wait_with_timeout(&mut chat, PATIENCE),
        Some(0)
    );
}
