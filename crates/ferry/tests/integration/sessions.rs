//! Stateful sessions: every kind of shell state carried from one command to the next, across
//! connections (each `ferry` invocation is a connection of its own), `ferry session state`,
//! `ferry sh`, and the FANOS dialect's `EVAL` and `STATE`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;

use crate::helper::{ferry_bin, Daemon};

/// Runs `ferry run --session ID -- LINE` (output through the daemon); stdout and status.
fn in_session(daemon: &Daemon, id: &str, line: &str) -> (String, Option<i32>) {
    let out = daemon.run(&["run", "--no-fds", "--session", id, "--", line]);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

fn new_session(daemon: &Daemon) -> String {
    let out = daemon.run(&["session", "new"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_issue_example_keeps_cwd_variables_and_functions() {
    let daemon = Daemon::start(&[]);
    let id = new_session(&daemon);
    // Several words are a command and its arguments.
    let out = daemon.run(&["run", "--no-fds", "--session", &id, "--", "cd", "/tmp"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    in_session(&daemon, &id, "x=42; f() { echo in-f; }");
    assert_eq!(
        in_session(&daemon, &id, "echo $x; f; pwd"),
        ("42\nin-f\n/tmp\n".into(), Some(0))
    );
}

#[test]
fn each_session_command_carries_its_own_jobs_mark() {
    // The mark (`FERRY_JOB`) finds what a job started; a command must not get the previous
    // command's back from the saved state, whatever the mark is exported as.
    let daemon = Daemon::start(&["--no-job-cgroups"]);
    let id = new_session(&daemon);
    let mut marks = Vec::new();
    for _ in 0..3 {
        let (mark, status) = in_session(&daemon, &id, "echo $FERRY_JOB; export FERRY_JOB=x");
        assert_eq!(status, Some(0));
        marks.push(mark.trim().to_owned());
    }
    let ps = daemon.run(&["ps", "--all", "--json"]);
    let ids: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .map(|line| {
            let job: serde_json::Value = serde_json::from_str(line).expect("json");
            job["id"].to_string()
        })
        .collect();
    assert_eq!(ids.len(), 3, "{ps:?}");
    for (mark, id) in marks.iter().zip(&ids) {
        assert!(
            mark.ends_with(&format!(".{id}")),
            "job {id} carried {mark:?}: {marks:?}"
        );
    }
    let state = daemon.run(&["session", "state", &id]);
    assert!(
        !String::from_utf8_lossy(&state.stdout).contains("FERRY_JOB"),
        "{state:?}"
    );
}

#[test]
fn a_commands_words_arrive_as_given_and_ps_shows_the_users_command() {
    let daemon = Daemon::start(&[]);
    let id = new_session(&daemon);
    let out = daemon.run(&[
        "run",
        "--no-fds",
        "--session",
        &id,
        "--",
        "printf",
        "%s\\n",
        "a b",
        "c",
        "it's",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a b\nc\nit's\n");
    in_session(&daemon, &id, "echo one line");
    let ps = daemon.run(&["ps", "--all"]);
    let table = String::from_utf8_lossy(&ps.stdout);
    assert!(table.contains("printf '%s\\n' 'a b' c"), "{table}");
    assert!(table.contains("bash -c 'echo one line'"), "{table}");
    assert!(
        !table.contains("__ferry"),
        "the session's driver is not shown: {table}"
    );
    assert!(table.lines().count() <= 4, "one line per job: {table}");
}

#[test]
fn every_kind_of_state_persists_and_statuses_are_exact() {
    let daemon = Daemon::start(&[]);
    let id = new_session(&daemon);
    let setup = [
        "export EXPORTED=exp; plain=pl; declare -a list=(a 'b c')",
        "unset HOME",
        "alias hello='echo aliased'",
        "set -o noglob; shopt -s extglob",
        "greet() { echo \"hi $1\"; }",
    ];
    for line in setup {
        assert_eq!(in_session(&daemon, &id, line).1, Some(0), "{line}");
    }
    let checks = [
        // Exported variables reach child processes; plain ones do not.
        ("sh -c 'echo \"$EXPORTED/${plain-none}\"'", "exp/none\n"),
        ("echo \"$plain ${list[1]}\"", "pl b c\n"),
        ("echo \"${HOME-unset}\"", "unset\n"),
        ("hello", "aliased\n"),
        ("echo /*", "/*\n"),
        ("shopt -q extglob && echo extglob-on", "extglob-on\n"),
        ("greet there", "hi there\n"),
    ];
    for (line, expected) in checks {
        assert_eq!(
            in_session(&daemon, &id, line),
            (expected.into(), Some(0)),
            "{line}"
        );
    }
    // The last status carries over, and each command's status is exact.
    assert_eq!(in_session(&daemon, &id, "false").1, Some(1));
    assert_eq!(in_session(&daemon, &id, "echo $?"), ("1\n".into(), Some(0)));
    assert_eq!(in_session(&daemon, &id, "exit 7").1, Some(7));
    assert_eq!(in_session(&daemon, &id, "echo $?"), ("7\n".into(), Some(0)));
    // State survives `exit`.
    assert_eq!(
        in_session(&daemon, &id, "greet again"),
        ("hi again\n".into(), Some(0))
    );

    let state = daemon.run(&["session", "state", &id]);
    let text = String::from_utf8_lossy(&state.stdout);
    assert!(text.starts_with("cwd: "), "{text}");
    assert!(text.contains("\nstatus: 0\n"), "{text}");
    assert!(text.contains("declare -x EXPORTED=\"exp\""), "{text}");
    assert!(text.contains("declare -- plain=\"pl\""), "{text}");
    assert!(text.contains("unset HOME"), "{text}");
    assert!(
        !text.contains("PATH="),
        "unchanged variables are not listed: {text}"
    );

    let closed = daemon.run(&["session", "close", &id]);
    assert_eq!(closed.status.code(), Some(0));
    let gone = daemon.run(&["run", "--session", &id, "--", "true"]);
    assert_eq!(gone.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no session"));
}

#[test]
fn session_commands_run_on_passed_fds_one_at_a_time() {
    let daemon = Daemon::start(&[]);
    let id = new_session(&daemon);
    let out = daemon.run_with_input(
        &[
            "run",
            "--fds",
            "--session",
            &id,
            "--",
            "read line; echo \"got $line\"",
        ],
        b"typed\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got typed\n");
    assert_eq!(
        in_session(&daemon, &id, "echo $line"),
        ("typed\n".into(), Some(0))
    );

    // A second command while one runs is refused, by name.
    let mut long = daemon
        .ferry()
        .args([
            "run",
            "--no-fds",
            "--session",
            &id,
            "--",
            "echo started; sleep 3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut started = [0u8; 8];
    long.stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut started)
        .expect("started");
    let busy = daemon.run(&["run", "--session", &id, "--", "true"]);
    assert_eq!(busy.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("is busy"),
        "{busy:?}"
    );
    assert_eq!(long.wait().expect("wait").code(), Some(0));
}

#[test]
fn ferry_sh_reads_a_script_from_a_pipe() {
    let daemon = Daemon::start(&[]);
    let mut child = daemon
        .ferry()
        .arg("sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // `read` takes the line after it from the same stdin, as in any shell.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"cd /tmp\nn=5\nread word\nfrom-the-pipe\necho \"$n $word $PWD\"\n\nfalse\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "5 from-the-pipe /tmp\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1));
}

/// One FANOS request and its reply.
fn fanos_request(stream: &mut UnixStream, payload: &[u8], fds: &[BorrowedFd<'_>]) -> String {
    crate::fanos::request(stream, payload, fds).unwrap_or_else(|| panic!("no reply to {payload:?}"))
}

#[test]
fn fanos_eval_keeps_state_per_connection_on_the_passed_fds() {
    let (_daemon, _dir, socket) = crate::fanos::fanos_daemon();
    let mut stream = crate::fanos::connect(&socket);
    let null = std::fs::File::open("/dev/null").expect("null");
    let (out_r, out_w) = rustix::pipe::pipe().expect("pipe");
    let (in_r, in_w) = rustix::pipe::pipe().expect("pipe");
    rustix::io::write(&in_w, b"the line\n").expect("write");
    drop(in_w);
    let stdio = |stdin| [stdin, out_w.as_fd(), null.as_fd()];
    assert_eq!(
        fanos_request(&mut stream, b"EVAL cd /tmp", &stdio(null.as_fd())),
        "OK 0"
    );
    assert_eq!(
        fanos_request(&mut stream, b"EVAL read x", &stdio(in_r.as_fd())),
        "OK 0"
    );
    assert_eq!(
        fanos_request(&mut stream, b"EVAL echo \"$x $PWD\"", &stdio(null.as_fd())),
        "OK 0"
    );
    assert_eq!(
        fanos_request(&mut stream, b"EVAL (exit 3)", &stdio(null.as_fd())),
        "OK 3"
    );
    let state = fanos_request(&mut stream, b"STATE", &[]);
    assert!(state.starts_with("OK cwd: /tmp\nstatus: 3\n"), "{state}");
    assert!(state.contains("\ndeclare -- x=\"the line\""), "{state}");
    let refused = fanos_request(&mut stream, b"EVAL true", &[]);
    assert!(
        refused.starts_with("ERROR EVAL needs 3 file descriptors"),
        "{refused}"
    );
    drop(out_w);
    let mut out = String::new();
    std::fs::File::from(out_r)
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(out, "the line /tmp\n");

    // Another connection has a session of its own.
    let mut other = crate::fanos::connect(&socket);
    let (out_r, out_w) = rustix::pipe::pipe().expect("pipe");
    let reply = fanos_request(
        &mut other,
        b"EVAL echo \"${x-unset}\"",
        &[null.as_fd(), out_w.as_fd(), null.as_fd()],
    );
    assert_eq!(reply, "OK 0");
    drop(out_w);
    let mut out = String::new();
    std::fs::File::from(out_r)
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(out, "unset\n");

    // `ferry fanos` passes its own fds.
    let out = std::process::Command::new(ferry_bin())
        .arg("--socket")
        .arg(&socket)
        .args(["fanos", "EVAL echo from-ferry; exit 4"])
        .stdin(Stdio::null())
        .output()
        .expect("ferry fanos");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-ferry\nOK 4\n");
    assert_eq!(out.status.code(), Some(0));
    let out = std::process::Command::new(ferry_bin())
        .arg("--socket")
        .arg(&socket)
        .args(["fanos", "ARGV", "sh", "-c", "exit 5"])
        .stdin(Stdio::null())
        .output()
        .expect("ferry fanos");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "STATUS 5\n");
    assert_eq!(out.status.code(), Some(5));
}

/// `ferry sh` on a pseudo-terminal that is its controlling terminal, as a login shell's.
fn sh_on_a_terminal(daemon: &Daemon) -> (std::os::fd::OwnedFd, std::process::Child) {
    let (master, slave_path) = crate::fds::pty();
    let mut command = daemon.ferry();
    command.arg("sh").env("TERM", "xterm");
    crate::fds::on_its_terminal(&mut command, &slave_path);
    (master, command.spawn().expect("ferry sh"))
}

#[test]
fn ferry_sh_on_a_terminal_edits_lines_keeps_history_and_statuses_and_exit_n_leaves() {
    use crate::fds::read_until;
    let daemon = Daemon::start(&[]);
    let (master, mut child) = sh_on_a_terminal(&daemon);
    let typed = |text: &[u8]| {
        rustix::io::write(&master, text).expect("type");
    };
    // Reads until `needle`, then until the next prompt (which may have come in the same read).
    let then_prompt = |needle: &str| {
        let seen = read_until(&master, needle);
        let after = seen.rfind(needle).map_or("", |at| &seen[at..]);
        if !after.contains("$ ") {
            read_until(&master, "$ ");
        }
        seen
    };
    read_until(&master, "$ ");
    typed(b"echo one-$((1+1))\r");
    then_prompt("one-2");
    // Up recalls the last line, as in a shell (no `^[[A` printed).
    typed(b"\x1b[A\r");
    let seen = then_prompt("one-2");
    assert!(!seen.contains("^[[A"), "{seen:?}");
    // A command interrupted with Ctrl-C: the next one sees its status.
    typed(b"sleep 30\r");
    // The sleep itself runs (not only the session's shell, still restoring the state).
    let marked: &[u8] = b"sleep\x0030\x00";
    crate::helper::wait_until(
        "the sleep to run",
        std::time::Duration::from_secs(20),
        || {
            std::fs::read_dir("/proc")
                .ok()?
                .flatten()
                .any(|entry| {
                    std::fs::read(entry.path().join("cmdline"))
                        .is_ok_and(|cmdline| cmdline == marked)
                })
                .then_some(())
        },
        || daemon.log(),
    );
    typed(b"\x03");
    read_until(&master, "$ ");
    typed(b"echo status=$?\r");
    then_prompt("status=130");
    typed(b"exit 3\r");
    assert_eq!(
        crate::helper::wait_with_timeout(&mut child, std::time::Duration::from_secs(20)),
        Some(3)
    );
}
