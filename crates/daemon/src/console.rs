//! The admin console: `ferry daemon` on a terminal (or with `--console`) reads commands on
//! stdin and answers on stdout, as TsockM's server does: `:list`, `:kill <id>|all`,
//! `:msg <id>|all <text>`, `:stats`, `:cc`, `:help`. A malformed command gets a usage line
//! and changes nothing. The same actions are `ferry peers`, `ferry peers kick` and
//! `ferry peers msg` for the daemon's owner.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::SystemTime;

use ferry_common::text::visible;
use ferry_engine::peers::{PeerInfo, PeerRegistry};

use crate::state::Daemon;

/// What a peer kicked from the console is told of why.
const KICK_REASON: &str = "by the daemon's owner (console)";

/// The console's commands, as `:help` prints them.
const HELP: &str = "\
commands:
  :list               the peers: id, name, address, dialect, connected since, jobs, outbox
  :kill <id>          disconnect one peer (told in its own dialect; its jobs go on)
  :kill all           disconnect every peer
  :msg <id>|all TEXT  a message from the server to one peer (id or name) or to all
  :stats              the hub's counters
  :cc                 clear the screen
  :help               this list
";

/// Starts the console on the daemon's stdin and stdout, in a thread of its own (reading a
/// terminal blocks); it ends at the end of stdin, or with the daemon's process.
pub(crate) fn spawn(server: Arc<Daemon>) {
    let peers = server.engine.peers().clone();
    let started = std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            say("ferry console: type :help for the commands\n");
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let answer = execute(&line, &peers);
                if !answer.is_empty() {
                    say(&answer);
                }
            }
        });
    if let Err(e) = started {
        tracing::warn!("cannot start the console: {e}");
    }
}

/// Writes to the console's stdout at once.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    // A console whose terminal is gone has no one to tell.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Runs one console line against the peer registry; what to print.
pub(crate) fn execute(line: &str, peers: &PeerRegistry) -> String {
    let line = line.trim();
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    match command {
        "" => String::new(),
        ":help" => HELP.to_owned(),
        ":cc" => "\x1b[2J\x1b[H".to_owned(),
        ":list" => list(&peers.list()),
        ":stats" => {
            let s = peers.stats();
            format!(
                "messages {}, deliveries {}, refused {}, dropped {}, slow-consumer disconnects {}, ping timeouts {}, resumed {}, expired {}\n",
                s.messages, s.deliveries, s.refused, s.dropped, s.slow_disconnects, s.ping_timeouts, s.resumed, s.expired
            )
        }
        ":kill" => match rest {
            "" => "usage: :kill <peer id> | :kill all\n".to_owned(),
            "all" => {
                let kicked = peers.kick_all("", KICK_REASON);
                format!("kicked {} peer(s)\n", kicked.len())
            }
            id if peers.kick(id, KICK_REASON) => format!("kicked {id}\n"),
            id => format!("no peer '{id}' (see :list)\nusage: :kill <peer id> | :kill all\n"),
        },
        ":msg" => {
            let (to, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let text = text.trim();
            if to.is_empty() || text.is_empty() {
                return "usage: :msg <peer id or name>|all <text>\n".to_owned();
            }
            let to = (to != "all").then_some(to);
            match peers.send_from_server(to, text.to_owned()) {
                Ok(delivery) => {
                    let mut out = format!("delivered to {} peer(s)\n", delivery.delivered);
                    for refused in delivery.refused {
                        out.push_str(&format!(
                            "not delivered to {} ({}): {}\n",
                            refused.peer,
                            visible(&refused.name),
                            refused.reason
                        ));
                    }
                    if !delivery.dropped.is_empty() {
                        out.push_str(&format!(
                            "dropped (outbox full): {}\n",
                            delivery.dropped.join(" ")
                        ));
                    }
                    out
                }
                Err(e) => format!("{e}\nusage: :msg <peer id or name>|all <text>\n"),
            }
        }
        other => format!("unknown command '{other}'\n{HELP}"),
    }
}

/// The `:list` table.
fn list(peers: &[PeerInfo]) -> String {
    if peers.is_empty() {
        return "no peers\n".to_owned();
    }
    let rows: Vec<[String; 7]> = peers
        .iter()
        .map(|peer| {
            let state = if peer.away {
                " (away)"
            } else if peer.member {
                " (hub)"
            } else {
                ""
            };
            [
                peer.id.clone(),
                // A name is the peer's own: shown with its control characters escaped.
                format!("{}{state}", visible(&peer.name)),
                peer.address.clone(),
                peer.dialect.clone(),
                age(peer.connected),
                peer.jobs_started.to_string(),
                format!("{}/{}", peer.outbox_used, peer.outbox_capacity),
            ]
        })
        .collect();
    let header = [
        "ID", "NAME", "ADDRESS", "DIALECT", "SINCE", "JOBS", "OUTBOX",
    ]
    .map(String::from);
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// How long ago `when` was, shortly ("42s ago", "3m ago", "2h ago").
fn age(when: SystemTime) -> String {
    let secs = when.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_engine::peers::NewPeer;

    fn accept(_: &str) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn malformed_commands_get_usage_and_change_nothing() {
        let peers = PeerRegistry::default();
        let ann = peers.register(NewPeer {
            name: "ann".into(),
            address: "127.0.0.1:5".into(),
            dialect: "tsockm".into(),
            principal: None,
        });
        ann.join(None, accept).expect("join");
        assert!(execute(":kill", &peers).starts_with("usage: :kill"));
        assert!(execute(":kill nobody", &peers).contains("no peer 'nobody'"));
        assert!(execute(":msg", &peers).starts_with("usage: :msg"));
        assert!(execute(":msg all", &peers).starts_with("usage: :msg"));
        assert!(execute(":frob", &peers).starts_with("unknown command ':frob'"));
        assert_eq!(peers.list().len(), 1);
        let listed = execute(":list", &peers);
        assert!(
            listed.contains(ann.id()) && listed.contains("ann (hub)"),
            "{listed}"
        );
        assert_eq!(
            execute(":msg all hello", &peers),
            "delivered to 1 peer(s)\n"
        );
        assert_eq!(
            execute(&format!(":kill {}", ann.id()), &peers),
            format!("kicked {}\n", ann.id())
        );
    }
}
