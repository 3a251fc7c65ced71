//! `ferry --host H run -t`: a pseudo-terminal on the daemon's side, as `ssh -t` gives one,
//! driven from a pseudo-terminal here: the job sees a terminal of this one's size, follows
//! its resizes, takes Ctrl-C as a terminal's key, and this terminal comes back as it was.

use std::time::Duration;

use rustix::termios::{tcgetattr, tcsetwinsize, LocalModes, Winsize};

use crate::fds::{on_its_terminal, pty, read_until};
use crate::helper::{wait_with_timeout, Daemon};

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

#[test]
fn run_t_over_tls_gives_the_job_a_terminal_that_follows_this_one() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["ferry:tls:127.0.0.1:0"]);
    let (master, slave_path) = pty();
    tcsetwinsize(&master, winsize(30, 100)).expect("size");
    let before = tcgetattr(&master).expect("the terminal's settings");
    let mut command = daemon.remote();
    command.env("TERM", "xterm-256color").args([
        "run",
        "-t",
        "--",
        "bash",
        "-c",
        "trap 'echo resized; stty size' WINCH; tty; stty size; echo \"term=$TERM\"; echo ready; while :; do sleep 0.05; done",
    ]);
    on_its_terminal(&mut command, &slave_path);
    let mut client = command.spawn().expect("ferry run -t");
    let seen = read_until(&master, "ready");
    assert!(
        seen.contains("/dev/pts/"),
        "the job's stdin is a terminal: {seen}"
    );
    assert!(seen.contains("30 100"), "of this terminal's size: {seen}");
    assert!(seen.contains("term=xterm-256color"), "and its type: {seen}");
    // While it runs, this terminal is raw: no echo, no line editing here.
    let raw = tcgetattr(&master).expect("settings");
    assert!(!raw
        .local_modes
        .contains(LocalModes::ICANON | LocalModes::ECHO));
    tcsetwinsize(&master, winsize(40, 120)).expect("resize");
    let seen = read_until(&master, "40 120");
    assert!(seen.contains("resized"), "{seen}");
    // Ctrl-C is a key of the job's terminal: its foreground group gets SIGINT.
    rustix::io::write(&master, b"\x03").expect("Ctrl-C");
    let status = wait_with_timeout(&mut client, Duration::from_secs(20));
    assert_eq!(status, Some(130), "the remote command's status");
    let after = tcgetattr(&master).expect("settings");
    assert_eq!(
        after.local_modes, before.local_modes,
        "the terminal is given back"
    );
    assert_eq!(after.input_modes, before.input_modes);
}

#[test]
fn run_t_needs_no_terminal_here_and_keeps_the_catalog() {
    let daemon = Daemon::start_networked(&[], &["ferry:tls:127.0.0.1:0"]);
    // Outside the catalog: refused as any command is.
    let out = daemon
        .remote()
        .args(["run", "-t", "--", "bash", "-i"])
        .output()
        .expect("ferry run -t");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("catalog"),
        "{out:?}"
    );
}

#[test]
fn an_interactive_shell_over_tls_has_job_control_and_exit_leaves_with_its_status() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["ferry:tls:127.0.0.1:0"]);
    let (master, slave_path) = pty();
    let mut command = daemon.remote();
    command
        .env("TERM", "xterm")
        .args(["run", "-t", "--", "bash", "--norc", "--noprofile", "-i"]);
    on_its_terminal(&mut command, &slave_path);
    let mut client = command.spawn().expect("ferry run -t bash -i");
    // Quoted apart so that only the output, not the echoed line, reads "flags=...:end".
    rustix::io::write(&master, b"echo \"fl\"\"ags=$-:e\"\"nd\"\r").expect("type");
    let seen = read_until(&master, ":end");
    let flags = seen
        .rsplit("flags=")
        .next()
        .and_then(|rest| rest.split(":end").next())
        .unwrap_or_default()
        .to_owned();
    assert!(flags.contains('m'), "job control is on: {seen}");
    assert!(!seen.contains("no job control"), "{seen}");
    rustix::io::write(&master, b"exit 7\r").expect("type");
    assert_eq!(
        wait_with_timeout(&mut client, Duration::from_secs(20)),
        Some(7)
    );
}
