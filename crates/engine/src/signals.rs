//! The process-wide signal state that jobs inherit. (Signal names are
//! [`ferry_common::signals`].)

/// Resets every signal this process ignores to its default action and unblocks every signal.
///
/// Jobs inherit ignored dispositions and the signal mask across exec (a daemon started from a
/// non-interactive shell with `&` ignores SIGINT and SIGQUIT, for instance), and then `trap` and
/// Ctrl-C cannot work in them. Resetting the daemon's own state once, before any thread starts,
/// lets jobs be spawned without a `pre_exec` hook (so the fast `posix_spawn` path stays usable).
/// SIGPIPE is left alone: the Rust runtime ignores it and resets it in every child it spawns.
pub fn reset_inherited_signal_state() {
    for &(_, signal) in ferry_common::signals::SIGNALS {
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
