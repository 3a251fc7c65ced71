//! One hub across three daemons on a real NATS server (Debian's `nats-server`, with
//! JetStream): members of every daemon (native and TsockM) see one list and exchange
//! broadcasts and direct messages, each once and in order per sender; a daemon killed -9 has
//! its members leave after the grace period; a member resumes on another daemon; NATS
//! restarted mid-conversation loses nothing silently; credentials are required when NATS asks
//! for them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use std::time::Duration;

use ferry_client::{Client, Endpoint, Event};

use super::http::Web;
use super::hub::{member, next, runtime, sees_join};
use super::tsockm::TsockmClient;
use crate::helper::{send_signal, wait_until, wait_with_timeout, Daemon};

/// A `nats-server` with JetStream on a loopback port, its store in a temporary directory;
/// stopped when dropped.
pub struct Nats {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Its client port.
    pub port: u16,
    extra: Vec<String>,
}

impl Nats {
    /// Starts `nats-server -js` on a free port, with `extra` arguments (`--user`...).
    pub fn start(extra: &[&str]) -> Nats {
        Nats::start_with(&[&["-js"], extra].concat())
    }

    /// Starts `nats-server` on a free port with `args` only (no JetStream unless they ask).
    fn start_with(args: &[&str]) -> Nats {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nats = Nats {
            dir,
            child: None,
            port: 0,
            extra: args.iter().map(|s| s.to_string()).collect(),
        };
        nats.launch("-1");
        nats
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn launch(&mut self, port: &str) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.log())
            .expect("log");
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", port, "-sd"])
            .arg(self.dir.path().join("store"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("nats-server (.ci/deps installs it)");
        self.child = Some(child);
        let log = || std::fs::read_to_string(self.log()).unwrap_or_default();
        let before = log().len();
        let needle = "Listening for client connections on 127.0.0.1:";
        self.port = wait_until(
            "nats-server to be ready",
            Duration::from_secs(20),
            || {
                let text = log();
                let new = text.get(before..)?;
                if !new.contains("Server is ready") {
                    return None;
                }
                let at = new.find(needle)? + needle.len();
                new[at..].split_whitespace().next()?.parse().ok()
            },
            log,
        );
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGTERM) and starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        self.launch(&port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), libc::SIGTERM);
            if wait_with_timeout(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A daemon named `node` in the cluster on `nats`, with a TsockM listener and `extra`
/// arguments.
fn node(nats: &Nats, node: &str, extra: &[&str]) -> Daemon {
    let url = nats.url();
    let mut args = vec!["--hub-cluster", &url, "--hub-node", node];
    args.extend_from_slice(extra);
    Daemon::start_networked(&args, &["tsockm:tcp:127.0.0.1:0"])
}

/// The address of a daemon's TsockM listener.
fn tsockm_of(daemon: &Daemon) -> String {
    format!("127.0.0.1:{}", daemon.listener_port("tsockm:tcp"))
}

/// Waits until `client` sees `name` leave; the reason.
async fn leaves(client: &mut Client, name: &str) -> String {
    next(client, &format!("{name} to leave"), |e| match e {
        Event::Presence {
            name: n,
            joined: false,
            reason,
            ..
        } if n == name => Some(reason),
        _ => None,
    })
    .await
}

/// The next `count` messages `client` receives: (sender name, text, direct).
async fn messages(client: &mut Client, count: usize) -> Vec<(String, String, bool)> {
    let mut got = Vec::new();
    while got.len() < count {
        let message = next(client, "a message", |e| match e {
            Event::Message {
                name, text, direct, ..
            } => Some((name, text, direct)),
            Event::Missed { total, from } => panic!("missed {total} from {from:?}"),
            _ => None,
        })
        .await;
        got.push(message);
    }
    got
}

/// Each sender's texts, in the order they arrived.
fn by_sender(got: &[(String, String, bool)]) -> HashMap<String, Vec<String>> {
    let mut senders: HashMap<String, Vec<String>> = HashMap::new();
    for (name, text, _) in got {
        senders.entry(name.clone()).or_default().push(text.clone());
    }
    senders
}

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix} {i}")).collect()
}

