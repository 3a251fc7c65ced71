//! Managing jobs beyond running them: `ferry show`, `ferry restart`, `ferry pause` /
//! `ferry resume`, and `ferry group` (add, list, set, rm).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use ferry_client::{Endpoint, GroupAction, JobDetails, JobInfo, Target};
use serde::Serialize;

use super::ps::{state_name, timestamp};
use crate::follow::{exit_status, print_job_output, Followed};

/// `ferry show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// One JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,

    /// The environment's values too (by default only its variables' names).
    #[arg(long)]
    pub env: bool,

    /// The job id.
    pub job: u64,
}

/// `ferry restart`.
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Follow the new job's output to its end and exit with its status, as `ferry run` does.
    #[arg(short, long)]
    pub attach: bool,

    /// The ended job's id.
    pub job: u64,
}

/// `ferry pause` and `ferry resume`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// A whole group instead of one job (the daemon's owner only).
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "job",
        required_unless_present = "job"
    )]
    pub group: Option<String>,

    /// The job id.
    pub job: Option<u64>,
}

/// `ferry group`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(subcommand)]
    pub command: GroupCommand,
}

/// `ferry group` subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Make a group whose jobs run at most N at once (`ferry run --group NAME` puts a job in
    /// it). Groups are kept across daemon restarts.
    Add {
        /// Its name: letters, digits, '-', '_', '.'.
        name: String,
        /// Jobs of the group that may run at once.
        #[arg(long, value_name = "N", default_value_t = 1)]
        parallel: u64,
    },
    /// List the groups: name, limit, running and queued jobs, paused or not.
    #[command(alias = "ls")]
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a group's limit (more of its queued jobs start at once if it grew).
    Set {
        /// The group.
        name: String,
        /// Jobs of the group that may run at once.
        #[arg(long, value_name = "N")]
        parallel: u64,
    },
    /// Remove a group (refused while it has running or queued jobs, and for `default`).
    #[command(alias = "remove")]
    Rm {
        /// The group.
        name: String,
    },
}

/// `ferry show`: prints what is known of a job.
pub fn show(target: &Endpoint, args: ShowArgs) -> Result<i32> {
    let (info, details) = crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        anyhow::Ok(client.show(args.job, args.env).await?)
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&JsonDetails::new(&info, &details))?
        );
    } else {
        print!("{}", for_people(&info, &details));
    }
    Ok(0)
}

/// `ferry restart`: runs the job again; prints the new id, or follows it.
pub fn restart(target: &Endpoint, args: RestartArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let started = client.restart(args.job, args.attach).await?;
        if !args.attach {
            println!("{}", started.job);
            return Ok(0);
        }
        eprintln!("ferry: job {} runs job {} again", started.job, args.job);
        match print_job_output(&mut client, started.job, None).await? {
            Followed::Exit(exit) => Ok(exit_status(started.job, &exit)),
            Followed::LogEnd => Ok(0),
        }
    })
}

/// `ferry pause` (`pause`) or `ferry resume`.
pub fn pause(target: &Endpoint, args: PauseArgs, pause: bool) -> Result<i32> {
    let target_of = match (args.job, args.group) {
        (Some(job), None) => Target::Job(job),
        (None, Some(group)) => Target::Group(group),
        _ => bail!("name a job or a group (--group NAME)"),
    };
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        if pause {
            client.pause(target_of).await?;
        } else {
            client.resume(target_of).await?;
        }
        anyhow::Ok(0)
    })
}

/// `ferry group ...`.
pub fn group(target: &Endpoint, args: GroupArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        match args.command {
            GroupCommand::Add { name, parallel } => {
                client.group(&name, GroupAction::Add { parallel }).await?
            }
            GroupCommand::Set { name, parallel } => {
                client.group(&name, GroupAction::Set { parallel }).await?
            }
            GroupCommand::Rm { name } => client.group(&name, GroupAction::Remove).await?,
            GroupCommand::List { json } => {
                let groups = client.groups().await?;
                let mut out = String::new();
                if json {
                    for group in &groups {
                        let line = serde_json::json!({
                            "name": group.name,
                            "parallel": group.parallel,
                            "running": group.running,
                            "queued": group.queued,
                            "paused": group.paused,
                        });
                        out.push_str(&format!("{line}\n"));
                    }
                } else {
                    let rows: Vec<[String; 5]> = groups
                        .iter()
                        .map(|g| {
                            [
                                g.name.clone(),
                                g.parallel.to_string(),
                                g.running.to_string(),
                                g.queued.to_string(),
                                if g.paused { "paused" } else { "-" }.to_owned(),
                            ]
                        })
                        .collect();
                    let header = ["GROUP", "PARALLEL", "RUNNING", "QUEUED", "PAUSED"];
                    out.push_str(&crate::table::render(&header, &rows));
                }
                print!("{out}");
            }
        }
        anyhow::Ok(0)
    })
}

/// Bytes as text for people (bytes that are not UTF-8 replaced).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A duration in microseconds, for people.
fn seconds(us: u64) -> String {
    format!("{:.3}s", us as f64 / 1e6)
}

