//! Load for the peer hub's benchmark (`bench/hub.sh`), many native peers in one process:
//!
//! - `hub_load fanout SOCKET[,SOCKET...] PEERS MESSAGES`: PEERS members (spread over the
//!   daemons of a hub cluster when several sockets are given) read while one more on each
//!   daemon sends (MESSAGES broadcasts in all), streamed without waiting for each answer but
//!   never more than a window ahead of the slowest reader (so that no outbox overflows);
//!   prints `deliveries_per_s=N`.
//! - `hub_load latency SOCKET_A SOCKET_B ROUNDS`: a member of daemon A sends ROUNDS messages,
//!   one at a time, to a member of A and one of B (daemons of one cluster); prints the median
//!   and 99th percentile of the time each took to arrive, on the same daemon and across.
//! - `hub_load idle SOCKET PEERS`: PEERS members join and stay; prints `ready` once all have
//!   joined, and leaves when stdin closes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferry_client::{Client, Endpoint, Event};

/// How far the sender may run ahead of the slowest reader.
const WINDOW: u64 = 512;

/// Members connecting at once (the listen backlog is finite).
const CONNECT_BATCH: usize = 256;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: hub_load fanout SOCKET[,SOCKET...] PEERS MESSAGES | hub_load idle SOCKET PEERS | hub_load latency SOCKET_A SOCKET_B ROUNDS";
    let (Some(mode), Some(socket), Some(peers)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let endpoints: Vec<Endpoint> = socket
        .split(',')
        .map(|s| Endpoint::Unix(s.into()))
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        match mode.as_str() {
            "fanout" => {
                let peers: usize = peers.parse().expect("PEERS is a number");
                let messages: u64 = args.get(4).and_then(|m| m.parse().ok()).expect("MESSAGES");
                fanout(&endpoints, peers, messages).await;
            }
            "idle" => idle(&endpoints[0], peers.parse().expect("PEERS is a number")).await,
            "latency" => {
                let other = Endpoint::Unix(peers.into());
                let rounds: usize = args.get(4).and_then(|m| m.parse().ok()).expect("ROUNDS");
                latency(&endpoints[0], &other, rounds).await;
            }
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
    });
}

/// Connects `n` members of the hub.
async fn members(endpoint: &Endpoint, n: usize) -> Vec<Client> {
    named_members(endpoint, n, "load").await
}

/// Connects `n` members of the hub named PREFIX0, PREFIX1...
async fn named_members(endpoint: &Endpoint, n: usize, prefix: &'static str) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    while clients.len() < n {
        let batch = CONNECT_BATCH.min(n - clients.len());
        let start = clients.len();
        let joins = (0..batch).map(|i| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let mut client = Client::connect(&endpoint, "hub-load")
                    .await
                    .expect("connect");
                client
                    .join(Some(&format!("{prefix}{}", start + i)), None)
                    .await
                    .expect("join");
                client
            })
        });
        for join in joins.collect::<Vec<_>>() {
            clients.push(join.await.expect("join task"));
        }
    }
    clients
}

