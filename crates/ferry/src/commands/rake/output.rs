//! An action's output on ferry's stdout and stderr: as is when the action runs alone in its
//! set; otherwise line by line, each line prefixed with the action and a tab (as GNU
//! parallel's `--tag` does), so that the lines of actions running together never mix. On a
//! terminal, a progress line shows the running set's actions done, running and waiting; output
//! is written with it hidden.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use ferry_client::Stream;
use indicatif::{ProgressBar, ProgressStyle};

/// The progress line of the set running, on a terminal: its actions done, running and
/// waiting. Output is written with the line hidden, so the two never mix.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    counts: Arc<[AtomicU64; 3]>,
    name: String,
}

/// The progress line in use (output hides it while it writes).
static CURRENT: OnceLock<std::sync::Mutex<Option<ProgressBar>>> = OnceLock::new();

fn current() -> &'static std::sync::Mutex<Option<ProgressBar>> {
    CURRENT.get_or_init(|| std::sync::Mutex::new(None))
}

impl Progress {
    /// The progress of set `name` of `total` actions (hidden unless stderr is a terminal).
    pub fn new(name: &str, total: u64) -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:20}] {pos}/{len}") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        *current().lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        let progress = Progress {
            bar,
            counts: Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(total)]),
            name: name.to_owned(),
        };
        progress.show();
        progress
    }

    fn show(&self) {
        let [done, running, waiting] = [0, 1, 2].map(|i| self.counts[i].load(Ordering::Relaxed));
        self.bar.set_position(done);
        self.bar.set_message(format!(
            "{}: {done} done, {running} running, {waiting} waiting",
            self.name
        ));
    }

    /// An action started.
    pub fn started(&self) {
        self.counts[2].fetch_sub(1, Ordering::Relaxed);
        self.counts[1].fetch_add(1, Ordering::Relaxed);
        self.show();
    }

    /// An action ended.
    pub fn ended(&self) {
        self.counts[1].fetch_sub(1, Ordering::Relaxed);
        self.counts[0].fetch_add(1, Ordering::Relaxed);
        self.show();
    }

    /// The set is over: the line goes.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        *current().lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Prints one action's output.
pub struct Printer {
    /// The prefix of each line (`None`: output as is).
    tag: Option<String>,
    /// The unfinished last line of stdout and of stderr.
    partial: [Vec<u8>; 2],
}

impl Printer {
    /// A printer; `tag` prefixes each line.
    pub fn new(tag: Option<String>) -> Printer {
        Printer {
            tag,
            partial: [Vec::new(), Vec::new()],
        }
    }

    /// Prints a chunk of the action's `stream`.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let slot = usize::from(stream == Stream::Stderr);
        let Some(tag) = &self.tag else {
            emit(stream, data);
            return;
        };
        let partial = &mut self.partial[slot];
        partial.extend_from_slice(data);
        let Some(end) = partial.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let whole: Vec<u8> = partial.drain(..=end).collect();
        let mut out = Vec::with_capacity(whole.len() + 16);
        for line in whole.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(tag.as_bytes());
            out.push(b'\t');
            out.extend_from_slice(line);
        }
        emit(stream, &out);
    }

    /// Prints what is left of unfinished lines.
    pub fn finish(&mut self) {
        for (slot, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            if !self.partial[slot].is_empty() {
                self.write(stream, b"\n");
            }
        }
    }
}

/// Writes bytes to ferry's stdout or stderr at once (a closed one has no reader to tell),
/// with the progress line hidden meanwhile.
fn emit(stream: Stream, bytes: &[u8]) {
    let write = || {
        let _ = match stream {
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Stream::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    };
    let bar = current().lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// Prints a line of ferry's own on stderr, with the progress line hidden meanwhile.
pub fn note(line: &str) {
    emit(Stream::Stderr, format!("{line}\n").as_bytes());
}
