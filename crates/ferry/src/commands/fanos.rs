//! `ferry fanos`: one request of Oils' FANOS protocol to a `fanos:unix:PATH` listener, with ferry's
//! own stdin, stdout and stderr passed along for `EVAL` and `ARGV`, as Oils' client does.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ferry_io::fdpass::{recv_with_fds, send_all_with_fds};
use ferry_io::private::{check_peer_is_me, check_private_dir, socket_dir};
use ferry_wire::fanos::{decode_netstring, encode_netstring};

use crate::cli::FanosArgs;
use crate::commands::run::own_stdio;

/// Largest reply accepted.
const MAX_REPLY: usize = 1024 * 1024;

/// Sends the request, prints the reply's payload; 0 for `OK`, the status for `STATUS n`,
/// 1 for `ERROR`.
pub fn run(socket: Option<&Path>, args: FanosArgs) -> Result<i32> {
    let Some(socket) = socket else {
        bail!("ferry fanos needs --socket PATH (a daemon's fanos:unix:PATH listener)");
    };
    let payload = request_payload(&args.request);
    let takes_fds = payload.starts_with(b"EVAL ") || payload.starts_with(b"ARGV ");
    // As any ferry client: nothing (the terminal's fds least of all) goes to a socket another
    // user could have put there or serves.
    let untrusted = |e| anyhow::anyhow!("refusing to talk to {}: {e}", socket.display());
    check_private_dir(socket_dir(socket)).map_err(untrusted)?;
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    check_peer_is_me(&stream).map_err(untrusted)?;
    let mut message = Vec::new();
    encode_netstring(&payload, &mut message);
    let fds = if takes_fds {
        own_stdio().to_vec()
    } else {
        Vec::new()
    };
    send_all_with_fds(stream.as_fd(), &message, &fds).context("cannot send the request")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut ignored = Vec::new();
    let reply = loop {
        let eof = match recv_with_fds(stream.as_fd(), &mut chunk, &mut ignored) {
            Ok(0) => true,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) => bail!("cannot read the reply: {e}"),
        };
        match decode_netstring(&buf, MAX_REPLY, eof) {
            Ok(Some((range, _))) => break buf[range].to_vec(),
            Ok(None) if eof => bail!("the daemon closed the connection without a reply"),
            Ok(None) => {}
            Err(e) => bail!("bad reply: {e}"),
        }
    };
    println!("{}", String::from_utf8_lossy(&reply));
    Ok(if reply.starts_with(b"OK") {
        0
    } else if let Some(code) = reply.strip_prefix(b"STATUS ") {
        std::str::from_utf8(code)
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(1)
    } else {
        1
    })
}

/// The payload: words joined by spaces, except that ARGV's arguments are NUL-separated.
fn request_payload(words: &[OsString]) -> Vec<u8> {
    let mut payload = Vec::new();
    let argv = words.first().is_some_and(|w| w == "ARGV") && words.len() > 1;
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            payload.push(if argv && i > 1 { 0 } else { b' ' });
        }
        payload.extend_from_slice(word.as_bytes());
    }
    payload
}