async fn fanout(endpoints: &[Endpoint], peers: usize, messages: u64) {
    let mut readers = Vec::with_capacity(peers);
    for (i, endpoint) in endpoints.iter().enumerate() {
        let share = peers / endpoints.len() + usize::from(i < peers % endpoints.len());
        readers.extend(members(endpoint, share).await);
    }
    let mut senders = Vec::new();
    for endpoint in endpoints {
        senders.extend(members(endpoint, 1).await);
    }
    // In a cluster, a member hears of the others' joins through the cluster: let them all
    // arrive before counting.
    for reader in &mut readers {
        while let Ok(Ok(Some(_))) =
            tokio::time::timeout(std::time::Duration::from_millis(2), reader.next_event()).await
        {
        }
    }
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..peers).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut reader) in readers.into_iter().enumerate() {
        let progress = Arc::clone(&progress);
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < messages {
                match reader.next_event().await {
                    Ok(Some(Event::Message { .. })) => {
                        got += 1;
                        progress[i].store(got, Ordering::Relaxed);
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            got
        }));
    }
    // The senders stream their messages from tasks of their own while this one reads the
    // answers (a refusal or a drop would come back as a failure). The window counts every
    // sender's messages.
    let sent = Arc::new(AtomicU64::new(0));
    let mut sending = Vec::new();
    for (i, sender) in senders.iter().enumerate() {
        let outgoing = sender.sender();
        let window = Arc::clone(&progress);
        let sent = Arc::clone(&sent);
        let count = messages / senders.len() as u64
            + u64::from((i as u64) < messages % senders.len() as u64);
        sending.push(tokio::spawn(async move {
            for _ in 0..count {
                let k = sent.fetch_add(1, Ordering::Relaxed);
                while k >= WINDOW
                    && window
                        .iter()
                        .map(|p| p.load(Ordering::Relaxed))
                        .min()
                        .unwrap_or(0)
                        + WINDOW
                        <= k
                {
                    tokio::task::yield_now().await;
                }
                outgoing
                    .say(None, "fan-out message of a typical chat line's length")
                    .await
                    .expect("say");
            }
        }));
    }
    let mut failed = 0;
    let draining = async {
        let mut senders = senders;
        loop {
            let events = senders.iter_mut().map(|s| Box::pin(s.next_event()));
            match futures_select_all(events).await {
                Ok(Some(Event::Failed { .. })) => failed += 1,
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    };
    let mut delivered = 0;
    tokio::select! {
        () = draining => {}
        () = async {
            for task in tasks {
                delivered += task.await.expect("reader");
            }
        } => {}
    }
    for sender in sending {
        sender.await.expect("sender");
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "deliveries_per_s={:.0} delivered={delivered} failed={failed} seconds={seconds:.2}",
        delivered as f64 / seconds
    );
}

/// The first of `futures` to finish.
async fn futures_select_all<F: std::future::Future + Unpin>(
    futures: impl Iterator<Item = F>,
) -> F::Output {
    let mut futures: Vec<F> = futures.collect();
    std::future::poll_fn(move |cx| {
        for future in &mut futures {
            if let std::task::Poll::Ready(output) = std::pin::Pin::new(future).poll(cx) {
                return std::task::Poll::Ready(output);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn latency(a: &Endpoint, b: &Endpoint, rounds: usize) {
    let mut sender = named_members(a, 1, "lat-sender")
        .await
        .pop()
        .expect("sender");
    let mut near = named_members(a, 1, "lat-near")
        .await
        .pop()
        .expect("member of A");
    let mut far = named_members(b, 1, "lat-far")
        .await
        .pop()
        .expect("member of B");
    // Wait until every daemon knows every member (joins cross the cluster). The sender's
    // answers come in as it reads.
    let outgoing = sender.sender();
    let draining =
        tokio::spawn(async move { while let Ok(Some(_)) = sender.next_event().await {} });
    let mut ready = false;
    while !ready {
        ready = outgoing.say(Some("lat-far0"), "ping").await.is_ok()
            && outgoing.say(Some("lat-near0"), "ping").await.is_ok();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let text = format!("round {round}");
        let start = Instant::now();
        outgoing.say(None, &text).await.expect("say");
        for (i, member) in [&mut near, &mut far].into_iter().enumerate() {
            loop {
                match member.next_event().await {
                    Ok(Some(Event::Message { text: got, .. })) if got == text => break,
                    Ok(Some(_)) => {}
                    other => panic!("member left: {other:?}"),
                }
            }
            times[i].push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let stats = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        (at(0.5), at(0.99))
    };
    draining.abort();
    let (near_p50, near_p99) = stats(&mut times[0]);
    let (far_p50, far_p99) = stats(&mut times[1]);
    println!(
        "same_p50_ms={near_p50:.3} same_p99_ms={near_p99:.3} across_p50_ms={far_p50:.3} across_p99_ms={far_p99:.3}"
    );
}

async fn idle(endpoint: &Endpoint, peers: usize) {
    // Each member reads what comes (the others' joins) from the moment it joined, as a
    // connected client does.
    let mut readers = Vec::with_capacity(peers);
    while readers.len() < peers {
        let batch = CONNECT_BATCH.min(peers - readers.len());
        let start = readers.len();
        let (joined, mut all_joined) = tokio::sync::mpsc::channel::<()>(batch);
        for i in 0..batch {
            let endpoint = endpoint.clone();
            let joined = joined.clone();
            readers.push(tokio::spawn(async move {
                let mut client = Client::connect(&endpoint, "hub-load")
                    .await
                    .expect("connect");
                client
                    .join(Some(&format!("idle{}", start + i)), None)
                    .await
                    .expect("join");
                let _ = joined.send(()).await;
                drop(joined);
                while let Ok(Some(_)) = client.next_event().await {}
            }));
        }
        drop(joined);
        // Every member of the batch says it joined (and then holds no sender).
        for _ in 0..batch {
            all_joined
                .recv()
                .await
                .expect("a member of the batch failed to join");
        }
    }
    println!("ready {}", readers.len());
    // Hold them until stdin closes.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::stdin().read_line(&mut sink);
    })
    .await;
    for reader in readers {
        reader.abort();
    }
}
