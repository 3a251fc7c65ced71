//! Printing a followed job's output: stdout chunks to ferry's stdout, stderr chunks to ferry's
//! stderr, each written out at once (no buffering), until the job exits or its log ends; and
//! the one reader of a job's next event that `ferry log`'s slices share.

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

/// What comes next of job `job` on a client attached to it.
pub enum Next {
    /// A chunk of its output: its stream, its offset there, the bytes.
    Chunk(Stream, u64, Vec<u8>),
    /// It ended.
    Exit(JobExit),
    /// Its stored output was all sent (an attach that does not follow).
    End,
}

/// Waits for what comes next of job `job` (notices and warnings said on the way); `until`
/// names what the connection's end would cut short.
pub async fn next_of_job(client: &mut Client, job: u64, until: &str) -> Result<Next> {
    loop {
        let Some(event) = client.next_event().await? else {
            bail!("the daemon closed the connection before {until}");
        };
        match event {
            Event::Output {
                job: of,
                stream,
                offset,
                data,
            } if of == job => return Ok(Next::Chunk(stream, offset, data)),
            Event::Exit { job: of, exit } if of == job => return Ok(Next::Exit(exit)),
            Event::LogEnd { job: of } if of == job => return Ok(Next::End),
            Event::Failed { message, .. } => bail!("{message}"),
            Event::Notice { message, .. } | Event::Warning { message } => {
                eprintln!("ferry: {message}")
            }
            _ => {}
        }
    }
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
    let until = format!("job {job} ended");
    loop {
        let (stream, offset, data) = match next_of_job(client, job, &until).await? {
            Next::Chunk(stream, offset, data) => (stream, offset, data),
            Next::Exit(exit) => return Ok(Followed::Exit(exit)),
            Next::End => return Ok(Followed::LogEnd),
        };
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
