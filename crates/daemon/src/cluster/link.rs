//! The cluster link's tasks: publishing, reading the stream, beats, rosters and replays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use ferry_engine::peers::cluster::{ClusterEvent, ClusterLink, Replay};
use ferry_engine::peers::PeerRegistry;
use ferry_wire::cluster::{Beat, Message, RosterPage};
use tokio::sync::{mpsc, Notify};
use tokio_stream::StreamExt;

use super::config::{ClusterConfig, Credentials};
use super::events;
use super::{Cluster, BEAT_EVERY, SILENT_AFTER};
use crate::config::DaemonError;

/// Events waiting to be published at most; past it, senders are told the link is behind.
const PUBLISH_QUEUE: usize = 65_536;

/// How long a roster request waits for more answers after the last one.
const ROSTER_QUIET: Duration = Duration::from_millis(400);

/// Members in one roster answer (a NATS message is at most 1 MiB by default).
const ROSTER_PAGE: usize = 1000;

/// How long the stream keeps events at least (a member resuming on another daemon is replayed
/// from it).
const KEEP_AT_LEAST: Duration = Duration::from_secs(600);

/// The most the stream keeps, in bytes (JetStream sets that room aside when it makes it).
const STREAM_MAX_BYTES: i64 = 1 << 30;

/// Why the stream could not be made, and what to do about it.
fn cannot_make_stream(e: &jetstream::context::CreateStreamError) -> String {
    use jetstream::context::CreateStreamErrorKind;
    use jetstream::ErrorCode;
    let hint = match e.kind() {
        CreateStreamErrorKind::JetStream(error)
            if [
                ErrorCode::STORAGE_RESOURCES_EXCEEDED,
                ErrorCode::INSUFFICIENT_RESOURCES,
            ]
            .contains(&error.error_code()) =>
        {
            format!(
                "the NATS server's JetStream has no room for the stream's {} MiB: raise its max_file_store, or give it a disk with more space",
                STREAM_MAX_BYTES >> 20
            )
        }
        _ => "the NATS server needs JetStream: nats-server -js, or `jetstream {}` in its configuration".to_owned(),
    };
    format!("cannot make the JetStream stream: {e} ({hint})")
}

/// NATS subjects and names of one cluster.
#[derive(Clone)]
struct Names {
    cluster: String,
    node: String,
    boot: String,
}

impl Names {
    fn stream(&self) -> String {
        format!("FERRY_HUB_{}", self.cluster)
    }
    fn events(&self) -> String {
        format!("ferry.{}.hub.>", self.cluster)
    }
    fn mine(&self) -> String {
        format!("ferry.{}.hub.{}", self.cluster, self.node)
    }
    fn beats(&self) -> String {
        format!("ferry.{}.beat.*", self.cluster)
    }
    fn my_beat(&self) -> String {
        format!("ferry.{}.beat.{}", self.cluster, self.node)
    }
    fn roster(&self) -> String {
        format!("ferry.{}.roster", self.cluster)
    }
    fn roster_of(&self, node: &str) -> String {
        format!("ferry.{}.roster.{node}", self.cluster)
    }
}

/// The last token of a subject (the daemon that published on it).
fn origin_of(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or_default()
}

/// Connects to NATS as `config` says; `connected` is set to the time of each (re)connection.
async fn connect(
    config: &ClusterConfig,
    connected: Arc<Mutex<Instant>>,
) -> Result<async_nats::Client, DaemonError> {
    let failed = |what: String| {
        DaemonError::Config(format!(
            "cannot join the hub cluster '{}' at {}: {what}",
            config.name, config.url
        ))
    };
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("ferry daemon {}", config.node))
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(100u64.saturating_mul(attempts as u64).min(1000))
        })
        .event_callback(move |event| {
            let connected = Arc::clone(&connected);
            async move {
                if matches!(event, async_nats::Event::Connected) {
                    *connected.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                }
            }
        });
    options = match &config.credentials {
        Credentials::None => options,
        Credentials::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        Credentials::CredsFile(path) => options
            .credentials_file(path)
            .await
            .map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?,
        Credentials::NkeySeedFile(path) => {
            let seed = std::fs::read_to_string(path)
                .map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?;
            options.nkey(seed.trim().to_owned())
        }
    };
    if let Some(ca) = &config.ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let servers: Vec<&str> = config.url.split(',').map(str::trim).collect();
    options
        .connect(servers)
        .await
        .map_err(|e| failed(e.to_string()))
}

