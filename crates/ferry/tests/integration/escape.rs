//! Jobs cannot escape their end: a grandchild that calls `setsid` (leaving the job's process
//! group) ends when its job's leader exits, when the job is killed, and after the daemon was
//! killed with -9 and started again; with a cgroup per job (where the daemon may make one:
//! the job created in it, or moved into it after fork as on older kernels) and with process
//! groups and the environment mark (`--no-job-cgroups`).

use std::path::Path;
use std::time::Duration;

use crate::helper::{wait_until, Daemon};

/// Whether process `pid` runs (a zombie has ended).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// Shell code that starts a grandchild in a session of its own, its output nowhere (so the
/// job's output closes), which writes its pid to `pidfile` and sleeps.
fn escapee(pidfile: &Path) -> String {
    format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 300' </dev/null >/dev/null 2>&1 &",
        pidfile.display()
    )
}

/// The pid the escapee wrote.
fn escapee_pid(pidfile: &Path, daemon: &Daemon) -> u32 {
    wait_until(
        "the grandchild to write its pid",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|text| text.trim().parse().ok())
        },
        || daemon.log(),
    )
}

fn wait_gone(pid: u32, what: &str, daemon: &Daemon) {
    wait_until(
        what,
        Duration::from_secs(30),
        || (!alive(pid)).then_some(()),
        || daemon.log(),
    );
}

fn detach(daemon: &Daemon, shell: &str) -> String {
    let out = daemon.run(&["run", "--detach", "--", "sh", "-c", shell]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The three ways a job ends, each with a `setsid` grandchild that must end with it.
fn no_grandchild_outlives_its_job(extra: &[&str], tracking: &str) {
    let mut daemon = Daemon::start(extra);
    let log = daemon.log();
    if !log.contains(&format!("jobs are tracked by {tracking}")) {
        assert!(
            tracking.starts_with("a cgroup") && log.contains("jobs are tracked by process groups"),
            "{log}"
        );
        eprintln!(
            "skipped: the daemon may not make cgroups here (it runs as uid {}; see its log)",
            rustix::process::getuid().as_raw()
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The leader exits once the grandchild runs: what it left running ends.
    let first = dir.path().join("first.pid");
    let leader = format!(
        "{} while [ ! -s {} ]; do sleep 0.05; done; echo started",
        escapee(&first),
        first.display()
    );
    let out = daemon.run(&["run", "--", "sh", "-c", &leader]);
    assert!(out.status.success(), "{out:?}");
    let pid = escapee_pid(&first, &daemon);
    wait_gone(pid, "the grandchild to end after its leader", &daemon);
    // A job killed: its grandchild too.
    let second = dir.path().join("second.pid");
    let id = detach(&daemon, &format!("{} sleep 300", escapee(&second)));
    let pid = escapee_pid(&second, &daemon);
    assert!(alive(pid));
    let out = daemon.run(&["kill", &id]);
    assert!(out.status.success(), "{out:?}");
    wait_gone(pid, "the grandchild to end with its killed job", &daemon);
    // The daemon killed with -9: the next one ends what the lost job left.
    let third = dir.path().join("third.pid");
    detach(&daemon, &format!("{} sleep 300", escapee(&third)));
    let pid = escapee_pid(&third, &daemon);
    daemon.stop_with(libc::SIGKILL);
    assert!(alive(pid), "nothing ends it while no daemon runs");
    daemon.restart(extra, None);
    wait_gone(
        pid,
        "the restarted daemon to end the lost job's grandchild",
        &daemon,
    );
    daemon.assert_serving();
}

#[test]
fn with_a_cgroup_per_job_no_setsid_grandchild_outlives_its_job() {
    no_grandchild_outlives_its_job(&[], "a cgroup per job");
}

#[test]
fn with_a_cgroup_per_job_moved_into_after_fork_no_setsid_grandchild_outlives_its_job() {
    // As on kernels without clone3's CLONE_INTO_CGROUP: the job's first process writes itself
    // into its cgroup before it executes the command.
    no_grandchild_outlives_its_job(&["--no-clone-into-cgroup"], "a cgroup per job");
}

#[test]
fn with_process_groups_and_the_mark_no_setsid_grandchild_outlives_its_job() {
    no_grandchild_outlives_its_job(&["--no-job-cgroups"], "process groups");
}
