//! `ferry c2`: the client of the C2 dialect (KubOS's command and control protocol), over TCP
//! or a FIFO pair:
//! one request (`MSG_TYPE` 0, `COMMAND_NAME`, `ARG_COUNT`, `ARGS` as an array), then the
//! result, with its continuation frames joined, or the error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ferry_wire::c2::{
    decode_frame, decode_response, encode_frame, encode_request, CspId, Response,
};

use crate::cli::C2Args;

/// How long the daemon has to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(600);

/// The reading and writing sides of the listener `args` names.
fn open(args: &C2Args) -> Result<(Box<dyn Read>, Box<dyn Write>)> {
    match (&args.addr, &args.fifo) {
        (Some(addr), _) => {
            let stream =
                TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
            stream.set_read_timeout(Some(ANSWER_WAIT))?;
            Ok((Box::new(stream.try_clone()?), Box::new(stream)))
        }
        (None, Some(pair)) => {
            let (input, output) = pair.split_once(',').ok_or_else(|| {
                anyhow!("--fifo takes IN,OUT (the daemon's request and answer FIFOs)")
            })?;
            // Read-write, as KubOS's client opens them: no open waits for the other side.
            let open = |path: &str| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .with_context(|| format!("cannot open the FIFO {path}"))
            };
            Ok((Box::new(open(output)?), Box::new(open(input)?)))
        }
        (None, None) => bail!("give --addr HOST:PORT or --fifo IN,OUT"),
    }
}

/// Runs the command; its exit status.
pub fn run(args: C2Args) -> Result<i32> {
    let (command, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow!("no command"))?;
    let (mut reader, mut writer) = open(&args)?;
    // From address 2, an ephemeral port, to the daemon (address 1) on port 10; the answer
    // comes back to port 11.
    let id = CspId {
        priority: 2,
        source: 2,
        destination: 1,
        destination_port: 10,
        source_port: 32 + (std::process::id() % 32) as u8,
        flags: 0,
    };
    let frame = encode_frame(id, &encode_request(command, rest))?;
    writer.write_all(&frame)?;
    writer.flush()?;
    let mut buf = Vec::new();
    let mut output = String::new();
    let mut expected_more: Option<u64> = None;
    let mut code = 0;
    loop {
        let Some((_, range, used)) = decode_frame(&buf) else {
            let mut chunk = [0u8; 64 * 1024];
            let n = reader.read(&mut chunk).context("reading the answer")?;
            if n == 0 {
                bail!("the daemon closed the connection before answering");
            }
            buf.extend_from_slice(&chunk[..n]);
            continue;
        };
        let response = decode_response(&buf[range])?;
        buf.drain(..used);
        match (response, expected_more) {
            (Response::Error { message }, _) => {
                eprintln!("ferry: c2: {message}");
                return Ok(1);
            }
            (
                Response::Result {
                    return_code,
                    exec_time_ms,
                    output: first,
                    more,
                },
                None,
            ) => {
                if args.verbose {
                    eprintln!("ferry: c2: exec time {exec_time_ms:.3} ms");
                }
                code = i32::try_from(return_code).unwrap_or(255);
                output.push_str(&first);
                expected_more = Some(more);
            }
            (Response::Continuation { output: piece }, Some(more)) if more > 0 => {
                output.push_str(&piece);
                expected_more = Some(more - 1);
            }
            (other, _) => bail!("an answer out of order: {other:?}"),
        }
        if expected_more == Some(0) {
            break;
        }
    }
    std::io::stdout().write_all(output.as_bytes())?;
    Ok(code)
}
