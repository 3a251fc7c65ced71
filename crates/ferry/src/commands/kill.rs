//! `ferry kill`: signals a job's whole process group.

use ferry_client::Endpoint;

use anyhow::{anyhow, bail, Result};
use ferry_wire::native::{ClientMessage, DaemonMessage};

use crate::cli::KillArgs;

/// Sends the signal; exits 0 once the daemon has delivered it.
pub fn run(target: &Endpoint, args: KillArgs) -> Result<i32> {
    let signal = ferry_common::signals::parse_signal(&args.signal).ok_or_else(|| {
        anyhow!(
            "unknown signal '{}' (try TERM, KILL, INT, HUP or a number)",
            args.signal
        )
    })?;
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let request = client.request_id();
        client
            .send(&ClientMessage::Signal {
                request,
                job: args.job,
                signal,
            })
            .await?;
        loop {
            match client.recv().await? {
                Some(DaemonMessage::Done { request: r }) if r == request => return Ok(0),
                Some(DaemonMessage::Error { message, .. }) => bail!("{message}"),
                Some(_) => {}
                None => bail!("the daemon closed the connection"),
            }
        }
    })
}
