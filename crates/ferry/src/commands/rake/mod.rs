//! `ferry rake`: runs a Rakefile (the CITS3002 distributed rake's format). Sets run in order; the actions of a set run
//! together. A local action runs on the local daemon (started if needed), in the Rakefile's
//! directory with the client's environment. A remote action is placed, when it starts, on the
//! HOSTS daemon of lowest cost ([`place`]), runs in a fresh sandbox there with its `requires`
//! files, and the files it made or changed come back ([`action`]). With a remote-execution
//! cluster (`--reapi`, or `HOSTS = reapi://...`), remote actions go there instead
//! ([`reapi`]). When an action fails, the others of its set finish and no later set starts.

mod action;
mod output;
mod place;
mod rake64;
mod reapi;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use ferry_client::Endpoint;
use ferry_rake::{parse, parse_for_cluster, Rakefile};

use crate::cli::RakeArgs;
use crate::endpoint::RemoteOptions;
use action::{Outcome, Work};
use place::Pool;

/// Runs the Rakefile `args` names; the exit status (0 when every action succeeded).
pub fn run(local: &Endpoint, remote: &RemoteOptions, args: RakeArgs) -> Result<i32> {
    let path = args.file.clone();
    let source = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the Rakefile {}", path.display()))?;
    let parsed = if args.reapi.is_some() {
        parse_for_cluster(&path.display().to_string(), &source)
    } else {
        parse(&path.display().to_string(), &source)
    };
    let rakefile = match parsed {
        Ok(rakefile) => rakefile,
        Err(e) => {
            eprintln!("ferry: {e}");
            return Ok(125);
        }
    };
    let rakefile = select_sets(rakefile, &args.sets)?;
    if args.dry_run {
        print!("{}", rakefile.plan());
        return Ok(0);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let dir = std::fs::canonicalize(&dir)
        .with_context(|| format!("cannot find the directory of {}", path.display()))?;
    // Returned files land in the directory, never over the Rakefile itself.
    let protected: Vec<PathBuf> = path.file_name().map(PathBuf::from).into_iter().collect();
    let landing = crate::landing::Landing::open(&dir, &protected)
        .with_context(|| format!("cannot open {}", dir.display()))?;
    let cluster = cluster_connection(&args, &rakefile)?;
    crate::client_runtime()?.block_on(async {
        let backend = match &cluster {
            Some(connection) if rakefile.sets.iter().any(|s| s.actions.iter().any(|a| a.remote)) => {
                Some(Arc::new(
                    reapi::Backend::connect(
                        connection,
                        &args.platform,
                        args.no_cache,
                        args.action_timeout.into(),
                    )
                    .await?,
                ))
            }
            _ => None,
        };
        let pool = Arc::new(Pool::new(
            &rakefile.hosts,
            remote,
            args.cost_timeout.into(),
            args.wire,
            args.reply_timeout.into(),
        )?);
        let work = Arc::new(Work {
            local: local.clone(),
            dir,
            landing,
            pool,
            local_slots: Arc::new(tokio::sync::Semaphore::new(action::LOCAL_AT_ONCE)),
            idle_local: std::sync::Mutex::default(),
            cluster: backend.clone(),
        });
        tokio::select! {
            outcome = run_sets(&rakefile, &work, args.joblog.as_deref(), args.json.as_deref()) => outcome,
            _ = tokio::signal::ctrl_c() => {
                // Leaving drops every connection: each running action's job gets SIGHUP on its
                // host, and its sandbox goes; a cluster's operations are cancelled.
                eprintln!("ferry: rake interrupted: stopping the running actions");
                if let Some(backend) = &backend {
                    let cancelled = backend.cancel_all().await;
                    eprintln!("ferry: rake: cancelled {cancelled} operation(s) on {}", backend.cluster.url);
                }
                Ok(130)
            }
        }
    })
}

/// The cluster remote actions go to, if any: `--reapi` (with its TLS files and token), else
/// the Rakefile's `HOSTS = reapi://...`.
fn cluster_connection(
    args: &RakeArgs,
    rakefile: &Rakefile,
) -> Result<Option<ferry_reapi::Connection>> {
    let mut connection = match (&args.reapi, &rakefile.cluster) {
        (Some(url), _) => ferry_reapi::Connection {
            url: url.clone(),
            instance: args.instance.clone().unwrap_or_default(),
            ..ferry_reapi::Connection::default()
        },
        (None, Some(url)) => reapi::connection_of_rakefile(url),
        (None, None) => return Ok(None),
    };
    connection.ca.clone_from(&args.reapi_ca);
    connection.identity = args.reapi_cert.clone().zip(args.reapi_key.clone());
    if let Some(path) = &args.reapi_token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        connection.token = Some(token.trim().to_owned());
    }
    Ok(Some(connection))
}