/// Waits until `daemon` lists each of `names` (the other daemons' joins reach it through the
/// cluster), so that a member joining there next finds them in its answer rather than being
/// told of them as they arrive.
fn knows(daemon: &Daemon, names: &[&str]) {
    let table = || String::from_utf8_lossy(&daemon.run(&["peers"]).stdout).into_owned();
    wait_until(
        &format!("the daemon to know {names:?}"),
        Duration::from_secs(20),
        || {
            let table = table();
            names.iter().all(|name| table.contains(name)).then_some(())
        },
        table,
    );
}

/// Waits until `daemon`'s `ferry peers` shows `name` held (away).
fn held(daemon: &Daemon, name: &str) {
    let table = || String::from_utf8_lossy(&daemon.run(&["peers"]).stdout).into_owned();
    let away = format!("{name} (away)");
    wait_until(
        &format!("{name} to be held"),
        Duration::from_secs(20),
        || table().contains(&away).then_some(()),
        table,
    );
}

#[test]
fn three_daemons_share_one_hub_in_order_and_once() {
    let nats = Nats::start(&[]);
    let a = node(&nats, "a", &[]);
    let b = node(&nats, "b", &[]);
    let c = node(&nats, "c", &[]);
    runtime().block_on(async {
        let (mut ann, ann_joined) = member(&a, "ann").await;
        assert_eq!(ann_joined.name, "ann@a");
        knows(&c, &["ann@a"]);
        let (mut cat, cat_joined) = member(&c, "cat").await;
        assert!(
            cat_joined.members.iter().any(|m| m.name == "ann@a"),
            "{:?}",
            cat_joined.members
        );
        sees_join(&mut ann, "cat@c").await;
        // A TsockM member on b: its login is announced everywhere, qualified.
        let mut bob = TsockmClient::login(&tsockm_of(&b), "bob");
        sees_join(&mut ann, "bob@b").await;
        sees_join(&mut cat, "bob@b").await;
        // Broadcasts from two daemons at once, and direct messages across daemons.
        const EACH: usize = 40;
        for (ann_text, cat_text) in numbered("ann", EACH).iter().zip(numbered("cat", EACH)) {
            let said = ann.say(None, ann_text, false).await.expect("say");
            assert_eq!(said.delivered, 2, "{said:?}");
            cat.say(None, &cat_text, false).await.expect("say");
        }
        let said = ann
            .say(Some("cat@c"), "to cat alone", false)
            .await
            .expect("say");
        assert_eq!(said.delivered, 1);
        let said = cat
            .say(Some(&ann_joined.peer), "to ann by id", false)
            .await
            .expect("say");
        assert_eq!(said.delivered, 1);
        let at_cat = messages(&mut cat, EACH + 1).await;
        let at_ann = messages(&mut ann, EACH + 1).await;
        assert_eq!(
            by_sender(&at_cat).remove("ann@a"),
            Some([numbered("ann", EACH), vec!["to cat alone".into()]].concat())
        );
        assert_eq!(at_cat.last().map(|m| m.2), Some(true));
        assert_eq!(
            by_sender(&at_ann).remove("cat@c"),
            Some([numbered("cat", EACH), vec!["to ann by id".into()]].concat())
        );
        // The TsockM member got both senders' broadcasts, each once, in order.
        let mut at_bob: HashMap<String, Vec<String>> = HashMap::new();
        for _ in 0..2 * EACH {
            let (name, text) = bob.next_message();
            at_bob.entry(name).or_default().push(text);
        }
        assert_eq!(at_bob.remove("ann@a"), Some(numbered("ann", EACH)));
        assert_eq!(at_bob.remove("cat@c"), Some(numbered("cat", EACH)));
        // A TsockM member's broadcast reaches a native member on another daemon.
        bob.request("MSG", "hi from b");
        let got = messages(&mut ann, 1).await;
        assert_eq!(
            (got[0].0.as_str(), got[0].1.as_str()),
            ("bob@b", "hi from b")
        );
        // The owner's `ferry peers msg` reaches members everywhere, and `ferry peers` lists
        // the other daemons' members.
        let out = c.run(&["peers", "msg", "ann@a", "from c's owner"]);
        assert!(out.status.success(), "{out:?}");
        let got = messages(&mut ann, 1).await;
        assert_eq!(
            (got[0].0.as_str(), got[0].1.as_str()),
            ("server@c", "from c's owner")
        );
        // `ferry chat`'s `:list`, from a pipe, shows everyone with their daemon.
        let listed = c.run_with_input(&["chat", "--name", "dan"], b":list\n");
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        for name in ["ann@a", "bob@b", "cat@c", "dan@c"] {
            assert!(listed.contains(name), "{name} in:\n{listed}");
        }
        let table = String::from_utf8_lossy(&c.run(&["peers"]).stdout).into_owned();
        for name in ["ann@a", "bob@b", "cat@c"] {
            assert!(table.contains(name), "{name} in:\n{table}");
        }
        // And what c knows of the cluster: its link, the other two daemons, nothing wrong.
        for line in [
            "cluster: this daemon is c, connected to NATS, at stream position ",
            "; other daemons: a (1 member), b (1 member)\n",
            " not published (the link was behind), 0 undecodable, 0 ignored (a daemon spoke for a member not its own), 0 missed\n",
        ] {
            assert!(table.contains(line), "{line:?} in:\n{table}");
        }
        // TsockM members on the other two daemons as well: a TsockM broadcast reaches the
        // TsockM members of the other daemons (the daemon's lines, the logins, aside).
        let tia = TsockmClient::login(&tsockm_of(&a), "tia");
        let mut tic = TsockmClient::login(&tsockm_of(&c), "tic");
        for name in ["tia@a", "tic@c"] {
            sees_join(&mut ann, name).await;
        }
        knows(&a, &["tic@c"]);
        tia.request("MSG", "from tia on a");
        let heard = |tsockm: &mut TsockmClient| loop {
            let (name, text) = tsockm.next_message();
            if name != "server" {
                break (name, text);
            }
        };
        assert_eq!(heard(&mut tic), ("tia@a".into(), "from tia on a".into()));
        assert_eq!(heard(&mut bob), ("tia@a".into(), "from tia on a".into()));
    });
}

