//! Placing remote actions: every host is asked its cost at once (`Cost`, with a short time
//! limit); a host that does not answer is skipped with one warning; the action goes to the
//! lowest cost, and among equal costs to the host this run has sent the fewest actions, so
//! that equal hosts share the work. Placements are made one at a time, so that the actions of
//! a set that start together see each other's placements.
//!
//! Connections to the hosts are kept for the run: a poll or an action takes one that is open
//! and idle (or opens one), and gives it back when it is done with it, so that a run of many
//! actions does not pay a connection and its greeting for every poll and every action.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use ferry_client::{Client, ClientError, Endpoint};
use ferry_rake::Host;

use super::rake64::Rake64;

/// Where a host keeps inputs by content, in the file area of this client.
pub const INPUT_CACHE: &str = "rake-inputs";
use crate::cli::RakeWire;
use crate::endpoint::{for_named_host, RemoteOptions};

/// One host of the Rakefile.
pub struct PoolHost {
    /// `NAME:PORT`, for messages and the summary (and the address of a rake64 server).
    pub name: String,
    /// How to reach it (or why it cannot be).
    endpoint: std::result::Result<Endpoint, String>,
    /// Actions this run sent there.
    placed: AtomicU64,
    /// Contents (hashes) it is known to hold in its input cache.
    pub held: Mutex<HashSet<String>>,
    /// Its input cache was listed this run.
    scanned: std::sync::atomic::AtomicBool,
    /// Connections to it that are open and idle, for the next poll or action.
    idle: Mutex<Vec<Client>>,
}

impl PoolHost {
    /// How to reach it.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_ref().ok()
    }

    /// Lists its input cache over `client`, once per run, into `held`.
    pub async fn scan_cache(&self, client: &mut Client) {
        if self.scanned.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Ok(listing) = client.list(INPUT_CACHE).await {
            self.held.lock().unwrap_or_else(|e| e.into_inner()).extend(
                listing
                    .files
                    .iter()
                    .map(|f| String::from_utf8_lossy(&f.path).into_owned()),
            );
        }
    }
}

/// The Rakefile's hosts.
pub struct Pool {
    pub hosts: Vec<PoolHost>,
    timeout: Duration,
    /// What the hosts speak.
    pub wire: RakeWire,
    /// With rake64: how long a server may take to answer.
    pub reply_timeout: Duration,
    /// Hosts already warned about.
    warned: Mutex<HashSet<usize>>,
    /// One placement at a time.
    placing: tokio::sync::Mutex<()>,
}

/// How a host is named in messages and the summary: as the Rakefile names it, with the
/// address it is reached at when that is another (a name from the client configuration's
/// hosts, `hA (10.0.0.5:7070)`), so that no label shows a port the host is not reached at.
fn label(host: &Host, endpoint: Option<&Endpoint>) -> String {
    match endpoint {
        Some(Endpoint::Tcp {
            host: name, port, ..
        }) if *name != host.name || *port != host.port => {
            let address = if name.contains(':') {
                format!("[{name}]:{port}")
            } else {
                format!("{name}:{port}")
            };
            format!("{} ({address})", host.name)
        }
        _ => host.to_string(),
    }
}

impl Pool {
    /// The pool of `hosts`, reached with `options`; a host's poll may take `timeout`.
    pub fn new(
        hosts: &[Host],
        options: &RemoteOptions,
        timeout: Duration,
        wire: RakeWire,
        reply_timeout: Duration,
    ) -> Result<Pool> {
        let hosts = hosts
            .iter()
            .map(|host| {
                let endpoint = match wire {
                    RakeWire::Ferry => {
                        for_named_host(options, &host.name, host.port).map_err(|e| format!("{e:#}"))
                    }
                    // A rake64 server is reached by its address alone.
                    RakeWire::Rake64 => Err(String::new()),
                };
                (host, endpoint)
            })
            .map(|(host, endpoint)| PoolHost {
                name: label(host, endpoint.as_ref().ok()),
                endpoint,
                placed: AtomicU64::new(0),
                held: Mutex::default(),
                scanned: std::sync::atomic::AtomicBool::new(false),
                idle: Mutex::default(),
            })
            .collect();
        Ok(Pool {
            hosts,
            timeout,
            wire,
            reply_timeout,
            warned: Mutex::default(),
            placing: tokio::sync::Mutex::new(()),
        })
    }

