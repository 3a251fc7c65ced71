//! The load and fault suite: the real daemon binary under many clients and under faults, one
//! case after another, each printing a row (what was done, a figure, bytes or jobs lost, the
//! daemon's RSS and open fds before and after) of one table at the end. A case fails when
//! something is lost, the daemon stops serving, or its memory or fds do not come back.
//!
//!   cargo test -p ferry --test load                      # the short version (also in .ci/run)
//!   FERRY_LOAD=full cargo test -p ferry --release --test load   # the full one
//!
//! Not a benchmark: figures are printed, never compared with a time.

#[path = "load/clients.rs"]
mod clients;
#[path = "load/faults.rs"]
mod faults;
#[path = "load/fuzzing.rs"]
mod fuzzing;
#[path = "integration/helper.rs"]
mod helper;
#[path = "load/idle.rs"]
mod idle;
#[path = "load/soak.rs"]
mod soak;

use std::process::Stdio;
use std::time::Duration;

use helper::{poll_until, Daemon};

/// How big the cases are.
struct Scale {
    full: bool,
    clients: usize,
    lines: usize,
}

/// A case of the suite.
type Case = fn(&Scale) -> Row;

/// One row of the table.
struct Row {
    case: String,
    figure: String,
    lost: u64,
    rss: (u64, u64),
    fds: (usize, usize),
    failure: Option<String>,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The daemon's RSS and fds, once it has settled (memory is given back after a pause).
fn settled(daemon: &Daemon) -> (u64, usize) {
    std::thread::sleep(Duration::from_millis(1500));
    (rss_kib(daemon.pid()), fd_count(daemon.pid()))
}

/// Runs `case` around its daemon: measures before and after, checks that the daemon still
/// serves and that its fds came back (to at most 4 more) and its RSS stayed within `rss_slack`.
fn measured(
    case: &'static str,
    daemon: &Daemon,
    rss_slack_kib: u64,
    body: impl FnOnce() -> Result<(String, u64), String>,
) -> Row {
    let (rss_before, fds_before) = settled(daemon);
    let outcome = body();
    // Memory goes back once output has paused (the engine trims after a quiet second):
    // wait for it, up to 15 s, then take what is there.
    let pid = daemon.pid();
    poll_until(Duration::from_secs(15), || {
        (rss_kib(pid) <= rss_before + rss_slack_kib && fd_count(pid) <= fds_before + 4)
            .then_some(())
    });
    let (rss_after, fds_after) = settled(daemon);
    let mut failure = match &outcome {
        Ok((_, 0)) => None,
        Ok((_, lost)) => Some(format!("{lost} lost")),
        Err(e) => Some(e.clone()),
    };
    let out = job(daemon, &["true"]);
    if failure.is_none() && !out.status.success() {
        failure = Some(format!("the daemon stopped serving: {out:?}"));
    }
    if failure.is_none() && fds_after > fds_before + 4 {
        failure = Some(format!("fds grew from {fds_before} to {fds_after}"));
    }
    if failure.is_none() && rss_after > rss_before + rss_slack_kib {
        failure = Some(format!("RSS grew from {rss_before} to {rss_after} KiB"));
    }
    let (figure, lost) = outcome.unwrap_or_else(|e| (format!("error: {e}"), 0));
    Row {
        case: case.to_owned(),
        figure,
        lost,
        rss: (rss_before, rss_after),
        fds: (fds_before, fds_after),
        failure,
    }
}

/// `ferry run -- ARGS` against `daemon`.
fn job(daemon: &Daemon, args: &[&str]) -> std::process::Output {
    daemon
        .ferry()
        .arg("run")
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ferry run")
}

/// A native client joined to the hub as `name`.
pub async fn native_member(
    endpoint: &ferry_client::Endpoint,
    name: &str,
) -> Result<ferry_client::Client, String> {
    let mut client = ferry_client::Client::connect(endpoint, "load")
        .await
        .map_err(|e| e.to_string())?;
    client
        .join(Some(name), None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(client)
}

/// The next message a native member gets: (sender's name, text); `None` after `within` or at
/// the connection's end.
pub async fn next_message(
    client: &mut ferry_client::Client,
    within: Duration,
) -> Option<(String, String)> {
    tokio::time::timeout(within, async {
        loop {
            match client.next_event().await {
                Ok(Some(ferry_client::Event::Message { name, text, .. })) => {
                    return Some((name, text))
                }
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

fn main() {
    let full = std::env::var("FERRY_LOAD").is_ok_and(|v| v == "full");
    let scale = Scale {
        full,
        clients: if full { 1000 } else { 100 },
        lines: if full { 2000 } else { 200 },
    };
    // FERRY_LOAD_ONLY=WORD runs the cases whose function names hold WORD (while working on one).
    let only = std::env::var("FERRY_LOAD_ONLY").unwrap_or_default();
    let cases: &[(&str, Case)] = &[
        ("concurrent_clients", clients::concurrent_clients),
        (
            "clients_killed_mid_stream",
            faults::clients_killed_mid_stream,
        ),
        (
            "a_reader_that_never_reads",
            faults::a_reader_that_never_reads,
        ),
        ("children_that_misbehave", faults::children_that_misbehave),
        ("daemon_killed_under_load", faults::daemon_killed_under_load),
        ("slowloris", faults::slowloris),
        ("killed_mid_upload", faults::killed_mid_upload),
        ("killed_in_tls_handshakes", faults::killed_in_tls_handshakes),
        (
            "fanos_clients_killed_with_fds",
            faults::fanos_clients_killed_with_fds,
        ),
        ("idle_peers", idle::idle_peers),
        ("soak", soak::soak),
        ("a_full_disk", faults::a_full_disk),
        ("fd_exhaustion", faults::fd_exhaustion),
    ];
    let mut rows = Vec::new();
    if "fuzzing".contains(only.as_str()) {
        rows.extend(fuzzing::fuzzing(&scale));
    }
    for (name, case) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let row = case(&scale);
        eprintln!("{}: {}", row.case, row.failure.as_deref().unwrap_or("ok"));
        rows.push(row);
    }
    println!(
        "\nLoad and faults ({} version)\n\n| case | figure | lost | daemon RSS KiB before -> after | open fds before -> after | result |\n|---|---|---|---|---|---|",
        if full { "full" } else { "short" }
    );
    for row in &rows {
        // Rows without a daemon (the fuzz targets) show none.
        let (rss, fds) = if row.rss == (0, 0) {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!("{} -> {}", row.rss.0, row.rss.1),
                format!("{} -> {}", row.fds.0, row.fds.1),
            )
        };
        println!(
            "| {} | {} | {} | {rss} | {fds} | {} |",
            row.case,
            row.figure,
            row.lost,
            row.failure.as_deref().unwrap_or("ok")
        );
    }
    let failed = rows.iter().filter(|r| r.failure.is_some()).count();
    if failed > 0 {
        eprintln!("{failed} case(s) failed");
        std::process::exit(1);
    }
}
