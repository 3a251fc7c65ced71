//! The FANOS dialect: netstrings with passed file descriptors, as Oils' clients speak it.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_io::fdpass::send_all_with_fds;
use ferry_wire::fanos::{decode_netstring, encode_netstring};

use crate::helper::Daemon;

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
