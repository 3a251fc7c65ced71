//! Passing file descriptors over Unix stream sockets (SCM_RIGHTS): the one module that does it,
//! for the native protocol's `run --fds` (daemon and client) and the FANOS dialect alike.
//!
//! On a stream socket, fds ride on particular bytes: a plain `read` that consumes those bytes
//! drops the fds silently. So every read of a connection that may carry fds goes through
//! [`recv_with_fds`]: the bytes into the caller's buffer, the fds into the caller's queue.
//! Received fds are close-on-exec (`MSG_CMSG_CLOEXEC`), so they never leak into jobs; a
//! truncated control message (`MSG_CTRUNC`: more fds than room) is an error, since fds were
//! lost.

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;

/// Most fds accepted with one read (FANOS sends 3: stdin, stdout, stderr).
pub const MAX_FDS_PER_READ: usize = 4;

/// Why a read with fds failed.
#[derive(Debug, thiserror::Error)]
pub enum FdPassError {
    /// The peer sent more fds than one message may carry: some were lost.
    #[error("truncated control message: more than {MAX_FDS_PER_READ} file descriptors were sent at once")]
    Truncated,
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads bytes into `buf` and appends any fds that came with them to `fds`. Returns the number
/// of bytes read (0 at end of stream). Non-blocking sockets answer `WouldBlock` as usual.
pub fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<usize, FdPassError> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        socket,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    // Take the fds that did arrive first, so that they are closed (not leaked) on error.
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    // The buffer's room is rounded up: check the count as well as the kernel's flag.
    if received.flags.contains(ReturnFlags::CTRUNC) || fds.len() > MAX_FDS_PER_READ {
        return Err(FdPassError::Truncated);
    }
    Ok(received.bytes)
}

/// Sends `bytes` with `fds` attached to the first byte. Returns how many bytes were sent (the
/// fds go with the first call only: send the rest of a short write without them).
pub fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS_PER_READ
        || (!fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)))
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("at most {MAX_FDS_PER_READ} file descriptors go in one message"),
        ));
    }
    Ok(sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?)
}

/// File descriptors that arrived with one read, and which bytes of the stream that read held
/// (`start..end`, counted from the connection's first byte).
#[derive(Debug)]
pub struct FdBatch {
    /// Stream offset of the read's first byte.
    pub start: u64,
    /// Stream offset just past the read's last byte.
    pub end: u64,
    /// The descriptors, in the order sent.
    pub fds: Vec<OwnedFd>,
}

/// The fds received on a connection, waiting for the message they came with.
///
/// On a stream socket, fds ride on the byte their `sendmsg` carried first, and the kernel hands
/// them over with the read that takes that byte. A reader that never reads past the end of the
/// message it is reading ([`crate::FrameReader::bounded`]) therefore gets every batch within
/// one message: the message whose bytes (length, separators, payload) include the byte the
/// sender attached them to, however the sender split or joined its writes. That message
/// claims them by its span; once messages up to a batch's end are decoded, no message can claim
/// it any more: fds sent with a message that takes none are found out (and closed) then.
#[derive(Debug, Default, Clone)]
pub struct FdInbox {
    batches: Arc<Mutex<VecDeque<FdBatch>>>,
}

impl FdInbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<FdBatch>> {
        // A panic elsewhere cannot leave a queue of fds half-changed: keep going.
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, batch: FdBatch) {
        self.lock().push_back(batch);
    }

    /// Every fd that came with the message spanning stream offsets `span.0..span.1`, in the
    /// order sent (empty if none did).
    pub fn claim(&self, span: (u64, u64)) -> Vec<OwnedFd> {
        let mut batches = self.lock();
        let mut fds = Vec::new();
        batches.retain_mut(|batch| {
            let within = span.0 <= batch.start && batch.start < span.1;
            if within {
                fds.append(&mut batch.fds);
            }
            !within
        });
        fds
    }

    /// Closes the fds no frame can claim once every frame ending at or before `frames_end`
    /// is decoded; returns how many there were.
    pub fn drop_unclaimable(&self, frames_end: u64) -> usize {
        let mut batches = self.lock();
        let mut dropped = 0;
        batches.retain(|b| {
            let keep = b.end > frames_end;
            if !keep {
                dropped += b.fds.len();
            }
            keep
        });
        dropped
    }
}

/// The reading half of a Unix stream connection that may carry fds: an `AsyncRead` whose
/// every read goes through [`recv_with_fds`], leaving the fds in an [`FdInbox`].
#[derive(Debug)]
pub struct FdReadHalf {
    half: OwnedReadHalf,
    inbox: FdInbox,
    offset: u64,
}

