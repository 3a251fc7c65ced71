//! `ferry attach` (follow a job to its end) and `ferry log` (print its stored output).

use ferry_client::Endpoint;

use anyhow::{bail, Result};
use ferry_wire::native::{ClientMessage, DaemonMessage};

use crate::cli::{AttachArgs, LogArgs};
use crate::follow::{exit_status, print_job_output, Followed};

/// Follows a job until it exits; returns its status.
pub fn attach(target: &Endpoint, args: AttachArgs) -> Result<i32> {
    show(target, args.job, !args.no_replay, true)
}

/// Prints a job's stored output; returns 0.
pub fn log(target: &Endpoint, args: LogArgs) -> Result<i32> {
    show(target, args.job, true, false).map(|_| 0)
}

fn show(target: &Endpoint, job: u64, replay: bool, follow: bool) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let request = client.request_id();
        client
            .send(&ClientMessage::Attach {
                request,
                job,
                replay,
                follow,
            })
            .await?;
        let unstored = match client.recv().await? {
            Some(DaemonMessage::Attached { info, .. }) => info.unstored_bytes,
            Some(DaemonMessage::Error { message, .. }) => bail!("{message}"),
            Some(other) => bail!("unexpected answer from the daemon: {other:?}"),
            None => bail!("the daemon closed the connection"),
        };
        let (mut receiver, _sender) = client.split();
        let followed = print_job_output(&mut receiver, job, None).await?;
        if !follow && unstored > 0 {
            eprintln!(
                "ferry: {unstored} bytes of job {job}'s output were not stored (over the daemon's --max-log-size)"
            );
        }
        match followed {
            Followed::Exit(exit) if follow => Ok(exit_status(job, &exit)),
            Followed::Exit(_) | Followed::LogEnd => Ok(0),
        }
    })
}
