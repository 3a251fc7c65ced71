//! This terminal for a job on a pseudo-terminal of a remote daemon (`ferry run -t`): its
//! size, raw mode while the job runs (restored on every way out: the guard's drop, and
//! [`restore`] before an early exit), and the resizes that follow.

use std::sync::Mutex;

use rustix::termios::{tcgetattr, tcgetwinsize, tcsetattr, OptionalActions, Termios};

/// The terminal's settings before raw mode, while it is in raw mode.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// The size (rows, columns) of the terminal on stdin, or of stdout's; 24 by 80 when neither
/// is one.
pub fn size() -> (u16, u16) {
    for fd in [rustix::stdio::stdin(), rustix::stdio::stdout()] {
        if let Ok(size) = tcgetwinsize(fd) {
            if size.ws_row > 0 && size.ws_col > 0 {
                return (size.ws_row, size.ws_col);
            }
        }
    }
    (24, 80)
}

/// Raw mode on stdin's terminal for as long as it lives.
pub struct RawMode(());

impl RawMode {
    /// Puts stdin's terminal in raw mode; `None` when stdin is not a terminal.
    pub fn enter() -> Option<RawMode> {
        let stdin = rustix::stdio::stdin();
        let saved = tcgetattr(stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(stdin, OptionalActions::Now, &raw).ok()?;
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        Some(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Gives the terminal back its settings, if raw mode changed them.
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(saved) = saved {
        let _ = tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, &saved);
    }
}