/// Most bytes taken by one read (the buffer handed to `recvmsg` must be initialized, so only
/// what the caller offers is). Large enough for a whole frame of job data (a 64 KiB `Stdin`,
/// a 256 KiB `PutData`) in one read, since a reader of such a connection reads a frame's body
/// in reads of its own (see `FrameReader::bounded`).
const FD_READ_CHUNK: usize = 1024 * 1024;

impl FdReadHalf {
    /// Wraps a connection's reading half; fds it receives go to `inbox`.
    pub fn new(half: OwnedReadHalf, inbox: FdInbox) -> FdReadHalf {
        FdReadHalf {
            half,
            inbox,
            offset: 0,
        }
    }
}

impl AsyncRead for FdReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            std::task::ready!(this.half.as_ref().poll_read_ready(cx))?;
            let room = buf.remaining().min(FD_READ_CHUNK);
            let target = buf.initialize_unfilled_to(room);
            let mut fds = Vec::new();
            let stream: &UnixStream = this.half.as_ref();
            let read = stream.try_io(Interest::READABLE, || {
                // Keep the error's kind: WouldBlock tells tokio to wait again.
                recv_with_fds(stream.as_fd(), target, &mut fds).map_err(|e| match e {
                    FdPassError::Io(e) => e,
                    truncated => std::io::Error::new(std::io::ErrorKind::InvalidData, truncated),
                })
            });
            match read {
                Ok(n) => {
                    let start = this.offset;
                    this.offset += n as u64;
                    if !fds.is_empty() {
                        this.inbox.push(FdBatch {
                            start,
                            end: this.offset,
                            fds,
                        });
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Sends all of `bytes` with `fds` riding on the first byte, on a blocking or non-blocking
/// socket (a full non-blocking socket is waited for with `poll`). Frames that carry fds are
/// small, so the wait, if any, is short.
pub fn send_all_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        let attach = if sent == 0 { fds } else { &[] };
        match send_with_fds(socket, &bytes[sent..], attach) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut wait = [rustix::event::PollFd::new(
                    &socket,
                    rustix::event::PollFlags::OUT,
                )];
                match rustix::event::poll(&mut wait, None) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether an fd is close-on-exec.
pub fn is_cloexec(fd: impl AsFd) -> std::io::Result<bool> {
    Ok(rustix::io::fcntl_getfd(fd)?.contains(rustix::io::FdFlags::CLOEXEC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .expect("socketpair")
    }

    #[test]
    fn fds_arrive_with_their_bytes_and_are_close_on_exec() {
        let (a, b) = pair();
        let (read_end, write_end) = rustix::pipe::pipe().expect("pipe");
        let sent = send_with_fds(a.as_fd(), b"3:abc,", &[read_end.as_fd(), write_end.as_fd()])
            .expect("send");
        assert_eq!(sent, 6);
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        let n = recv_with_fds(b.as_fd(), &mut buf, &mut fds).expect("recv");
        assert_eq!(&buf[..n], b"3:abc,");
        assert_eq!(fds.len(), 2);
        assert!(fds.iter().all(|fd| is_cloexec(fd).expect("fcntl")));
        // The received write end works: bytes written to it come out of the original read end.
        rustix::io::write(&fds[1], b"x").expect("write");
        let mut one = [0u8; 1];
        rustix::io::read(&read_end, &mut one).expect("read");
        assert_eq!(&one, b"x");
    }

    #[test]
    fn too_many_fds_are_a_truncation_error() {
        let (a, b) = pair();
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..6)
            .map(|_| rustix::pipe::pipe().expect("pipe"))
            .collect();
        let many: Vec<BorrowedFd<'_>> = pipes
            .iter()
            .flat_map(|(r, w)| [r.as_fd(), w.as_fd()])
            .collect();
        // Sending more than one message may carry is refused before anything is sent...
        assert!(send_with_fds(a.as_fd(), b"x", &many).is_err());
        // ...and a peer that sends them anyway (here: with a raw, larger buffer) is caught.
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(12))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&many)));
        sendmsg(&a, &[IoSlice::new(b"x")], &mut control, SendFlags::empty()).expect("send");
        let mut buf = [0u8; 8];
        let mut fds = Vec::new();
        let result = recv_with_fds(b.as_fd(), &mut buf, &mut fds);
        assert!(matches!(result, Err(FdPassError::Truncated)), "{result:?}");
    }

    #[test]
    fn plain_bytes_carry_no_fds() {
        let (a, b) = pair();
        rustix::io::write(&a, b"hello").expect("write");
        let mut buf = [0u8; 8];
        let mut fds = Vec::new();
        let n = recv_with_fds(b.as_fd(), &mut buf, &mut fds).expect("recv");
        assert_eq!(&buf[..n], b"hello");
        assert!(fds.is_empty());
        drop(a);
        assert_eq!(
            recv_with_fds(b.as_fd(), &mut buf, &mut fds).expect("eof"),
            0
        );
    }
}
