//! Who is at the other end of a loopback TCP connection: the kernel knows which user owns the
//! client's socket (as `ss -e` shows it), and tells through `sock_diag` (a netlink socket),
//! asked for exactly that socket by its four-tuple. A peer of a dialect without authentication
//! of its own is then the principal `anonymous:DIALECT:UID`: one user's loopback peers neither
//! see nor touch another user's jobs, files and hub places.

use std::io;
use std::net::{IpAddr, SocketAddr};

use rustix::net::netlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};

/// `SOCK_DIAG_BY_FAMILY`: the request type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLMSG_ERROR`: an answer that is an error.
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 1;
/// A netlink message header's length.
const HEADER: usize = 16;
/// `inet_diag_msg`'s `idiag_uid`, after the header.
const UID_AT: usize = HEADER + 4 + 48 + 12;

/// The uid owning the socket at `client` connected to `server` (both on this machine).
pub fn loopback_uid(client: SocketAddr, server: SocketAddr) -> io::Result<u32> {
    let socket = rustix::net::socket(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        Some(netlink::SOCK_DIAG),
    )?;
    rustix::net::send(&socket, &request(client, server), SendFlags::empty())?;
    let mut answer = [0u8; 512];
    let (n, _) = rustix::net::recv(&socket, &mut answer, RecvFlags::empty())?;
    parse(&answer[..n])
}

/// The request for the one socket `client` -> `server`: a netlink header, then an
/// `inet_diag_req_v2` naming its four-tuple (ports and addresses in network order), in every
/// state, with no cookie.
fn request(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let family = match client.ip() {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    } as u8;
    let address = |addr: SocketAddr| -> [u8; 16] {
        let mut bytes = [0u8; 16];
        match addr.ip() {
            IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes.copy_from_slice(&v6.octets()),
        }
        bytes
    };
    let mut body = vec![family, libc::IPPROTO_TCP as u8, 0, 0];
    body.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    body.extend_from_slice(&client.port().to_be_bytes());
    body.extend_from_slice(&server.port().to_be_bytes());
    body.extend_from_slice(&address(client));
    body.extend_from_slice(&address(server));
    body.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    body.extend_from_slice(&u32::MAX.to_ne_bytes()); // INET_DIAG_NOCOOKIE
    body.extend_from_slice(&u32::MAX.to_ne_bytes());
    let mut message = Vec::with_capacity(HEADER + body.len());
    message.extend_from_slice(&((HEADER + body.len()) as u32).to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    message.extend_from_slice(&body);
    message
}

/// The uid in the kernel's answer, or why there is none.
fn parse(answer: &[u8]) -> io::Result<u32> {
    let word = |at: usize| -> Option<u32> {
        let bytes = answer.get(at..at + 4)?;
        Some(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let kind = answer
        .get(4..6)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .ok_or_else(|| io::Error::other("a short sock_diag answer"))?;
    if kind == NLMSG_ERROR {
        let errno = word(HEADER).map_or(0, |e| -(e as i32));
        return Err(match errno {
            0 => io::Error::other("sock_diag found no such socket"),
            errno => io::Error::from_raw_os_error(errno),
        });
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return Err(io::Error::other(format!(
            "a sock_diag answer of type {kind}"
        )));
    }
    word(UID_AT).ok_or_else(|| io::Error::other("a short sock_diag answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_names_the_user_at_the_other_end() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, peer) = listener.accept().expect("accept");
        let uid = loopback_uid(peer, accepted.local_addr().expect("addr")).expect("sock_diag");
        assert_eq!(uid, rustix::process::getuid().as_raw());
        drop(client);
        // A socket that is not there is an error, not a uid.
        let nobody: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(loopback_uid(nobody, nobody).is_err());
    }
}