    /// Warns once about host `index`.
    fn warn(&self, index: usize, why: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.insert(index) {
            super::output::note(&format!(
                "ferry: rake: host {} skipped: {why}",
                self.hosts[index].name
            ));
        }
    }

    /// Asks host `index` over a connection kept idle (once more over a new one when that
    /// one has gone stale: the host restarted, or closed it) or over a new one; that
    /// connection and the answer.
    pub async fn ask<T>(
        &self,
        index: usize,
        mut ask: impl AsyncFnMut(&mut Client) -> Result<T, ClientError>,
    ) -> Result<(Client, T)> {
        let kept = self.hosts[index]
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        if let Some(mut client) = kept {
            if let Ok(answer) = ask(&mut client).await {
                return Ok((client, answer));
            }
        }
        let endpoint = self.hosts[index]
            .endpoint
            .as_ref()
            .map_err(|why| anyhow::anyhow!("{why}"))?;
        let mut client = Client::connect(endpoint, crate::CLIENT_NAME).await?;
        let answer = ask(&mut client).await?;
        Ok((client, answer))
    }

    /// Keeps a connection to host `index`, done with its requests, for the next one.
    pub fn keep(&self, index: usize, client: Client) {
        self.hosts[index]
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(client);
    }

    /// Host `index`'s cost, within the poll's time limit; with `inputs`, it also learns
    /// (once per run) which inputs that host's cache holds.
    async fn poll(&self, index: usize, inputs: &[String]) -> std::result::Result<u64, String> {
        let host = &self.hosts[index];
        let poll = async {
            if self.wire == RakeWire::Rake64 {
                let mut server = Rake64::connect(&host.name, self.timeout).await?;
                let cost = server.cost().await;
                server.close().await;
                return cost;
            }
            let (mut client, cost) = self.ask(index, async |c| c.cost().await).await?;
            if !inputs.is_empty() {
                host.scan_cache(&mut client).await;
            }
            self.keep(index, client);
            Ok(cost.cost)
        };
        match tokio::time::timeout(self.timeout, poll).await {
            Ok(Ok(cost)) => Ok(cost),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!(
                "no answer to the cost poll within {} ms",
                self.timeout.as_millis()
            )),
        }
    }

    /// Chooses the host for one action (not one of `exclude`) whose inputs have the content
    /// hashes `inputs`: the lowest cost; among equal costs, the host that holds most of the
    /// inputs already, then the one this run sent the fewest actions. Its index.
    pub async fn choose(self: &Arc<Self>, exclude: &[usize], inputs: &[String]) -> Result<usize> {
        let _one_at_a_time = self.placing.lock().await;
        let mut polls = tokio::task::JoinSet::new();
        for index in (0..self.hosts.len()).filter(|i| !exclude.contains(i)) {
            let (pool, inputs) = (Arc::clone(self), inputs.to_vec());
            polls.spawn(async move { (index, pool.poll(index, &inputs).await) });
        }
        let mut answers = Vec::new();
        while let Some(answer) = polls.join_next().await {
            answers.extend(answer.ok());
        }
        let mut best: Option<(u64, usize, u64, usize)> = None;
        for (index, answer) in answers {
            match answer {
                Ok(cost) => {
                    let host = &self.hosts[index];
                    let placed = host.placed.load(Ordering::Relaxed);
                    let held = host.held.lock().unwrap_or_else(|e| e.into_inner());
                    let missing = inputs.iter().filter(|h| !held.contains(*h)).count();
                    let key = (cost, missing, placed, index);
                    if best.is_none_or(|b| key < b) {
                        best = Some(key);
                    }
                }
                Err(why) => self.warn(index, &why),
            }
        }
        let Some((_, _, _, index)) = best else {
            bail!("no host of the Rakefile answered the cost poll");
        };
        self.hosts[index].placed.fetch_add(1, Ordering::Relaxed);
        Ok(index)
    }
}
