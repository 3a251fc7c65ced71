//! `GET /metrics`: the daemon's counters in Prometheus' text exposition format, encoded by
//! the Prometheus project's `prometheus-client` from what the engine, the listeners and the
//! hub count, read at the scrape.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_engine::peers::cluster::ClusterStatus;
use ferry_engine::stats::{HistogramSnapshot, StatsSnapshot};
use ferry_engine::JobPhase;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{Reply, Session};

/// How long a measure of the file area is used before it is taken again (it walks the area).
const FILE_AREA_REFRESH: Duration = Duration::from_secs(10);

/// Labels: pairs of names and values.
type Labels = Vec<(&'static str, String)>;

/// Everything one scrape reports.
#[derive(Debug)]
struct Scraped {
    jobs: StatsSnapshot,
    /// Running and queued jobs by group.
    running: BTreeMap<String, u64>,
    queued: BTreeMap<String, u64>,
    output: (u64, u64),
    /// Per listener: dialect, listener, accepted, refused, open.
    listeners: Vec<(Labels, u64, u64, i64)>,
    hub: ferry_engine::peers::HubStats,
    members: u64,
    /// The hub's cluster, if the daemon is in one.
    cluster: Option<ClusterStatus>,
    file_area_bytes: u64,
}

/// The file area's size, measured now and then (a walk of it), shared by every scrape.
#[derive(Default)]
pub(crate) struct FileAreaSize(Mutex<Option<(Instant, u64)>>);

/// The scrape.
pub(super) async fn scrape(session: &Session) -> Reply {
    // Counts only (no command, output or name of a job): any authenticated principal may
    // read them, so that a monitoring system scrapes with a token of its own.
    let daemon = &session.conn.daemon;
    let sizes = daemon.state::<FileAreaSize>();
    let cached = *sizes.0.lock().unwrap_or_else(|e| e.into_inner());
    let file_area_bytes = match cached {
        Some((at, bytes)) if at.elapsed() < FILE_AREA_REFRESH => bytes,
        _ => {
            let area = std::sync::Arc::clone(&daemon.files);
            let bytes = tokio::task::spawn_blocking(move || area.usage())
                .await
                .unwrap_or(0);
            *sizes.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), bytes));
            bytes
        }
    };
    let engine = &daemon.engine;
    let (mut running, mut queued) = (BTreeMap::new(), BTreeMap::new());
    for job in engine.list() {
        match job.phase {
            JobPhase::Running { .. } => *running.entry(job.group).or_default() += 1,
            JobPhase::Queued => *queued.entry(job.group).or_default() += 1,
            JobPhase::Finished(_) => {}
        }
    }
    let listeners = daemon
        .listener_stats()
        .iter()
        .map(|stats| {
            (
                vec![
                    ("dialect", stats.dialect.to_owned()),
                    ("listener", stats.listener.clone()),
                ],
                stats.accepted.load(Ordering::Relaxed),
                stats.refused.load(Ordering::Relaxed),
                stats.open.load(Ordering::Relaxed),
            )
        })
        .collect();
    let scraped = Scraped {
        jobs: engine.stats().snapshot(),
        running,
        queued,
        output: engine.output_bytes(),
        listeners,
        hub: engine.peers().stats(),
        members: engine.peers().members().len() as u64,
        cluster: engine.peers().cluster_status(),
        file_area_bytes,
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scraped));
    let mut text = String::new();
    if let Err(e) = prometheus_text::encode(&mut text, &registry) {
        return Reply::Error(500, format!("cannot encode the metrics: {e}"));
    }
    Reply::Whole(super::response(
        200,
        &[("Content-Type", prometheus_text::CONTENT_TYPE)],
        text.as_bytes(),
    ))
}

/// Encodes one family: its descriptor, then each labelled value.
fn family<F>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    values: F,
) -> Result<(), std::fmt::Error>
where
    F: FnOnce(&mut MetricEncoder) -> Result<(), std::fmt::Error>,
{
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    values(&mut metric)
}

/// A value as Prometheus takes it: a count (`u64`, a counter) or a level (`i64`, a gauge).
trait Sample: Copy {
    /// Its metric type.
    const KIND: MetricType;
    /// Writes it.
    fn encode(self, m: &mut MetricEncoder) -> Result<(), std::fmt::Error>;
}

impl Sample for u64 {
    const KIND: MetricType = MetricType::Counter;
    fn encode(self, m: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
        m.encode_counter::<NoLabelSet, _, u64>(&self, None)
    }
}

impl Sample for i64 {
    const KIND: MetricType = MetricType::Gauge;
    fn encode(self, m: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
        m.encode_gauge(&self)
    }
}

/// A family of one value.
fn single<T: Sample>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: T,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, T::KIND, |m| value.encode(m))
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    read: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, MetricType::Histogram, |m| {
        // The encoder adds the +Inf bucket itself (from the count).
        let bounded = &read.buckets[..read.buckets.len().saturating_sub(1)];
        m.encode_histogram::<NoLabelSet>(read.sum, read.count, bounded, None)
    })
}

/// A family of labelled values.
fn labelled<T: Sample>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, T)],
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, T::KIND, |m| {
        values
            .iter()
            .try_for_each(|(labels, value)| value.encode(&mut m.encode_family(labels)?))
    })
}

