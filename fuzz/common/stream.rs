//! Walks a connection's bytes message after message, as a dialect's reader takes them: the
//! kept corpora hold whole recorded exchanges (`fuzz/seed`), so a target checks every message
//! of one, not only the first. And checks that a connection decoder takes a stream the same
//! whole and in pieces.

// Each target uses what it needs of this module.
#![allow(dead_code)]

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

/// Decodes `data` (after its first byte) whole and in pieces whose sizes its first byte picks,
/// as a connection's reader takes the bytes that come: both agree (the same messages and the
/// same bytes left over, or a refusal both ways), and no decoder takes more than it holds
/// (`decode_chunks` checks that as it goes).
pub fn split_agrees<D>(make: impl Fn() -> D, data: &[u8])
where
    D: ferry_wire::Decoder,
    D::Message: PartialEq + std::fmt::Debug,
{
    split_agrees_as(make, data, |messages| messages);
}

/// As [`split_agrees`], comparing the messages as `canonical` makes them (a decoder that hands
/// out a long payload in the pieces that came, as rake64's file bytes, joins them).
pub fn split_agrees_as<D>(
    make: impl Fn() -> D,
    data: &[u8],
    canonical: impl Fn(Vec<D::Message>) -> Vec<D::Message>,
) where
    D: ferry_wire::Decoder,
    D::Message: PartialEq + std::fmt::Debug,
{
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    let step = 1 + usize::from(seed % 13);
    let pieces: Vec<&[u8]> = bytes.chunks(step).collect();
    let whole = ferry_wire::decode_chunks(&mut make(), &[bytes]);
    let split = ferry_wire::decode_chunks(&mut make(), &pieces);
    match (whole, split) {
        (Ok(whole), Ok(split)) => {
            assert_eq!(canonical(whole.messages), canonical(split.messages));
            assert_eq!(whole.left, split.left);
        }
        (Err(_), Err(_)) => {}
        (whole, split) => panic!("whole: {}, split: {}", whole.is_ok(), split.is_ok()),
    }
}
