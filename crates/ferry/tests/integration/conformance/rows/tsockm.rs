//! The TsockM row: a login kept for pushes, each request on a connection of its own, as TsockM's client does.

use std::io::Write;

use super::{Requests, Row, TIMED_OUT};
use crate::conformance::{Link, Matrix, Words};

pub struct Tsockm;

/// What a TsockM push connection reads when the daemon ends it.
const GOODBYE: &str = "RES::COMM_END::200::server::server::client::OK";

impl Tsockm {
    /// Logs `name` in; its push connection and its id.
    fn login(m: &Matrix, name: &str) -> (Link, String) {
        let port = m.port("tsockm:tcp");
        let mut link = Link::tcp(port);
        let server = format!("127.0.0.1:{port}");
        link.write_all(format!("REQ::COMM::200::client::client::{server}::{name}").as_bytes())
            .expect("login");
        let answer = link.one_read();
        let id = answer.rsplit("::").next().unwrap_or_default().to_owned();
        assert!(answer.starts_with("RES::COMM::200::"), "{answer}");
        (link, id)
    }
}

impl Link {
    /// One read, as TsockM's client takes one message.
    fn one_read(&mut self) -> String {
        let mut buf = [0u8; 1024];
        let n = std::io::Read::read(self, &mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Row for Tsockm {
    fn form(&self) -> &'static str {
        "tsockm:tcp"
    }

    fn raw(&self, m: &Matrix) -> Link {
        Link::tcp(m.port("tsockm:tcp"))
    }

    fn connect(&self, m: &Matrix) -> Link {
        Tsockm::login(m, "conformance").0
    }

    fn start(&self, _m: &Matrix, _link: &mut Link, _argv: &[String]) -> bool {
        false
    }

    fn output(&self, _m: &Matrix, _argv: &[&str]) -> Option<Vec<u8>> {
        None
    }

    fn kicked(&self) -> Words {
        Words::Says(GOODBYE.as_bytes(), "OK")
    }

    fn going_down(&self) -> Words {
        Words::Says(GOODBYE.as_bytes(), "OK")
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        Some((b"REQ::MSG::2", Words::Says(b"ERR::NONE::400::", TIMED_OUT)))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        // On a connection of its own (a logged-in peer's requests come that way).
        (
            b"REQ::FOO::200::x::client::server::hi".to_vec(),
            Words::Says(b"ERR::NONE::405::", "unknown action"),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        let (_sender_link, sender) = Tsockm::login(m, "sender");
        let (receiver, receiver_id) = Tsockm::login(m, "receiver");
        Box::new(TsockmRequests {
            m,
            sender,
            _sender_link,
            receiver,
            receiver_id,
        })
    }

    fn area(&self) -> Option<String> {
        None
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "job's directory" | "output cap" => "the chat runs no commands".into(),
            "other principal" => "no request lists or touches jobs".into(),
            _ => "-".into(),
        }
    }
}

/// A TsockM member sending `MSG`s on connections of their own, and one receiving them.
struct TsockmRequests<'a> {
    m: &'a Matrix,
    sender: String,
    _sender_link: Link,
    receiver: Link,
    receiver_id: String,
}

impl Requests for TsockmRequests<'_> {
    fn link(&mut self) -> Link {
        Tsockm.raw(self.m)
    }

    fn request(&self) -> Vec<u8> {
        format!(
            "REQ::MSG::200::{}::client::server::split in two",
            self.sender
        )
        .into_bytes()
    }

    fn finish(&self, link: &mut Link) {
        // A TsockM request ends where its connection ends.
        if let Link::Tcp(stream) = link {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    }

    fn answer(&mut self, _link: &mut Link) -> Result<(), String> {
        // The receiver gets it whole, and looks its sender up as TsockM's client does.
        let pushed = self.receiver.one_read();
        if !pushed.starts_with("RES::MSG::200::") || !pushed.ends_with("::split in two") {
            return Err(format!("the receiver read {pushed:?}"));
        }
        let sender = pushed.split("::").nth(3).unwrap_or_default();
        let mut lookup = Tsockm.raw(self.m);
        lookup
            .write_all(
                format!(
                    "REQ::GET_PEER::200::{}::client::server::{sender}",
                    self.receiver_id
                )
                .as_bytes(),
            )
            .map_err(|e| e.to_string())?;
        drop(lookup);
        let name = self.receiver.one_read();
        name.ends_with("::sender")
            .then_some(())
            .ok_or_else(|| format!("the lookup answered {name:?}"))
    }

    fn joins(&self) -> bool {
        false
    }
}
