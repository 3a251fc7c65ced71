//! Accept order, for a dialect whose client sends each request on a connection of its own, one
//! after another (TsockM's: connect, write, close, then the next): one sender's requests must
//! take effect in the order their connections were accepted, although the daemon reads its
//! connections concurrently and their tasks may run in any order.
//!
//! Each connection of such a listener takes a [`Turn`] when it is accepted. Before its request
//! takes effect, it waits until no earlier connection still holding a turn has bytes it has
//! not read yet. A client that writes and closes one connection before it opens the next has
//! every byte of the earlier one in the kernel by the time the later one is accepted, so the
//! earlier request goes first. A connection whose bytes are all read and that waits for more
//! (a slow or silent peer, a login whose connection stays open) is not waited for: no peer can
//! hold up another's requests for longer than it takes to read what it already sent.
//! "Bytes not read yet" is asked of the kernel without taking them (`recv` with `MSG_PEEK`),
//! on a duplicate of the connection's socket held while the turn is.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustix::net::RecvFlags;
use tokio::sync::Notify;

/// How often a waiting turn looks again at connections that are still being read (their
/// progress wakes no one).
const RECHECK: Duration = Duration::from_millis(2);

/// One listener's connections in accept order.
#[derive(Default)]
pub(crate) struct Sequencer {
    /// The connections holding a turn, by accept number: a duplicate of each one's socket.
    pending: Mutex<BTreeMap<u64, OwnedFd>>,
    next: Mutex<u64>,
    /// Woken when a turn is given back.
    released: Notify,
}

/// A connection's place in its listener's accept order, given back when dropped (or
/// [`Turn::release`]d).
pub(crate) struct Turn {
    sequencer: Arc<Sequencer>,
    number: u64,
}

impl Sequencer {
    /// The next turn, for a connection just accepted on `socket` (`None` when the socket
    /// cannot be duplicated: the connection then keeps no order, and the log says so).
    pub fn take(self: &Arc<Self>, socket: impl AsFd) -> Option<Turn> {
        let copy = match socket.as_fd().try_clone_to_owned() {
            Ok(copy) => copy,
            Err(e) => {
                tracing::warn!("cannot keep a connection in accept order: {e}");
                return None;
            }
        };
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let number = *next;
        *next += 1;
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(number, copy);
        Some(Turn {
            sequencer: Arc::clone(self),
            number,
        })
    }

    /// Whether a connection accepted before `number` still has bytes to read.
    fn earlier_unread(&self, number: u64) -> bool {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending
            .range(..number)
            .any(|(_, socket)| has_unread(socket))
    }
}

/// Whether the kernel holds bytes (or the end of the stream) that the socket's reader has not
/// taken yet.
fn has_unread(socket: &OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    // Bytes, or the end of the stream, still to be read; an error is nothing (now, or from a
    // socket that failed, ever).
    rustix::net::recv(socket, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT).is_ok()
}

impl Turn {
    /// Waits until the connections accepted before this one have read what they hold.
    pub async fn wait(&self) {
        loop {
            let released = self.sequencer.released.notified();
            tokio::pin!(released);
            // Registered before the look, so a turn given back in between is not missed.
            released.as_mut().enable();
            if !self.sequencer.earlier_unread(self.number) {
                return;
            }
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.sequencer
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.number);
        self.sequencer.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn a_turn_waits_for_an_earlier_connection_with_unread_bytes_only() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let sequencer = Arc::new(Sequencer::default());
        let mut first_client = TcpStream::connect(address).expect("connect");
        let (first, _) = listener.accept().expect("accept");
        let _second_client = TcpStream::connect(address).expect("connect");
        let (second, _) = listener.accept().expect("accept");
        let first_turn = sequencer.take(&first).expect("turn");
        let second_turn = sequencer.take(&second).expect("turn");
        // The first connection holds nothing: the second need not wait.
        second_turn.wait().await;
        // Now it holds a request nobody read: the second waits until the first's turn ends.
        first_client.write_all(b"REQ::MSG").expect("write");
        let waiting = tokio::spawn(async move {
            second_turn.wait().await;
            second_turn
        });
        let waited = tokio::time::timeout(Duration::from_millis(50), async {
            while !waiting.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(waited.is_err(), "the second turn did not wait");
        drop(first_turn);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the second turn comes once the first is given back")
            .expect("task");
    }
}