/// Keeps only the sets named (all without names); an unknown name is an error.
fn select_sets(mut rakefile: Rakefile, names: &[String]) -> Result<Rakefile> {
    if names.is_empty() {
        return Ok(rakefile);
    }
    for name in names {
        if !rakefile.sets.iter().any(|set| &set.name == name) {
            let known: Vec<&str> = rakefile.sets.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "no set '{name}' in the Rakefile (it has {})",
                known.join(", ")
            );
        }
    }
    rakefile.sets.retain(|set| names.contains(&set.name));
    Ok(rakefile)
}

/// Runs the sets in order; the exit status.
async fn run_sets(
    rakefile: &Rakefile,
    work: &Arc<Work>,
    joblog: Option<&Path>,
    json: Option<&Path>,
) -> Result<i32> {
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    let mut failed = false;
    for set in &rakefile.sets {
        let tagged = set.actions.len() > 1;
        let progress = output::Progress::new(&set.name, set.actions.len() as u64);
        let mut running = tokio::task::JoinSet::new();
        for (index, action) in set.actions.iter().enumerate() {
            let work = Arc::clone(work);
            let action = action.clone();
            let progress = progress.clone();
            running.spawn(async move {
                progress.started();
                let outcome = action::run(&work, &action, tagged).await;
                progress.ended();
                (index, outcome)
            });
        }
        let mut finished = Vec::new();
        while let Some(done) = running.join_next().await {
            let (index, outcome) = done.context("an action's task failed")?;
            if !outcome.succeeded() {
                output::note(&format!("ferry: rake: {}", outcome.failure()));
            }
            finished.push((index, outcome));
        }
        progress.finish();
        finished.sort_by_key(|(index, _)| *index);
        failed |= finished.iter().any(|(_, o)| !o.succeeded());
        outcomes.extend(finished.into_iter().map(|(_, o)| (set.name.clone(), o)));
        if failed {
            output::note(&format!(
                "ferry: rake: {} failed: no later set runs",
                set.name
            ));
            break;
        }
    }
    eprint!("{}", summary(&outcomes));
    if let Some(path) = joblog {
        std::fs::write(path, joblog_tsv(&outcomes))
            .with_context(|| format!("cannot write the joblog {}", path.display()))?;
    }
    if let Some(path) = json {
        let lines = json_lines(&outcomes);
        if path == Path::new("-") {
            print!("{lines}");
        } else {
            std::fs::write(path, lines)
                .with_context(|| format!("cannot write the summary {}", path.display()))?;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// The summary as JSON lines, one per action.
fn json_lines(outcomes: &[(String, Outcome)]) -> String {
    let mut out = String::new();
    for (set, o) in outcomes {
        let started_ms = o
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        let line = serde_json::json!({
            "set": set,
            "command": o.command,
            "host": o.host,
            "first_host": o.first_host,
            "reruns": o.reruns,
            "exit_code": o.code,
            "signal": o.signal,
            "error": o.error,
            "started_ms": started_ms,
            "seconds": o.elapsed.as_secs_f64(),
            "sent": o.sent,
            "received": o.received,
            "cached": o.cached,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// The summary table: each action with its host, exit and time.
fn summary(outcomes: &[(String, Outcome)]) -> String {
    let rows: Vec<[String; 5]> = outcomes
        .iter()
        .map(|(set, o)| {
            let host = if o.cached {
                format!("{} (cached)", o.host)
            } else if o.reruns > 0 {
                format!(
                    "{} (rerun: {})",
                    o.host,
                    o.first_host.as_deref().unwrap_or("?")
                )
            } else {
                o.host.clone()
            };
            [
                set.clone(),
                o.exit_text(),
                format!("{:.2}s", o.elapsed.as_secs_f64()),
                host,
                o.command.clone(),
            ]
        })
        .collect();
    crate::table::render(&["SET", "EXIT", "TIME", "HOST", "ACTION"], &rows)
}

/// The joblog: GNU parallel's columns, tab-separated, one line per action.
fn joblog_tsv(outcomes: &[(String, Outcome)]) -> String {
    let mut out =
        String::from("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n");
    for (seq, (_, o)) in outcomes.iter().enumerate() {
        let start = o
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        out.push_str(&format!(
            "{}\t{}{}\t{start:.3}\t{:.3}\t{}\t{}\t{}\t{}\t{}\n",
            seq + 1,
            o.host,
            if o.cached { " (cached)" } else { "" },
            o.elapsed.as_secs_f64(),
            o.sent,
            o.received,
            o.code.unwrap_or(-1),
            o.signal.unwrap_or(0),
            o.command
        ));
    }
    out
}