/// See [`Cluster::start`].
pub(super) async fn start(
    config: &ClusterConfig,
    registry: PeerRegistry,
) -> Result<Cluster, DaemonError> {
    let fail = |what: String| {
        DaemonError::Config(format!(
            "cannot join the hub cluster '{}': {what}",
            config.name
        ))
    };
    let connected = Arc::new(Mutex::new(Instant::now()));
    let client = connect(config, Arc::clone(&connected)).await?;
    let names = Names {
        cluster: config.name.clone(),
        node: config.node.clone(),
        boot: boot_id(),
    };
    let js = jetstream::new(client.clone());
    let keep = KEEP_AT_LEAST.max(registry.config().grace.saturating_mul(4));
    let made = js
        .get_or_create_stream(stream::Config {
            name: names.stream(),
            subjects: vec![names.events()],
            storage: stream::StorageType::File,
            max_age: keep,
            max_bytes: STREAM_MAX_BYTES,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await;
    let stream = match made {
        Ok(stream) => stream,
        // Another daemon may be making it at this very moment (JetStream then counts the
        // room both ask for): take the one it made.
        Err(e) => js
            .get_stream(names.stream())
            .await
            .map_err(|_| fail(cannot_make_stream(&e)))?,
    };
    let last = stream
        .get_info()
        .await
        .map_err(|e| fail(format!("cannot read the JetStream stream: {e}")))?
        .state
        .last_sequence;
    let messages = subscribe_from(&client, &stream, &names, last + 1)
        .await
        .map_err(fail)?;
    let rosters = ask_rosters(&client, names.roster(), &names)
        .await
        .map_err(fail)?;
    if let Some(page) = rosters.iter().find(|p| p.node == names.node) {
        return Err(fail(format!(
            "another live daemon is named '{}' in it (boot {}): give this one another name with --hub-node",
            page.node, page.boot
        )));
    }
    let (events, published) = mpsc::channel(PUBLISH_QUEUE);
    let (replays, replay_requests) = mpsc::unbounded_channel();
    registry.join_cluster(
        ClusterLink {
            node: names.node.clone(),
            events: events.clone(),
            replays,
            accepts: crate::listeners::hub_accepts,
        },
        last,
    );
    let mut nodes = Nodes::default();
    for page in rosters {
        nodes.seen(&page.node, &page.boot, page.roster.processed);
        registry.apply_roster(&page.node, events::roster_from_wire(page.roster));
    }
    tracing::info!(
        cluster = names.cluster,
        node = names.node,
        url = config.url,
        others = nodes.0.len(),
        "the hub joined its cluster"
    );
    let stopped = Arc::new(Notify::new());
    let tasks = vec![
        tokio::spawn(publish(
            js.clone(),
            names.clone(),
            published,
            Arc::clone(&stopped),
        )),
        tokio::spawn(read_stream(
            client.clone(),
            stream.clone(),
            names.clone(),
            messages,
            registry.clone(),
        )),
        tokio::spawn(beat(client.clone(), names.clone(), registry.clone())),
        tokio::spawn(watch_beats(
            client.clone(),
            names.clone(),
            registry.clone(),
            nodes,
            connected,
        )),
        tokio::spawn(answer_rosters(
            client.clone(),
            names.clone(),
            registry.clone(),
        )),
        tokio::spawn(replay(stream, replay_requests, registry.clone())),
    ];
    Ok(Cluster {
        tasks,
        stopped,
        registry,
        stopping: events,
    })
}

/// A random id for this daemon's run.
fn boot_id() -> String {
    let mut bytes = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An ordered consumer of the whole stream from position `from`.
async fn subscribe_from(
    client: &async_nats::Client,
    stream: &stream::Stream,
    names: &Names,
    from: u64,
) -> Result<consumer::push::Ordered, String> {
    let consumer = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: names.events(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot read the JetStream stream: {e}"))?;
    consumer
        .messages()
        .await
        .map_err(|e| format!("cannot read the JetStream stream: {e}"))
}

/// Publishes the registry's events in order, each acknowledged before the next.
async fn publish(
    js: jetstream::Context,
    names: Names,
    mut events: mpsc::Receiver<ClusterEvent>,
    stopped: Arc<Notify>,
) {
    let subject = names.mine();
    let mut serial = 0u64;
    while let Some(event) = events.recv().await {
        let stopping = event == ClusterEvent::Stopping;
        let payload = bytes::Bytes::from(events::encode(event));
        serial += 1;
        let id = format!("{}-{}-{serial}", names.node, names.boot);
        let mut wait = Duration::from_millis(50);
        loop {
            let message = PublishMessage::build()
                .payload(payload.clone())
                .message_id(&id);
            let acked = match js.send_publish(subject.clone(), message).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match acked {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("publishing a hub event to the cluster failed ({e}); retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
        if stopping {
            stopped.notify_waiters();
        }
    }
}

/// Applies every event of the stream to the registry, in order; resubscribes where it left off
/// if the consumer ends.
async fn read_stream(
    client: async_nats::Client,
    stream: stream::Stream,
    names: Names,
    mut messages: consumer::push::Ordered,
    registry: PeerRegistry,
) {
    loop {
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!("reading the cluster's stream: {e}");
                    continue;
                }
            };
            let Ok(info) = message.info() else {
                continue;
            };
            let seq = info.stream_sequence;
            let origin = origin_of(message.subject.as_str()).to_owned();
            match events::decode(&message.payload) {
                Ok(event) => registry.apply(seq, &origin, event),
                Err(e) => {
                    tracing::warn!(
                        origin,
                        seq,
                        "a hub event in the cluster's stream: {e}; ignored"
                    );
                    registry.skip(seq);
                }
            }
        }
        tracing::warn!("the cluster's stream ended; reading it again from where it was left");
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let from = registry.cluster_processed() + 1;
            match subscribe_from(&client, &stream, &names, from).await {
                Ok(next) => {
                    messages = next;
                    break;
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
}

/// Says every [`BEAT_EVERY`] that this daemon is alive.
async fn beat(client: async_nats::Client, names: Names, registry: PeerRegistry) {
    let mut tick = tokio::time::interval(BEAT_EVERY);
    loop {
        tick.tick().await;
        let beat = Beat {
            boot: names.boot.clone(),
            processed: registry.cluster_processed(),
        };
        let _ = client.publish(names.my_beat(), beat.encode().into()).await;
    }
}

/// The other daemons as their beats tell: boot, when last heard, how far read, gone.
#[derive(Default)]
struct Nodes(HashMap<String, NodeState>);

struct NodeState {
    boot: String,
    heard: Instant,
    processed: u64,
    gone: bool,
}

impl Nodes {
    /// Notes a beat; whether the daemon is new (or restarted, or back after silence).
    fn seen(&mut self, node: &str, boot: &str, processed: u64) -> bool {
        let now = Instant::now();
        match self.0.get_mut(node) {
            Some(state) if state.boot == boot && !state.gone => {
                state.heard = now;
                state.processed = processed;
                false
            }
            _ => {
                self.0.insert(
                    node.to_owned(),
                    NodeState {
                        boot: boot.to_owned(),
                        heard: now,
                        processed,
                        gone: false,
                    },
                );
                true
            }
        }
    }
}

/// Follows the other daemons' beats: a new one's members are asked for; a silent one's are
/// held.
async fn watch_beats(
    client: async_nats::Client,
    names: Names,
    registry: PeerRegistry,
    mut nodes: Nodes,
    connected: Arc<Mutex<Instant>>,
) {
    let mut beats = match client.subscribe(names.beats()).await {
        Ok(beats) => beats,
        Err(e) => {
            tracing::error!("cannot follow the cluster's beats: {e}");
            return;
        }
    };
    let mut check = tokio::time::interval(BEAT_EVERY);
    loop {
        tokio::select! {
            beat = beats.next() => {
                let Some(beat) = beat else { return };
                let node = origin_of(beat.subject.as_str()).to_owned();
                if node == names.node {
                    continue;
                }
                let beat = match Beat::decode(&beat.payload) {
                    Ok(beat) => beat,
                    Err(e) => {
                        tracing::warn!(node, "a beat: {e}; ignored");
                        continue;
                    }
                };
                if nodes.seen(&node, &beat.boot, beat.processed) {
                    let (client, names, registry) = (client.clone(), names.clone(), registry.clone());
                    tokio::spawn(async move {
                        match ask_rosters(&client, names.roster_of(&node), &names).await {
                            Ok(pages) => {
                                for page in pages.into_iter().filter(|p| p.node == node) {
                                    let roster = events::roster_from_wire(page.roster);
                                    registry.apply_roster(&page.node, roster);
                                }
                            }
                            Err(e) => tracing::warn!(node, "cannot ask for its members: {e}"),
                        }
                    });
                }
            }
            _ = check.tick() => {
                let since = *connected.lock().unwrap_or_else(|e| e.into_inner());
                let up = client.connection_state() == async_nats::connection::State::Connected;
                registry.cluster_connected(up);
                for (node, state) in nodes.0.iter_mut() {
                    let quiet = state.heard.max(since).elapsed();
                    if up && !state.gone && quiet > SILENT_AFTER {
                        tracing::warn!(node, "a daemon of the cluster fell silent: its members are held");
                        state.gone = true;
                        registry.node_gone(node, state.processed);
                    }
                }
            }
        }
    }
}

/// Asks on `subject` for rosters and gathers the answers until they stop coming.
async fn ask_rosters(
    client: &async_nats::Client,
    subject: String,
    names: &Names,
) -> Result<Vec<RosterPage>, String> {
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| format!("cannot ask for the other daemons' members: {e}"))?;
    client
        .publish_with_reply(subject, inbox, names.node.clone().into())
        .await
        .map_err(|e| format!("cannot ask for the other daemons' members: {e}"))?;
    let mut pages: Vec<RosterPage> = Vec::new();
    while let Ok(Some(answer)) = tokio::time::timeout(ROSTER_QUIET, answers.next()).await {
        if answer.status.is_some() {
            // "No responders": no other daemon yet.
            continue;
        }
        match RosterPage::decode(&answer.payload) {
            Ok(page) => match pages.iter_mut().find(|p| p.node == page.node) {
                Some(known) => known.roster.members.extend(page.roster.members),
                None => pages.push(page),
            },
            Err(e) => tracing::warn!("a roster: {e}; ignored"),
        }
    }
    Ok(pages)
}

/// Answers roster requests with this daemon's members, in pages.
async fn answer_rosters(client: async_nats::Client, names: Names, registry: PeerRegistry) {
    let subscribed = async {
        let all = client.subscribe(names.roster()).await?;
        let mine = client.subscribe(names.roster_of(&names.node)).await?;
        Ok::<_, async_nats::SubscribeError>(all.merge(mine))
    };
    let mut requests = match subscribed.await {
        Ok(requests) => requests,
        Err(e) => {
            tracing::error!("cannot answer the cluster's roster requests: {e}");
            return;
        }
    };
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        let roster = events::roster_to_wire(registry.roster());
        let processed = roster.processed;
        let mut chunks: Vec<Vec<_>> = roster
            .members
            .chunks(ROSTER_PAGE)
            .map(<[_]>::to_vec)
            .collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        for members in chunks {
            let page = RosterPage {
                node: names.node.clone(),
                boot: names.boot.clone(),
                roster: ferry_wire::cluster::Roster { members, processed },
            };
            let _ = client.publish(reply.clone(), page.encode().into()).await;
        }
    }
}

/// Replays from the stream the messages of members resuming here.
async fn replay(
    stream: stream::Stream,
    mut requests: mpsc::UnboundedReceiver<Replay>,
    registry: PeerRegistry,
) {
    while let Some(request) = requests.recv().await {
        let (events, lost) = match read_range(&stream, request.from, request.to).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(member = request.id, "cannot replay its messages: {e}");
                (Vec::new(), request.to + 1 - request.from)
            }
        };
        registry.replayed(&request.id, events, lost);
    }
}

/// The events at stream positions `from` to `to`, and how many of them the stream no longer
/// holds.
async fn read_range(
    stream: &stream::Stream,
    from: u64,
    to: u64,
) -> Result<(Vec<(u64, String, ClusterEvent)>, u64), String> {
    let first = stream
        .get_info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .first_sequence;
    let start = from.max(first);
    let mut lost = start - from;
    let mut events = Vec::new();
    if start > to {
        return Ok((events, to + 1 - from));
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut next = start;
    while next <= to {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .map_err(|_| "the stream did not answer in time".to_owned())?
            .ok_or("the stream ended")?
            .map_err(|e| e.to_string())?;
        let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
        if seq > to {
            break;
        }
        lost += seq.saturating_sub(next);
        next = seq + 1;
        let origin = origin_of(message.subject.as_str()).to_owned();
        if let Ok(event) = events::decode(&message.payload) {
            events.push((seq, origin, event));
        }
    }
    Ok((events, lost))
}
