//! Durable history: job records and logs survive restarts and `kill -9`, ids are never
//! reused, retention and prune, the head-and-tail cap, damaged logs, the first schema's store
//! as a fixture, and a full disk.

use std::path::Path;
use std::time::Duration;

use ferry_wire::native::DaemonMessage;

use crate::helper::{poll_until, send_signal, wait_until, Daemon};

/// `ferry ps --all --json`, one value per job.
fn history(daemon: &Daemon) -> Vec<serde_json::Value> {
    let out = daemon.run(&["ps", "--all", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect()
}

/// The ids in the history, oldest first.
fn job_ids(daemon: &Daemon) -> Vec<u64> {
    history(daemon)
        .iter()
        .map(|j| j["id"].as_u64().expect("id"))
        .collect()
}

/// What `ferry log ID` and `ferry attach ID` show: stdout, stderr, status.
fn shown(daemon: &Daemon, verb: &str, id: u64) -> (String, String, Option<i32>) {
    let out = daemon.run(&[verb, &id.to_string()]);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

#[test]
fn records_and_logs_survive_a_restart_exactly_and_ids_are_never_reused() {
    let mut daemon = Daemon::start(&[]);
    for script in [
        "echo out; echo err >&2; exit 3",
        "printf 'no newline'",
        "kill -TERM $$",
    ] {
        daemon.run_script(script);
    }
    let before = history(&daemon);
    assert_eq!(before.len(), 3);
    // The history and the logs are private to the daemon's user.
    for dir in [daemon.state_dir.clone(), daemon.state_dir.join("jobs")] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
    }
    let shown_before: Vec<_> = (1..=3)
        .map(|id| (shown(&daemon, "log", id), shown(&daemon, "attach", id)))
        .collect();
    assert_eq!(shown_before[0].1, ("out\n".into(), "err\n".into(), Some(3)));

    daemon.restart(&[], None);
    assert_eq!(
        history(&daemon),
        before,
        "ps --all shows the same after a restart"
    );
    for (id, was) in (1..=3).zip(&shown_before) {
        assert_eq!(
            &(shown(&daemon, "log", id), shown(&daemon, "attach", id)),
            was,
            "job {id}"
        );
    }
    // `ps` without --all shows this run's jobs only.
    let out = daemon.run(&["ps", "--json"]);
    assert!(out.stdout.is_empty(), "{out:?}");

    // New ids continue after the old ones, also once every old record is pruned.
    daemon.run(&["run", "--", "true"]);
    assert_eq!(history(&daemon).last().expect("a job")["id"], 4);
    let pruned = daemon.run(&["prune", "--keep", "0"]);
    assert_eq!(
        String::from_utf8_lossy(&pruned.stdout)
            .lines()
            .next()
            .map(|l| l.starts_with("removed 4 job(s)")),
        Some(true),
        "{pruned:?}"
    );
    assert!(history(&daemon).is_empty());
    daemon.restart(&[], None);
    daemon.run(&["run", "--", "true"]);
    assert_eq!(history(&daemon).last().expect("a job")["id"], 5);
}

#[test]
fn kill_dash_nine_with_a_hundred_running_jobs_records_them_as_lost() {
    let mut daemon = Daemon::start(&["--max-jobs", "128"]);
    // Three jobs finish before the crash.
    for n in 1..=3 {
        let out = daemon.run_script(&format!("echo done-{n}; exit {n}"));
        assert_eq!(out.status.code(), Some(n));
    }
    // A hundred start and print, then wait.
    let mut raw = daemon.raw();
    for n in 0..100u64 {
        let script = format!("echo started-{n}; exec sleep 120");
        raw.send(&crate::helper::run_message(
            n + 10,
            &["sh", "-c", &script],
            false,
            None,
        ));
    }
    let mut accepted = 0;
    while accepted < 100 {
        match raw.recv() {
            Some(DaemonMessage::Accepted { .. }) => accepted += 1,
            Some(DaemonMessage::Error { message, .. }) => panic!("{message}"),
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    // Wait until each has written its line (the log holds it) and learn their pids.
    let pids: Vec<u64> = wait_until(
        "a hundred jobs running, each with its line in its log",
        Duration::from_secs(30),
        || {
            let running: Vec<u64> = history(&daemon)
                .iter()
                .filter(|j| j["state"] == "running")
                .filter_map(|j| j["pid"].as_u64())
                .collect();
            let logged = (4..=103)
                .filter(|id| shown(&daemon, "log", *id).0.starts_with("started-"))
                .count();
            (running.len() == 100 && logged == 100).then_some(running)
        },
        || format!("{:?}", history(&daemon)),
    );
    assert_eq!(daemon.stop_with(libc::SIGKILL), None);
    // The jobs' process groups go on without a daemon...
    let alive = |pid: &u64| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(pids.iter().all(alive), "the orphans run on");

    daemon.restart(&["--max-jobs", "128"], None);
    // ...until the next daemon, finding their jobs lost, ends them (each pid checked against
    // its recorded start time first).
    let ended = poll_until(Duration::from_secs(30), || {
        (!pids.iter().any(alive)).then_some(())
    });
    if ended.is_none() {
        for pid in &pids {
            send_signal(u32::try_from(*pid).expect("pid"), libc::SIGKILL);
        }
        panic!(
            "the restarted daemon left orphans running: {}",
            daemon.log()
        );
    }
    assert!(
        daemon.log_shows("ending the processes of a job an earlier daemon left running"),
        "{}",
        daemon.log()
    );
    let jobs = history(&daemon);
    assert_eq!(jobs.len(), 103, "{jobs:?}");
    for job in &jobs[..3] {
        let n = job["id"].as_i64().expect("id");
        assert_eq!(job["state"], "exited", "{job}");
        assert_eq!(job["exit_code"], n, "{job}");
        assert_eq!(shown(&daemon, "log", n as u64).0, format!("done-{n}\n"));
    }
    for job in &jobs[3..] {
        assert_eq!(job["state"], "lost", "{job}");
        let id = job["id"].as_u64().expect("id");
        let (out, err, status) = shown(&daemon, "attach", id);
        assert_eq!(out, format!("started-{}\n", id - 4), "job {id}");
        assert!(err.contains("lost"), "{err}");
        assert_ne!(status, Some(0));
    }
    daemon.assert_serving();
}

#[test]
fn retention_by_count_size_and_age_and_prune() {
    let mut daemon = Daemon::start(&[]);
    for n in 1..=6 {
        daemon.run_script(&format!("head -c {} /dev/zero", n * 1000));
    }
    // By count, at the next start.
    daemon.restart(&["--history-max-jobs", "4"], None);
    let ids = job_ids(&daemon);
    assert_eq!(ids, [3, 4, 5, 6]);
    assert!(!daemon.state_dir.join("jobs/1.log").exists());
    assert!(daemon.state_dir.join("jobs/3.log").exists());
    // By size: logs of jobs 5 and 6 (5000 and 6000 bytes of output) fit in 12000, 4's does not.
    daemon.restart(&["--history-max-output", "12000"], None);
    let ids = job_ids(&daemon);
    assert_eq!(ids, [5, 6]);
    // By age, from the configuration file: once the jobs are over a second old.
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64
    };
    let newest = history(&daemon)
        .iter()
        .filter_map(|j| j["submitted"].as_str().map(str::to_owned))
        .max()
        .expect("jobs");
    let newest_ms = humantime::parse_rfc3339(&newest)
        .expect("time")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64;
    wait_until(
        "the jobs to be over a second old",
        Duration::from_secs(10),
        // Submission times are shown to the second: count from the end of that second.
        || (now_ms() > newest_ms + 2100).then_some(()),
        || format!("newest submitted at {newest}"),
    );
    let config = daemon.dir.path().join("daemon.toml");
    std::fs::write(&config, "[history]\nmax_age = \"1s\"\n").expect("config");
    daemon.restart(&["--config", config.to_str().expect("utf-8")], None);
    assert!(history(&daemon).is_empty());
    // `ferry prune` by age and by count.
    for _ in 0..3 {
        daemon.run(&["run", "--", "true"]);
    }
    let out = daemon.run(&["prune", "--older-than", "1h"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "removed 0 job(s), 0 bytes of logs\n"
    );
    let out = daemon.run(&["prune", "--keep", "1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("removed 2 job(s)"),
        "{out:?}"
    );
    assert_eq!(history(&daemon).len(), 1);
    let out = daemon.run(&["prune"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--older-than"));
}

#[test]
fn past_the_cap_yes_keeps_head_and_tail_and_its_client_gets_everything() {
    let daemon = Daemon::start(&["--max-log-size", "1000000"]);
    let out = crate::helper::shell(
        &daemon,
        r#""$FERRY" run --no-fds -- sh -c 'yes | head -c 30000000; echo END' | wc -c"#,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "30000004");
    let job = history(&daemon).pop().expect("a job");
    let id = job["id"].as_u64().expect("id");
    let (log, err, status) = shown(&daemon, "log", id);
    assert_eq!(status, Some(0));
    assert!(
        log.len() <= 1_000_000 && log.len() > 800_000,
        "{}",
        log.len()
    );
    assert!(log.starts_with("y\ny\n"));
    assert!(log.ends_with("y\ny\nEND\n"));
    assert!(err.contains("were not stored"), "{err}");
    let size = std::fs::metadata(daemon.state_dir.join(format!("jobs/{id}.log")))
        .expect("log")
        .len();
    assert!(size < 1_100_000, "the file stays near the cap: {size}");
}

#[test]
fn a_damaged_log_is_an_error_for_its_job_alone() {
    let mut daemon = Daemon::start(&[]);
    for n in 1..=3 {
        daemon.run_script(&format!("echo job-{n}-out; echo job-{n}-err >&2"));
    }
    let log = |id: u64| daemon.state_dir.join(format!("jobs/{id}.log"));
    let bytes = std::fs::read(log(1)).expect("log");
    std::fs::write(log(1), &bytes[..bytes.len() - 30]).expect("truncate");
    std::fs::remove_file(log(2)).expect("remove");
    for _ in 0..2 {
        let (_, err, status) = shown(&daemon, "log", 1);
        assert_eq!(status, Some(125));
        assert!(err.contains("job log is damaged"), "{err}");
        let (_, err, status) = shown(&daemon, "log", 2);
        assert_eq!(status, Some(125));
        assert!(err.contains("is missing"), "{err}");
        assert_eq!(
            shown(&daemon, "log", 3),
            ("job-3-out\n".into(), "job-3-err\n".into(), Some(0))
        );
        let ids = job_ids(&daemon);
        assert_eq!(&ids[..3], [1, 2, 3]);
        daemon.assert_serving();
        // And the same after a restart.
        daemon.restart(&[], None);
    }
}

#[test]
fn a_job_that_wrote_nothing_is_shown_from_its_record_whatever_became_of_its_log() {
    // The store does not flush the log of a job that wrote nothing (its record holds all
    // there is), so a power cut may leave that log empty or gone: its job still reads whole.
    let mut daemon = Daemon::start(&[]);
    daemon.run_script("true");
    daemon.run_script("exit 4");
    daemon.run_script("echo kept");
    daemon.restart(&[], None);
    let log = |id: u64| daemon.state_dir.join(format!("jobs/{id}.log"));
    std::fs::write(log(1), b"").expect("empty the log");
    std::fs::remove_file(log(2)).expect("remove the log");
    // `attach` exits with the job's status, `log` with its own.
    for (verb, second_status) in [("log", 0), ("attach", 4)] {
        assert_eq!(
            shown(&daemon, verb, 1),
            (String::new(), String::new(), Some(0))
        );
        assert_eq!(
            shown(&daemon, verb, 2),
            (String::new(), String::new(), Some(second_status))
        );
        assert_eq!(
            shown(&daemon, verb, 3),
            ("kept\n".into(), String::new(), Some(0))
        );
    }
    // A job that wrote something still needs its log.
    std::fs::remove_file(log(3)).expect("remove the log");
    let (_, err, status) = shown(&daemon, "log", 3);
    assert_eq!(status, Some(125));
    assert!(err.contains("is missing"), "{err}");
    daemon.assert_serving();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_store_written_by_the_first_schema_is_read() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/history-v1");
    let mut daemon = Daemon::start(&[]);
    assert_eq!(daemon.stop_with(libc::SIGTERM), Some(0));
    std::fs::remove_dir_all(&daemon.state_dir).expect("clear");
    copy_dir(&fixture, &daemon.state_dir);
    daemon.restart(&[], None);
    let jobs = history(&daemon);
    let summary: Vec<(u64, String, Option<i64>)> = jobs
        .iter()
        .map(|j| {
            (
                j["id"].as_u64().expect("id"),
                j["command"]
                    .as_array()
                    .expect("argv")
                    .iter()
                    .map(|a| a.as_str().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(" "),
                j["exit_code"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                1,
                "sh -c echo fixture-out; echo fixture-err >&2; exit 3".to_string(),
                Some(3)
            ),
            (2, "true".to_string(), Some(0)),
        ]
    );
    assert_eq!(
        shown(&daemon, "log", 1),
        ("fixture-out\n".into(), "fixture-err\n".into(), Some(0))
    );
    daemon.run(&["run", "--", "true"]);
    assert_eq!(history(&daemon).last().expect("a job")["id"], 3);
}

#[test]
fn a_full_disk_gives_the_job_a_clear_error_and_the_daemon_survives() {
    let mut daemon = Daemon::start(&[]);
    // Files the daemon writes may not grow past 1 MiB (ulimit -f counts 1 KiB blocks in
    // bash, 512-byte blocks in dash: 2048 or 4096 blocks is 1 or 2 MiB either way).
    daemon.restart(&[], Some("ulimit -f 2048"));
    let out = crate::helper::shell(
        &daemon,
        r#""$FERRY" run --no-fds -- sh -c 'head -c 3000000 /dev/zero; echo END' | tail -c 4"#,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "END\n",
        "every byte still arrives"
    );
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("can no longer be stored"), "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    daemon.assert_serving();
    let out = daemon.run(&["run", "--no-fds", "--", "echo", "small"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "small\n");
    let jobs = history(&daemon);
    assert_eq!(jobs.len(), 3, "{jobs:?}");
}

/// Runs `batches` times `size` `true` jobs on one connection, waiting for each batch's exits
/// before sending the next (a client that sends without reading is held back by its answers).
fn run_true_jobs(daemon: &Daemon, batches: u64, size: u64) {
    let mut raw = daemon.raw();
    for batch in 0..batches {
        for request in 0..size {
            let run = crate::helper::run_message(batch * size + request, &["true"], false, None);
            raw.send(&run);
        }
        let mut exits = 0;
        while exits < size {
            match raw.recv() {
                Some(DaemonMessage::Exit { .. }) => exits += 1,
                Some(_) => {}
                None => panic!("the daemon closed after {exits} exits"),
            }
        }
    }
}

#[test]
fn jobs_that_end_at_once_are_recorded_ended_never_left_running() {
    // One finished job kept in memory: `ps --all` shows the others from the store. Two slots:
    // most jobs start from the queue as another ends (the path a soak found racing).
    let daemon = Daemon::start(&["--max-finished", "1", "--max-jobs", "2"]);
    run_true_jobs(&daemon, 30, 20);
    let records = history(&daemon);
    assert_eq!(records.len(), 600);
    let unended: Vec<_> = records
        .iter()
        .filter(|r| r["state"] != "exited" || r["exit_code"] != 0)
        .collect();
    assert!(unended.is_empty(), "{unended:?}");
}

#[test]
fn a_history_longer_than_one_message_is_listed_whole() {
    // 5000 jobs go in one Jobs message: 5150 come in two, each job once, in order.
    let daemon = Daemon::start(&["--max-finished", "10"]);
    run_true_jobs(&daemon, 103, 50);
    let ids = job_ids(&daemon);
    assert_eq!(ids, (1..=5150).collect::<Vec<u64>>());
}
