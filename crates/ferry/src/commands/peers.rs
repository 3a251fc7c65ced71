//! `ferry peers`: the daemon's connected peers, whatever their dialect (a table, or JSON), and
//! `ferry peers kick ID|all`. For the daemon's owner, on its Unix socket.

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
                let peers = client.peers().await?;
                let mut out = String::new();
                if args.json {
                    for peer in &peers {
                        out.push_str(&serde_json::to_string(&JsonPeer::from(peer))?);
                        out.push('\n');
                    }
                } else {
                    out = table(&peers);
                }
                print!("{out}");
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
            you: peer.you,
        }
    }
}

fn table(peers: &[PeerInfo]) -> String {
    let rows: Vec<[String; 7]> = peers
        .iter()
        .map(|peer| {
            let you = if peer.you { " (this client)" } else { "" };
            [
                peer.id.clone(),
                peer.name.clone(),
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
    crate::table::render(header, &rows)
}
