//! The guarantees of the connection layer, each checked on one row of the matrix (some after
//! preparing every row at once).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::rows::{lossy, Row};
use super::{Link, Matrix};
use crate::helper::poll_until;

/// The kick: the connection closed within a second, the peer told in its words, gone from
/// `ferry peers`, its job going on.
pub fn kick(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let mut link = row.connect(m);
    let marker = m.path(&format!("kicked-{}", row.form().replace(':', "-")));
    let job = row.start(m, &mut link, &m.job(&marker));
    let id = m.peer_id(row.dialect(), &link.address());
    let out = m.daemon.run(&["peers", "kick", &id]);
    if !out.status.success() {
        return Err(format!("ferry peers kick: {out:?}"));
    }
    let said = if row.closes() {
        link.until_closed(Duration::from_secs(1)).map_err(|read| {
            format!(
                "still open a second after the kick (read {:?})",
                lossy(&read)
            )
        })?
    } else {
        Vec::new()
    };
    let words = row.kicked().check(&said)?;
    if poll_until(Duration::from_secs(5), || (!m.listed(&id)).then_some(())).is_none() {
        return Err(format!("{id} is still listed by ferry peers"));
    }
    let mut found = format!("{words}, closed, unlisted");
    if job {
        if poll_until(Duration::from_secs(10), || marker.exists().then_some(())).is_none() {
            return Err("its job did not go on".into());
        }
        found.push_str(", its job went on");
    }
    if !row.closes() {
        // The pair is opened anew: the next client is served.
        let again = row.output(m, &["echo", "again"]);
        if again.as_deref() != Some(b"again\n") {
            return Err(format!("the pair served {again:?} after the kick"));
        }
        found.push_str(", the pair serves the next client");
    }
    Ok(Some(found))
}

/// Before the going-down notice: an idle peer of every row, then the daemon stopped once.
pub fn connect_all_then_shut_down(m: &Matrix, rows: &[&dyn Row]) {
    for row in rows {
        let connected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let link = row.connect(m);
            m.peer_id(row.dialect(), &link.address());
            link
        }));
        if let Ok(link) = connected {
            m.waiting(row.form(), link);
        }
    }
    let out = m.daemon.run(&["shutdown"]);
    assert!(out.status.success(), "ferry shutdown: {out:?}");
}

/// The going-down notice, to an idle peer of every row at once.
pub fn going_down(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let mut link = m
        .waited(row.form())
        .ok_or("could not connect before the shutdown")?;
    let said = link
        .until_closed(Duration::from_secs(10))
        .map_err(|read| format!("still open after the shutdown (read {:?})", lossy(&read)))?;
    row.going_down().check(&said).map(Some)
}

