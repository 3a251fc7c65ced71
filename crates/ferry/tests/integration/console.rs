//! The terminals of the hub: the daemon's admin console on a pseudo-terminal (`:list`,
//! `:kill`, `:msg`, `:cc`, `:help`, malformed commands), and `ferry chat` on one, whose line
//! being typed is redrawn under arriving messages.

use std::process::{Command, Stdio};

use ferry_client::Event;

use crate::fds::{open_slave, pty, read_until};
use crate::helper::{ferry_bin, Daemon};
use crate::hub::{member, next, runtime};

/// Types `line` and Enter on the terminal.
fn type_line(master: &std::os::fd::OwnedFd, line: &str) {
    rustix::io::write(master, format!("{line}\r").as_bytes()).expect("type");
}

#[test]
fn the_console_on_a_terminal_lists_kicks_and_messages_peers() {
    let (master, slave) = pty();
    let mut command = Command::new(ferry_bin());
    command
        .arg("daemon")
        .stdin(Stdio::from(open_slave(&slave)))
        .stdout(Stdio::from(open_slave(&slave)));
    let daemon = Daemon::launch_in(tempfile::tempdir().expect("tempdir"), command);
    read_until(&master, "ferry console: type :help");
    runtime().block_on(async {
        let (mut ann, ann_joined) = member(&daemon, "ann").await;
        let (mut bob, bob_joined) = member(&daemon, "bob").await;
        type_line(&master, ":help");
        read_until(&master, ":kill all");
        type_line(&master, ":list");
        let listed = read_until(&master, "bob (hub)");
        assert!(
            listed.contains("ID") && listed.contains("OUTBOX") && listed.contains(&ann_joined.peer)
        );
        // Malformed: a usage line, nothing changes.
        type_line(&master, ":kill");
        read_until(&master, "usage: :kill <peer id> | :kill all");
        type_line(&master, ":kill nobody");
        read_until(&master, "no peer 'nobody'");
        type_line(&master, ":msg all");
        read_until(&master, "usage: :msg");
        type_line(&master, ":frob");
        read_until(&master, "unknown command ':frob'");
        assert_eq!(ann.members().await.expect("members").len(), 2);
        // A message from the server, to one and to all.
        type_line(&master, ":msg bob just for you");
        read_until(&master, "delivered to 1 peer(s)");
        let (from, text) = next(&mut bob, "the server's message", |e| match e {
            Event::Message { from, text, .. } => Some((from, text)),
            _ => None,
        })
        .await;
        assert_eq!((from.as_str(), text.as_str()), ("server", "just for you"));
        type_line(&master, ":cc");
        read_until(&master, "\x1b[2J");
        // Kick one: it is told, the other sees it leave.
        type_line(&master, &format!(":kill {}", bob_joined.peer));
        read_until(&master, &format!("kicked {}", bob_joined.peer));
        let reason = next(&mut ann, "bob's leave", |e| match e {
            Event::Presence {
                joined: false,
                reason,
                ..
            } => Some(reason),
            _ => None,
        })
        .await;
        assert!(
            reason.contains("by the daemon's owner (console)"),
            "{reason}"
        );
        type_line(&master, ":kill all");
        read_until(&master, "kicked 1 peer(s)");
        next(&mut ann, "ann's kick", |e| match e {
            Event::Notice { message, .. } => Some(message),
            _ => None,
        })
        .await;
    });
}

#[test]
fn a_chat_on_a_terminal_redraws_the_line_being_typed_under_arriving_messages() {
    let daemon = Daemon::start(&[]);
    let (master, slave) = pty();
    let mut chat = Command::new(ferry_bin())
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["chat", "--name", "tty"])
        .stdin(Stdio::from(open_slave(&slave)))
        .stdout(Stdio::from(open_slave(&slave)))
        .stderr(Stdio::null())
        .spawn()
        .expect("chat");
    read_until(&master, "* joined as tty");
    runtime().block_on(async {
        let (mut other, _) = member(&daemon, "other").await;
        // Half a line typed, then a message arrives: printed above it, and the half line
        // drawn again after it.
        rustix::io::write(&master, b"half a li").expect("type");
        read_until(&master, "> half a li");
        other
            .say(Some("tty"), "incoming", false)
            .await
            .expect("say");
        let screen = read_until(&master, "incoming\r\n> half a li");
        assert!(
            screen.contains("\r\x1b[K["),
            "the line was cleared first: {screen:?}"
        );
        // Finishing the line sends it whole.
        type_line(&master, "ne");
        let text = next(&mut other, "the typed line", |e| match e {
            Event::Message { text, .. } => Some(text),
            _ => None,
        })
        .await;
        assert_eq!(text, "half a line");
        type_line(&master, ":exit");
    });
    let status = crate::helper::wait_with_timeout(&mut chat, std::time::Duration::from_secs(10));
    assert_eq!(status, Some(0));
}