#[test]
fn a_killed_daemon_s_members_leave_after_the_grace_and_may_resume_elsewhere() {
    let nats = Nats::start(&[]);
    let grace = ["--hub-grace", "4s"];
    let mut a = node(&nats, "a", &grace);
    let b = node(&nats, "b", &grace);
    let c = node(&nats, "c", &grace);
    runtime().block_on(async {
        let (ann, ann_joined) = member(&a, "ann").await;
        let (_abe, _) = member(&a, "abe").await;
        knows(&c, &["ann@a", "abe@a"]);
        let (mut cat, cat_joined) = member(&c, "cat").await;
        assert!(cat_joined.members.iter().any(|m| m.name == "abe@a"));
        // ann is shown a few messages (from tom, a TsockM member on c: a member's messages
        // carry their stream position, the owner's do not) just before a is killed: a's last
        // beat (up to a second old) may not cover them, but ann says which she was shown last.
        let mut ann = ann;
        let tom = TsockmClient::login(&tsockm_of(&c), "tom");
        sees_join(&mut ann, "tom@c").await;
        for k in 0..5 {
            tom.request("MSG", &format!("before {k}"));
        }
        let mut seen = 0;
        for k in 0..5 {
            let (text, seq) = next(&mut ann, "a message before the kill", |e| match e {
                Event::Message { text, seq, .. } => Some((text, seq)),
                _ => None,
            })
            .await;
            assert_eq!(text, format!("before {k}"));
            assert!(seq > seen, "stream positions rise: {seq} after {seen}");
            seen = seq;
        }
        assert_eq!(a.stop_with(libc::SIGKILL), None);
        drop(ann);
        // Once c hears no more of a, its members are held; messages for ann wait in the
        // cluster's stream.
        held(&c, "ann@a");
        held(&b, "ann@a");
        let table = String::from_utf8_lossy(&c.run(&["peers"]).stdout).into_owned();
        assert!(
            table.contains("other daemons: a (gone, 2 members, 2 held), b (0 members)\n"),
            "{table}"
        );
        cat.say(Some("ann@a"), "while you were away", false)
            .await
            .expect("say");
        // ann comes back on b within the grace: same id, and what was sent to her meanwhile.
        let endpoint = Endpoint::Unix(b.socket.clone());
        let mut again = Client::connect(&endpoint, "cluster-test")
            .await
            .expect("connect");
        let resumed = again
            .rejoin(&ann_joined.resume, Some(seen))
            .await
            .expect("resume on b");
        assert_eq!(resumed.peer, ann_joined.peer);
        assert_eq!(resumed.name, "ann@b");
        // Exactly what came after the last she was shown: nothing again.
        let got = messages(&mut again, 1).await;
        assert_eq!(got[0].1, "while you were away");
        // abe did not come back: cat sees him leave once the grace is over (and not ann).
        let reason = leaves(&mut cat, "abe@a").await;
        assert!(reason.contains("did not come back within 4s"), "{reason}");
        let said = cat
            .say(Some(&ann_joined.peer), "and now on b", false)
            .await
            .expect("say");
        assert_eq!(said.delivered, 1);
        assert_eq!(messages(&mut again, 1).await[0].1, "and now on b");
        // a is forgotten once the last of its members' places ended.
        let table = String::from_utf8_lossy(&c.run(&["peers"]).stdout).into_owned();
        assert!(table.contains("other daemons: b (1 member)\n"), "{table}");
    });
}

