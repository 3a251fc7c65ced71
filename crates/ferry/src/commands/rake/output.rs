//! An action's output on ferry's stdout and stderr: as is when the action runs alone in its
//! set; otherwise line by line, each line prefixed with the action and a tab (as GNU
//! parallel's `--tag` does), so that the lines of actions running together never mix.

use std::io::Write;

use ferry_client::Stream;

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

/// Writes bytes to ferry's stdout or stderr at once (a closed one has no reader to tell).
fn emit(stream: Stream, bytes: &[u8]) {
    let _ = match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        }
        Stream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}
