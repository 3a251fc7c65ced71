//! Passing file descriptors over Unix stream sockets (SCM_RIGHTS): the one module that does it,
//! for the native protocol's `run --fds` and the FANOS dialect alike (issue 4).
//!
//! On a stream socket, fds ride on particular bytes: a plain `read` that consumes those bytes
//! drops the fds silently. So every read of a connection that may carry fds goes through
//! [`recv_with_fds`]: the bytes into the caller's buffer, the fds into the caller's queue.
//! Received fds are close-on-exec (`MSG_CMSG_CLOEXEC`), so they never leak into jobs; a
//! truncated control message (`MSG_CTRUNC`: more fds than room) is an error, since fds were
//! lost.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

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