#[test]
fn nats_restarted_mid_conversation_loses_nothing() {
    let mut nats = Nats::start(&[]);
    let a = node(&nats, "a", &[]);
    let c = node(&nats, "c", &[]);
    runtime().block_on(async {
        let (mut ann, _) = member(&a, "ann").await;
        let (mut cat, _) = member(&c, "cat").await;
        sees_join(&mut ann, "cat@c").await;
        const EACH: usize = 150;
        let texts = numbered("ann", 2 * EACH);
        for text in &texts[..EACH] {
            ann.say(None, text, false).await.expect("say");
        }
        // NATS goes down with messages in flight, and comes back on the same store.
        nats.restart();
        for text in &texts[EACH..] {
            ann.say(None, text, false).await.expect("say");
        }
        let got = messages(&mut cat, 2 * EACH).await;
        assert_eq!(by_sender(&got).remove("ann@a"), Some(texts));
        // And the conversation goes on both ways.
        cat.say(Some("ann"), "still here", false)
            .await
            .expect("say");
        assert_eq!(messages(&mut ann, 1).await[0].1, "still here");
    });
}

/// Runs `ferry daemon ARGS` (with `password` in FERRY_HUB_CLUSTER_PASSWORD) and checks that
/// it refuses to start; what it said.
fn refused(args: &[&str], password: Option<&str>) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(crate::helper::ferry_bin());
    command
        .arg("daemon")
        .arg("--socket")
        .arg(dir.path().join("ferry.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(args)
        .stdin(Stdio::null());
    if let Some(password) = password {
        command.env("FERRY_HUB_CLUSTER_PASSWORD", password);
    }
    let out = command.output().expect("ferry daemon");
    assert!(!out.status.success(), "{out:?}");
    out
}

#[test]
fn a_nats_server_without_jetstream_or_room_for_the_stream_is_refused_saying_what_to_do() {
    let plain = Nats::start_with(&[]);
    let out = refused(&["--hub-cluster", &plain.url(), "--hub-node", "a"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot make the JetStream stream")
            && stderr.contains("the NATS server needs JetStream: nats-server -js"),
        "{stderr}"
    );
    let config = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(config.path(), "jetstream { max_file_store: 10MB }\n").expect("write");
    let small = Nats::start(&["-c", &config.path().display().to_string()]);
    let out = refused(&["--hub-cluster", &small.url(), "--hub-node", "a"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no room for the stream's 1024 MiB: raise its max_file_store"),
        "{stderr}"
    );
}

#[test]
fn daemons_starting_together_share_one_stream_and_a_dead_server_in_the_list_is_passed_over() {
    // Room for one stream only: of daemons making it at the same moment, all but one are
    // refused it by JetStream (without taking the one made, this failed one run in two).
    let config = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(config.path(), "jetstream { max_file_store: 1500MB }\n").expect("write");
    let nats = Nats::start(&["-c", &config.path().display().to_string()]);
    let url = nats.url();
    let started: Vec<std::thread::JoinHandle<Daemon>> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let url = url.clone();
            std::thread::spawn(move || Daemon::start(&["--hub-cluster", &url, "--hub-node", name]))
        })
        .collect();
    let daemons: Vec<Daemon> = started
        .into_iter()
        .map(|t| t.join().expect("a daemon started"))
        .collect();
    // Nothing listens on port 1: a daemon given it first finds the server after it.
    let listed = format!("nats://127.0.0.1:1,{url}");
    let d = Daemon::start(&["--hub-cluster", &listed, "--hub-node", "d"]);
    runtime().block_on(async {
        let (mut ann, _) = member(&daemons[0], "ann").await;
        for (daemon, name) in [
            (&daemons[1], "bob@b"),
            (&daemons[2], "cat@c"),
            (&d, "dan@d"),
        ] {
            let unqualified = name.split('@').next().unwrap_or(name);
            let (_peer, _) = member(daemon, unqualified).await;
            sees_join(&mut ann, name).await;
        }
    });
}

#[test]
fn nats_credentials_are_required_when_configured() {
    let nats = Nats::start(&["--user", "ferry", "--pass", "s3cret"]);
    let url = nats.url();
    // Without them, the daemon does not start, and says why.
    let out = refused(&["--hub-cluster", &url, "--hub-node", "a"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot join the hub cluster 'ferry'")
            && stderr.to_lowercase().contains("authorization"),
        "{stderr}"
    );
    // A wrong password neither.
    let user = [
        "--hub-cluster",
        &url,
        "--hub-node",
        "a",
        "--hub-cluster-user",
        "ferry",
    ];
    refused(&user, Some("wrong"));
    // With them (the password from the environment, or the configuration file), it does.
    let mut command = Command::new(crate::helper::ferry_bin());
    command
        .arg("daemon")
        .args(user)
        .env("FERRY_HUB_CLUSTER_PASSWORD", "s3cret")
        .stdin(Stdio::null());
    let a = Daemon::launch_in(tempfile::tempdir().expect("tempdir"), command);
    let b = Daemon::start_with_config(|_, _| {
        format!(
            "[hub]\ncluster = \"{url}\"\nnode = \"b\"\nuser = \"ferry\"\npassword = \"s3cret\"\n"
        )
    });
    runtime().block_on(async {
        let (mut ann, _) = member(&a, "ann").await;
        let (_bob, _) = member(&b, "bob").await;
        sees_join(&mut ann, "bob@b").await;
    });
}

#[test]
fn a_member_whose_connection_ended_resumes_on_another_daemon() {
    let nats = Nats::start(&[]);
    let a = node(&nats, "a", &[]);
    let b = node(&nats, "b", &[]);
    let c = node(&nats, "c", &[]);
    runtime().block_on(async {
        let (ann, ann_joined) = member(&a, "ann").await;
        knows(&c, &["ann@a"]);
        let (mut cat, _) = member(&c, "cat").await;
        drop(ann);
        held(&c, "ann@a");
        cat.say(Some("ann"), "one", false).await.expect("say");
        cat.say(None, "two", false).await.expect("say");
        // ann takes her place on b: what was sent to her meanwhile comes first, in order.
        let endpoint = Endpoint::Unix(b.socket.clone());
        let mut again = Client::connect(&endpoint, "cluster-test")
            .await
            .expect("connect");
        let resumed = again
            .join(None, Some(&ann_joined.resume))
            .await
            .expect("resume on b");
        assert_eq!(
            (resumed.peer.as_str(), resumed.name.as_str()),
            (ann_joined.peer.as_str(), "ann@b")
        );
        cat.say(Some(&ann_joined.peer), "three", false)
            .await
            .expect("say");
        let got = messages(&mut again, 3).await;
        let texts: Vec<&str> = got.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(texts, ["one", "two", "three"]);
        // a let her place go without a word; everyone lists her on b.
        let peers_of =
            |daemon: &Daemon| String::from_utf8_lossy(&daemon.run(&["peers"]).stdout).into_owned();
        wait_until(
            "a to drop ann's held place",
            Duration::from_secs(20),
            || {
                (peers_of(&a).contains("ann@b (hub)") && !peers_of(&a).contains("ann@a"))
                    .then_some(())
            },
            || peers_of(&a),
        );
        assert!(peers_of(&c).contains("ann@b (hub)"), "{}", peers_of(&c));
        // cat never saw her leave: the next event it has is the message it sends itself
        // a reply to.
        again.say(Some("cat"), "back", false).await.expect("say");
        let (name, text) = next(&mut cat, "ann's message", |e| match e {
            Event::Presence { name, joined, .. } => panic!("{name} joined={joined}: unexpected"),
            Event::Message { name, text, .. } => Some((name, text)),
            _ => None,
        })
        .await;
        assert_eq!((name.as_str(), text.as_str()), ("ann@b", "back"));
    });
}

#[test]
fn the_presence_limit_counts_every_daemon_s_members() {
    let nats = Nats::start(&[]);
    let a = node(&nats, "a", &[]);
    let c = node(&nats, "c", &["--hub-presence-max", "2"]);
    runtime().block_on(async {
        let (mut ann, _) = member(&a, "ann").await;
        knows(&c, &["ann@a"]);
        let (mut cat, _) = member(&c, "cat").await;
        sees_join(&mut ann, "cat@c").await;
        // A third member: announced on a (its limit is 1000), not on c (2).
        let (_abe, _) = member(&a, "abe").await;
        sees_join(&mut ann, "abe@a").await;
        ann.say(None, "after abe", false).await.expect("say");
        let text = next(&mut cat, "ann's message", |e| match e {
            Event::Presence { name, .. } => {
                panic!("{name}'s presence was announced past the limit")
            }
            Event::Message { text, .. } => Some(text),
            _ => None,
        })
        .await;
        assert_eq!(text, "after abe");
        let listed = String::from_utf8_lossy(&c.run(&["peers"]).stdout).into_owned();
        assert!(listed.contains("abe@a (hub)"), "{listed}");
    });
}

#[test]
fn an_nkey_seed_file_is_enough_where_nats_knows_its_public_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = nkeys::KeyPair::new_user();
    let seed = dir.path().join("daemon.nk");
    std::fs::write(&seed, key.seed().expect("seed")).expect("seed file");
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            key.public_key()
        ),
    )
    .expect("nats config");
    let nats = Nats::start(&["-c", config.to_str().expect("utf-8 path")]);
    let seed = seed.to_str().expect("utf-8 path");
    let a = node(&nats, "a", &["--hub-cluster-nkey", seed]);
    let b = node(&nats, "b", &["--hub-cluster-nkey", seed]);
    runtime().block_on(async {
        let (mut ann, _) = member(&a, "ann").await;
        let (_bob, _) = member(&b, "bob").await;
        sees_join(&mut ann, "bob@b").await;
    });
    // Another key is refused.
    let other = dir.path().join("other.nk");
    std::fs::write(&other, nkeys::KeyPair::new_user().seed().expect("seed")).expect("seed file");
    let url = nats.url();
    let other = other.to_str().expect("utf-8 path");
    refused(
        &[
            "--hub-cluster",
            &url,
            "--hub-node",
            "c",
            "--hub-cluster-nkey",
            other,
        ],
        None,
    );
}

