//! `ferry run`: output, exit status, stdin, liveness.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::helper::{shell, wait_with_timeout, Daemon};

#[test]
fn stdout_and_stderr_stay_separate_and_the_exit_code_is_the_commands() {
    let daemon = Daemon::start(&[]);
    let out = daemon.run(&["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn a_command_killed_by_a_signal_gives_128_plus_n() {
    let daemon = Daemon::start(&[]);
    let out = daemon.run(&["run", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.status.code(), Some(128 + 9));
    let out = daemon.run(&["run", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15));
}

#[test]
fn a_missing_command_exits_127_with_a_clear_message() {
    let daemon = Daemon::start(&[]);
    let out = daemon.run(&["run", "--", "no-such-command-anywhere"]);
    assert_eq!(out.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-command-anywhere: command not found"),
        "{stderr}"
    );
}

#[test]
fn the_job_runs_in_the_clients_directory_with_its_environment() {
    let daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = daemon
        .ferry()
        .current_dir(dir.path())
        .env("FERRY_TEST_VALUE", "seen")
        .args(["run", "--", "sh", "-c", "pwd; echo $FERRY_TEST_VALUE"])
        .output()
        .expect("run");
    let expected = format!(
        "{}\nseen\n",
        dir.path().canonicalize().expect("dir").display()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn stdin_is_forwarded_and_eof_closes_it() {
    let daemon = Daemon::start(&[]);
    let out = shell(&daemon, r#"printf 'b\na\n' | "$FERRY" run -- sort"#);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\nb\n");
    assert_eq!(out.status.code(), Some(0));
    // cat with an empty stdin ends at once (it would hang if EOF were not passed on).
    let mut child = daemon
        .ferry()
        .args(["run", "--", "cat"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(0)
    );
}

#[test]
fn large_stdin_arrives_whole() {
    let daemon = Daemon::start(&[]);
    let out = shell(
        &daemon,
        r#"head -c 10000000 /dev/urandom > in; "$FERRY" run -- sha256sum < in | cut -c1-64; sha256sum < in | cut -c1-64; rm in"#,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], lines[1]);
}

#[test]
fn output_arrives_live_not_at_the_end() {
    let daemon = Daemon::start(&[]);
    let mut child = daemon
        .ferry()
        .args(["run", "--", "sh", "-c", "echo first; read x; echo second"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("first line");
    assert_eq!(line, "first\n");
    // The job is blocked on stdin: "first" came while it was still running.
    assert!(child.try_wait().expect("try_wait").is_none());
    drop(child.stdin.take()); // EOF: read returns, the job ends
    line.clear();
    stdout.read_line(&mut line).expect("second line");
    assert_eq!(line, "second\n");
    assert_eq!(
        wait_with_timeout(&mut child, Duration::from_secs(20)),
        Some(0)
    );
}

#[test]
fn a_gigabyte_streams_through_in_bounded_memory() {
    let daemon = Daemon::start(&[]);
    let out = shell(&daemon, r#""$FERRY" run -- head -c 1G /dev/zero | wc -c"#);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1073741824");
    let peak = crate::helper::peak_rss_kib(daemon.pid());
    assert!(peak < 64 * 1024, "daemon peak RSS {peak} KiB");
}

#[test]
fn a_closed_stdout_gives_the_job_sigpipe() {
    let daemon = Daemon::start(&[]);
    let out = shell(&daemon, r#""$FERRY" run -- yes | head -n 2"#);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("y\ny\n"));
    // The job ended (the pipeline returned); check the daemon recorded SIGPIPE.
    let ps = daemon.run(&["ps", "--json"]);
    let text = String::from_utf8_lossy(&ps.stdout);
    assert!(text.contains(r#""signal":13"#), "{text}");
}

/// The signals a process ignores, from its /proc status (`SigIgn`, a hex mask).
fn ignored_signals(status: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn jobs_start_with_sigpipe_and_sigxfsz_at_their_defaults() {
    // Under a file-size limit the daemon ignores SIGXFSZ (a log write past it must fail, not
    // kill the daemon); the Rust runtime ignores SIGPIPE. A job ignores neither: on a pipe and
    // on passed fds, created in its cgroup, and moved into it after fork as on older kernels.
    let pipe_and_file_size = (1u64 << (libc::SIGPIPE - 1)) | (1u64 << (libc::SIGXFSZ - 1));
    for extra in [&[][..], &["--no-clone-into-cgroup"]] {
        let daemon = Daemon::start_after("ulimit -f 1000000", extra);
        let daemon_status =
            std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).expect("status");
        assert_eq!(
            ignored_signals(&daemon_status) & pipe_and_file_size,
            pipe_and_file_size,
            "the daemon ignores both: {daemon_status}"
        );
        for how in [&["run"][..], &["run", "--fds"]] {
            let mut args = how.to_vec();
            args.extend(["--", "cat", "/proc/self/status"]);
            let out = daemon.run(&args);
            let status = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{extra:?} {how:?}: {out:?}");
            assert_eq!(
                ignored_signals(&status) & pipe_and_file_size,
                0,
                "{extra:?} {how:?}: {status}"
            );
        }
    }
}

/// The daemon's resident memory now, in KiB.
fn rss_kib(pid: u32) -> u64 {
    crate::helper::memory_kib(pid, "VmRSS")
}

/// The resident pages of a process's program code (its executable mappings of its own
/// binary), in KiB, from `/proc/PID/smaps`.
fn program_code_rss_kib(pid: u32) -> u64 {
    let program = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut in_code = false;
    let mut total = 0;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 5 && fields[0].contains('-') && !fields[0].ends_with(':') {
            in_code = fields[1].contains('x')
                && fields.get(5).map(std::path::Path::new) == Some(program.as_path());
        } else if in_code && fields.first() == Some(&"Rss:") {
            total += fields[1].parse::<u64>().expect("Rss figure");
        }
    }
    total
}

#[test]
fn an_idle_daemon_lets_go_of_its_program_pages_and_serves_on() {
    let daemon = Daemon::start(&[]);
    let out = daemon.run(&["run", "--", "echo", "warm"]);
    assert_eq!(out.stdout, b"warm\n");
    // Start-up and the job touched the program's code; a second of quiet lets go of it.
    let busy = program_code_rss_kib(daemon.pid());
    assert!(busy > 0, "the daemon's code is mapped: {busy} KiB");
    crate::helper::wait_until(
        "the idle daemon to let go of its program's pages",
        Duration::from_secs(20),
        || (program_code_rss_kib(daemon.pid()) * 2 < busy).then_some(()),
        || {
            format!(
                "program code resident: {} KiB, {busy} KiB after the job",
                program_code_rss_kib(daemon.pid())
            )
        },
    );
    // Everything maps back as it is used: jobs with output, on passed fds, with a time limit,
    // and the history's listing.
    let out = daemon.run(&[
        "run",
        "--no-fds",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code(), Some(3));
    let out = daemon.run(&["run", "--fds", "--", "echo", "passed"]);
    assert_eq!(
        (out.stdout.as_slice(), out.status.code()),
        (&b"passed\n"[..], Some(0))
    );
    let out = daemon.run(&["run", "--timeout", "1s", "--", "sleep", "30"]);
    assert!(!out.status.success(), "{out:?}");
    let out = daemon.run(&["ps", "--all", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        4,
        "{out:?}"
    );
    assert!(program_code_rss_kib(daemon.pid()) > 0);
}

#[test]
fn memory_of_finished_jobs_goes_back_to_the_system() {
    // A small log cap, so that each 32 MiB job fills the head, the tail and the window.
    let daemon = Daemon::start(&["--max-log-size", "16777216"]);
    let big_job = || {
        let out = daemon.run(&["run", "--no-fds", "--", "head", "-c", "32M", "/dev/zero"]);
        assert_eq!(out.stdout.len(), 32 << 20);
        assert!(out.status.success());
    };
    // Settled: within half a MiB for 2.5 s (the daemon trims within 2 s of output pausing).
    let settled = || {
        let since = std::cell::Cell::new((rss_kib(daemon.pid()), std::time::Instant::now()));
        crate::helper::wait_until(
            "the daemon's memory to settle",
            Duration::from_secs(20),
            || {
                let now = rss_kib(daemon.pid());
                let (then, at) = since.get();
                if now.abs_diff(then) >= 512 {
                    since.set((now, std::time::Instant::now()));
                    return None;
                }
                (at.elapsed() > Duration::from_millis(2500)).then_some(now)
            },
            || format!("RSS {} KiB", since.get().0),
        )
    };
    big_job();
    let after_one = settled();
    for _ in 0..20 {
        big_job();
    }
    // Each job's memory is given back: the daemon comes back to within a few MiB.
    crate::helper::wait_until(
        "the daemon's memory to come back to its level after one job",
        Duration::from_secs(10),
        || (rss_kib(daemon.pid()) < after_one + 4 * 1024).then_some(()),
        || {
            format!(
                "RSS {} KiB after twenty jobs, {after_one} KiB after one",
                rss_kib(daemon.pid())
            )
        },
    );
}

/// The daemon's threads.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the daemon's tasks")
        .count()
}

#[test]
fn jobs_that_write_little_hold_no_thread_and_a_loud_one_still_arrives_whole_and_in_order() {
    let daemon = Daemon::start(&[]);
    let out = daemon.run(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    let before = thread_count(daemon.pid());
    // Forty jobs that say a line, then wait: their pumps wait on the runtime's event loop.
    const QUIET: usize = 40;
    for _ in 0..QUIET {
        let out = daemon.run(&["run", "-d", "--", "sh", "-c", "echo up; exec sleep 60"]);
        assert!(out.status.success(), "{out:?}");
    }
    crate::helper::wait_until(
        "every quiet job to have said its line",
        Duration::from_secs(20),
        || {
            let out = daemon.run(&["ps", "--state", "running", "--json"]);
            let running = String::from_utf8_lossy(&out.stdout).lines().count();
            let said = (1..=QUIET + 1)
                .filter(|id| daemon.run(&["log", &id.to_string()]).stdout == b"up\n")
                .count();
            (running == QUIET && said == QUIET).then_some(())
        },
        || String::from_utf8_lossy(&daemon.run(&["ps"]).stdout).into_owned(),
    );
    let during = thread_count(daemon.pid());
    assert!(
        during < before + QUIET / 4,
        "{during} threads with {QUIET} quiet jobs running, {before} before"
    );
    // A job that writes a few megabytes on both streams, a little first: its pump moves to a
    // thread of its own part way, and nothing is lost or reordered.
    let script = "echo first; echo first-err >&2; \
                  head -c 3000000 /dev/zero | tr '\\0' a; echo; echo last-err >&2; echo last";
    let out = daemon.run(&["run", "--", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0));
    let expected = format!("first\n{}\nlast\n", "a".repeat(3_000_000));
    assert!(
        out.stdout == expected.as_bytes(),
        "{} bytes",
        out.stdout.len()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "first-err\nlast-err\n"
    );
}
