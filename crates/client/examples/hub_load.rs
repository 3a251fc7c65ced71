//! Load for the peer hub's benchmark (`bench/hub.sh`), many native peers in one process:
//!
//! - `hub_load fanout SOCKET PEERS MESSAGES`: PEERS members read while one more sends
//!   MESSAGES broadcasts, streamed without waiting for each answer but never more than a
//!   window ahead of the slowest reader (so that no outbox overflows); prints
//!   `deliveries_per_s=N`.
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
    let usage = "usage: hub_load fanout SOCKET PEERS MESSAGES | hub_load idle SOCKET PEERS";
    let (Some(mode), Some(socket), Some(peers)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let peers: usize = peers.parse().expect("PEERS is a number");
    let endpoint = Endpoint::Unix(socket.into());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        match mode.as_str() {
            "fanout" => {
                let messages: u64 = args.get(4).and_then(|m| m.parse().ok()).expect("MESSAGES");
                fanout(&endpoint, peers, messages).await;
            }
            "idle" => idle(&endpoint, peers).await,
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
    });
}

/// Connects `n` members of the hub.
async fn members(endpoint: &Endpoint, n: usize) -> Vec<Client> {
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
                    .join(Some(&format!("load{}", start + i)), None)
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

async fn fanout(endpoint: &Endpoint, peers: usize, messages: u64) {
    let readers = members(endpoint, peers).await;
    let mut sender = members(endpoint, 1).await.pop().expect("sender");
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
    // The sender streams its messages from a task of its own while this one reads the
    // answers (a refusal or a drop would come back as a failure).
    let outgoing = sender.sender();
    let window = Arc::clone(&progress);
    let sending = tokio::spawn(async move {
        for k in 0..messages {
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
    });
    let mut failed = 0;
    let draining = async {
        loop {
            match sender.next_event().await {
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
    sending.await.expect("sender");
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "deliveries_per_s={:.0} delivered={delivered} failed={failed} seconds={seconds:.2}",
        delivered as f64 / seconds
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
