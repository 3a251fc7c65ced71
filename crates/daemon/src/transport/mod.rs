//! The transports a listener serves over, each as far as bytes go: Unix sockets (a private
//! directory, one daemon per socket), TLS (the server's certificate, client certificates),
//! FIFO pairs (C2's), and the recording of what peers send. A connection's halves are boxed
//! here so that everything above reads and writes any of them alike.

pub mod fifo;
pub mod peer_uid;
pub mod record;
pub mod tls;
pub mod unix;

use tokio::io::{AsyncRead, AsyncWrite};

/// The reading half of a connection, whatever its transport.
pub(crate) type BoxRead = Box<dyn AsyncRead + Unpin + Send + Sync>;
/// The writing half of a connection, whatever its transport.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;
