//! `GET /metrics`: the daemon's counters in Prometheus' text exposition format, encoded by
//! the Prometheus project's `prometheus-client` from what the engine, the listeners and the
//! hub count, read at the scrape.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_engine::stats::{HistogramSnapshot, StatsSnapshot};
use ferry_engine::JobPhase;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, NoLabelSet};
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
    F: FnOnce(&mut prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error>,
{
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    values(&mut metric)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, MetricType::Counter, |m| {
        m.encode_counter::<NoLabelSet, _, u64>(&value, None)
    })
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, MetricType::Gauge, |m| {
        m.encode_gauge(&value)
    })
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

/// A labelled family of counters or gauges.
fn labelled(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    values: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, kind, |m| {
        for (labels, value) in values {
            let mut one = m.encode_family(labels)?;
            match kind {
                MetricType::Counter => one.encode_counter::<NoLabelSet, _, u64>(
                    &u64::try_from(*value).unwrap_or(0),
                    None,
                )?,
                _ => one.encode_gauge(value)?,
            }
        }
        Ok(())
    })
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
        counter(e, "ferry_jobs_submitted", "Jobs submitted.", jobs.submitted)?;
        counter(e, "ferry_jobs_started", "Jobs started.", jobs.started)?;
        let ended: Vec<(Labels, i64)> = jobs
            .ended
            .iter()
            .map(|(outcome, n)| (vec![("outcome", outcome.name().to_owned())], *n as i64))
            .collect();
        labelled(
            e,
            "ferry_jobs_ended",
            "Jobs ended, by outcome.",
            MetricType::Counter,
            &ended,
        )?;
        labelled(
            e,
            "ferry_jobs_running",
            "Jobs running now, by group.",
            MetricType::Gauge,
            &by_group(&self.running),
        )?;
        labelled(
            e,
            "ferry_jobs_queued",
            "Jobs waiting for a slot now, by group.",
            MetricType::Gauge,
            &by_group(&self.queued),
        )?;
        histogram(
            e,
            "ferry_job_run_time_seconds",
            "Run time of the jobs that ran and ended.",
            &jobs.run_time,
        )?;
        let output = [
            (vec![("stream", "stdout".to_owned())], self.output.0 as i64),
            (vec![("stream", "stderr".to_owned())], self.output.1 as i64),
        ];
        labelled(
            e,
            "ferry_output_bytes",
            "Bytes jobs wrote, by stream.",
            MetricType::Counter,
            &output,
        )?;
        let pick = |f: fn(&(Labels, u64, u64, i64)) -> i64| -> Vec<(Labels, i64)> {
            self.listeners.iter().map(|l| (l.0.clone(), f(l))).collect()
        };
        labelled(
            e,
            "ferry_connections_accepted",
            "Connections admitted, by dialect and listener.",
            MetricType::Counter,
            &pick(|l| l.1 as i64),
        )?;
        labelled(
            e,
            "ferry_connections_refused",
            "Connections refused at admission, by dialect and listener.",
            MetricType::Counter,
            &pick(|l| l.2 as i64),
        )?;
        labelled(
            e,
            "ferry_connections_open",
            "Connections open now, by dialect and listener.",
            MetricType::Gauge,
            &pick(|l| l.3),
        )?;
        let hub = &self.hub;
        gauge(
            e,
            "ferry_hub_members",
            "Members of the hub now.",
            self.members as i64,
        )?;
        counter(
            e,
            "ferry_hub_messages",
            "Messages sent in the hub.",
            hub.messages,
        )?;
        counter(
            e,
            "ferry_hub_deliveries",
            "Messages delivered to members.",
            hub.deliveries,
        )?;
        counter(
            e,
            "ferry_hub_dropped",
            "Messages dropped for members that did not keep up.",
            hub.dropped,
        )?;
        counter(
            e,
            "ferry_hub_refused",
            "Messages a member's dialect could not carry.",
            hub.refused,
        )?;
        histogram(
            e,
            "ferry_store_commit_seconds",
            "Time the job history took to commit a batch.",
            &jobs.commit_time,
        )?;
        gauge(
            e,
            "ferry_file_area_bytes",
            "Bytes the daemon's file area holds, as its quotas count them (measured every 10 s at most).",
            self.file_area_bytes as i64,
        )
    }
}
