//! Managing many jobs: groups with limits of their own, dependencies, restart, pause and
//! resume, labels and filters, `show`, log slices, and queued work that survives a daemon
//! killed with -9. Each against the real daemon, judged by what the jobs themselves did.

use std::path::Path;
use std::time::Duration;

use crate::helper::{wait_until, Daemon};

const PATIENCE: Duration = Duration::from_secs(30);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ferry ARGS` and returns its stdout, failing the test if it fails.
fn ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.run(args);
    assert!(out.status.success(), "ferry {args:?}: {out:?}");
    stdout(&out)
}

/// `ferry run --detach ARGS`: the new job's id.
fn detach(daemon: &Daemon, args: &[&str]) -> String {
    let mut all = vec!["run", "--detach"];
    all.extend_from_slice(args);
    ok(daemon, &all).trim().to_owned()
}

/// The jobs `ferry ps --all --json` lists, as JSON values.
fn jobs(daemon: &Daemon, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["ps", "--all", "--json"];
    args.extend_from_slice(extra);
    ok(daemon, &args)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

fn state_of(daemon: &Daemon, id: &str) -> String {
    jobs(daemon, &[])
        .iter()
        .find(|job| job["id"].as_u64() == id.parse().ok())
        .map(|job| job["state"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

/// Reads nanoseconds a job wrote with `date +%s%N`.
fn nanos(path: &Path) -> u128 {
    std::fs::read_to_string(path)
        .expect("a job's time")
        .trim()
        .parse()
        .expect("nanoseconds")
}

/// The most jobs of `names` that ran at once, from the start and end times they wrote.
fn most_at_once(dir: &Path, names: &[String]) -> usize {
    let spans: Vec<(u128, u128)> = names
        .iter()
        .map(|n| {
            (
                nanos(&dir.join(format!("{n}.start"))),
                nanos(&dir.join(format!("{n}.end"))),
            )
        })
        .collect();
    spans
        .iter()
        .map(|&(start, _)| {
            spans
                .iter()
                .filter(|&&(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn groups_keep_their_own_limits_measured_by_the_jobs() {
    let daemon = Daemon::start(&[]);
    ok(&daemon, &["group", "add", "one", "--parallel", "1"]);
    ok(&daemon, &["group", "add", "two", "--parallel", "2"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let job = |name: &str| {
        format!(
            "date +%s%N > {d}/{name}.start; sleep 0.4; date +%s%N > {d}/{name}.end",
            d = dir.path().display()
        )
    };
    let mut ids = Vec::new();
    let ones: Vec<String> = (0..3).map(|n| format!("one{n}")).collect();
    let twos: Vec<String> = (0..4).map(|n| format!("two{n}")).collect();
    for name in &ones {
        ids.push(detach(
            &daemon,
            &["--group", "one", "--", "sh", "-c", &job(name)],
        ));
    }
    for name in &twos {
        ids.push(detach(
            &daemon,
            &["--group", "two", "--", "sh", "-c", &job(name)],
        ));
    }
    let listed = ok(&daemon, &["group", "list"]);
    assert!(listed.contains("one"), "{listed}");
    let mut wait = vec!["wait"];
    wait.extend(ids.iter().map(String::as_str));
    ok(&daemon, &wait);
    assert_eq!(
        most_at_once(dir.path(), &ones),
        1,
        "group one runs one at a time"
    );
    assert_eq!(
        most_at_once(dir.path(), &twos),
        2,
        "group two runs two at a time"
    );
    // Both groups ran side by side: one's jobs overlapped two's.
    let all: Vec<String> = ones.iter().chain(&twos).cloned().collect();
    assert!(most_at_once(dir.path(), &all) >= 2);
    // A group with jobs is not removed; the default group never; an empty one is.
    let out = daemon.run(&["group", "rm", "default"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    ok(&daemon, &["group", "rm", "two"]);
    let refused = daemon.run(&["run", "--group", "two", "--", "true"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("there is no group 'two'"),
        "{refused:?}"
    );
}

#[test]
fn a_failure_in_a_chain_stops_what_waits_for_it_and_after_any_runs() {
    let daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mark = |name: &str| format!("touch {}/{name}", dir.path().display());
    let first = detach(
        &daemon,
        &["--", "sh", "-c", &format!("sleep 0.3; {}", mark("a"))],
    );
    let second = detach(
        &daemon,
        &[
            "--after",
            &first,
            "--",
            "sh",
            "-c",
            &format!("{}; exit 4", mark("b")),
        ],
    );
    let third = detach(&daemon, &["--after", &second, "--", "sh", "-c", &mark("c")]);
    let anyway = detach(
        &daemon,
        &[
            "--after",
            &second,
            "--after-any",
            "--",
            "sh",
            "-c",
            &mark("d"),
        ],
    );
    assert_eq!(state_of(&daemon, &third), "queued");
    let out = daemon.run(&["wait", &first, &second, &third, &anyway]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(dir.path().join("a").exists() && dir.path().join("b").exists());
    assert!(
        !dir.path().join("c").exists(),
        "a job whose dependency failed never runs"
    );
    assert!(
        dir.path().join("d").exists(),
        "--after-any runs whatever the outcome"
    );
    assert_eq!(state_of(&daemon, &third), "dependency-failed");
    let shown = ok(&daemon, &["show", "--json", &third]);
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(
        shown["after"],
        serde_json::json!([second.parse::<u64>().unwrap_or(0)])
    );
    assert!(shown["started"].is_null());
    assert!(
        shown["error"]
            .as_str()
            .unwrap_or("")
            .contains("dependency failed"),
        "{shown}"
    );
    // Waiting for oneself, a later job or an unknown one is refused.
    let later = (third.parse::<u64>().unwrap_or(0) + 100).to_string();
    let refused = daemon.run(&["run", "--after", &later, "--", "true"]);
    assert_eq!(refused.status.code(), Some(125), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only for an earlier job"));
}

#[test]
fn pause_stops_the_jobs_processes_and_resume_continues_them() {
    let daemon = Daemon::start(&[]);
    let id = detach(&daemon, &["--", "sleep", "30"]);
    let pid = wait_until(
        "the job's pid",
        PATIENCE,
        || {
            jobs(&daemon, &[])
                .iter()
                .find(|job| job["id"].as_u64() == id.parse().ok())
                .and_then(|job| job["pid"].as_u64())
        },
        || ok(&daemon, &["ps"]),
    );
    let process_state = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after = stat.rfind(')')?;
                stat[after + 1..].trim_start().chars().next()
            })
    };
    ok(&daemon, &["pause", &id]);
    wait_until(
        "the job's process to stop",
        PATIENCE,
        || (process_state() == Some('T')).then_some(()),
        || format!("{:?}", process_state()),
    );
    assert_eq!(state_of(&daemon, &id), "paused");
    assert_eq!(jobs(&daemon, &["--state", "paused"]).len(), 1);
    let again = daemon.run(&["pause", &id]);
    assert_eq!(again.status.code(), Some(125), "paused already: {again:?}");
    ok(&daemon, &["resume", &id]);
    wait_until(
        "the job's process to continue",
        PATIENCE,
        || (process_state() == Some('S')).then_some(()),
        || format!("{:?}", process_state()),
    );
    assert_eq!(state_of(&daemon, &id), "running");
    // Killing a paused job ends it (it is continued to take the signal).
    ok(&daemon, &["pause", &id]);
    ok(&daemon, &["kill", &id]);
    let out = daemon.run(&["wait", &id]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&daemon, &["show", "--json", &id])).expect("json");
    assert!(shown["paused_us"].as_u64().unwrap_or(0) > 0, "{shown}");
}

#[test]
fn a_paused_group_keeps_its_queued_jobs_waiting() {
    let daemon = Daemon::start(&[]);
    ok(&daemon, &["group", "add", "batch", "--parallel", "2"]);
    ok(&daemon, &["pause", "--group", "batch"]);
    let id = detach(&daemon, &["--group", "batch", "--", "true"]);
    let other = detach(&daemon, &["--", "true"]);
    ok(&daemon, &["wait", &other]);
    assert_eq!(state_of(&daemon, &id), "queued", "its group is paused");
    let listed = ok(&daemon, &["group", "list", "--json"]);
    let batch: serde_json::Value = listed
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|group| group["name"] == "batch")
        .expect("the group is listed");
    let expected = serde_json::json!({"name": "batch", "parallel": 2, "running": 0, "queued": 1, "paused": true});
    assert_eq!(batch, expected);
    ok(&daemon, &["resume", "--group", "batch"]);
    ok(&daemon, &["wait", &id]);
    assert_eq!(state_of(&daemon, &id), "exited");
}

#[test]
fn filters_show_and_log_slices() {
    let daemon = Daemon::start(&[]);
    ok(&daemon, &["group", "add", "web", "--parallel", "4"]);
    let script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done";
    let lines = detach(
        &daemon,
        &[
            "--group", "web", "--label", "nightly", "--", "sh", "-c", script,
        ],
    );
    let failing = detach(&daemon, &["--label", "nightly", "--", "sh", "-c", "exit 2"]);
    let fine = detach(&daemon, &["--", "true"]);
    ok(&daemon, &["wait", &lines, &fine]);
    let _ = daemon.run(&["wait", &failing]);
    let ids = |extra: &[&str]| -> Vec<String> {
        jobs(&daemon, extra)
            .iter()
            .map(|job| job["id"].to_string())
            .collect()
    };
    assert_eq!(
        ids(&["--label", "nightly"]),
        vec![lines.clone(), failing.clone()]
    );
    assert_eq!(ids(&["--group", "web"]), vec![lines.clone()]);
    assert_eq!(ids(&["--state", "failed"]), vec![failing.clone()]);
    assert_eq!(
        ids(&["--state", "failed", "--label", "nightly"]),
        vec![failing.clone()]
    );
    assert_eq!(ids(&["--state", "exited", "--group", "default"]).len(), 2);
    assert_eq!(ids(&["--state", "queued,running"]), Vec::<String>::new());
    let table = ok(&daemon, &["ps", "--label", "nightly"]);
    assert!(
        table.contains("GROUP") && table.contains("nightly"),
        "{table}"
    );
    // show: the fields, the environment's names, values only with --env.
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&daemon, &["show", "--json", &lines])).expect("json");
    assert_eq!(shown["group"], "web");
    assert_eq!(shown["label"], "nightly");
    assert_eq!(shown["command"][0], "sh");
    assert_eq!(shown["exit_code"], 0);
    assert_eq!(shown["stdout_bytes"], 25);
    assert_eq!(shown["principal"], "owner");
    assert!(
        shown["cwd"].is_string() && shown["ended"].is_string(),
        "{shown}"
    );
    assert!(shown["env"]["PATH"].is_null(), "names only: {shown}");
    let with_env: serde_json::Value =
        serde_json::from_str(&ok(&daemon, &["show", "--json", "--env", &lines])).expect("json");
    assert!(with_env["env"]["PATH"].is_string(), "{with_env}");
    // Log slices.
    assert_eq!(
        ok(&daemon, &["log", "--lines", "2", "--stdout", &lines]),
        "out4\nout5\n"
    );
    assert_eq!(
        ok(&daemon, &["log", "--head", "3", "--stdout", &lines]),
        "out1\nout2\nout3\n"
    );
    let err = daemon.run(&["log", "--stderr", "-n", "1", &lines]);
    assert_eq!(stdout(&err), "");
    assert_eq!(String::from_utf8_lossy(&err.stderr), "err5\n");
}

#[test]
fn log_follow_prints_the_tail_then_what_comes() {
    let daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = dir.path().join("gate");
    let script = format!(
        "echo one; echo two; while [ ! -e {g} ]; do sleep 0.05; done; echo three; exit 5",
        g = gate.display()
    );
    let id = detach(&daemon, &["--", "sh", "-c", &script]);
    wait_until(
        "the first lines",
        PATIENCE,
        || ok(&daemon, &["log", &id]).contains("two").then_some(()),
        || ok(&daemon, &["log", &id]),
    );
    let follower = daemon
        .ferry()
        .args(["log", "--follow", "-n", "1", &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ferry log --follow");
    std::fs::write(&gate, "").expect("open the gate");
    let out = follower.wait_with_output().expect("wait");
    assert_eq!(stdout(&out), "two\nthree\n");
    assert_eq!(out.status.code(), Some(5), "the job's status");
}

#[test]
fn restart_runs_a_job_of_an_earlier_daemon_again_as_it_ran() {
    let mut daemon = Daemon::start(&[]);
    ok(&daemon, &["group", "add", "keep", "--parallel", "3"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let id = daemon
        .ferry()
        .current_dir(dir.path())
        .env("FERRY_TEST_WORD", "hello")
        .args([
            "run", "--detach", "--group", "keep", "--label", "again", "--",
        ])
        .args(["sh", "-c", "echo \"$FERRY_TEST_WORD from $PWD\" >> runs"])
        .output()
        .expect("run");
    let id = stdout(&id).trim().to_owned();
    ok(&daemon, &["wait", &id]);
    daemon.restart(&[], None);
    let out = daemon.run(&["restart", "--attach", &id]);
    assert!(out.status.success(), "{out:?}");
    let runs = std::fs::read_to_string(dir.path().join("runs")).expect("runs");
    let line = format!("hello from {}\n", dir.path().display());
    assert_eq!(
        runs,
        format!("{line}{line}"),
        "the same command, directory and environment"
    );
    let restarted = jobs(&daemon, &["--label", "again"]);
    assert_eq!(restarted.len(), 2, "{restarted:?}");
    assert_eq!(
        restarted[1]["group"], "keep",
        "the group survived the restart too"
    );
    let running = daemon.run(&["restart", "12345"]);
    assert_eq!(running.status.code(), Some(125));
}

#[test]
fn queued_jobs_of_a_daemon_killed_with_sigkill_are_queued_again_in_order() {
    let mut daemon = Daemon::start(&[]);
    ok(&daemon, &["group", "add", "serial", "--parallel", "1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = detach(&daemon, &["--group", "serial", "--", "sleep", "30"]);
    let record = |n: u32| format!("echo {n} >> {}/order", dir.path().display());
    let queued: Vec<String> = (1..=3)
        .map(|n| {
            detach(
                &daemon,
                &["--group", "serial", "--", "sh", "-c", &record(n)],
            )
        })
        .collect();
    assert_eq!(state_of(&daemon, &queued[0]), "queued");
    daemon.stop_with(libc::SIGKILL);
    daemon.restart(&[], None);
    assert_eq!(state_of(&daemon, &blocker), "lost");
    let mut wait = vec!["wait"];
    wait.extend(queued.iter().map(String::as_str));
    ok(&daemon, &wait);
    let order = std::fs::read_to_string(dir.path().join("order")).expect("order");
    assert_eq!(order, "1\n2\n3\n", "each ran once, in the order queued");
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&daemon, &["show", "--json", &queued[2]])).expect("json");
    assert_eq!(shown["group"], "serial");
}

#[test]
fn a_job_waits_only_for_jobs_of_its_own_principal() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["ferry:tls:127.0.0.1:0"]);
    let owners = detach(&daemon, &["--", "sleep", "5"]);
    let out = daemon
        .remote()
        .args(["run", "--detach", "--after", &owners, "--", "true"])
        .output()
        .expect("ferry run --after");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("job {owners} is not yours to wait for")),
        "{stderr}"
    );
    // Its own jobs, it may wait for; and groups are the owner's to make.
    let own = daemon
        .remote()
        .args(["run", "--detach", "--", "true"])
        .output()
        .expect("ferry run");
    let own = stdout(&own).trim().to_owned();
    let after = daemon
        .remote()
        .args(["run", "--after", &own, "--", "echo", "after"])
        .output()
        .expect("ferry run --after");
    assert_eq!(stdout(&after), "after\n", "{after:?}");
    let group = daemon
        .remote()
        .args(["group", "add", "mine"])
        .output()
        .expect("ferry group add");
    assert_eq!(group.status.code(), Some(125), "{group:?}");
    ok(&daemon, &["kill", &owners]);
}
