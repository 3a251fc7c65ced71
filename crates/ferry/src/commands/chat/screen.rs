//! The chat's screen: what arrives is printed above the line being typed, which is redrawn
//! after it, so typing is never garbled by arriving messages. On a terminal the input is read
//! in raw mode and edited here (characters, backspace, Ctrl-U; Enter sends; Ctrl-C or Ctrl-D
//! on an empty line leaves); from a pipe, lines are read as they are and output is plain.

use std::io::{BufRead, Read, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// What the input side says.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// A line typed (or read from the pipe).
    Line(String),
    /// The input ended (end of the pipe, Ctrl-D, Ctrl-C).
    End,
}

/// The prompt shown before the line being typed.
const PROMPT: &str = "> ";

/// The shared screen: the line being typed, and whether this is a terminal.
#[derive(Clone)]
pub struct Screen {
    state: Arc<Mutex<State>>,
}

struct State {
    terminal: bool,
    line: String,
}

impl Screen {
    /// A screen on stdout; `terminal` when stdin and stdout are terminals.
    pub fn new(terminal: bool) -> Screen {
        Screen {
            state: Arc::new(Mutex::new(State {
                terminal,
                line: String::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Prints `text` (one or more lines) above the line being typed.
    pub fn print(&self, text: &str) {
        let state = self.lock();
        let mut out = std::io::stdout().lock();
        // A closed stdout leaves no one to tell.
        // The terminal's output processing stays on (see RawMode): '\n' returns the carriage.
        let _ = if state.terminal {
            write!(out, "\r\x1b[K{text}\n{PROMPT}{}", state.line)
        } else {
            writeln!(out, "{text}")
        };
        let _ = out.flush();
    }

    /// Redraws the line being typed.
    fn redraw(state: &State) {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[K{PROMPT}{}", state.line);
        let _ = out.flush();
    }

    /// Starts reading stdin in a thread of its own; its lines come on the channel. On a
    /// terminal, the returned guard puts the terminal back as it was when dropped.
    pub fn read_input(&self) -> (mpsc::Receiver<Input>, Option<RawMode>) {
        let (tx, rx) = mpsc::channel(64);
        let raw = if self.lock().terminal {
            RawMode::enter()
        } else {
            None
        };
        // A terminal that cannot be put in raw mode is read line by line, printed plainly.
        let edit = raw.is_some();
        self.lock().terminal = edit;
        let screen = self.clone();
        let started = std::thread::Builder::new()
            .name("chat-input".into())
            .spawn(move || {
                if edit {
                    screen.edit_lines(&tx);
                } else {
                    for line in std::io::stdin().lock().lines() {
                        let Ok(line) = line else { break };
                        if tx.blocking_send(Input::Line(line)).is_err() {
                            return;
                        }
                    }
                }
                let _ = tx.blocking_send(Input::End);
            });
        if let Err(e) = started {
            // No input thread: the channel ends at once, as an empty input would.
            self.print(&format!("* cannot read input: {e}"));
        }
        (rx, raw)
    }

    /// Reads keys from a raw terminal and edits the line until the input ends.
    fn edit_lines(&self, tx: &mpsc::Sender<Input>) {
        Screen::redraw(&self.lock());
        let mut stdin = std::io::stdin().lock();
        let mut pending: Vec<u8> = Vec::new();
        let mut escape = false;
        let mut byte = [0u8; 1];
        while let Ok(1) = stdin.read(&mut byte) {
            let b = byte[0];
            let mut state = self.lock();
            if escape {
                // Skip an escape sequence (arrows and such) up to its final byte.
                if b.is_ascii_alphabetic() || b == b'~' {
                    escape = false;
                }
                continue;
            }
            match b {
                b'\r' | b'\n' => {
                    let line = std::mem::take(&mut state.line);
                    let mut out = std::io::stdout().lock();
                    let _ = write!(out, "\r\x1b[K{PROMPT}{line}\n");
                    let _ = out.flush();
                    drop(out);
                    Screen::redraw(&state);
                    drop(state);
                    if tx.blocking_send(Input::Line(line)).is_err() {
                        return;
                    }
                    continue;
                }
                0x03 => return,
                0x04 if state.line.is_empty() => return,
                0x7f | 0x08 => {
                    state.line.pop();
                }
                0x15 => state.line.clear(),
                0x1b => escape = true,
                b if b >= 0x20 || b == b'\t' => {
                    pending.push(b);
                    match std::str::from_utf8(&pending) {
                        Ok(text) => {
                            state.line.push_str(text);
                            pending.clear();
                        }
                        // Wait for the rest of a character; give up on junk.
                        Err(e) if e.error_len().is_none() && pending.len() < 4 => {}
                        Err(_) => pending.clear(),
                    }
                }
                _ => {}
            }
            Screen::redraw(&state);
        }
    }
}

/// A terminal in raw mode; dropping it restores the settings it found.
pub struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode (no echo, no line editing, no signals from keys).
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        // Output processing stays, so that '\n' still returns the carriage of plain prints.
        raw.output_modes = saved.output_modes;
        rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw)
            .ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = rustix::termios::tcsetattr(
            stdin.as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
        let _ = writeln!(std::io::stdout());
    }
}
