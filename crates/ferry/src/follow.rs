//! Printing a followed job's output: stdout chunks to ferry's stdout, stderr chunks to ferry's
//! stderr, each written out at once (no buffering), until the job exits or its log ends.

use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{bail, Result};
use ferry_client::{Client, Event, JobExit, Sender, Stream};

/// How following a job ended.
pub enum Followed {
    /// The job exited.
    Exit(JobExit),
    /// The stored log ended (for `ferry log` of a running job).
    LogEnd,
}

/// Writes all of `bytes` to `fd`, retrying on interruption.
fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Prints job `job`'s output until it exits (or its stored log ends).
///
/// When ferry's stdout is a closed pipe, the job gets SIGPIPE through `sender` (as it would
/// writing to that pipe itself) and further stdout output is dropped.
pub async fn print_job_output(
    client: &mut Client,
    job: u64,
    sender: Option<&Sender>,
) -> Result<Followed> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut stdout_broken = false;
    let mut expected = [0u64; 2];
    loop {
        let Some(event) = client.next_event().await? else {
            bail!("the daemon closed the connection before job {job} ended");
        };
        match event {
            Event::Output {
                job: of,
                data,
                stream,
                offset,
            } if of == job => {
                let slot = usize::from(stream == Stream::Stderr);
                if offset > expected[slot] {
                    eprintln!(
                        "ferry: {} bytes of job {job}'s {} were not stored: past the daemon's --max-log-size the log keeps the head and the tail of the output (or this client fell behind)",
                        offset - expected[slot],
                        if slot == 0 { "stdout" } else { "stderr" }
                    );
                }
                expected[slot] = offset + data.len() as u64;
                match stream {
                    Stream::Stdout if !stdout_broken => {
                        if let Err(e) = write_all(stdout.as_fd(), &data) {
                            stdout_broken = true;
                            if e.kind() == std::io::ErrorKind::BrokenPipe {
                                if let Some(sender) = sender {
                                    let _ = sender.signal(job, libc::SIGPIPE).await;
                                }
                            } else {
                                eprintln!("ferry: cannot write to stdout: {e}");
                            }
                        }
                    }
                    Stream::Stdout => {}
                    Stream::Stderr => {
                        // Nowhere to report a failing stderr: drop the bytes.
                        let _ = write_all(stderr.as_fd(), &data);
                    }
                }
            }
            Event::Exit { job: of, exit } if of == job => return Ok(Followed::Exit(exit)),
            Event::LogEnd { job: of } if of == job => return Ok(Followed::LogEnd),
            Event::Notice { message, .. } | Event::Warning { message } => {
                eprintln!("ferry: {message}")
            }
            // The daemon ended this job's stream with an error (only this client follows it).
            Event::Failed { message, .. } => bail!("{message}"),
            _ => {}
        }
    }
}

/// Reports how a followed job ended on stderr (when it did not simply exit) and returns the
/// status ferry exits with.
pub fn exit_status(job: u64, exit: &JobExit) -> i32 {
    if exit.lost {
        // Its status is unknown: ferry's own failure status, not a job's.
        eprintln!(
            "ferry: job {job} was lost: the daemon stopped while it ran, and how it ended is unknown"
        );
        return i32::from(crate::FERRY_FAILED);
    }
    if let Some(error) = &exit.error {
        eprintln!("ferry: job {job}: {error}");
    } else if exit.timed_out {
        eprintln!("ferry: job {job} timed out and was terminated");
    }
    exit.shell_status()
}