/// The hub cluster's families (only for a daemon in a cluster).
fn encode_cluster(
    e: &mut DescriptorEncoder,
    cluster: &ClusterStatus,
) -> Result<(), std::fmt::Error> {
    single(
        e,
        "ferry_hub_cluster_connected",
        "1 while the daemon's link to the hub cluster's NATS is up.",
        i64::from(cluster.connected),
    )?;
    single(
        e,
        "ferry_hub_cluster_stream_position",
        "The last position of the hub cluster's stream the daemon applied.",
        i64::try_from(cluster.position).unwrap_or(i64::MAX),
    )?;
    let gone = cluster.daemons.iter().filter(|d| d.gone).count() as i64;
    let daemons = [
        (
            vec![("state", "live".to_owned())],
            cluster.daemons.len() as i64 - gone,
        ),
        (vec![("state", "gone".to_owned())], gone),
    ];
    labelled(
        e,
        "ferry_hub_cluster_daemons",
        "The other daemons of the hub cluster: live, or gone (stopped or silent, their members held).",
        &daemons,
    )?;
    let members: u64 = cluster.daemons.iter().map(|d| d.members).sum();
    single(
        e,
        "ferry_hub_cluster_remote_members",
        "Members of the hub on the other daemons of the cluster.",
        members as i64,
    )?;
    let counters = &cluster.counters;
    for (name, help, value) in [
        (
            "ferry_hub_cluster_published",
            "Hub events the daemon published to the cluster.",
            counters.published,
        ),
        (
            "ferry_hub_cluster_unpublished",
            "Hub events not published: the link to the cluster was behind.",
            counters.unpublished,
        ),
        (
            "ferry_hub_cluster_undecodable",
            "Positions of the cluster's stream that held no hub event.",
            counters.undecodable,
        ),
        (
            "ferry_hub_cluster_ignored",
            "Cluster events ignored: a daemon spoke for, or claimed, a member not its own.",
            counters.ignored,
        ),
        (
            "ferry_hub_cluster_missed",
            "Cluster events missed: holes in the stream, replays it no longer held.",
            counters.missed,
        ),
    ] {
        single(e, name, help, value)?;
    }
    Ok(())
}

fn by_group(values: &BTreeMap<String, u64>) -> Vec<(Labels, i64)> {
    values
        .iter()
        .map(|(group, n)| (vec![("group", group.clone())], *n as i64))
        .collect()
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        let jobs = &self.jobs;
        single(e, "ferry_jobs_submitted", "Jobs submitted.", jobs.submitted)?;
        single(e, "ferry_jobs_started", "Jobs started.", jobs.started)?;
        let ended: Vec<(Labels, u64)> = jobs
            .ended
            .iter()
            .map(|(outcome, n)| (vec![("outcome", outcome.name().to_owned())], *n))
            .collect();
        labelled(e, "ferry_jobs_ended", "Jobs ended, by outcome.", &ended)?;
        labelled(
            e,
            "ferry_jobs_running",
            "Jobs running now, by group.",
            &by_group(&self.running),
        )?;
        labelled(
            e,
            "ferry_jobs_queued",
            "Jobs waiting for a slot now, by group.",
            &by_group(&self.queued),
        )?;
        histogram(
            e,
            "ferry_job_run_time_seconds",
            "Run time of the jobs that ran and ended.",
            &jobs.run_time,
        )?;
        let output = [
            (vec![("stream", "stdout".to_owned())], self.output.0),
            (vec![("stream", "stderr".to_owned())], self.output.1),
        ];
        labelled(
            e,
            "ferry_output_bytes",
            "Bytes jobs wrote, by stream.",
            &output,
        )?;
        let pick = |f: fn(&(Labels, u64, u64, i64)) -> u64| -> Vec<(Labels, u64)> {
            self.listeners.iter().map(|l| (l.0.clone(), f(l))).collect()
        };
        let open: Vec<(Labels, i64)> = self.listeners.iter().map(|l| (l.0.clone(), l.3)).collect();
        labelled(
            e,
            "ferry_connections_accepted",
            "Connections admitted, by dialect and listener.",
            &pick(|l| l.1),
        )?;
        labelled(
            e,
            "ferry_connections_refused",
            "Connections refused at admission, by dialect and listener.",
            &pick(|l| l.2),
        )?;
        labelled(
            e,
            "ferry_connections_open",
            "Connections open now, by dialect and listener.",
            &open,
        )?;
        let hub = &self.hub;
        single(
            e,
            "ferry_hub_members",
            "Members of the hub now.",
            self.members as i64,
        )?;
        single(
            e,
            "ferry_hub_messages",
            "Messages sent in the hub.",
            hub.messages,
        )?;
        single(
            e,
            "ferry_hub_deliveries",
            "Messages delivered to members.",
            hub.deliveries,
        )?;
        single(
            e,
            "ferry_hub_dropped",
            "Messages dropped for members that did not keep up.",
            hub.dropped,
        )?;
        single(
            e,
            "ferry_hub_refused",
            "Messages a member's dialect could not carry.",
            hub.refused,
        )?;
        if let Some(cluster) = &self.cluster {
            encode_cluster(e, cluster)?;
        }
        histogram(
            e,
            "ferry_store_commit_seconds",
            "Time the job history took to commit a batch.",
            &jobs.commit_time,
        )?;
        single(
            e,
            "ferry_file_area_bytes",
            "Bytes the daemon's file area holds, as its quotas count them (measured every 10 s at most).",
            self.file_area_bytes as i64,
        )
    }
}
