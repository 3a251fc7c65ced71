//! `ferry run --fds`: the job runs on the client's own stdin, stdout and stderr, passed over
//! the Unix socket (SCM_RIGHTS): pipes, a pseudo-terminal, signal forwarding, fd hygiene in
//! the daemon, and every malformed way of passing fds.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_wire::native::{ClientMessage, DaemonMessage, ErrorCode};

use crate::helper::{
    open_fds, run_message, send_signal, wait_exit, wait_until, wait_with_timeout, Daemon, Raw,
};

#[test]
fn pipes_are_used_directly_and_nothing_goes_through_the_daemon() {
    let daemon = Daemon::start(&[]);
    let out = daemon.run_with_input(
        &[
            "run",
            "--fds",
            "--",
            "sh",
            "-c",
            "read line; echo \"out:$line\"; echo err >&2; exit 3",
        ],
        b"hello\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out:hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(3));
    // The daemon saw none of it: the job's log is empty.
    let jobs = daemon.run(&["ps", "--json"]);
    let listing = String::from_utf8_lossy(&jobs.stdout);
    let id = listing
        .split("\"id\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .expect("a job id")
        .to_owned();
    // `log` says so rather than print nothing, and `ps` shows it.
    let log = daemon.run(&["log", &id]);
    assert!(log.stdout.is_empty(), "{log:?}");
    assert_eq!(
        String::from_utf8_lossy(&log.stderr),
        format!("ferry: job {id} ran on its client's terminal (its own fds): its output went there, and no log of it was kept\n")
    );
    assert!(listing.contains("\"no_log\":true"), "{listing}");
    let table = daemon.run(&["ps"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("(on its terminal: no log)"),
        "{table:?}"
    );
}

/// A pseudo-terminal pair: the master, and the slave's path.
pub fn pty() -> (OwnedFd, String) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master =
        openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    (master, name.to_string_lossy().into_owned())
}

pub fn open_slave(path: &str) -> File {
    File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .expect("open pts")
}

/// Gives `command` the pseudo-terminal at `slave_path` as its stdin, stdout, stderr and
/// controlling terminal (in a session of its own), as a login shell has its terminal.
pub fn on_its_terminal(command: &mut std::process::Command, slave_path: &str) {
    use std::os::unix::process::CommandExt;
    let slave = open_slave(slave_path);
    command
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    // SAFETY: setsid and the TIOCSCTTY ioctl are system calls, safe between fork and exec;
    // nothing is allocated.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            Ok(())
        });
    }
}

/// Reads the master until `needle` shows up (or panics after 20 s).
pub fn read_until(master: &OwnedFd, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let mut fds = [rustix::event::PollFd::new(
            master,
            rustix::event::PollFlags::IN,
        )];
        let wait = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        if rustix::event::poll(&mut fds, Some(&wait)).unwrap_or(0) == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        match rustix::io::read(master, &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
        if String::from_utf8_lossy(&seen).contains(needle) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.contains(needle), "expected {needle:?} in {text:?}");
    text
}

#[test]
fn a_terminal_is_passed_by_default_and_interactive_programs_work() {
    let daemon = Daemon::start(&[]);
    let (master, slave_path) = pty();
    // `tty` prints ferry's terminal: the default (stdout is a terminal) passes the fds.
    let slave = open_slave(&slave_path);
    let mut child = daemon
        .ferry()
        .args(["run", "--", "tty"])
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave)
        .spawn()
        .expect("spawn");
    read_until(&master, &slave_path);
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(0)
    );

    // An interactive program reads what is typed on the terminal.
    let slave = open_slave(&slave_path);
    let mut child = daemon
        .ferry()
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "printf 'name? '; read x; echo \"got:$x\"",
        ])
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave)
        .spawn()
        .expect("spawn");
    read_until(&master, "name? ");
    rustix::io::write(&master, b"ferry\n").expect("type");
    read_until(&master, "got:ferry");
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(0)
    );
}

