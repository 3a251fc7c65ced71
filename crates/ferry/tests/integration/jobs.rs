//! Jobs: detach, attach, log, ps, kill, and many jobs on one connection.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use ferry_wire::native::{DaemonMessage, Stream};

use crate::helper::{
    live_processes_in_group, spawn_until_first_line, wait_until, wait_with_timeout, Daemon,
};

fn detach(daemon: &Daemon, command: &[&str]) -> u64 {
    let mut args = vec!["run", "--detach", "--"];
    args.extend_from_slice(command);
    let out = daemon.run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("job id, got {text:?}"))
}

fn ps_json(daemon: &Daemon) -> Vec<serde_json::Value> {
    let out = daemon.run(&["ps", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect()
}

fn job_json(daemon: &Daemon, id: u64) -> serde_json::Value {
    ps_json(daemon)
        .into_iter()
        .find(|j| j["id"] == id)
        .expect("job listed")
}

fn wait_for_state(daemon: &Daemon, id: u64, state: &str) -> serde_json::Value {
    wait_until(
        &format!("job {id} to be {state}"),
        Duration::from_secs(20),
        || Some(job_json(daemon, id)).filter(|job| job["state"] == state),
        || format!("{}", job_json(daemon, id)),
    )
}

/// Waits until the processes of process group `pgid` number `count`.
fn wait_for_group(pgid: u32, count: usize) {
    wait_until(
        &format!("{count} live processes in group {pgid}"),
        Duration::from_secs(10),
        || (live_processes_in_group(pgid).len() == count).then_some(()),
        || format!("{:?}", live_processes_in_group(pgid)),
    )
}

#[test]
fn detach_prints_the_id_and_attach_replays_then_follows_to_the_exit() {
    let daemon = Daemon::start(&[]);
    let id = detach(
        &daemon,
        &[
            "sh",
            "-c",
            "echo one; echo two >&2; read x < /dev/null; sleep 1; echo three; exit 5",
        ],
    );
    let attach = || {
        daemon
            .ferry()
            .args(["attach", &id.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("attach")
    };
    let (first, second) = (attach(), attach());
    let first = first.wait_with_output().expect("first");
    let second = second.wait_with_output().expect("second");
    assert_eq!(String::from_utf8_lossy(&first.stdout), "one\nthree\n");
    assert_eq!(String::from_utf8_lossy(&first.stderr), "two\n");
    assert_eq!(first.status.code(), Some(5));
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(first.stderr, second.stderr);
    // Attaching after the end replays everything and gives the same status.
    let late = daemon.run(&["attach", &id.to_string()]);
    assert_eq!(late.stdout, first.stdout);
    assert_eq!(late.status.code(), Some(5));
}

#[test]
fn log_prints_stored_output_of_running_and_finished_jobs() {
    let daemon = Daemon::start(&[]);
    let id = detach(
        &daemon,
        &["sh", "-c", "echo early; echo oops >&2; exec sleep 300"],
    );
    let out = wait_until(
        "the running job's first output on both streams in its log",
        Duration::from_secs(20),
        || {
            Some(daemon.run(&["log", &id.to_string()]))
                .filter(|out| !out.stdout.is_empty() && !out.stderr.is_empty())
        },
        || daemon.log(),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "early\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        daemon
            .run(&["kill", "-s", "KILL", &id.to_string()])
            .status
            .code(),
        Some(0)
    );
    wait_for_state(&daemon, id, "killed");
    let out = daemon.run(&["log", &id.to_string()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "early\n");
    let missing = daemon.run(&["log", "999999"]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no job 999999"));
}

#[test]
fn ps_lists_jobs_as_a_table_and_as_json() {
    let daemon = Daemon::start(&[]);
    let done = detach(&daemon, &["sh", "-c", "exit 2"]);
    let running = detach(&daemon, &["sleep", "300"]);
    wait_for_state(&daemon, done, "exited");
    let table = String::from_utf8_lossy(&daemon.run(&["ps"]).stdout).into_owned();
    let header = table.lines().next().expect("header");
    for column in ["ID", "STATE", "EXIT", "STARTED", "TIME", "COMMAND"] {
        assert!(header.contains(column), "{header}");
    }
    let row = |id: u64| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
            .unwrap_or_else(|| panic!("row {id} in\n{table}"))
            .to_owned()
    };
    assert!(
        row(done).contains("exited") && row(done).contains("sh -c 'exit 2'"),
        "{table}"
    );
    assert!(row(running).contains("running") && row(running).contains("sleep 300"));
    let job = job_json(&daemon, done);
    assert_eq!(job["exit_code"], 2);
    assert_eq!(job["command"], serde_json::json!(["sh", "-c", "exit 2"]));
    assert!(job["started"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert_eq!(job_json(&daemon, running)["state"], "running");
    daemon.run(&["kill", &running.to_string()]);
}

#[test]
fn kill_signals_the_whole_process_group() {
    let daemon = Daemon::start(&[]);
    let id = detach(&daemon, &["sh", "-c", "sleep 300 & sleep 300"]);
    let pid = wait_until(
        "the job's pid",
        Duration::from_secs(10),
        || job_json(&daemon, id)["pid"].as_u64().map(|pid| pid as u32),
        || format!("{}", job_json(&daemon, id)),
    );
    // sh and two sleeps.
    wait_for_group(pid, 3);
    let out = daemon.run(&["kill", &id.to_string()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = wait_for_state(&daemon, id, "killed");
    assert_eq!(job["signal"], 15);
    // No sleep is left.
    wait_for_group(pid, 0);
    // Killing a finished job is a clear error.
    let again = daemon.run(&["kill", &id.to_string()]);
    assert_ne!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already finished"));
    let bad = daemon.run(&["kill", "-s", "NOPE", &id.to_string()]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown signal 'NOPE'"));
}

#[test]
fn one_connection_runs_many_jobs_with_output_multiplexed_by_job_id() {
    let daemon = Daemon::start(&[]);
    let mut raw = daemon.raw();
    let scripts = [
        "for i in 1 2 3; do echo a$i; sleep 0.05; done",
        "for i in 1 2 3; do echo b$i >&2; sleep 0.05; done",
        "head -c 300000 /dev/zero | tr '\\0' c",
    ];
    for (request, script) in scripts.iter().enumerate() {
        raw.send(&crate::helper::run_message(
            request as u64,
            &["sh", "-c", script],
            false,
            None,
        ));
    }
    let mut jobs = HashMap::new();
    let mut output: HashMap<(u64, Stream), Vec<u8>> = HashMap::new();
    let mut exits = HashMap::new();
    while exits.len() < 3 {
        match raw.recv().expect("frame") {
            DaemonMessage::Accepted { request, job, .. } => {
                jobs.insert(request, job);
            }
            DaemonMessage::Output {
                job,
                stream,
                offset,
                data,
            } => {
                let so_far = output.entry((job, stream)).or_default();
                assert_eq!(offset, so_far.len() as u64, "offsets are contiguous");
                so_far.extend_from_slice(&data);
            }
            DaemonMessage::Exit { job, exit } => {
                exits.insert(job, exit);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut text = |request: u64, stream| {
        String::from_utf8(output.remove(&(jobs[&request], stream)).unwrap_or_default())
            .expect("utf8")
    };
    assert_eq!(text(0, Stream::Stdout), "a1\na2\na3\n");
    assert_eq!(text(1, Stream::Stderr), "b1\nb2\nb3\n");
    assert_eq!(text(2, Stream::Stdout), "c".repeat(300_000));
    assert!(
        output.values().all(|v| v.is_empty()),
        "nothing else arrived"
    );
    assert!(exits.values().all(|e| e.code == Some(0)));
}

#[test]
fn a_running_job_outlives_a_vanished_client_that_asked_to_keep_it() {
    let daemon = Daemon::start(&[]);
    let (mut client, started) = spawn_until_first_line(daemon.ferry().args([
        "run",
        "--no-hangup",
        "--",
        "sh",
        "-c",
        "echo started; sleep 1; echo finished",
    ]));
    assert_eq!(started, "started\n");
    client.kill().expect("kill client");
    let _ = client.wait();
    let jobs = ps_json(&daemon);
    let id = jobs.last().expect("a job")["id"].as_u64().expect("id");
    let job = wait_for_state(&daemon, id, "exited");
    assert_eq!(job["exit_code"], 0);
    let log = daemon.run(&["log", &id.to_string()]);
    assert_eq!(String::from_utf8_lossy(&log.stdout), "started\nfinished\n");
}

#[test]
fn a_vanished_client_hangs_up_its_job_by_default() {
    let daemon = Daemon::start(&[]);
    let mut client = daemon
        .ferry()
        .args(["run", "--", "sleep", "300"])
        .spawn()
        .expect("spawn");
    wait_until(
        "the client's job to be listed",
        Duration::from_secs(10),
        || (!ps_json(&daemon).is_empty()).then_some(()),
        || daemon.log(),
    );
    client.kill().expect("kill client");
    let _ = client.wait();
    let id = ps_json(&daemon)[0]["id"].as_u64().expect("id");
    let job = wait_for_state(&daemon, id, "killed");
    assert_eq!(job["signal"], 1, "SIGHUP");
}

#[test]
fn ctrl_c_on_the_client_is_forwarded_to_the_job() {
    let daemon = Daemon::start(&[]);
    let mut client = daemon
        .ferry()
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "trap 'echo caught; exit 9' INT; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = std::io::BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("ready");
    assert_eq!(line, "ready\n");
    crate::helper::send_signal(client.id(), libc::SIGINT);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("rest");
    assert_eq!(rest, "caught\n");
    assert_eq!(
        wait_with_timeout(&mut client, Duration::from_secs(20)),
        Some(9)
    );
}

#[test]
fn the_cost_counts_running_and_queued_jobs_per_slot() {
    let daemon = crate::helper::Daemon::start(&["--max-jobs", "2"]);
    let cost = |daemon: &crate::helper::Daemon| {
        let out = daemon.run(&["cost"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(cost(&daemon), "cost 0 (0 running, 0 queued, 2 job slots)\n");
    for _ in 0..3 {
        let out = daemon.run(&["run", "--detach", "--", "sleep", "300"]);
        assert!(out.status.success(), "{out:?}");
    }
    crate::helper::wait_until(
        "two jobs running and one queued",
        std::time::Duration::from_secs(10),
        || (cost(&daemon) == "cost 1500 (2 running, 1 queued, 2 job slots)\n").then_some(()),
        || cost(&daemon),
    );
}

#[test]
fn wait_follows_every_running_job_to_its_end_and_reports_failures() {
    let daemon = Daemon::start(&[]);
    let ok = detach(&daemon, &["sh", "-c", "sleep 0.3"]);
    let failing = detach(&daemon, &["sh", "-c", "sleep 0.2; exit 3"]);
    let out = daemon.ferry().arg("wait").output().expect("ferry wait");
    assert_eq!(out.status.code(), Some(1), "one failed: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("ferry: job {failing} exited with 3\nferry: 2 job(s) ended, 1 of them without success\n")
    );
    // Both had ended when wait returned.
    let ps = daemon.ferry().args(["ps", "--json"]).output().expect("ps");
    let listing = String::from_utf8_lossy(&ps.stdout);
    assert!(!listing.contains("\"running\""), "{listing}");
    // Named jobs, ended already: at once, with their statuses.
    let out = daemon
        .ferry()
        .args(["wait", "-q", &ok.to_string()])
        .output()
        .expect("ferry wait");
    assert_eq!(
        (out.status.code(), out.stderr.len()),
        (Some(0), 0),
        "{out:?}"
    );
    let out = daemon
        .ferry()
        .args(["wait", "-q", &ok.to_string(), &failing.to_string()])
        .output()
        .expect("ferry wait");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // As JSON: a line per job.
    let out = daemon
        .ferry()
        .args([
            "wait",
            "-q",
            "--json",
            &ok.to_string(),
            &failing.to_string(),
        ])
        .output()
        .expect("ferry wait");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[0]["id"], ok);
    assert_eq!(lines[0]["success"], true);
    assert_eq!(lines[1]["exit_code"], 3);
    // The log of one as JSON.
    let out = daemon.run(&[
        "run",
        "--no-fds",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert!(out.status.success());
    let last = ps_json(&daemon)
        .into_iter()
        .map(|j| j["id"].as_u64().expect("id"))
        .max();
    let log = daemon.run(&["log", "--json", &last.expect("a job").to_string()]);
    let value: serde_json::Value = serde_json::from_slice(&log.stdout).expect("json");
    assert_eq!(
        (value["stdout"].as_str(), value["stderr"].as_str()),
        (Some("out\n"), Some("err\n"))
    );
}
