//! Walks a connection's bytes message after message, as a dialect's reader takes them: the
//! kept corpora hold whole recorded exchanges (`fuzz/seed`), so a target checks every message
//! of one, not only the first.

/// The most messages checked of one input (keeps each run short).
const MOST_MESSAGES: usize = 256;

/// Calls `one` on `data`, then on what follows each message it decodes (`one` returns the
/// bytes that message took), until it decodes none.
pub fn walk(data: &[u8], mut one: impl FnMut(&[u8]) -> Option<usize>) {
    let mut rest = data;
    for _ in 0..MOST_MESSAGES {
        match one(rest) {
            Some(used) if used > 0 && used <= rest.len() => rest = &rest[used..],
            _ => break,
        }
    }
}