/// Before the first-request limit: a peer of every row sending its first request a byte a
/// second (a peer's own timing: each byte comes before any read time limit would fire, the
/// request is never whole), the owner served meanwhile. On a FIFO pair (no first-request
/// limit: the daemon opened it itself, before any client) the bytes start a frame that stays
/// partial.
pub fn send_slowly(m: &Matrix, rows: &[&dyn Row]) {
    let mut slow: Vec<(&'static str, Link, &'static [u8])> = rows
        .iter()
        .map(|row| {
            let bytes = row.slow().map_or(&[0x20u8, 0x00][..], |(bytes, _)| bytes);
            (row.form(), row.raw(m), bytes)
        })
        .collect();
    for i in 0..2 {
        for (_, link, bytes) in &mut slow {
            link.send_taken(&bytes[i..=i]);
        }
        let served = m.daemon.run(&["run", "--", "true"]);
        assert!(
            served.status.success(),
            "the owner was not served: {served:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    for (form, link, _) in slow {
        m.waiting(form, link);
    }
}

/// A peer sending a byte a second is closed at the first-request limit, in its dialect's
/// words (see [`send_slowly`]).
pub fn first_request_limit(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let mut link = m.waited(row.form()).ok_or("could not connect")?;
    let Some((_, words)) = row.slow() else {
        return fifo_partial_frame(m, row);
    };
    let said = link
        .until_closed(Duration::from_secs(5))
        .map_err(|read| format!("still open past the limit (read {:?})", lossy(&read)))?;
    words
        .check(&said)
        .map(|words| Some(format!("{words}, closed")))
}

/// A frame left partial on a FIFO pair is given up after its pause, and the next request is
/// served.
fn fifo_partial_frame(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    if row.closes() {
        return Ok(None);
    }
    let given_up = poll_until(Duration::from_secs(10), || {
        m.daemon
            .log()
            .contains("dropped a partial request of 2 bytes")
            .then_some(())
    });
    if given_up.is_none() {
        return Err("the partial frame was not given up".into());
    }
    match row.output(m, &["echo", "next"]) {
        Some(out) if out == b"next\n" => Ok(Some(
            "a partial frame given up at its pause; the next request served".into(),
        )),
        other => Err(format!("the next request got {other:?}")),
    }
}

/// A request split at every byte boundary is one request; two in one write are two.
pub fn split_and_joined(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let mut requests = row.requests(m);
    let request = requests.request();
    for cut in 1..request.len() {
        let mut link = requests.link();
        link.send_taken(&request[..cut]);
        link.write_all(&request[cut..]).map_err(|e| e.to_string())?;
        link.flush().map_err(|e| e.to_string())?;
        requests.finish(&mut link);
        requests
            .answer(&mut link)
            .map_err(|why| format!("cut at {cut}: {why}"))?;
    }
    if !requests.joins() {
        return Ok(Some(format!(
            "split at all {} boundaries: one request (one request per connection)",
            request.len() - 1
        )));
    }
    let mut link = requests.link();
    link.write_all(&requests.joined())
        .map_err(|e| e.to_string())?;
    for n in 0..2 {
        requests
            .answer(&mut link)
            .map_err(|why| format!("two in one write, answer {n}: {why}"))?;
    }
    Ok(Some(format!(
        "split at all {} boundaries: one request; two in one write: two",
        request.len() - 1
    )))
}

/// A malformed request is answered in the dialect's words; the daemon serves on.
pub fn malformed(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let (bytes, words, closes) = row.malformed();
    let mut requests = row.requests(m);
    let mut link = requests.link();
    link.write_all(&bytes).map_err(|e| e.to_string())?;
    requests.finish(&mut link);
    let said = if closes {
        link.until_closed(Duration::from_secs(5))
            .map_err(|read| format!("still open (read {:?})", lossy(&read)))?
    } else {
        let mut said = Vec::new();
        poll_until(Duration::from_secs(5), || {
            said.extend(
                link.until_closed(Duration::from_millis(200))
                    .unwrap_or_else(|r| r),
            );
            (!said.is_empty()).then_some(())
        });
        said
    };
    let found = words.check(&said)?;
    m.daemon.assert_serving();
    // And another peer of the same row is served.
    let mut link = requests.link();
    link.write_all(&requests.request())
        .map_err(|e| e.to_string())?;
    requests.finish(&mut link);
    requests
        .answer(&mut link)
        .map_err(|why| format!("the next peer: {why}"))?;
    Ok(Some(format!(
        "{found}{}; others served",
        if closes { ", closed" } else { "" }
    )))
}

/// A job runs in its principal's file area, never in the daemon's working directory; an
/// anonymous loopback peer's is its uid's own.
pub fn job_directory(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    let Some(area) = row.area() else {
        return Ok(None);
    };
    let Some(out) = row.output(m, &["pwd"]) else {
        return Ok(None);
    };
    let dir = PathBuf::from(String::from_utf8_lossy(&out).trim_end());
    let expected = m.files().join(area);
    if dir.starts_with(&m.cwd) || !dir.starts_with(&expected) {
        return Err(format!(
            "ran in {}, not in {} (the daemon's: {})",
            dir.display(),
            expected.display(),
            m.cwd.display()
        ));
    }
    let shown = dir
        .strip_prefix(m.files())
        .map(|d| format!("files/{}", d.display()))
        .unwrap_or_default();
    Ok(Some(format!("ran in {shown}")))
}

/// Another principal's jobs are neither listed nor touched.
pub fn other_principal(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    row.other_principal(m).transpose()
}

/// An answer's output past the dialect's cap is cut with a note.
pub fn output_cap(m: &Matrix, row: &dyn Row) -> Result<Option<String>, String> {
    if !row.answers_with_output() {
        return Ok(None);
    }
    const CAP: usize = 16 * 1024 * 1024;
    let over = CAP + 1000;
    let out = row
        .output(m, &["head", "-c", &over.to_string(), "/dev/zero"])
        .ok_or("no output")?;
    let (kept, note) = out.split_at(CAP.min(out.len()));
    if kept.len() != CAP || kept.iter().any(|b| *b != 0) {
        return Err(format!("kept {} bytes of output, not {CAP}", kept.len()));
    }
    let note = String::from_utf8_lossy(note);
    if !note.contains("1000 bytes more were written") || !note.contains("ferry log") {
        return Err(format!("no note of the rest: {note:?}"));
    }
    Ok(Some(
        "16 MiB kept, then a note of the 1000 bytes more".into(),
    ))
}
