//! A connection to the daemon of any transport, as the conformance matrix's fixtures use it:
//! bytes in and out, the address `ferry peers` lists it by, and a wait until the daemon has
//! read everything written (so that a request split in two arrives in two reads).

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helper::{poll_until, unread_by_peer, wait_until};

/// How long a read waits before the link counts as silent.
const READ_WAIT: Duration = Duration::from_secs(20);

/// A connection of any transport.
pub enum Link {
    /// A Unix socket.
    Unix(UnixStream),
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// A FIFO pair: the pipe the daemon reads, the one it writes, and the pair's name.
    Fifo {
        /// Written by us.
        to: File,
        /// Read by us.
        from: File,
        /// `IN,OUT`.
        pair: String,
    },
}

impl Link {
    /// A Unix socket connection.
    pub fn unix(path: &std::path::Path) -> Link {
        let stream = UnixStream::connect(path).expect("connect");
        stream.set_read_timeout(Some(READ_WAIT)).expect("timeout");
        Link::Unix(stream)
    }

    /// A TCP connection to the loopback `port`.
    pub fn tcp(port: u16) -> Link {
        Link::Tcp(tcp_stream(port))
    }

    /// A TLS connection to the loopback `port`, trusting `config`'s CA (the handshake is
    /// done).
    pub fn tls(port: u16, config: &Arc<rustls::ClientConfig>) -> Link {
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
        let connection = rustls::ClientConnection::new(Arc::clone(config), name).expect("tls");
        let mut stream = rustls::StreamOwned::new(connection, tcp_stream(port));
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("TLS handshake");
        }
        Link::Tls(Box::new(stream))
    }

    /// A FIFO pair: `input` is the one the daemon reads.
    pub fn fifo(input: &std::path::Path, output: &std::path::Path) -> Link {
        let to = std::fs::OpenOptions::new()
            .write(true)
            .open(input)
            .expect("open the daemon's input FIFO");
        let from = File::open(output).expect("open the daemon's output FIFO");
        Link::Fifo {
            to,
            from,
            pair: format!("{},{}", input.display(), output.display()),
        }
    }

    /// The address `ferry peers` lists this connection by.
    pub fn address(&self) -> String {
        match self {
            Link::Unix(_) => format!("unix, pid {}", std::process::id()),
            Link::Tcp(stream) => stream.local_addr().expect("addr").to_string(),
            Link::Tls(stream) => stream.sock.local_addr().expect("addr").to_string(),
            Link::Fifo { pair, .. } => format!("fifo {pair}"),
        }
    }

    /// Writes `bytes` and waits until the daemon has read them all.
    pub fn send_taken(&mut self, bytes: &[u8]) {
        self.write_all(bytes).expect("write");
        self.flush().expect("flush");
        self.wait_taken();
    }

    /// Waits until the daemon has read everything written so far.
    pub fn wait_taken(&self) {
        let unread = || match self {
            // Bytes the daemon's side has not read (SIOCOUTQ on a Unix socket).
            Link::Unix(stream) => unread_by_peer(stream) as usize,
            // Unacknowledged bytes on ours, then the daemon socket's receive queue.
            Link::Tcp(stream) => tcp_unread(stream),
            Link::Tls(stream) => tcp_unread(&stream.sock),
            // Bytes in the pipe.
            Link::Fifo { to, .. } => pipe_unread(to),
        };
        wait_until(
            "the daemon to read what was sent",
            Duration::from_secs(10),
            || (unread() == 0).then_some(()),
            || format!("{} bytes unread", unread()),
        );
    }

    /// Everything the daemon sends until it closes the connection; `Err` with what came if
    /// it is still open after `within`.
    pub fn until_closed(&mut self, within: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(got);
            }
            if !self.set_read_timeout(left) {
                return Err(got);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.read(&mut chunk) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(got),
                // A TLS peer gone without close_notify has closed all the same.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(got),
                Err(_) => return Err(got),
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn exact(&mut self, n: usize) -> Vec<u8> {
        assert!(self.set_read_timeout(READ_WAIT), "nothing to read");
        let mut buf = vec![0u8; n];
        self.read_exact(&mut buf).expect("read");
        buf
    }

    /// Makes the next read wait at most `limit`; `false` when (on a FIFO, which has no read
    /// time limit) nothing comes within it.
    fn set_read_timeout(&self, limit: Duration) -> bool {
        match self {
            Link::Unix(stream) => stream.set_read_timeout(Some(limit)).is_ok(),
            Link::Tcp(stream) => stream.set_read_timeout(Some(limit)).is_ok(),
            Link::Tls(stream) => stream.sock.set_read_timeout(Some(limit)).is_ok(),
            Link::Fifo { from, .. } => poll_until(limit, || {
                let mut fds = [rustix::event::PollFd::new(
                    from,
                    rustix::event::PollFlags::IN,
                )];
                let zero = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                (rustix::event::poll(&mut fds, Some(&zero)).unwrap_or(0) > 0).then_some(())
            })
            .is_some(),
        }
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Link::Unix(stream) => stream.read(buf),
            Link::Tcp(stream) => stream.read(buf),
            Link::Tls(stream) => stream.read(buf),
            Link::Fifo { from, .. } => from.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Link::Unix(stream) => stream.write(buf),
            Link::Tcp(stream) => stream.write(buf),
            Link::Tls(stream) => stream.write(buf),
            Link::Fifo { to, .. } => to.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Link::Unix(stream) => stream.flush(),
            Link::Tcp(stream) => stream.flush(),
            Link::Tls(stream) => stream.flush(),
            Link::Fifo { to, .. } => to.flush(),
        }
    }
}

/// A loopback TCP connection, each write sent at once.
fn tcp_stream(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(READ_WAIT)).expect("timeout");
    stream
}

/// Bytes written on a loopback TCP connection that the daemon has not read: those not yet
/// acknowledged, then those in its socket's receive queue (`/proc/net/tcp`).
fn tcp_unread(stream: &TcpStream) -> usize {
    let unacknowledged = unread_by_peer(stream) as usize;
    if unacknowledged > 0 {
        return unacknowledged;
    }
    let (ours, theirs) = (
        stream.local_addr().expect("addr"),
        stream.peer_addr().expect("addr"),
    );
    // The daemon's socket: local = the listener's address, remote = ours; IPv4 addresses
    // are in the table as little-endian hex.
    let hex = |addr: std::net::SocketAddr| match addr {
        std::net::SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        std::net::SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(theirs), hex(ours));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
                .then(|| {
                    let queues = fields.get(4)?;
                    let rx = queues.split(':').nth(1)?;
                    usize::from_str_radix(rx, 16).ok()
                })
                .flatten()
        })
        .unwrap_or(0)
}

/// Bytes in a pipe (FIONREAD, which a pipe answers on either end).
fn pipe_unread(pipe: &File) -> usize {
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at a live c_int of
    // this frame; the fd is borrowed from a live file.
    let result = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut unread) };
    assert_eq!(result, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    unread as usize
}
