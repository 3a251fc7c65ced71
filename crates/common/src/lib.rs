//! What ferry's clients and its daemon must agree on, in one place both reach without the
//! client linking the daemon's engine: signal names and numbers ([`signals`]), the rules for
//! file names sent over the wire ([`names`]), the checksum that ends a file transfer
//! ([`checksum`]), the status a shell reports for a job ([`shell_status`]) and the text of a
//! session's state ([`SessionState`]). Pure functions and data: no I/O.

pub mod checksum;
pub mod names;
pub mod signals;
pub mod text;

/// The status a shell would report for a job: its exit code, 128+N if signal N killed it,
/// 127 if it never ran (it could not be started, or was cancelled), 1 if nothing is known.
pub fn shell_status(code: Option<i32>, signal: Option<i32>, never_ran: bool) -> i32 {
    match (code, signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) if never_ran => 127,
        (None, None) => 1,
    }
}

/// A session's state as its last command left it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionState {
    /// Working directory.
    pub cwd: Vec<u8>,
    /// Exit status of the last command.
    pub status: i32,
    /// `declare -p` lines of the variables that differ from a fresh shell's.
    pub changed: Vec<Vec<u8>>,
    /// Names of a fresh shell's variables that the session has unset.
    pub unset: Vec<Vec<u8>>,
}

impl SessionState {
    /// The state as lines of text, as `ferry session state` and FANOS `STATE` show it:
    /// `cwd: DIR`, `status: N`, the changed variables' `declare` lines, `unset NAME` lines.
    pub fn render(&self) -> Vec<u8> {
        let mut text = b"cwd: ".to_vec();
        text.extend_from_slice(&self.cwd);
        text.extend_from_slice(format!("\nstatus: {}", self.status).as_bytes());
        for line in &self.changed {
            text.push(b'\n');
            text.extend_from_slice(line);
        }
        for name in &self.unset {
            text.extend_from_slice(b"\nunset ");
            text.extend_from_slice(name);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_status_follows_shell_conventions() {
        assert_eq!(shell_status(Some(3), None, false), 3);
        assert_eq!(shell_status(None, Some(9), false), 137);
        assert_eq!(shell_status(None, None, true), 127);
        assert_eq!(shell_status(None, None, false), 1);
    }

    #[test]
    fn a_state_renders_as_lines() {
        let state = SessionState {
            cwd: b"/tmp".to_vec(),
            status: 2,
            changed: vec![b"declare -- x=\"1\"".to_vec()],
            unset: vec![b"HOME".to_vec()],
        };
        assert_eq!(
            state.render(),
            b"cwd: /tmp\nstatus: 2\ndeclare -- x=\"1\"\nunset HOME".to_vec()
        );
    }
}
