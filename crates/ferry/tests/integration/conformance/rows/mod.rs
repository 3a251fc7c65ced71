//! The matrix's rows: one fixture per form of the listener table, each speaking its dialect as
//! its own clients do (a module per dialect), and what they share.

mod c2;
mod cbsd;
mod fanos;
mod http;
mod native;
mod rake64;
mod tsockm;

use super::{Link, Matrix, Words};

/// What a kicked peer is told, in every dialect that has words for it.
pub const KICKED: &str = "disconnected by the daemon's owner (ferry peers kick); your jobs go on";
/// What a peer is told when the daemon goes down.
pub const GOING_DOWN: &str = "the ferry daemon is going down";
/// What a peer past the first-request limit is told.
pub const TIMED_OUT: &str = "no whole request within 1500 ms";

/// One form of the listener table, as its peers speak it.
pub trait Row: Sync {
    /// `DIALECT:TRANSPORT`, as the listener table lists it.
    fn form(&self) -> &'static str;

    /// The dialect.
    fn dialect(&self) -> &'static str {
        self.form().split(':').next().unwrap_or_default()
    }

    /// A new connection, before any handshake.
    fn raw(&self, m: &Matrix) -> Link;

    /// A connection ready for requests: its handshake done where the dialect has one (a
    /// TsockM peer logged in, on its push connection).
    fn connect(&self, m: &Matrix) -> Link {
        self.raw(m)
    }

    /// The daemon ends a connection by closing it (a FIFO pair is opened anew instead).
    fn closes(&self) -> bool {
        true
    }

    /// Sends a request that starts `argv` on `link` (its answer not read); `false` when the
    /// dialect runs no commands.
    fn start(&self, m: &Matrix, link: &mut Link, argv: &[String]) -> bool;

    /// Runs `argv` on a connection of its own; its stdout (`None`: no commands).
    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>>;

    /// What a kicked peer reads until the close.
    fn kicked(&self) -> Words;

    /// What an idle peer reads when the daemon goes down.
    fn going_down(&self) -> Words;

    /// The first bytes of a first request never finished, and the words at the limit;
    /// `None` where the transport has no first-request limit.
    fn slow(&self) -> Option<(&'static [u8], Words)>;

    /// A malformed request, its words, and whether the connection then closes.
    fn malformed(&self) -> (Vec<u8>, Words, bool);

    /// Requests for the split test.
    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a>;

    /// Where this row's jobs run, below the file area (a prefix); `None`: no commands.
    fn area(&self) -> Option<String>;

    /// Another principal's jobs, neither listed nor touched: checked (`Some`), or `None`
    /// where it does not apply.
    fn other_principal(&self, _m: &Matrix) -> Option<Result<String, String>> {
        None
    }

    /// The answer to a command holds its output (which is then capped).
    fn answers_with_output(&self) -> bool {
        false
    }

    /// Why a guarantee does not apply to this row.
    fn not_applicable(&self, guarantee: &str) -> String;
}

/// One row's requests for the split test.
pub trait Requests {
    /// A connection to send a request on.
    fn link(&mut self) -> Link;
    /// The request.
    fn request(&self) -> Vec<u8>;
    /// Ends a request's sending (a TsockM request ends where its connection ends).
    fn finish(&self, _link: &mut Link) {}
    /// Two requests in one write (by default the request twice).
    fn joined(&self) -> Vec<u8> {
        let mut both = self.request();
        both.extend(self.request());
        both
    }
    /// Reads and checks one request's answer.
    fn answer(&mut self, link: &mut Link) -> Result<(), String>;
    /// Two requests in one write are two (`false`: one request per connection).
    fn joins(&self) -> bool {
        true
    }
}

/// Every fixture.
pub fn all() -> Vec<Box<dyn Row>> {
    vec![
        Box::new(native::Native("ferry:unix")),
        Box::new(native::Native("ferry:tls")),
        Box::new(native::Native("ferry:tcp")),
        Box::new(fanos::Fanos),
        Box::new(cbsd::Cbsd),
        Box::new(cbsd::Cbsdng),
        Box::new(rake64::Rake64),
        Box::new(tsockm::Tsockm),
        Box::new(c2::C2("c2:fifo")),
        Box::new(c2::C2("c2:tcp")),
        Box::new(http::Http("http:tcp")),
        Box::new(http::Http("http:tls")),
    ]
}

pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(300).collect()
}

/// Commands that run together on one connection, whose frames interleave: each answer is
/// the next command accepted, once it has ended.
#[derive(Default)]
pub struct Interleaved {
    /// Commands accepted, in order, with their stdout and whether they ended.
    pub accepted: std::collections::VecDeque<(u64, Vec<u8>, bool)>,
}

impl Interleaved {
    pub fn accepted(&mut self, id: u64) {
        self.accepted.push_back((id, Vec::new(), false));
    }

    pub fn stdout(&mut self, id: u64, data: &[u8]) {
        if let Some((_, out, _)) = self.accepted.iter_mut().find(|(of, ..)| *of == id) {
            out.extend_from_slice(data);
        }
    }

    pub fn ended(&mut self, id: u64) {
        if let Some((_, _, ended)) = self.accepted.iter_mut().find(|(of, ..)| *of == id) {
            *ended = true;
        }
    }

    /// The stdout of the first command accepted, once it has ended.
    pub fn next_done(&mut self) -> Option<Vec<u8>> {
        if self.accepted.front().is_some_and(|(_, _, ended)| *ended) {
            return self.accepted.pop_front().map(|(_, out, _)| out);
        }
        None
    }
}

/// An answer that must be `split\n`.
pub fn split_answer(out: &[u8]) -> Result<(), String> {
    (out == b"split\n")
        .then_some(())
        .ok_or_else(|| format!("stdout {:?}", lossy(out)))
}