#[test]
fn a_daemon_that_stops_cleanly_has_its_members_leave_after_the_grace() {
    let nats = Nats::start(&[]);
    let a = node(&nats, "a", &["--hub-grace", "2s"]);
    // Several NATS servers may be named (here the same one twice).
    let servers = format!("{},{}", nats.url(), nats.url());
    let mut b = Daemon::start(&[
        "--hub-cluster",
        &servers,
        "--hub-node",
        "b",
        "--hub-grace",
        "2s",
    ]);
    runtime().block_on(async {
        let (mut ann, _) = member(&a, "ann").await;
        let (_bob, _) = member(&b, "bob").await;
        sees_join(&mut ann, "bob@b").await;
        assert_eq!(b.stop_with(libc::SIGTERM), Some(0), "{}", b.log());
        // Held first (it may resume on a within the grace), then gone.
        held(&a, "bob@b");
        let reason = leaves(&mut ann, "bob@b").await;
        assert!(reason.contains("did not come back within 2s"), "{reason}");
    });
}

#[test]
fn what_is_not_a_hub_event_or_not_its_daemon_s_to_say_is_ignored_and_said() {
    let nats = Nats::start(&[]);
    let web = Web::start(&["--hub-cluster", &nats.url(), "--hub-node", "a"]);
    let a = &web.daemon;
    let c = node(&nats, "c", &[]);
    runtime().block_on(async {
        let (mut ann, ann_joined) = member(a, "ann").await;
        let (mut cat, _) = member(&c, "cat").await;
        sees_join(&mut ann, "cat@c").await;
        // Anyone holding the cluster's credentials writes into its stream: bytes that are no
        // event, and a message in ann's name from a daemon that is not hers.
        let intruder = async_nats::connect(nats.url()).await.expect("connect to NATS");
        let js = async_nats::jetstream::new(intruder);
        let forged = format!(
            r#"{{"kind":"message","from":"{}","from_name":"ann","principal":"owner","to":null,"sent_ms":0,"text":"forged"}}"#,
            ann_joined.peer
        );
        for payload in [b"\xff not json".to_vec(), forged.into_bytes()] {
            js.publish("ferry.ferry.hub.evil", payload.into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
        // The daemons go on: ann's own next message is the first thing cat gets.
        ann.say(None, "genuine", false).await.expect("say");
        let got = messages(&mut cat, 1).await;
        assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("ann@a", "genuine"));
        // Each daemon said what it ignored, and why.
        for daemon in [a, &c] {
            wait_until(
                "the daemon to log what it ignored",
                Duration::from_secs(20),
                || {
                    let log = daemon.log();
                    (log.contains("a hub event in the cluster's stream: not a ferry hub-cluster message")
                        && log.contains("a daemon spoke for a member it does not hold: ignored"))
                    .then_some(())
                },
                || daemon.log(),
            );
            // And counts them where its owner and a monitoring system look.
            let table = String::from_utf8_lossy(&daemon.run(&["peers"]).stdout).into_owned();
            assert!(
                table.contains(", 1 undecodable, 1 ignored (a daemon spoke for a member not its own), 0 missed"),
                "{table}"
            );
        }
    });
    let scraped = web.ask("GET", "/metrics", None);
    assert_eq!(scraped.status, 200);
    let text = String::from_utf8_lossy(&scraped.body).into_owned();
    for series in [
        "ferry_hub_cluster_connected 1",
        "ferry_hub_cluster_daemons{state=\"live\"} 1",
        "ferry_hub_cluster_daemons{state=\"gone\"} 0",
        "ferry_hub_cluster_remote_members 1",
        "ferry_hub_cluster_undecodable_total 1",
        "ferry_hub_cluster_ignored_total 1",
        "ferry_hub_cluster_missed_total 0",
        "ferry_hub_cluster_unpublished_total 0",
    ] {
        assert!(
            text.lines().any(|line| line == series),
            "{series} in:\n{text}"
        );
    }
    // ann's join and her message, at least, were published.
    let published = text
        .lines()
        .find_map(|line| line.strip_prefix("ferry_hub_cluster_published_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(published.is_some_and(|n| n >= 2), "{text}");
}
