//! `ferry rake` over a pool of real daemons on loopback: the seed's C program example, a
//! failing set, placement by cost, a host that is down, a host lost mid-action, the plan, and
//! Rakefile errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::helper::{ferry_bin, wait_until, Daemon};

/// Daemons serving the native protocol on loopback TCP, sharing one token, running any
/// command; and that token's file.
fn pool(n: usize, extra: &[&str]) -> (Vec<Daemon>, tempfile::TempDir, PathBuf) {
    let shared = tempfile::tempdir().expect("tempdir");
    let token = shared.path().join("token");
    std::fs::write(&token, "rake-test-token\n").expect("token");
    let token_arg = token.to_string_lossy().into_owned();
    let mut args = vec!["--allow-any-command", "--token-file", token_arg.as_str()];
    args.extend_from_slice(extra);
    let daemons = (0..n)
        .map(|_| Daemon::start_networked(&args, &["ferry:tcp:127.0.0.1:0"]))
        .collect();
    (daemons, shared, token)
}

fn hosts_line(daemons: &[Daemon]) -> String {
    let hosts: Vec<String> = daemons
        .iter()
        .map(|d| format!("127.0.0.1:{}", d.port("tcp")))
        .collect();
    format!("HOSTS = {}\n", hosts.join(" "))
}

/// `ferry rake ARGS` in `dir`, with `local` as the local daemon and the pool's token.
fn rake(dir: &Path, local: &Daemon, token: &Path, args: &[&str]) -> Output {
    Command::new(ferry_bin())
        .current_dir(dir)
        .arg("--socket")
        .arg(&local.socket)
        .arg("--no-tls")
        .arg("--token-file")
        .arg(token)
        .arg("rake")
        .args(args)
        .output()
        .expect("ferry rake")
}

/// The seed's example: a header and three C files.
pub fn c_program(dir: &Path) {
    std::fs::write(dir.join("program.h"), "int square(int);\nint cube(int);\n").expect("write");
    std::fs::write(
        dir.join("program.c"),
        "#include <stdio.h>\n#include \"program.h\"\nint main(void) { printf(\"%d %d\\n\", square(3), cube(2)); return 0; }\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("square.c"),
        "#include \"program.h\"\nint square(int x) { return x * x; }\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("cube.c"),
        "#include \"program.h\"\nint cube(int x) { return x * x * x; }\n",
    )
    .expect("write");
}

/// The seed's example's sets: three compilations, a link, a local run.
pub const C_SETS: &str = "
actionset1:
\tremote-cc -c program.c
\t\trequires program.c program.h
\tremote-cc -c square.c
\t\trequires square.c program.h
\tremote-cc -c cube.c
\t\trequires cube.c program.h

actionset2:
\tremote-cc -o program program.o square.o cube.o
\t\trequires program.o square.o cube.o

actionset3:
\t./program
";

#[test]
fn the_c_program_is_compiled_across_three_daemons_linked_and_run() {
    let (daemons, _shared, token) = pool(3, &[]);
    let project = tempfile::tempdir().expect("tempdir");
    c_program(project.path());
    std::fs::write(
        project.path().join("Rakefile"),
        format!("{}{C_SETS}", hosts_line(&daemons)),
    )
    .expect("Rakefile");
    let joblog = project.path().join("joblog.tsv");
    let out = rake(
        project.path(),
        &daemons[0],
        &token,
        &["--joblog", joblog.to_str().expect("utf-8")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "9 8\n");
    for made in ["program.o", "square.o", "cube.o", "program"] {
        assert!(
            project.path().join(made).exists(),
            "{made} came back: {stderr}"
        );
    }
    // The three compilations went to three hosts (equal costs share the work).
    let log = std::fs::read_to_string(&joblog).expect("joblog");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[0],
        "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
    );
    assert_eq!(lines.len(), 6, "{log}");
    let mut hosts: Vec<&str> = lines[1..4]
        .iter()
        .map(|l| l.split('\t').nth(1).expect("host"))
        .collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "{log}");
    assert!(
        lines[5].starts_with("5\tlocal\t") && lines[5].ends_with("\t0\t0\t./program"),
        "{log}"
    );
    assert!(
        stderr.contains("SET") && stderr.contains("actionset3  0"),
        "the summary: {stderr}"
    );
}