#[test]
fn signals_to_ferry_reach_the_job_and_ferry_exits_with_its_status() {
    let daemon = Daemon::start(&[]);
    let script = "trap 'echo caught >&2; exit 7' INT; echo ready; while :; do sleep 0.05; done";
    let mut child = daemon
        .ferry()
        .args(["run", "--fds", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut ready = [0u8; 6];
    stdout.read_exact(&mut ready).expect("ready");
    assert_eq!(&ready, b"ready\n");
    send_signal(child.id(), libc::SIGINT);
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(7)
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(stderr, "caught\n");

    // SIGTERM kills the job (no trap): ferry exits 128 + 15.
    let mut child = daemon
        .ferry()
        .args([
            "run",
            "--fds",
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    stdout.read_exact(&mut ready).expect("ready");
    send_signal(child.id(), libc::SIGTERM);
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(143)
    );
}

#[test]
fn a_thousand_runs_leave_no_fd_behind_and_passed_fds_stay_out_of_other_jobs() {
    let daemon = Daemon::start(&[]);
    let null = File::open("/dev/null").expect("null");
    let run_once = |raw: &mut Raw| {
        raw.send_with_fds(
            &run_message(1, &["true"], true, None),
            &[null.as_fd(), null.as_fd(), null.as_fd()],
        );
        let exit = wait_exit(raw);
        assert_eq!(exit.code, Some(0), "{exit:?}");
    };
    // Warm up (the daemon's lazily made files and threads) on a connection that stays open,
    // then count: no other connection is open then.
    let mut probe = daemon.raw();
    run_once(&mut probe);
    let before = open_fds(daemon.pid());
    for _ in 0..10 {
        let mut raw = daemon.raw();
        for _ in 0..100 {
            run_once(&mut raw);
        }
    }
    // Connections close asynchronously. (`before` may hold a passing fd of the daemon's own,
    // such as the history store syncing the warm-up job's log: no more than it, then.)
    wait_until(
        "the daemon's fds to be no more than before the 1000 runs",
        Duration::from_secs(10),
        || (open_fds(daemon.pid()) <= before).then_some(()),
        || format!("{} fds open, {before} before", open_fds(daemon.pid())),
    );
    drop(probe);

    // While a job holds a passed pipe, another job sees only its own 0, 1 and 2.
    let (read_end, write_end) = rustix::pipe::pipe().expect("pipe");
    let mut holder = daemon.raw();
    holder.send_with_fds(
        &run_message(1, &["sleep", "2"], true, None),
        &[null.as_fd(), write_end.as_fd(), write_end.as_fd()],
    );
    match holder.recv() {
        Some(DaemonMessage::Accepted { .. }) => {}
        other => panic!("expected Accepted, got {other:?}"),
    }
    let out = daemon.run(&["run", "--no-fds", "--", "sh", "-c", "ls /proc/$$/fd"]);
    let fds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(fds, ["0", "1", "2"], "{out:?}");
    drop(write_end);
    drop(read_end);
}

/// Sends a frame with more fds than ferry's own sender allows (as a hostile client would).
fn send_too_many_fds(
    stream: &std::os::unix::net::UnixStream,
    message: &ClientMessage,
    fds: &[std::os::fd::BorrowedFd<'_>],
) {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::mem::MaybeUninit;
    let mut bytes = Vec::new();
    ferry_wire::native::encode_frame(message, &mut bytes).expect("encode");
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    let sent = sendmsg(
        stream,
        &[std::io::IoSlice::new(&bytes)],
        &mut control,
        SendFlags::empty(),
    )
    .expect("sendmsg");
    assert_eq!(sent, bytes.len());
}

#[test]
fn fds_passed_the_wrong_way_are_refused_and_the_daemon_goes_on() {
    let daemon = Daemon::start(&[]);
    let null = File::open("/dev/null").expect("null");

    // Fds on a frame that takes none: closed, an error says so, the request is still served.
    let mut raw = daemon.raw();
    raw.send_with_fds(
        &ClientMessage::ListJobs {
            request: 5,
            all: false,
        },
        &[null.as_fd()],
    );
    let mut error = None;
    let mut listed = false;
    while !(listed && error.is_some()) {
        match raw.recv() {
            Some(DaemonMessage::Error {
                request: None,
                message,
                ..
            }) => error = Some(message),
            Some(DaemonMessage::Jobs { request: 5, .. }) => listed = true,
            Some(_) => {}
            None => panic!("connection closed"),
        }
    }
    let error = error.unwrap_or_default();
    assert!(
        error.contains("came with a ListJobs frame, which takes none"),
        "{error}"
    );

    // pass_stdio with two fds, and with none.
    raw.send_with_fds(
        &run_message(6, &["true"], true, None),
        &[null.as_fd(), null.as_fd()],
    );
    let (code, message) = raw.expect_error();
    assert_eq!(code, ErrorCode::InvalidRequest);
    assert!(
        message.contains("exactly 3 file descriptors") && message.contains("2 came"),
        "{message}"
    );
    raw.send(&run_message(7, &["true"], true, None));
    let (code, message) = raw.expect_error();
    assert_eq!(code, ErrorCode::InvalidRequest);
    assert!(
        message.contains("no file descriptors came with it"),
        "{message}"
    );

    // More fds than one read takes: a truncated control message closes the connection.
    let mut raw = daemon.raw();
    let many: Vec<_> = (0..6).map(|_| null.as_fd()).collect();
    send_too_many_fds(&raw.stream, &run_message(8, &["true"], true, None), &many);
    let (code, message) = raw.expect_error();
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(message.contains("truncated control message"), "{message}");
    raw.expect_closed();

    // pass_stdio over TCP is refused by name.
    daemon.assert_serving();
    let out = Command::new(crate::helper::ferry_bin())
        .args([
            "--host",
            "127.0.0.1:9",
            "--no-tls",
            "run",
            "--fds",
            "--",
            "true",
        ])
        .output()
        .expect("ferry");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--fds needs the daemon's Unix socket"),
        "{out:?}"
    );
}

/// The state letter of process `pid` (`R`, `S`, `T` for stopped...).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[test]
fn ctrl_z_stops_the_job_with_ferry_and_fg_continues_both() {
    let daemon = Daemon::start(&[]);
    let (master, slave_path) = pty();
    let mut command = daemon.ferry();
    command.args([
        "run",
        "--",
        "sh",
        "-c",
        "while :; do echo tick; sleep 0.05; done",
    ]);
    on_its_terminal(&mut command, &slave_path);
    let mut child = command.spawn().expect("ferry run");
    read_until(&master, "tick");
    let job_pid = wait_until(
        "the job's pid",
        Duration::from_secs(20),
        || {
            let ps = daemon.run(&["ps", "--json"]);
            let line = String::from_utf8_lossy(&ps.stdout)
                .lines()
                .next()?
                .to_owned();
            let value: serde_json::Value = serde_json::from_str(&line).ok()?;
            value["pid"].as_u64().map(|pid| pid as u32)
        },
        || daemon.log(),
    );
    // Ctrl-Z on the terminal: ferry and the job both stop.
    rustix::io::write(&master, b"\x1a").expect("type");
    wait_until(
        "ferry and the job to stop",
        Duration::from_secs(20),
        || {
            (process_state(child.id()) == Some('T') && process_state(job_pid) == Some('T'))
                .then_some(())
        },
        || {
            format!(
                "ferry {:?}, job {:?}",
                process_state(child.id()),
                process_state(job_pid)
            )
        },
    );
    // `fg`: SIGCONT to ferry, which continues the job.
    send_signal(child.id(), libc::SIGCONT);
    wait_until(
        "the job to run again",
        Duration::from_secs(20),
        || (process_state(job_pid) != Some('T')).then_some(()),
        || format!("job {:?}", process_state(job_pid)),
    );
    read_until(&master, "tick");
    rustix::io::write(&master, b"\x03").expect("type");
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(130)
    );
}
