//! `ferry log` with slices: the first or last N lines, one stream alone, and `--follow` on
//! from where the stored output ends (as `tail -f`). The stored output is read once; a
//! follow then attaches again from the start and skips, by each stream's offset, what was
//! already read, so that nothing is printed twice and nothing between is missed.

use std::collections::VecDeque;
use std::io::Write;

use anyhow::{bail, Result};
use ferry_client::{Client, Endpoint, JobExit, Stream};

use crate::cli::LogArgs;
use crate::follow::{exit_status, next_of_job, Next};

/// Lines of output, in the order they were completed, each with its stream.
#[derive(Default)]
struct Lines {
    /// Complete lines (with their newline), oldest first; at most `keep` of them.
    done: VecDeque<(Stream, Vec<u8>)>,
    /// Each stream's line so far.
    partial: [Vec<u8>; 2],
    keep: usize,
}

impl Lines {
    fn add(&mut self, stream: Stream, mut data: &[u8]) {
        let slot = usize::from(stream == Stream::Stderr);
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[slot]);
            line.extend_from_slice(&data[..=end]);
            self.done.push_back((stream, line));
            if self.done.len() > self.keep {
                self.done.pop_front();
            }
            data = &data[end + 1..];
        }
        self.partial[slot].extend_from_slice(data);
    }

    /// The kept lines, then each stream's unfinished line (counted as a line).
    fn into_output(mut self) -> Vec<(Stream, Vec<u8>)> {
        for (slot, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let rest = std::mem::take(&mut self.partial[slot]);
            if !rest.is_empty() {
                self.done.push_back((stream, rest));
                if self.done.len() > self.keep {
                    self.done.pop_front();
                }
            }
        }
        self.done.into()
    }
}

/// Writes `data` to the terminal stream it came from.
fn emit(stream: Stream, data: &[u8]) -> Result<()> {
    match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(data)?;
            out.flush()?;
        }
        Stream::Stderr => {
            let _ = std::io::stderr().lock().write_all(data);
        }
    }
    Ok(())
}

/// The streams `args` shows.
fn shown(args: &LogArgs, stream: Stream) -> bool {
    match stream {
        Stream::Stdout => !args.stderr,
        Stream::Stderr => !args.stdout,
    }
}

/// How reading the stored output ended.
enum Stored {
    /// The job had ended: how.
    Exit(JobExit),
    /// The stored output was all read; the job runs on.
    End,
    /// `--head` had its lines.
    Enough,
}

/// `ferry log` with any of --lines, --head, --stdout, --stderr, --follow.
pub fn run(target: &Endpoint, args: &LogArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let job = args.job;
        let info = client.attach(job, true, false).await?;
        if info.no_log {
            eprintln!(
                "ferry: job {job} ran on its client's terminal (its own fds): its output went there, and no log of it was kept"
            );
        }
        let mut read = [0u64; 2];
        let stored = read_stored(&mut client, args, &mut read).await?;
        match stored {
            Stored::Exit(exit) if args.follow => Ok(exit_status(job, &exit)),
            Stored::End if args.follow => {
                client.attach(job, true, true).await?;
                follow_on(&mut client, args, read).await
            }
            _ => Ok(0),
        }
    })
}

/// Reads the stored output, printing the slice asked for; `read` gets each stream's end.
async fn read_stored(client: &mut Client, args: &LogArgs, read: &mut [u64; 2]) -> Result<Stored> {
    let job = args.job;
    let until = format!("job {job}'s log was read");
    let mut lines = args.lines.map(|keep| Lines {
        keep,
        ..Lines::default()
    });
    let mut head_left = args.head;
    let ended = loop {
        let (stream, data) = match next_of_job(client, job, &until).await? {
            Next::Chunk(stream, offset, data) => {
                read[usize::from(stream == Stream::Stderr)] = offset + data.len() as u64;
                (stream, data)
            }
            Next::Exit(exit) => break Stored::Exit(exit),
            Next::End => break Stored::End,
        };
        if !shown(args, stream) {
            continue;
        }
        if let Some(lines) = &mut lines {
            lines.add(stream, &data);
        } else if let Some(left) = &mut head_left {
            let (upto, count) = first_lines(&data, *left);
            emit(stream, &data[..upto])?;
            *left -= count;
            if *left == 0 {
                break Stored::Enough;
            }
        } else {
            emit(stream, &data)?;
        }
    };
    if let Some(lines) = lines {
        for (stream, line) in lines.into_output() {
            emit(stream, &line)?;
        }
    }
    Ok(ended)
}

/// How many bytes of `data` hold its first `wanted` lines, and how many lines that is.
fn first_lines(data: &[u8], wanted: usize) -> (usize, usize) {
    let mut count = 0;
    for (at, &byte) in data.iter().enumerate() {
        if byte == b'\n' {
            count += 1;
            if count == wanted {
                return (at + 1, count);
            }
        }
    }
    (data.len(), count)
}

/// Prints the job's output past `read` (each stream's offset) live until it exits.
async fn follow_on(client: &mut Client, args: &LogArgs, read: [u64; 2]) -> Result<i32> {
    let job = args.job;
    let until = format!("job {job} ended");
    loop {
        match next_of_job(client, job, &until).await? {
            Next::Chunk(stream, offset, data) => {
                let from = read[usize::from(stream == Stream::Stderr)];
                if offset + data.len() as u64 <= from || !shown(args, stream) {
                    continue;
                }
                let skip = usize::try_from(from.saturating_sub(offset)).unwrap_or(data.len());
                emit(stream, &data[skip.min(data.len())..])?;
            }
            Next::Exit(exit) => return Ok(exit_status(job, &exit)),
            // Only an attach that does not follow ends so.
            Next::End => bail!("the daemon ended job {job}'s output without an exit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_keep_their_streams_and_unfinished_lines_count() {
        let mut lines = Lines {
            keep: 3,
            ..Lines::default()
        };
        lines.add(Stream::Stdout, b"1\n2\n3");
        lines.add(Stream::Stderr, b"e1\n");
        lines.add(Stream::Stdout, b"\n4\n5");
        let out = lines.into_output();
        let text: Vec<(Stream, &[u8])> = out.iter().map(|(s, l)| (*s, l.as_slice())).collect();
        assert_eq!(
            text,
            vec![
                (Stream::Stdout, &b"3\n"[..]),
                (Stream::Stdout, b"4\n"),
                (Stream::Stdout, b"5"),
            ]
        );
    }

    #[test]
    fn the_first_lines_end_at_their_newline() {
        assert_eq!(first_lines(b"a\nb\nc\n", 2), (4, 2));
        assert_eq!(first_lines(b"a\nb", 5), (3, 1));
    }
}