#[test]
fn a_failing_action_lets_its_set_finish_and_no_later_set_start() {
    let local = Daemon::start(&[]);
    let project = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        project.path().join("Rakefile"),
        "actionset1:\n\techo fine\n\techo oops >&2; exit 3\n\tsleep 0.3; touch finished\nactionset2:\n\ttouch later\n",
    )
    .expect("Rakefile");
    let out = rake(project.path(), &local, Path::new("/dev/null"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("echo oops >&2; exit 3\toops"),
        "tagged stderr: {stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("echo fine\tfine\n"),
        "{out:?}"
    );
    assert!(stderr.contains("failed on local with exit 3"), "{stderr}");
    assert!(
        stderr.contains("actionset1 failed: no later set runs"),
        "{stderr}"
    );
    assert!(
        project.path().join("finished").exists(),
        "the set's other actions finish"
    );
    assert!(
        !project.path().join("later").exists(),
        "no later set starts"
    );
}

#[test]
fn a_busy_daemon_gets_fewer_actions_and_a_host_that_is_down_is_skipped() {
    // The first host has 4 job slots, all busy (cost 1000); the second has 64, idle (cost 0,
    // and at most 4 * 1000 / 64 with this run's own actions on it).
    let (mut daemons, _shared, token) = pool(1, &["--max-jobs", "4"]);
    // Every pool's token is the same text.
    let (idle, _idle_shared, _) = pool(1, &[]);
    daemons.extend(idle);
    for _ in 0..4 {
        let busy = daemons[0].run(&["run", "--detach", "--", "sleep", "300"]);
        assert!(busy.status.success(), "{busy:?}");
    }
    let busy = daemons[0].run(&["ps"]);
    assert!(busy.status.success(), "{busy:?}");
    let project = tempfile::tempdir().expect("tempdir");
    let mut rakefile = hosts_line(&daemons).trim_end().to_owned();
    rakefile.push_str(" 127.0.0.1:1\nactionset1:\n");
    for i in 0..4 {
        rakefile.push_str(&format!("\tremote-echo {i}\n"));
    }
    std::fs::write(project.path().join("Rakefile"), rakefile).expect("Rakefile");
    let joblog = project.path().join("joblog.tsv");
    let out = rake(
        project.path(),
        &daemons[1],
        &token,
        &["--joblog", joblog.to_str().expect("utf-8")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("host 127.0.0.1:1 skipped").count(),
        1,
        "one warning: {stderr}"
    );
    let idle = format!("127.0.0.1:{}", daemons[1].port("tcp"));
    let log = std::fs::read_to_string(&joblog).expect("joblog");
    let on_idle = log
        .lines()
        .skip(1)
        .filter(|line| line.split('\t').nth(1) == Some(idle.as_str()))
        .count();
    assert!(on_idle > 2, "the idle host takes most: {log}");
}

#[test]
fn an_action_whose_host_dies_runs_again_on_another() {
    let (mut daemons, _shared, token) = pool(2, &[]);
    let project = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        project.path().join("Rakefile"),
        format!(
            "{}actionset1:\n\tremote-sleep 2; echo done\n",
            hosts_line(&daemons)
        ),
    )
    .expect("Rakefile");
    let child = Command::new(ferry_bin())
        .current_dir(project.path())
        .arg("--socket")
        .arg(&daemons[1].socket)
        .args(["--no-tls", "--token-file"])
        .arg(&token)
        .args(["rake"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ferry rake");
    // With equal costs the first host takes it; kill that host while the action runs.
    wait_until(
        "the action to run on the first host",
        Duration::from_secs(20),
        || {
            let ps = daemons[0].run(&["ps"]);
            String::from_utf8_lossy(&ps.stdout)
                .contains("running")
                .then_some(())
        },
        || String::from_utf8_lossy(&daemons[0].run(&["ps"]).stdout).into_owned(),
    );
    daemons[0].stop_with(libc::SIGKILL);
    let out = child.wait_with_output().expect("rake output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("running it again elsewhere"), "{stderr}");
    assert!(
        stderr.contains("(rerun: 127.0.0.1:"),
        "the summary says so: {stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
}

#[test]
fn the_plan_and_a_bad_rakefile() {
    let local = Daemon::start(&[]);
    let project = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        project.path().join("Rakefile"),
        format!("HOSTS = a b:7\n{C_SETS}"),
    )
    .expect("Rakefile");
    let out = rake(
        project.path(),
        &local,
        Path::new("/dev/null"),
        &["-n", "actionset2"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hosts: a:6238 b:7\nactionset2 (1 action(s), run together):\n  remote  cc -o program program.o square.o cube.o\n          requires program.o square.o cube.o\n"
    );
    let out = rake(
        project.path(),
        &local,
        Path::new("/dev/null"),
        &["-n", "actionset9"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no set 'actionset9' in the Rakefile"),
        "{out:?}"
    );
    std::fs::write(project.path().join("Bad"), "actionset1:\n    touch x\n").expect("Rakefile");
    let out = rake(
        project.path(),
        &local,
        Path::new("/dev/null"),
        &["-f", "Bad"],
    );
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ferry: Bad:2:1: expected a tab (actions are indented by one tab, their `requires` by two), not a space\n2 |     touch x\n    ^\n"
    );
    assert!(!project.path().join("x").exists(), "nothing runs");
}

#[test]
fn the_c_program_over_rake64_against_ferrys_own_rake64_listeners() {
    let daemons: Vec<Daemon> = (0..3)
        .map(|_| Daemon::start_networked(&["--allow-any-command"], &["rake64:tcp:127.0.0.1:0"]))
        .collect();
    let project = tempfile::tempdir().expect("tempdir");
    c_program(project.path());
    let hosts: Vec<String> = daemons
        .iter()
        .map(|d| format!("127.0.0.1:{}", d.listener_port("rake64:tcp")))
        .collect();
    std::fs::write(
        project.path().join("Rakefile"),
        format!("HOSTS = {}\n{C_SETS}", hosts.join(" ")),
    )
    .expect("Rakefile");
    let joblog = project.path().join("joblog.tsv");
    let out = rake(
        project.path(),
        &daemons[0],
        Path::new("/dev/null"),
        &[
            "--wire",
            "rake64",
            "--joblog",
            joblog.to_str().expect("utf-8"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "9 8\n");
    let log = std::fs::read_to_string(&joblog).expect("joblog");
    let mut used: Vec<&str> = log
        .lines()
        .skip(1)
        .take(3)
        .map(|l| l.split('\t').nth(1).expect("host"))
        .collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3, "{log}");
    // A failing remote command: stderr shown, its status reported, no later set.
    std::fs::write(
        project.path().join("Rakefile"),
        format!(
            "HOSTS = {}\nactionset1:\n\tremote-ls /nonexistent\nactionset2:\n\ttouch later\n",
            hosts[0]
        ),
    )
    .expect("Rakefile");
    let out = rake(
        project.path(),
        &daemons[0],
        Path::new("/dev/null"),
        &["--wire", "rake64"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nonexistent") && stderr.contains("with exit 2"),
        "{stderr}"
    );
    assert!(!project.path().join("later").exists());
}

#[test]
fn on_a_terminal_a_progress_line_shows_the_set_and_output_lines_stay_whole() {
    use crate::fds::{open_slave, pty, read_until};
    let local = Daemon::start(&[]);
    let project = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        project.path().join("Rakefile"),
        "actionset1:\n\techo one; sleep 0.5\n\techo two; sleep 0.5\n\tsleep 0.5; echo three\n",
    )
    .expect("Rakefile");
    let (master, slave) = pty();
    let mut child = Command::new(ferry_bin())
        .current_dir(project.path())
        .arg("--socket")
        .arg(&local.socket)
        .arg("rake")
        .stdout(std::process::Stdio::from(open_slave(&slave)))
        .stderr(std::process::Stdio::from(open_slave(&slave)))
        .spawn()
        .expect("ferry rake");
    let screen = read_until(&master, "ACTION");
    assert!(
        screen.contains("actionset1: "),
        "a progress line: {screen:?}"
    );
    for line in [
        "echo one; sleep 0.5\tone",
        "echo two; sleep 0.5\ttwo",
        "sleep 0.5; echo three\tthree",
    ] {
        assert!(screen.contains(line), "{line:?} whole in {screen:?}");
    }
    assert_eq!(
        crate::helper::wait_with_timeout(&mut child, Duration::from_secs(10)),
        Some(0)
    );
}

#[test]
fn inputs_a_host_holds_are_not_sent_again_and_that_host_wins_a_tie() {
    let (daemons, _shared, token) = pool(2, &[]);
    let project = tempfile::tempdir().expect("tempdir");
    std::fs::write(project.path().join("input.txt"), "x".repeat(100_000)).expect("input");
    let host = |i: usize| format!("127.0.0.1:{}", daemons[i].port("tcp"));
    let joblog = project.path().join("joblog.tsv");
    let run = |hosts: String| {
        std::fs::write(
            project.path().join("Rakefile"),
            format!(
                "HOSTS = {hosts}\nactionset1:\n\tremote-wc -c input.txt\n\t\trequires input.txt\n"
            ),
        )
        .expect("Rakefile");
        let out = rake(
            project.path(),
            &daemons[0],
            &token,
            &["--joblog", joblog.to_str().expect("utf-8")],
        );
        assert!(out.status.success(), "{out:?}");
        let log = std::fs::read_to_string(&joblog).expect("joblog");
        let line = log.lines().nth(1).expect("a line").to_owned();
        let fields: Vec<String> = line.split('\t').map(str::to_owned).collect();
        (
            fields[1].clone(),
            fields[4].clone(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // The second host alone: the input is sent.
    let (first, sent, stdout) = run(host(1));
    assert_eq!((first, sent.as_str()), (host(1), "100000"));
    assert!(stdout.contains("100000 input.txt"), "{stdout}");
    // Both hosts, equally idle: the one that holds the input wins, and nothing is sent.
    let (second, sent, stdout) = run(format!("{} {}", host(0), host(1)));
    assert_eq!((second, sent.as_str()), (host(1), "0"));
    assert!(stdout.contains("100000 input.txt"), "{stdout}");
}

#[test]
fn connections_to_a_host_are_kept_for_the_whole_run() {
    // Twelve sets of one remote action, then a set of four: every poll and every action
    // takes a connection the run keeps open, instead of one each.
    let (daemons, _shared, token) = pool(2, &[]);
    let host = &daemons[1];
    let project = tempfile::tempdir().expect("tempdir");
    let mut rakefile = hosts_line(&daemons[1..]);
    for set in 1..=12 {
        rakefile.push_str(&format!("actionset{set}:\n\tremote-echo {set}\n"));
    }
    rakefile.push_str("actionset13:\n");
    for n in 0..4 {
        rakefile.push_str(&format!("\tremote-echo last-{n}\n"));
    }
    std::fs::write(project.path().join("Rakefile"), rakefile).expect("Rakefile");
    let out = rake(project.path(), &daemons[0], &token, &[]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for n in 0..4 {
        assert!(stdout.contains(&format!("last-{n}")), "{stdout}");
    }
    let jobs = host.run(&["ps", "--all", "--json"]);
    let ids: Vec<u64> = String::from_utf8_lossy(&jobs.stdout)
        .lines()
        .map(|line| {
            let job: serde_json::Value = serde_json::from_str(line).expect("json");
            job["id"].as_u64().expect("id")
        })
        .collect();
    assert_eq!(ids.len(), 16, "{jobs:?}");
    // Who submitted each job: the connection's address, one per connection.
    let connections: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|id| {
            let shown = host.run(&["show", &id.to_string()]);
            String::from_utf8_lossy(&shown.stdout)
                .lines()
                .find_map(|line| line.strip_prefix("submitted by: "))
                .expect("submitted by")
                .to_owned()
        })
        .collect();
    // The last set's four actions run at once, on four connections at most; a set may open
    // one more while the previous set's connection is still removing its sandbox.
    assert!(
        connections.len() <= 6,
        "16 actions came over {} connections: {connections:?}",
        connections.len()
    );
    // Every sandbox went with its action.
    let sandboxes = host.state_dir.join("files/tokens/default/.sandboxes");
    wait_until(
        "the actions' sandboxes to be removed",
        Duration::from_secs(10),
        || {
            std::fs::read_dir(&sandboxes)
                .map_or(true, |mut entries| entries.next().is_none())
                .then_some(())
        },
        || format!("{sandboxes:?} still holds sandboxes"),
    );
}

/// Starts `ferry rake ARGS` in `dir` (the Rakefile's one remote action sleeps), waits until
/// `host` runs it, interrupts the rake, and waits until `host` runs nothing.
fn interrupt_leaves_nothing_running(
    dir: &Path,
    local: &Daemon,
    host: &Daemon,
    token: &Path,
    args: &[&str],
) {
    let child = Command::new(ferry_bin())
        .current_dir(dir)
        .arg("--socket")
        .arg(&local.socket)
        .args(["--no-tls", "--token-file"])
        .arg(token)
        .arg("rake")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ferry rake");
    let running =
        || String::from_utf8_lossy(&host.run(&["ps", "--all"]).stdout).contains("running");
    wait_until(
        "the action to run on its host",
        Duration::from_secs(20),
        || running().then_some(()),
        || String::from_utf8_lossy(&host.run(&["ps", "--all"]).stdout).into_owned(),
    );
    crate::helper::send_signal(child.id(), libc::SIGINT);
    let out = child.wait_with_output().expect("rake");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rake interrupted"),
        "{out:?}"
    );
    wait_until(
        "the host to run nothing",
        Duration::from_secs(20),
        || (!running()).then_some(()),
        || String::from_utf8_lossy(&host.run(&["ps", "--all"]).stdout).into_owned(),
    );
}

#[test]
fn ctrl_c_stops_the_run_and_leaves_nothing_running_on_the_hosts() {
    let (daemons, _shared, token) = pool(1, &[]);
    let project = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        project.path().join("Rakefile"),
        format!("{}actionset1:\n\tremote-sleep 300\n", hosts_line(&daemons)),
    )
    .expect("Rakefile");
    interrupt_leaves_nothing_running(project.path(), &daemons[0], &daemons[0], &token, &[]);
    // The same over rake64.
    let rake64 = Daemon::start_networked(&["--allow-any-command"], &["rake64:tcp:127.0.0.1:0"]);
    std::fs::write(
        project.path().join("Rakefile"),
        format!(
            "HOSTS = 127.0.0.1:{}\nactionset1:\n\tremote-sleep 300\n",
            rake64.listener_port("rake64:tcp")
        ),
    )
    .expect("Rakefile");
    interrupt_leaves_nothing_running(
        project.path(),
        &rake64,
        &rake64,
        Path::new("/dev/null"),
        &["--wire", "rake64"],
    );
}
