//! Signal names and the process-wide signal state that jobs inherit.

/// Signal names (without `SIG`) and their Linux numbers.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("SYS", libc::SIGSYS),
];

/// Parses a signal given as a number (`9`) or a name (`KILL`, `SIGKILL`, `kill`).
pub fn parse_signal(text: &str) -> Option<i32> {
    if let Ok(number) = text.parse::<i32>() {
        return SIGNALS.iter().any(|&(_, n)| n == number).then_some(number);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|&&(n, _)| n == name)
        .map(|&(_, number)| number)
}

/// The name of a signal number (`TERM`), if it has one.
pub fn signal_name(number: i32) -> Option<&'static str> {
    SIGNALS
        .iter()
        .find(|&&(_, n)| n == number)
        .map(|&(name, _)| name)
}

/// Resets every signal this process ignores to its default action and unblocks every signal.
///
/// Jobs inherit ignored dispositions and the signal mask across exec (a daemon started from a
/// non-interactive shell with `&` ignores SIGINT and SIGQUIT, for instance), and then `trap` and
/// Ctrl-C cannot work in them. Resetting the daemon's own state once, before any thread starts,
/// lets jobs be spawned without a `pre_exec` hook (so the fast `posix_spawn` path stays usable).
/// SIGPIPE is left alone: the Rust runtime ignores it and resets it in every child it spawns.
pub fn reset_inherited_signal_state() {
    for &(_, signal) in SIGNALS {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP || signal == libc::SIGPIPE {
            continue;
        }
        // SAFETY: sigaction with a null new action only reads the current disposition into
        // `current`, a properly sized, zero-initialised sigaction struct owned by this frame.
        let ignored = unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            libc::sigaction(signal, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_IGN
        };
        if ignored {
            // SAFETY: setting a valid signal's disposition to SIG_DFL installs no handler code.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
    }
    // SAFETY: `empty` is a sigset_t initialised by sigemptyset before use; SIG_SETMASK with it
    // only unblocks signals for the calling thread.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse() {
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("KILL"), Some(9));
        assert_eq!(parse_signal("sigterm"), Some(15));
        assert_eq!(parse_signal("SIGINT"), Some(2));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("999"), None);
        assert_eq!(signal_name(15), Some("TERM"));
    }
}