/// `ferry show` for people: one `name: value` line each.
fn for_people(info: &JobInfo, details: &JobDetails) -> String {
    let mut lines: Vec<(&str, String)> = Vec::new();
    let words: Vec<String> = info.argv.iter().map(|a| text(a)).collect();
    lines.push(("job", info.id.to_string()));
    lines.push(("state", state_name(info).to_owned()));
    lines.push(("command", format!("{words:?}")));
    if let Some(command) = &details.command {
        let ran: Vec<String> = command.iter().map(|a| text(a)).collect();
        lines.push(("runs as", format!("{ran:?}")));
    }
    if let Some(session) = &details.session {
        lines.push(("session", session.clone()));
    }
    let cwd = details.cwd.as_ref().map_or("-".into(), |c| text(c));
    lines.push(("directory", cwd));
    lines.push(("principal", info.principal.clone()));
    lines.push((
        "submitted by",
        format!("{} ({})", details.connection, details.dialect),
    ));
    lines.push(("group", info.group.clone()));
    lines.push(("label", info.label.clone().unwrap_or_else(|| "-".into())));
    if !info.after.is_empty() {
        let after: Vec<String> = info.after.iter().map(u64::to_string).collect();
        let how = if details.after_any {
            "whatever their outcome"
        } else {
            "once they succeed"
        };
        lines.push(("after", format!("{} ({how})", after.join(", "))));
    }
    lines.push(("submitted", timestamp(info.submitted_ms)));
    let at = |ms: Option<u64>| ms.map_or("-".into(), timestamp);
    lines.push(("started", at(info.started_ms)));
    lines.push(("ended", at(info.ended_ms)));
    lines.push(("run time", seconds(info.run_us)));
    if info.paused_us > 0 {
        lines.push(("paused for", seconds(info.paused_us)));
    }
    if let Some(timeout) = details.timeout_ms {
        lines.push(("time limit", seconds(timeout.saturating_mul(1000))));
    }
    if let Some(exit) = &info.exit {
        let status = match (exit.code, exit.signal) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "never ran".into(),
        };
        lines.push(("status", status));
        if let Some(error) = &exit.error {
            lines.push(("error", error.clone()));
        }
    }
    let output = if info.no_log {
        "went to its client's terminal: not kept".to_owned()
    } else {
        format!(
            "{} bytes on stdout, {} on stderr; log {} bytes",
            details.stdout_bytes, details.stderr_bytes, details.log_bytes
        )
    };
    lines.push(("output", output));
    let env = match &details.env {
        None => "the daemon's own".to_owned(),
        Some(env) => {
            let mut shown: Vec<String> = env
                .iter()
                .map(|(name, value)| match value {
                    Some(value) => format!("\n  {}={}", text(name), text(value)),
                    None => format!("\n  {}", text(name)),
                })
                .collect();
            shown.sort();
            format!("{} variables{}", env.len(), shown.concat())
        }
    };
    lines.push(("environment", env));
    lines
        .iter()
        .map(|(name, value)| format!("{name}: {value}\n"))
        .collect()
}

/// `ferry show --json`.
#[derive(Serialize)]
struct JsonDetails {
    id: u64,
    state: &'static str,
    command: Vec<String>,
    runs_as: Option<Vec<String>>,
    session: Option<String>,
    cwd: Option<String>,
    env: Option<serde_json::Map<String, serde_json::Value>>,
    principal: String,
    connection: String,
    dialect: String,
    group: String,
    label: Option<String>,
    after: Vec<u64>,
    after_any: bool,
    submitted: String,
    started: Option<String>,
    ended: Option<String>,
    run_time_us: u64,
    paused_us: u64,
    timeout_ms: Option<u64>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    error: Option<String>,
    stdout_bytes: u64,
    stderr_bytes: u64,
    log_bytes: u64,
    no_log: bool,
}

impl JsonDetails {
    fn new(info: &JobInfo, details: &JobDetails) -> JsonDetails {
        let words = |argv: &[serde_bytes::ByteBuf]| argv.iter().map(|a| text(a)).collect();
        let exit = info.exit.as_ref();
        JsonDetails {
            id: info.id,
            state: state_name(info),
            command: words(&info.argv),
            runs_as: details.command.as_deref().map(words),
            session: details.session.clone(),
            cwd: details.cwd.as_ref().map(|c| text(c)),
            env: details.env.as_ref().map(|env| {
                env.iter()
                    .map(|(name, value)| {
                        let value = value
                            .as_deref()
                            .map_or(serde_json::Value::Null, |v| text(v).into());
                        (text(name), value)
                    })
                    .collect()
            }),
            principal: info.principal.clone(),
            connection: details.connection.clone(),
            dialect: details.dialect.clone(),
            group: info.group.clone(),
            label: info.label.clone(),
            after: info.after.clone(),
            after_any: details.after_any,
            submitted: timestamp(info.submitted_ms),
            started: info.started_ms.map(timestamp),
            ended: info.ended_ms.map(timestamp),
            run_time_us: info.run_us,
            paused_us: info.paused_us,
            timeout_ms: details.timeout_ms,
            exit_code: exit.and_then(|e| e.code),
            signal: exit.and_then(|e| e.signal),
            error: exit.and_then(|e| e.error.clone()),
            stdout_bytes: details.stdout_bytes,
            stderr_bytes: details.stderr_bytes,
            log_bytes: details.log_bytes,
            no_log: info.no_log,
        }
    }
}
