//! A loopback TCP relay whose connections a test can cut, as a network failure would: both
//! ends closed at once, while it goes on taking new connections.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The relay: connections to `port` are relayed to its target.
pub struct Relay {
    /// Where it listens, on 127.0.0.1.
    pub port: u16,
    /// Both ends of every connection relayed now.
    live: Arc<Mutex<Vec<TcpStream>>>,
    /// While set, a new connection is closed at once (the network is still down).
    refusing: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
}

impl Relay {
    /// A relay to `target`.
    pub fn to(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let refusing = Arc::new(AtomicBool::new(false));
        let (held, stop, refuse) = (
            Arc::clone(&live),
            Arc::clone(&stopped),
            Arc::clone(&refusing),
        );
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if refuse.load(Ordering::SeqCst) {
                    continue;
                }
                let (Ok(near), Ok(far)) = (incoming, TcpStream::connect(target)) else {
                    continue;
                };
                let ends = [&near, &far].map(|s| s.try_clone().expect("clone a socket"));
                held.lock().expect("lock").extend(ends);
                pipe(&near, &far);
                pipe(&far, &near);
            }
        });
        Relay {
            port,
            live,
            refusing,
            stopped,
        }
    }

    /// Cuts every connection relayed now: both of its ends are shut down.
    pub fn cut(&self) {
        for stream in self.live.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// From now on closes new connections at once (`true`), or relays them again.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies what `from` reads to `to` until either ends, then shuts `to` down for writing.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone a socket"),
        to.try_clone().expect("clone a socket"),
    );
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}
