//! Placing remote actions: every host is asked its cost at once (`Cost`, with a short time
//! limit); a host that does not answer is skipped with one warning; the action goes to the
//! lowest cost, and among equal costs to the host this run has sent the fewest actions, so
//! that equal hosts share the work. Placements are made one at a time, so that the actions of
//! a set that start together see each other's placements.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Result};
use ferry_client::{Client, Endpoint};
use ferry_rake::Host;

use super::rake64::Rake64;
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
}

impl PoolHost {
    /// How to reach it.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_ref().ok()
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
            .map(|host| PoolHost {
                name: host.to_string(),
                endpoint: match wire {
                    RakeWire::Ferry => {
                        for_named_host(options, &host.name, host.port).map_err(|e| format!("{e:#}"))
                    }
                    // A rake64 server is reached by its address alone.
                    RakeWire::Rake64 => Err(String::new()),
                },
                placed: AtomicU64::new(0),
                held: Mutex::default(),
                scanned: std::sync::atomic::AtomicBool::new(false),
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

    /// A rake64 server's cost (`!E`), within the poll's time limit.
    async fn rake64_cost(&self, address: &str) -> std::result::Result<u64, String> {
        let poll = async {
            let mut server = Rake64::connect(address, self.timeout).await?;
            let cost = server.cost().await;
            server.close().await;
            cost
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
    pub async fn choose(&self, exclude: &[usize], inputs: &[String]) -> Result<usize> {
        let _one_at_a_time = self.placing.lock().await;
        let polls = self
            .hosts
            .iter()
            .enumerate()
            .map(|(index, host)| async move {
                if exclude.contains(&index) {
                    return (index, Err("it failed this action already".to_owned()));
                }
                if self.wire == RakeWire::Rake64 {
                    return (index, self.rake64_cost(&host.name).await);
                }
                let Some(endpoint) = host.endpoint() else {
                    let why = host.endpoint.as_ref().err().cloned().unwrap_or_default();
                    return (index, Err(why));
                };
                let poll = async {
                    let mut client = Client::connect(endpoint, crate::CLIENT_NAME).await?;
                    let cost = client.cost().await?;
                    // Once per run, learn which inputs it holds (for ties).
                    if !inputs.is_empty() && !host.scanned.swap(true, Ordering::Relaxed) {
                        if let Ok(listing) = client.list(super::action::INPUT_CACHE).await {
                            host.held.lock().unwrap_or_else(|e| e.into_inner()).extend(
                                listing
                                    .files
                                    .iter()
                                    .map(|f| String::from_utf8_lossy(&f.path).into_owned()),
                            );
                        }
                    }
                    Ok::<_, ferry_client::ClientError>(cost)
                };
                let cost = match tokio::time::timeout(self.timeout, poll).await {
                    Ok(Ok(cost)) => Ok(cost.cost),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "no answer to the cost poll within {} ms",
                        self.timeout.as_millis()
                    )),
                };
                (index, cost)
            });
        let answers = futures_join_all(polls).await;
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
                Err(why) if !exclude.contains(&index) => self.warn(index, &why),
                Err(_) => {}
            }
        }
        let Some((_, _, _, index)) = best else {
            bail!("no host of the Rakefile answered the cost poll");
        };
        self.hosts[index].placed.fetch_add(1, Ordering::Relaxed);
        Ok(index)
    }
}

/// Awaits every future, concurrently.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs = Vec::with_capacity(set.len());
    // Poll them together: each is a short network exchange bounded by the timeout.
    let mut pending: Vec<_> = set.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for slot in pending.iter_mut() {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => {
                        outputs.push(output);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs
}
