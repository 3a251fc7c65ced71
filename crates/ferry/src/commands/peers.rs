//! `ferry peers`: the daemon's connected peers, whatever their dialect (a table, or JSON), and
//! `ferry peers kick ID|all`, `ferry peers msg ID|all TEXT`. For the daemon's owner, on its
//! Unix socket.

use anyhow::Result;
use ferry_client::{Endpoint, PeerInfo};
use serde::Serialize;

use crate::cli::{PeersArgs, PeersCommand};
use crate::commands::ps::timestamp;

/// Lists peers, or kicks them.
pub fn run(target: &Endpoint, args: PeersArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        match args.command {
            None => {
                let (peers, hub, cluster) = client.peers_and_counters().await?;
                let mut out = String::new();
                if args.json {
                    for peer in &peers {
                        out.push_str(&serde_json::to_string(&JsonPeer::from(peer))?);
                        out.push('\n');
                    }
                } else {
                    out = table(&peers);
                    out.push_str(&format!(
                        "hub: {} messages, {} deliveries, {} refused, {} dropped, {} slow-consumer disconnects, {} ping timeouts, {} resumed, {} expired, {} joins and leaves unannounced (a large hub)\n",
                        hub.messages, hub.deliveries, hub.refused, hub.dropped,
                        hub.slow_disconnects, hub.ping_timeouts, hub.resumed, hub.expired, hub.unannounced
                    ));
                    if let Some(cluster) = &cluster {
                        out.push_str(&cluster_lines(cluster));
                    }
                }
                print!("{out}");
            }
            Some(PeersCommand::Msg { peer, text }) => {
                let to = (peer != "all").then_some(peer.as_str());
                let said = client.say(to, &text.join(" "), true).await?;
                println!("delivered to {} peer(s)", said.delivered);
                for refused in &said.refused {
                    eprintln!(
                        "ferry: not delivered to {} ({}): {}",
                        refused.peer, refused.name, refused.reason
                    );
                }
                if !said.dropped.is_empty() {
                    eprintln!("ferry: dropped (outbox full): {}", said.dropped.join(" "));
                }
            }
            Some(PeersCommand::Kick { peer }) => {
                let target = (peer != "all").then_some(peer.as_str());
                let kicked = client.kick(target).await?;
                match kicked.len() {
                    0 => println!("no other peer is connected"),
                    n => println!("kicked {n} peer(s): {}", kicked.join(" ")),
                }
            }
        }
        Ok(0)
    })
}

/// What `ferry peers` says of the hub's cluster: this daemon, its link, the others, and what
/// went wrong.
fn cluster_lines(cluster: &ferry_client::HubCluster) -> String {
    let others: Vec<String> = cluster
        .daemons
        .iter()
        .map(|d| {
            let mut state = Vec::new();
            if d.gone {
                state.push("gone".to_owned());
            }
            let plural = if d.members == 1 { "" } else { "s" };
            state.push(format!("{} member{plural}", d.members));
            if d.held > 0 {
                state.push(format!("{} held", d.held));
            }
            format!("{} ({})", d.node, state.join(", "))
        })
        .collect();
    format!(
        "cluster: this daemon is {}, {} NATS, at stream position {}; other daemons: {}\n\
         cluster: {} events published, {} not published (the link was behind), {} undecodable, {} ignored (a daemon spoke for a member not its own), {} missed\n",
        cluster.node,
        if cluster.connected { "connected to" } else { "cut off from" },
        cluster.position,
        if others.is_empty() { "none".to_owned() } else { others.join(", ") },
        cluster.published,
        cluster.unpublished,
        cluster.undecodable,
        cluster.ignored,
        cluster.missed,
    )
}

/// One line of `ferry peers --json`.
#[derive(Serialize)]
struct JsonPeer<'a> {
    id: &'a str,
    name: &'a str,
    dialect: &'a str,
    principal: &'a str,
    address: &'a str,
    connected: String,
    jobs_started: u64,
    jobs: &'a [u64],
    outbox_used: u64,
    outbox_capacity: u64,
    dropped_events: u64,
    member: bool,
    away: bool,
    you: bool,
}

impl<'a> From<&'a PeerInfo> for JsonPeer<'a> {
    fn from(peer: &'a PeerInfo) -> JsonPeer<'a> {
        JsonPeer {
            id: &peer.id,
            name: &peer.name,
            dialect: &peer.dialect,
            principal: &peer.principal,
            address: &peer.address,
            connected: timestamp(peer.connected_ms),
            jobs_started: peer.jobs_started,
            jobs: &peer.jobs,
            outbox_used: peer.outbox.0,
            outbox_capacity: peer.outbox.1,
            dropped_events: peer.dropped_events,
            member: peer.member,
            away: peer.away,
            you: peer.you,
        }
    }
}

fn table(peers: &[PeerInfo]) -> String {
    let rows: Vec<[String; 7]> = peers
        .iter()
        .map(|peer| {
            let you = if peer.you { " (this client)" } else { "" };
            let hub = if peer.away {
                " (away)"
            } else if peer.member {
                " (hub)"
            } else {
                ""
            };
            [
                peer.id.clone(),
                format!("{}{hub}", ferry_common::text::visible(&peer.name)),
                peer.dialect.clone(),
                timestamp(peer.connected_ms),
                peer.jobs_started.to_string(),
                format!("{}/{}", peer.outbox.0, peer.outbox.1),
                format!("{}{you}", peer.address),
            ]
        })
        .collect();
    let header = [
        "ID", "NAME", "DIALECT", "SINCE", "JOBS", "OUTBOX", "ADDRESS",
    ];
    crate::table::render(&header, &rows)
}
