//! `ferry attach` (follow a job to its end) and `ferry log` (print its stored output).

use anyhow::Result;
use ferry_client::{Endpoint, Event, Stream};

use crate::cli::{AttachArgs, LogArgs};
use crate::follow::{exit_status, print_job_output, Followed};

/// Follows a job until it exits; returns its status.
pub fn attach(target: &Endpoint, args: AttachArgs) -> Result<i32> {
    show(target, args.job, !args.no_replay, true)
}

/// Prints a job's stored output; returns 0.
pub fn log(target: &Endpoint, args: LogArgs) -> Result<i32> {
    if args.json {
        return log_json(target, args.job);
    }
    let sliced = args.lines.is_some() || args.head.is_some() || args.stdout || args.stderr;
    if sliced || args.follow {
        return super::log_slice::run(target, &args);
    }
    show(target, args.job, true, false).map(|_| 0)
}

/// `ferry log --json`: one JSON object with the job's stored stdout and stderr (as text:
/// bytes that are not UTF-8 are replaced) and what is known of its log.
fn log_json(target: &Endpoint, job: u64) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let info = client.attach(job, true, false).await?;
        let mut streams = [Vec::new(), Vec::new()];
        loop {
            match client.next_event().await? {
                Some(Event::Output {
                    job: of,
                    stream,
                    data,
                    ..
                }) if of == job => {
                    streams[usize::from(stream == Stream::Stderr)].extend_from_slice(&data)
                }
                Some(Event::LogEnd { job: of } | Event::Exit { job: of, .. }) if of == job => break,
                Some(Event::Failed { message, .. }) => anyhow::bail!("{message}"),
                Some(_) => {}
                None => anyhow::bail!("the daemon closed the connection"),
            }
        }
        let json = serde_json::json!({
            "id": job,
            "stdout": String::from_utf8_lossy(&streams[0]),
            "stderr": String::from_utf8_lossy(&streams[1]),
            "unstored_bytes": info.unstored_bytes,
            "no_log": info.no_log,
        });
        println!("{json}");
        Ok(0)
    })
}

fn show(target: &Endpoint, job: u64, replay: bool, follow: bool) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let info = client.attach(job, replay, follow).await?;
        if info.no_log {
            eprintln!(
                "ferry: job {job} ran on its client's terminal (its own fds): its output went there, and no log of it was kept"
            );
        }
        let followed = print_job_output(&mut client, job, None).await?;
        if !follow && info.unstored_bytes > 0 {
            eprintln!(
                "ferry: {} bytes of job {job}'s output were not stored (over the daemon's --max-log-size)",
                info.unstored_bytes
            );
        }
        match followed {
            Followed::Exit(exit) if follow => Ok(exit_status(job, &exit)),
            Followed::Exit(_) | Followed::LogEnd => Ok(0),
        }
    })
}
