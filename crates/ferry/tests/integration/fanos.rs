//! The FANOS dialect: netstrings with passed file descriptors, as Oils' clients speak it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_io::fdpass::send_all_with_fds;
use ferry_wire::fanos::{decode_netstring, encode_netstring};

use crate::helper::{wait_until_read, Daemon};

pub(crate) fn fanos_daemon() -> (Daemon, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("fanos.sock");
    let daemon = Daemon::start_networked(&[], &[&format!("fanos:unix:{}", socket.display())]);
    assert!(
        daemon.log_shows("listening on fanos:unix:"),
        "{}",
        daemon.log()
    );
    (daemon, dir, socket)
}

pub(crate) fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
}

/// Reads one netstring reply (None if the daemon closed first).
fn read_reply(stream: &mut UnixStream) -> Option<String> {
    let mut buf = Vec::new();
    loop {
        if let Ok(Some((range, _))) = decode_netstring(&buf, 1 << 20, false) {
            return Some(String::from_utf8_lossy(&buf[range]).into_owned());
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub(crate) fn request(
    stream: &mut UnixStream,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Option<String> {
    let mut message = Vec::new();
    encode_netstring(payload, &mut message);
    send_all_with_fds(stream.as_fd(), &message, fds).expect("send");
    read_reply(stream)
}

#[test]
fn getpid_answers_the_daemons_pid() {
    let (daemon, _dir, socket) = fanos_daemon();
    let mut stream = connect(&socket);
    assert_eq!(
        request(&mut stream, b"GETPID", &[]),
        Some(format!("OK {}", daemon.pid()))
    );
}

#[test]
fn argv_runs_on_the_passed_fds_and_answers_its_status() {
    let (_daemon, _dir, socket) = fanos_daemon();
    let mut stream = connect(&socket);
    let stdin = std::fs::File::open("/dev/null").expect("null");
    let (out_r, out_w) = rustix::pipe::pipe().expect("pipe");
    let (err_r, err_w) = rustix::pipe::pipe().expect("pipe");
    let reply = request(
        &mut stream,
        b"ARGV sh\0-c\0echo out; echo err >&2; exit 3",
        &[stdin.as_fd(), out_w.as_fd(), err_w.as_fd()],
    );
    assert_eq!(reply.as_deref(), Some("STATUS 3"));
    drop((out_w, err_w));
    let mut out = String::new();
    std::fs::File::from(out_r)
        .read_to_string(&mut out)
        .expect("out");
    let mut err = String::new();
    std::fs::File::from(err_r)
        .read_to_string(&mut err)
        .expect("err");
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    // Wrong numbers of fds get clear errors, and the connection goes on.
    let reply = request(&mut stream, b"ARGV true", &[]).expect("reply");
    assert!(
        reply.starts_with("ERROR ARGV needs 3 file descriptors"),
        "{reply}"
    );
    let reply = request(&mut stream, b"GETPID", &[stdin.as_fd()]).expect("reply");
    assert!(
        reply.starts_with("ERROR") && reply.contains("no file descriptors"),
        "{reply}"
    );
    let reply = request(&mut stream, b"FROB x", &[]).expect("reply");
    assert!(reply.starts_with("ERROR unknown request 'FROB'"), "{reply}");
    let reply = request(&mut stream, b"STATE", &[stdin.as_fd()]).expect("reply");
    assert_eq!(reply, "ERROR STATE takes no file descriptors");
}

#[test]
fn bad_netstrings_get_oils_errors_and_a_close() {
    let (daemon, _dir, socket) = fanos_daemon();
    for (bytes, then_eof, text) in [
        (&b":"[..], false, "ERROR Expected netstring length"),
        (b"zzz", false, "ERROR Expected netstring length"),
        (b"34", true, "ERROR Unexpected EOF"),
        (b"34foo", false, "ERROR Expected : after netstring length"),
        (b"3:foo", true, "ERROR Expected ,"),
    ] {
        let mut stream = connect(&socket);
        stream.write_all(bytes).expect("write");
        if then_eof {
            stream.shutdown(std::net::Shutdown::Write).expect("eof");
        }
        assert_eq!(read_reply(&mut stream).as_deref(), Some(text), "{bytes:?}");
        // Then the daemon closes the connection.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }
    // Others are still served, on both dialects.
    let mut stream = connect(&socket);
    assert!(request(&mut stream, b"GETPID", &[]).is_some_and(|r| r.starts_with("OK ")));
    daemon.assert_serving();
}

/// Sends one message as Oils' `py_fanos.send` does: the length and colon, then the payload
/// with the fds in one `sendmsg`, then the comma: three writes, back to back.
fn oils_send(stream: &UnixStream, payload: &[u8], fds: &[BorrowedFd<'_>]) {
    send_all_with_fds(
        stream.as_fd(),
        format!("{}:", payload.len()).as_bytes(),
        &[],
    )
    .expect("send length");
    send_all_with_fds(stream.as_fd(), payload, fds).expect("send payload");
    send_all_with_fds(stream.as_fd(), b",", &[]).expect("send comma");
}

/// Reads one reply as Oils' `py_fanos.recv` does: the length a byte at a time, then exactly
/// the payload, then the comma.
pub(crate) fn oils_recv(stream: &mut UnixStream) -> Option<String> {
    let mut length = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        if byte[0] == b':' {
            break;
        }
        assert!(byte[0].is_ascii_digit(), "bad reply length byte {byte:?}");
        length.push(byte[0]);
    }
    let len: usize = String::from_utf8(length).ok()?.parse().ok()?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).ok()?;
    stream.read_exact(&mut byte).ok()?;
    assert_eq!(&byte, b",", "reply not ended by a comma");
    Some(String::from_utf8_lossy(&payload).into_owned())
}

/// A job's stdio for FANOS tests: /dev/null in, pipes out; `finish` returns what came out.
struct Stdio3 {
    stdin: File,
    out: (OwnedFd, OwnedFd),
    err: (OwnedFd, OwnedFd),
}

impl Stdio3 {
    fn new() -> Stdio3 {
        Stdio3 {
            stdin: File::open("/dev/null").expect("null"),
            out: rustix::pipe::pipe().expect("pipe"),
            err: rustix::pipe::pipe().expect("pipe"),
        }
    }

    fn fds(&self) -> [BorrowedFd<'_>; 3] {
        [self.stdin.as_fd(), self.out.1.as_fd(), self.err.1.as_fd()]
    }

    /// Closes the write ends and reads stdout and stderr to their end.
    fn finish(self) -> (String, String) {
        drop((self.out.1, self.err.1));
        let read = |fd: OwnedFd| {
            let mut text = String::new();
            File::from(fd).read_to_string(&mut text).expect("read");
            text
        };
        (read(self.out.0), read(self.err.0))
    }
}

#[test]
fn oils_client_getpid_then_eight_evals_in_three_writes_each() {
    let (daemon, _dir, socket) = fanos_daemon();
    let mut stream = connect(&socket);
    let stdio = Stdio3::new();
    // Oils' demo client sends its three fds with every request, GETPID too.
    oils_send(&stream, b"GETPID", &stdio.fds());
    assert_eq!(oils_recv(&mut stream), Some(format!("OK {}", daemon.pid())));
    for i in 1..=8 {
        let eval = format!("EVAL n=$((n+{i})); echo \"eval {i}: $n\"; echo \"err {i}\" >&2");
        oils_send(&stream, eval.as_bytes(), &stdio.fds());
        assert_eq!(oils_recv(&mut stream).as_deref(), Some("OK 0"), "EVAL {i}");
    }
    drop(stream);
    let (out, err) = stdio.finish();
    let sums: Vec<String> = (1..=8)
        .map(|i| format!("eval {i}: {}\n", i * (i + 1) / 2))
        .collect();
    assert_eq!(
        out,
        sums.concat(),
        "the session's state persisted across the EVALs"
    );
    let errs: Vec<String> = (1..=8).map(|i| format!("err {i}\n")).collect();
    assert_eq!(err, errs.concat());
}

/// Sends `pieces` one write each (fds with the piece flagged), waiting after each until the
/// daemon has read it, so that its reads see every split.
fn send_split(stream: &UnixStream, pieces: &[(&[u8], bool)], fds: &[BorrowedFd<'_>]) {
    for (piece, with_fds) in pieces {
        let attached = if *with_fds { fds } else { &[] };
        send_all_with_fds(stream.as_fd(), piece, attached).expect("send");
        wait_until_read(stream);
    }
}

#[test]
fn fds_belong_to_the_message_they_rode_on_however_it_is_split() {
    let (_daemon, _dir, socket) = fanos_daemon();
    let mut stream = connect(&socket);
    let stdio = Stdio3::new();
    let mut message = Vec::new();
    encode_netstring(b"ARGV\0echo\0piece", &mut message);
    let mut runs = 0;
    // Two writes, split at every byte, the fds on either half.
    for cut in 1..message.len() {
        for fds_on_first in [true, false] {
            let pieces = [
                (&message[..cut], fds_on_first),
                (&message[cut..], !fds_on_first),
            ];
            send_split(&stream, &pieces, &stdio.fds());
            let reply = oils_recv(&mut stream);
            assert_eq!(reply.as_deref(), Some("STATUS 0"), "cut {cut}, {pieces:?}");
            runs += 1;
        }
    }
    // Oils' three pieces (length and colon, payload, comma), the fds on each in turn.
    let colon = message.iter().position(|&b| b == b':').expect(":") + 1;
    let end = message.len() - 1;
    let (head, payload, comma) = (&message[..colon], &message[colon..end], &message[end..]);
    for carrier in 0..3 {
        let pieces = [
            (head, carrier == 0),
            (payload, carrier == 1),
            (comma, carrier == 2),
        ];
        send_split(&stream, &pieces, &stdio.fds());
        assert_eq!(oils_recv(&mut stream).as_deref(), Some("STATUS 0"));
        runs += 1;
    }
    // The whole message in one write, with and without its fds.
    send_split(&stream, &[(&message, true)], &stdio.fds());
    assert_eq!(oils_recv(&mut stream).as_deref(), Some("STATUS 0"));
    runs += 1;
    for pieces in [
        vec![(&message[..], false)],
        vec![(head, false), (payload, false), (comma, false)],
    ] {
        send_split(&stream, &pieces, &stdio.fds());
        let reply = oils_recv(&mut stream).expect("reply");
        assert_eq!(
            reply,
            "ERROR ARGV needs 3 file descriptors (stdin, stdout, stderr), got 0"
        );
    }
    drop(stream);
    let (out, _) = stdio.finish();
    assert_eq!(out, "piece\n".repeat(runs));
}

#[test]
fn several_messages_in_one_write_each_get_their_own_fds() {
    let (daemon, _dir, socket) = fanos_daemon();
    let mut stream = connect(&socket);
    let stdio = Stdio3::new();
    let netstrings = |payloads: &[&[u8]]| {
        let mut bytes = Vec::new();
        for payload in payloads {
            encode_netstring(payload, &mut bytes);
        }
        bytes
    };
    let getpid = format!("OK {}", daemon.pid());
    let missing = "ERROR ARGV needs 3 file descriptors (stdin, stdout, stderr), got 0";
    // (the messages in one write, whether fds come with it, the replies in order)
    type Case<'a> = (&'a [&'a [u8]], bool, Vec<&'a str>);
    let cases: [Case<'_>; 4] = [
        // No fds at all.
        (
            &[b"GETPID", b"ARGV\0echo\0one"],
            false,
            vec![&getpid, missing],
        ),
        // Fds on the write's first byte: they belong to the first message.
        (
            &[b"ARGV\0echo\0two", b"GETPID"],
            true,
            vec!["STATUS 0", &getpid],
        ),
        (
            &[b"ARGV\0echo\0three", b"ARGV\0echo\0lost"],
            true,
            vec!["STATUS 0", missing],
        ),
        (
            &[b"GETPID", b"ARGV\0echo\0lost"],
            true,
            vec![&getpid, missing],
        ),
    ];
    for (payloads, with_fds, replies) in cases {
        send_split(&stream, &[(&netstrings(payloads), with_fds)], &stdio.fds());
        for want in replies {
            assert_eq!(
                oils_recv(&mut stream).as_deref(),
                Some(want),
                "{payloads:?}"
            );
        }
    }
    // The second message begins in the first write and takes its fds in the second.
    let bytes = netstrings(&[b"GETPID", b"ARGV\0echo\0four"]);
    let cut = bytes.len() - 4;
    send_split(
        &stream,
        &[(&bytes[..cut], false), (&bytes[cut..], true)],
        &stdio.fds(),
    );
    assert_eq!(oils_recv(&mut stream), Some(getpid));
    assert_eq!(oils_recv(&mut stream).as_deref(), Some("STATUS 0"));
    drop(stream);
    assert_eq!(stdio.finish().0, "two\nthree\nfour\n");
}

#[test]
fn messages_queued_while_the_daemon_is_busy_keep_their_own_fds() {
    let (_daemon, _dir, socket) = fanos_daemon();
    let mut stream = connect(&socket);
    let stdio = Stdio3::new();
    // A job that waits for a line on a pipe this test holds: until then the daemon reads
    // nothing more from this connection.
    let (gate_r, gate_w) = rustix::pipe::pipe().expect("pipe");
    let mut busy = Vec::new();
    encode_netstring(b"ARGV\0sh\0-c\0read line; echo \"busy $line\"", &mut busy);
    let fds = stdio.fds();
    send_all_with_fds(stream.as_fd(), &busy, &[gate_r.as_fd(), fds[1], fds[2]]).expect("send");
    // Two messages queue meanwhile, in two writes: the first without fds, the second with.
    let (mut first, mut second) = (Vec::new(), Vec::new());
    encode_netstring(b"ARGV\0echo\0unwanted", &mut first);
    encode_netstring(b"ARGV\0echo\0wanted", &mut second);
    send_all_with_fds(stream.as_fd(), &first, &[]).expect("send");
    send_all_with_fds(stream.as_fd(), &second, &fds).expect("send");
    rustix::io::write(&gate_w, b"done\n").expect("open the gate");
    assert_eq!(oils_recv(&mut stream).as_deref(), Some("STATUS 0"));
    assert_eq!(
        oils_recv(&mut stream).as_deref(),
        Some("ERROR ARGV needs 3 file descriptors (stdin, stdout, stderr), got 0")
    );
    assert_eq!(oils_recv(&mut stream).as_deref(), Some("STATUS 0"));
    drop(stream);
    assert_eq!(stdio.finish().0, "busy done\nwanted\n");
}

#[test]
fn a_fanos_listener_has_a_pool_of_connections_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("fanos.sock");
    let daemon = Daemon::start_networked(
        &["--max-connections", "2"],
        &[&format!("fanos:unix:{}", socket.display())],
    );
    assert!(
        daemon.log_shows("listening on fanos:unix:"),
        "{}",
        daemon.log()
    );
    let getpid = format!("OK {}", daemon.pid());
    let mut held: Vec<UnixStream> = (0..2).map(|_| connect(&socket)).collect();
    for stream in &mut held {
        oils_send(stream, b"GETPID", &[]);
        assert_eq!(oils_recv(stream).as_deref(), Some(getpid.as_str()));
    }
    // A third FANOS client is refused in its own dialect...
    let mut third = connect(&socket);
    let refusal = format!(
        "ERROR too many connections on fanos:unix:{} (the limit is 2)",
        socket.display()
    );
    assert_eq!(oils_recv(&mut third).as_deref(), Some(refusal.as_str()));
    assert_eq!(oils_recv(&mut third), None, "then closed");
    // ...while the native socket's pool is its own: FANOS clients cannot fill it.
    let out = daemon.run(&["ps"]);
    assert!(out.status.success(), "{out:?}");
    // A place freed is a place for the next FANOS client.
    held.pop();
    crate::helper::wait_until(
        "a freed FANOS place to serve another FANOS client",
        Duration::from_secs(10),
        || {
            let mut next = connect(&socket);
            oils_send(&next, b"GETPID", &[]);
            (oils_recv(&mut next).as_deref() == Some(getpid.as_str())).then_some(next)
        },
        || daemon.log(),
    );
}

#[test]
fn fanos_clients_are_told_in_their_own_dialect_and_closed_at_shutdown() {
    let (mut daemon, _dir, socket) = fanos_daemon();
    let mut idle = connect(&socket);
    oils_send(&idle, b"GETPID", &[]);
    assert!(oils_recv(&mut idle).is_some_and(|r| r.starts_with("OK ")));
    // Another is in the middle of an EVAL when the daemon goes down.
    let mut busy = connect(&socket);
    let stdio = Stdio3::new();
    oils_send(&busy, b"EVAL echo started; exec sleep 300", &stdio.fds());
    let mut started = [0u8; 8];
    let mut stdout = File::from(stdio.out.0.try_clone().expect("dup"));
    stdout.read_exact(&mut started).expect("the EVAL started");
    assert_eq!(&started, b"started\n");
    let out = daemon.run(&["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let going_down = "ERROR the ferry daemon is going down; running jobs are being terminated";
    assert_eq!(oils_recv(&mut idle).as_deref(), Some(going_down));
    assert_eq!(oils_recv(&mut idle), None, "then closed");
    // The EVAL's job was terminated (SIGTERM: 143); its reply comes, then the notice.
    assert_eq!(oils_recv(&mut busy).as_deref(), Some("OK 143"));
    assert_eq!(oils_recv(&mut busy).as_deref(), Some(going_down));
    assert_eq!(oils_recv(&mut busy), None, "then closed");
    let mut child = daemon.child.take().expect("running");
    assert_eq!(
        crate::helper::wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(0)
    );
}

#[test]
fn a_silent_fanos_client_is_closed_after_the_first_request_and_idle_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("fanos.sock");
    let daemon = Daemon::start_networked(
        &["--handshake-timeout", "300ms", "--idle-timeout", "500ms"],
        &[&format!("fanos:unix:{}", socket.display())],
    );
    assert!(
        daemon.log_shows("listening on fanos:unix:"),
        "{}",
        daemon.log()
    );
    // Nothing at all: the first request's limit is the handshake limit.
    let mut silent = connect(&socket);
    assert_eq!(
        oils_recv(&mut silent).as_deref(),
        Some("ERROR no whole request within 300 ms")
    );
    assert_eq!(oils_recv(&mut silent), None, "then closed");
    // One request, then silence: the idle limit.
    let mut idle = connect(&socket);
    oils_send(&idle, b"GETPID", &[]);
    assert!(oils_recv(&mut idle).is_some_and(|r| r.starts_with("OK ")));
    assert_eq!(
        oils_recv(&mut idle).as_deref(),
        Some("ERROR no whole request within 500 ms")
    );
    assert_eq!(oils_recv(&mut idle), None, "then closed");
    daemon.assert_serving();
}
