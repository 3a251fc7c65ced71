//! The peer registry: every connection is a peer whatever its dialect; `ferry peers` lists
//! them, `ferry peers kick` disconnects them with a notice in their own dialect, their jobs go
//! on; only the owner may do either.

use std::os::fd::AsFd;
use std::time::Duration;

use ferry_io::fdpass::send_all_with_fds;
use ferry_wire::fanos::encode_netstring;
use ferry_wire::native::{DaemonMessage, NoticeKind};

use crate::fanos::{connect, oils_recv};
use crate::helper::{run_message, spawn_until_first_line, wait_until, Daemon};

/// `ferry peers --json`, parsed.
fn peers(daemon: &Daemon) -> Vec<serde_json::Value> {
    let out = daemon.run(&["peers", "--json"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect()
}

/// A job's state in `ferry ps --json`.
fn job_state(daemon: &Daemon, job: u64) -> String {
    let out = daemon.run(&["ps", "--json"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("json"))
        .find(|j| j["id"] == job)
        .map(|j| j["state"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

fn user_name() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn peers_of_two_dialects_are_listed_kicked_and_their_jobs_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fanos_socket = dir.path().join("fanos.sock");
    let daemon = Daemon::start_networked(&[], &[&format!("fanos:unix:{}", fanos_socket.display())]);
    assert!(
        daemon.log_shows("listening on fanos:unix:"),
        "{}",
        daemon.log()
    );
    // A native peer running a job of its own (a raw connection).
    let mut raw = daemon.raw();
    raw.send(&run_message(1, &["sleep", "300"], false, None));
    let raw_job = match raw.recv() {
        Some(DaemonMessage::Accepted { job, .. }) => job,
        other => panic!("expected Accepted, got {other:?}"),
    };
    // A FANOS peer in the middle of an ARGV.
    let mut fanos = connect(&fanos_socket);
    let null = std::fs::File::open("/dev/null").expect("null");
    let mut argv = Vec::new();
    encode_netstring(b"ARGV\0sleep\x00300", &mut argv);
    send_all_with_fds(
        fanos.as_fd(),
        &argv,
        &[null.as_fd(), null.as_fd(), null.as_fd()],
    )
    .expect("send");
    // A `ferry run` client that keeps its job if it goes away.
    let (client, ready) = spawn_until_first_line(daemon.ferry().args([
        "run",
        "--no-fds",
        "--no-hangup",
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 300",
    ]));
    assert_eq!(ready, "ready\n");

    let listed = wait_until(
        "four peers with their jobs",
        Duration::from_secs(10),
        || {
            let listed = peers(&daemon);
            let with_jobs = listed.iter().filter(|p| p["jobs_started"] == 1).count();
            (listed.len() == 4 && with_jobs == 3).then_some(listed)
        },
        || format!("{:#?}", peers(&daemon)),
    );
    let me = user_name();
    for peer in &listed {
        assert_eq!(peer["name"], me.as_str(), "{peer}");
        assert!(
            peer["id"].as_str().is_some_and(|id| id.len() >= 10),
            "{peer}"
        );
    }
    let dialects: Vec<&str> = listed
        .iter()
        .map(|p| p["dialect"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        dialects.iter().filter(|d| **d == "fanos").count(),
        1,
        "{dialects:?}"
    );
    assert_eq!(
        dialects.iter().filter(|d| **d == "ferry").count(),
        3,
        "{dialects:?}"
    );
    let asking = listed.iter().filter(|p| p["you"] == true).count();
    assert_eq!(asking, 1, "the asking client is marked");
    let of_job = |job: u64| {
        listed
            .iter()
            .find(|p| {
                p["jobs"]
                    .as_array()
                    .is_some_and(|jobs| jobs.contains(&job.into()))
            })
            .unwrap_or_else(|| panic!("no peer lists job {job}: {listed:#?}"))
            .clone()
    };
    assert_eq!(of_job(raw_job)["dialect"], "ferry");
    let jobs: Vec<u64> = daemon
        .run(&["ps", "--json"])
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).expect("json")["id"]
                .as_u64()
                .expect("id")
        })
        .collect();
    assert_eq!(jobs.len(), 3);
    let fanos_peer = listed
        .iter()
        .find(|p| p["dialect"] == "fanos")
        .expect("fanos peer");
    let fanos_job = fanos_peer["jobs"][0].as_u64().expect("its job");
    let client_job = jobs
        .iter()
        .copied()
        .find(|j| *j != raw_job && *j != fanos_job)
        .expect("the client's job");
    let client_peer = of_job(client_job);

    // Kick one: the `ferry run` client hears it and goes; its job runs on.
    let id = client_peer["id"].as_str().expect("id");
    let out = daemon.run(&["peers", "kick", id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("kicked 1 peer(s): {id}\n")
    );
    let gone = client.wait_with_output().expect("client");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("disconnected by the daemon's owner"),
        "{gone:?}"
    );
    assert_eq!(job_state(&daemon, client_job), "running");

    // Kick all: the others hear it in their own dialects; their jobs run on.
    let out = daemon.run(&["peers", "kick", "all"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("kicked 2 peer(s): "),
        "{out:?}"
    );
    let notice = loop {
        match raw.recv() {
            Some(DaemonMessage::Notice { kind, message }) => break (kind, message),
            Some(_) => {}
            None => panic!("closed without a notice"),
        }
    };
    assert_eq!(notice.0, NoticeKind::Kicked, "{notice:?}");
    raw.expect_closed();
    let reply = oils_recv(&mut fanos).expect("a reply");
    assert!(
        reply.starts_with("ERROR disconnected by the daemon's owner"),
        "{reply}"
    );
    assert_eq!(oils_recv(&mut fanos), None, "then closed");
    for job in [raw_job, fanos_job, client_job] {
        assert_eq!(job_state(&daemon, job), "running", "job {job}");
    }
    wait_until(
        "only the asking client to be listed",
        Duration::from_secs(10),
        || (peers(&daemon).len() == 1).then_some(()),
        || format!("{:#?}", peers(&daemon)),
    );
    // An unknown id is a clear error.
    let out = daemon.run(&["peers", "kick", "nobody12345"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no peer 'nobody12345'"),
        "{out:?}"
    );
}

#[test]
fn only_the_owner_may_list_or_kick_peers() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["ferry:tls:127.0.0.1:0"]);
    for (args, what) in [
        (&["peers"][..], "list its peers"),
        (&["peers", "kick", "all"], "disconnect its peers"),
    ] {
        let out = daemon.remote().args(args).output().expect("ferry");
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        let expected = format!("the daemon is not yours (it belongs to owner; you are token:default): only its owner, on its Unix socket, may {what}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&expected),
            "{out:?}"
        );
    }
    // The owner sees a TLS client as a peer named after how it authenticated.
    let (mut remote, _) = spawn_until_first_line(daemon.remote().args([
        "run",
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 300",
    ]));
    let listed = peers(&daemon);
    let tls = listed
        .iter()
        .find(|p| p["you"] == false)
        .unwrap_or_else(|| panic!("{listed:#?}"));
    assert_eq!(tls["name"], "default", "the token's label");
    assert_eq!(tls["principal"], "token:default");
    assert!(
        tls["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{tls}"
    );
    let _ = remote.kill();
    let _ = remote.wait();
}

/// A peer of each dialect without a handshake of its own is disconnected by `ferry peers
/// kick`: told in its dialect's words where it has any, its connection closed within a
/// second, gone from `ferry peers`. (A FIFO pair is the daemon's own: its connection ends,
/// and the pair is opened anew for the next client.)
#[test]
fn kicked_cbsd_cbsdng_c2_and_rake64_peers_are_told_and_closed() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    let listeners = [
        format!("cbsd:unix:{}", path("cbsd.sock").display()),
        format!("cbsdng:unix:{}", path("cbsdng.sock").display()),
        "c2:tcp:127.0.0.1:0".to_owned(),
        format!("c2:fifo:{},{}", path("in").display(), path("out").display()),
        "rake64:tcp:127.0.0.1:0".to_owned(),
    ];
    let listeners: Vec<&str> = listeners.iter().map(String::as_str).collect();
    let daemon = Daemon::start_networked(&["--allow-any-command"], &listeners);
    for form in ["cbsd:unix", "cbsdng:unix", "c2:fifo"] {
        assert!(daemon.log_shows(&format!("listening on {form}:")));
    }
    let unix_address = format!("unix, pid {}", std::process::id());
    let tcp = |form: &str| {
        let stream =
            std::net::TcpStream::connect(("127.0.0.1", daemon.listener_port(form))).expect("tcp");
        let address = stream.local_addr().expect("addr").to_string();
        (Box::new(stream) as Box<dyn ReadWriteTimeout>, address)
    };
    let unix = |name: &str| {
        let stream = std::os::unix::net::UnixStream::connect(path(name)).expect("unix");
        (
            Box::new(stream) as Box<dyn ReadWriteTimeout>,
            unix_address.clone(),
        )
    };
    let told = "disconnected by the daemon's owner (ferry peers kick); your jobs go on";
    let peers_of = |dialect: &str, address: &str| -> Vec<String> {
        peers(&daemon)
            .into_iter()
            .filter(|p| p["dialect"] == dialect && p["address"] == address)
            .filter_map(|p| p["id"].as_str().map(str::to_owned))
            .collect()
    };
    // Each dialect, its connection and address, and how its words start (`None`: it has no
    // words for it).
    type Case<'a> = (
        &'a str,
        (Box<dyn ReadWriteTimeout>, String),
        Option<&'a str>,
    );
    let cases: Vec<Case<'_>> = vec![
        ("cbsd", unix("cbsd.sock"), Some("0 5 ")),
        ("cbsdng", unix("cbsdng.sock"), Some("")),
        ("c2", tcp("c2:tcp"), None),
        ("rake64", tcp("rake64:tcp"), Some("!F")),
    ];
    for (dialect, (mut stream, address), words) in cases {
        let id = wait_until(
            &format!("the {dialect} peer listed"),
            Duration::from_secs(10),
            || peers_of(dialect, &address).pop(),
            || format!("{:#?}", peers(&daemon)),
        );
        let out = daemon.run(&["peers", "kick", &id]);
        assert!(out.status.success(), "{out:?}");
        stream.read_within(Duration::from_secs(1));
        let mut said = Vec::new();
        match stream.read_to_end(&mut said) {
            Ok(_) => {}
            Err(e) => panic!("{dialect}: still open a second after the kick ({e}): {said:?}"),
        }
        let said = String::from_utf8_lossy(&said);
        match words {
            Some(start) => assert!(
                said.starts_with(start) && said.contains(told),
                "{dialect}: {said:?}"
            ),
            None => assert!(said.is_empty(), "{dialect}: {said:?}"),
        }
        wait_until(
            &format!("the kicked {dialect} peer to leave the list"),
            Duration::from_secs(5),
            || (!peers(&daemon).iter().any(|p| p["id"] == id.as_str())).then_some(()),
            || format!("{:#?}", peers(&daemon)),
        );
    }
    // The FIFO pair: its connection ends; the pair is opened anew and serves the next client.
    let pair = format!("fifo {},{}", path("in").display(), path("out").display());
    let first = wait_until(
        "the FIFO pair's peer",
        Duration::from_secs(10),
        || peers_of("c2", &pair).pop(),
        || format!("{:#?}", peers(&daemon)),
    );
    assert!(daemon.run(&["peers", "kick", &first]).status.success());
    wait_until(
        "the FIFO pair opened anew",
        Duration::from_secs(5),
        || {
            let now = peers_of("c2", &pair);
            (!now.contains(&first) && !now.is_empty()).then_some(())
        },
        || format!("{:#?}", peers(&daemon)),
    );
    let out = std::process::Command::new(crate::helper::ferry_bin())
        .args(["c2", "--fifo"])
        .arg(format!(
            "{},{}",
            path("in").display(),
            path("out").display()
        ))
        .args(["echo", "again"])
        .output()
        .expect("ferry c2");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "again\n", "{out:?}");
    daemon.assert_serving();
}

/// A connection whose reads can be given a time limit.
trait ReadWriteTimeout: std::io::Read + std::io::Write {
    fn read_within(&self, limit: Duration);
}

impl ReadWriteTimeout for std::net::TcpStream {
    fn read_within(&self, limit: Duration) {
        self.set_read_timeout(Some(limit)).expect("timeout");
    }
}

impl ReadWriteTimeout for std::os::unix::net::UnixStream {
    fn read_within(&self, limit: Duration) {
        self.set_read_timeout(Some(limit)).expect("timeout");
    }
}
