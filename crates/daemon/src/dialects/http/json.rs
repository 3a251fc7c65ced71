//! The JSON shapes of the HTTP API (docs/http.md lists them): jobs, their ends, peers, hub
//! members and messages, and the `ps` state filters.

use std::time::Duration;

use ferry_engine::peers::{HubMessage, MemberInfo, PeerInfo, Presence};
use ferry_engine::store::millis;
use ferry_engine::{ExitReport, JobPhase, JobSnapshot};
use serde_json::{json, Value};

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A job's state as `ferry ps` names it.
pub(crate) fn state_name(job: &JobSnapshot) -> &'static str {
    match &job.phase {
        JobPhase::Queued => "queued",
        JobPhase::Running { .. } if job.paused => "paused",
        JobPhase::Running { .. } => "running",
        JobPhase::Finished(report) if report.lost => "lost",
        JobPhase::Finished(report) if report.dependency_failed.is_some() => "dependency_failed",
        JobPhase::Finished(report) if report.error.is_some() => "not_started",
        JobPhase::Finished(report) if report.timed_out => "timed_out",
        JobPhase::Finished(report) if report.signal.is_some() => "killed",
        JobPhase::Finished(report) if report.code == Some(0) => "succeeded",
        JobPhase::Finished(_) => "failed",
    }
}

/// An ended job's report.
pub(crate) fn exit(report: &ExitReport) -> Value {
    json!({
        "exit_code": report.code,
        "signal": report.signal,
        "run_time_us": micros(report.wall),
        "timed_out": report.timed_out,
        "killed": report.killed,
        "error": report.error,
        "dependency_failed": report.dependency_failed,
        "lost": report.lost,
        "status": report.shell_status(),
    })
}

/// A job, as listed.
pub(crate) fn job(job: &JobSnapshot) -> Value {
    let report = match &job.phase {
        JobPhase::Finished(report) => Some(exit(report)),
        _ => None,
    };
    json!({
        "id": job.id,
        "state": state_name(job),
        "command": job.argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
        "principal": job.principal.to_string(),
        "group": job.group,
        "label": job.label,
        "after": job.after,
        "pid": job.pid,
        "submitted_ms": millis(job.submitted),
        "started_ms": job.started.map(millis),
        "ended_ms": job.finished.map(millis),
        "run_time_us": micros(job.run_time),
        "paused_us": micros(job.paused_time),
        "unstored_bytes": job.unstored_bytes,
        "no_log": job.on_client_fds,
        "exit": report,
    })
}

/// The `ps` state filters (`state=running,failed`): which names a job matches.
pub(crate) fn matches_state(job: &JobSnapshot, filter: &str) -> bool {
    let failed = match &job.phase {
        JobPhase::Finished(report) => report.shell_status() != 0 || report.error.is_some(),
        _ => false,
    };
    match filter {
        "queued" => matches!(job.phase, JobPhase::Queued),
        "running" => matches!(job.phase, JobPhase::Running { .. }) && !job.paused,
        "paused" => matches!(job.phase, JobPhase::Running { .. }) && job.paused,
        "exited" => matches!(&job.phase, JobPhase::Finished(r) if r.code.is_some()),
        "failed" => failed && !matches!(&job.phase, JobPhase::Finished(r) if r.lost),
        "lost" => matches!(&job.phase, JobPhase::Finished(r) if r.lost),
        _ => false,
    }
}

/// The state filters `ps` knows.
pub(crate) const STATES: [&str; 6] = ["queued", "running", "paused", "exited", "failed", "lost"];

/// A peer, as listed.
pub(crate) fn peer(peer: &PeerInfo) -> Value {
    json!({
        "id": peer.id,
        "name": peer.name,
        "address": peer.address,
        "dialect": peer.dialect,
        "principal": peer.principal.as_ref().map(|p| p.to_string()),
        "connected_ms": millis(peer.connected),
        "jobs_started": peer.jobs_started,
        "jobs": peer.jobs,
        "member": peer.member,
        "away": peer.away,
        "dropped_events": peer.dropped_events,
    })
}

/// A hub member.
pub(crate) fn member(member: &MemberInfo) -> Value {
    json!({
        "id": member.id,
        "name": member.name,
        "dialect": member.dialect,
        "since_ms": millis(member.since),
        "away": member.away,
    })
}

/// A hub message.
pub(crate) fn message(message: &HubMessage) -> Value {
    json!({
        "from": message.from,
        "name": message.from_name,
        "to": message.to,
        "sent_ms": millis(message.sent),
        "text": message.text,
    })
}

/// A member coming or going.
pub(crate) fn presence(presence: &Presence) -> Value {
    json!({
        "peer": presence.peer,
        "name": presence.name,
        "dialect": presence.dialect,
        "joined": presence.joined,
        "reason": presence.reason,
    })
}
