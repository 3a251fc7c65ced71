//! `ferry put` and `ferry get`: byte-exact transfers, concurrency, a gigabyte, hostile names,
//! and transfers that fail or are abandoned leaving nothing under the final name.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_wire::native::{ClientMessage, DaemonMessage, ErrorCode};
use serde_bytes::ByteBuf;

use crate::helper::{wait_until, Daemon};

fn write_random(path: &Path, len: usize, seed: u64) {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    std::fs::write(path, bytes).expect("write");
}

fn files_dir(daemon: &Daemon) -> std::path::PathBuf {
    daemon.state_dir.join("files")
}

#[test]
fn put_then_get_is_byte_exact_and_keeps_the_mode() {
    let daemon = Daemon::start(&[]);
    let local = daemon.dir.path().join("data.bin");
    write_random(&local, 1_000_003, 7);
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let put = daemon
        .ferry()
        .arg("put")
        .arg(&local)
        .arg("deep/dir/data.bin")
        .output()
        .expect("put");
    assert_eq!(
        put.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let stored = files_dir(&daemon).join("deep/dir/data.bin");
    assert_eq!(
        std::fs::read(&stored).expect("stored"),
        std::fs::read(&local).expect("local")
    );
    assert_eq!(
        std::fs::metadata(&stored)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    let back = daemon.dir.path().join("back.bin");
    let get = daemon
        .ferry()
        .args(["get", "deep/dir/data.bin"])
        .arg(&back)
        .output()
        .expect("get");
    assert_eq!(
        get.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(
        std::fs::read(&back).expect("back"),
        std::fs::read(&local).expect("local")
    );
    // A job sees the file area as its working directory only on network listeners; the
    // owner's files are still reachable by path.
    assert!(stored.starts_with(daemon.state_dir.join("files")));
}

#[test]
fn twenty_concurrent_puts_and_gets_over_tls_are_byte_exact() {
    let daemon = Daemon::start_networked(&[], &["ferry:tls:127.0.0.1:0"]);
    let dir = daemon.dir.path().join("many");
    std::fs::create_dir(&dir).expect("dir");
    for i in 0..20 {
        write_random(&dir.join(format!("f{i}")), 50_000 + i * 37_001, i as u64);
    }
    let puts: Vec<_> = (0..20)
        .map(|i| {
            daemon
                .remote()
                .arg("put")
                .arg(dir.join(format!("f{i}")))
                .arg(format!("many/f{i}"))
                .spawn()
                .expect("put")
        })
        .collect();
    for mut put in puts {
        assert_eq!(put.wait().expect("wait").code(), Some(0));
    }
    let back = daemon.dir.path().join("back");
    std::fs::create_dir(&back).expect("dir");
    let gets: Vec<_> = (0..20)
        .map(|i| {
            daemon
                .remote()
                .arg("get")
                .arg(format!("many/f{i}"))
                .arg(&back)
                .spawn()
                .expect("get")
        })
        .collect();
    for mut get in gets {
        assert_eq!(get.wait().expect("wait").code(), Some(0));
    }
    for i in 0..20 {
        let name = format!("f{i}");
        assert_eq!(
            std::fs::read(back.join(&name)).expect("back"),
            std::fs::read(dir.join(&name)).expect("original"),
            "{name}"
        );
    }
}

#[test]
fn a_gigabyte_put_arrives_whole_and_verified() {
    let daemon = Daemon::start(&[]);
    let local = daemon.dir.path().join("big");
    let file = std::fs::File::create(&local).expect("create");
    file.set_len(1 << 30).expect("sparse gigabyte");
    // A few non-zero bytes, far apart, so a lost or misplaced chunk shows.
    for (offset, byte) in [(0u64, 1u8), (123_456_789, 2), ((1 << 30) - 1, 3)] {
        std::os::unix::fs::FileExt::write_at(&file, &[byte], offset).expect("mark");
    }
    drop(file);
    let put = daemon
        .ferry()
        .arg("put")
        .arg(&local)
        .arg("big")
        .output()
        .expect("put");
    assert_eq!(
        put.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let cmp = Command::new("cmp")
        .arg(&local)
        .arg(files_dir(&daemon).join("big"))
        .output()
        .expect("cmp");
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
}

#[test]
fn hostile_names_are_refused_and_nothing_is_written() {
    let daemon = Daemon::start(&[]);
    let local = daemon.dir.path().join("payload");
    std::fs::write(&local, "payload").expect("write");
    let outside = daemon.dir.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::create_dir_all(files_dir(&daemon)).expect("files");
    std::os::unix::fs::symlink(&outside, files_dir(&daemon).join("link")).expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", files_dir(&daemon).join("passwd")).expect("symlink");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        files_dir(&daemon).join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("fifo");
    for (remote, expected) in [
        ("/tmp/ferry-absolute", "absolute paths are refused"),
        ("../escape", "'..' is refused"),
        ("a/../../escape", "'..' is refused"),
        ("link/inside-outside", "leads outside the file area"),
        ("fifo", "not a regular file"),
    ] {
        let out = daemon
            .ferry()
            .arg("put")
            .arg(&local)
            .arg(remote)
            .output()
            .expect("put");
        assert_ne!(out.status.code(), Some(0), "{remote}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{remote}: {stderr}");
    }
    for (remote, expected) in [
        ("passwd", "leads outside the file area"),
        ("fifo", "not a regular file"),
        ("../../etc/passwd", "'..' is refused"),
    ] {
        let out = daemon
            .ferry()
            .args(["get", remote])
            .current_dir(daemon.dir.path())
            .output()
            .expect("get");
        assert_ne!(out.status.code(), Some(0), "{remote}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{remote}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
    assert!(!Path::new("/tmp/ferry-absolute").exists());
    // A NUL in a name, straight on the wire.
    let mut raw = daemon.raw();
    raw.send(&ClientMessage::PutStart {
        request: 1,
        path: ByteBuf::from(b"bad\0name".to_vec()),
        size: 1,
        mode: 0o644,
    });
    match raw.recv() {
        Some(DaemonMessage::Error { code, message, .. }) => {
            assert_eq!(code, ErrorCode::InvalidRequest);
            assert!(message.contains("NUL"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    daemon.assert_serving();
}

/// Starts a put on a raw connection and expects the daemon's go-ahead.
fn start_put(raw: &mut crate::helper::Raw, request: u64, name: &[u8], size: u64) {
    raw.send(&ClientMessage::PutStart {
        request,
        path: ByteBuf::from(name.to_vec()),
        size,
        mode: 0o644,
    });
    match raw.recv() {
        Some(DaemonMessage::Done { request: r }) if r == request => {}
        other => panic!("expected Done for the put, got {other:?}"),
    }
}

#[test]
fn a_put_cut_by_kill_9_is_never_served_and_is_gone_after_the_restart() {
    let mut daemon = Daemon::start(&[]);
    let chunk = 256 * 1024;
    let sent = 48 * chunk;
    let mut raw = daemon.raw();
    start_put(&mut raw, 1, b"inflight/big.bin", 30 << 20);
    for _ in 0..48 {
        raw.send(&ClientMessage::PutData {
            request: 1,
            data: vec![7; chunk],
        });
    }
    let inflight = files_dir(&daemon).join("inflight");
    let partial = || -> Vec<(String, u64)> {
        std::fs::read_dir(&inflight)
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| {
                        let len = e.metadata().ok()?.len();
                        Some((e.file_name().to_string_lossy().into_owned(), len))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let temp = wait_until(
        "the daemon to have written what was sent",
        Duration::from_secs(20),
        || {
            partial()
                .into_iter()
                .find(|(name, len)| name.starts_with(".ferry-part.") && *len == sent as u64)
                .map(|(name, _)| name)
        },
        || format!("{:?}", partial()),
    );
    // While it is in flight, neither a listing nor a get sees it.
    let mut other = daemon.raw();
    let check_invisible = |raw: &mut crate::helper::Raw| {
        raw.send(&ClientMessage::List {
            request: 7,
            path: ByteBuf::from(b"inflight".to_vec()),
        });
        match raw.recv() {
            Some(DaemonMessage::Listing {
                entries, others, ..
            }) => assert!(entries.is_empty() && others.is_empty(), "{entries:?}"),
            other => panic!("expected a listing, got {other:?}"),
        }
        for name in ["inflight/big.bin".to_owned(), format!("inflight/{temp}")] {
            raw.send(&ClientMessage::Get {
                request: 8,
                path: ByteBuf::from(name.clone().into_bytes()),
            });
            match raw.recv() {
                Some(DaemonMessage::Error { message, .. }) => {
                    assert!(message.contains("no such file"), "{name}: {message}")
                }
                other => panic!("{name}: expected an error, got {other:?}"),
            }
        }
    };
    check_invisible(&mut other);
    daemon.stop_with(libc::SIGKILL);
    drop((raw, other));
    assert!(
        inflight.join(&temp).exists(),
        "the kill left the partial file"
    );
    daemon.restart(&[], None);
    check_invisible(&mut daemon.raw());
    wait_until(
        "the restarted daemon to remove the partial upload",
        Duration::from_secs(20),
        || partial().is_empty().then_some(()),
        || format!("{:?}", partial()),
    );
    // The name is free: a whole put of it lands.
    let local = daemon.dir.path().join("whole.bin");
    std::fs::write(&local, b"whole").expect("write");
    let out = daemon
        .ferry()
        .arg("put")
        .arg(&local)
        .arg("inflight/big.bin")
        .output()
        .expect("put");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(inflight.join("big.bin")).expect("read"),
        b"whole"
    );
}

#[test]
fn a_put_that_stalls_is_dropped_and_the_client_told() {
    let daemon = Daemon::start(&["--upload-idle-timeout", "1s"]);
    let mut raw = daemon.raw();
    start_put(&mut raw, 1, b"slow.bin", 1000);
    raw.send(&ClientMessage::PutData {
        request: 1,
        data: vec![1; 10],
    });
    match raw.recv() {
        Some(DaemonMessage::Error {
            request, message, ..
        }) => {
            assert_eq!(request, Some(1));
            assert_eq!(
                message,
                "slow.bin: no bytes came for 1s: the transfer was dropped"
            );
        }
        other => panic!("expected the put dropped, got {other:?}"),
    }
    // Its late bytes and end are dropped quietly; the connection serves on.
    raw.send(&ClientMessage::PutData {
        request: 1,
        data: vec![1; 990],
    });
    let leftovers = || -> Vec<std::ffi::OsString> {
        std::fs::read_dir(files_dir(&daemon))
            .expect("files")
            .flatten()
            .map(|e| e.file_name())
            .collect()
    };
    wait_until(
        "the stalled put's file to go",
        Duration::from_secs(10),
        || leftovers().is_empty().then_some(()),
        || format!("{:?}", leftovers()),
    );
    start_put(&mut raw, 2, b"next.bin", 0);
    daemon.assert_serving();
}

#[test]
fn an_abandoned_or_corrupted_put_leaves_nothing_under_the_final_name() {
    let daemon = Daemon::start(&[]);
    {
        let mut raw = daemon.raw();
        start_put(&mut raw, 1, b"half.bin", 1000);
        raw.send(&ClientMessage::PutData {
            request: 1,
            data: vec![7; 400],
        });
        // The client vanishes here.
    }
    let mut raw = daemon.raw();
    start_put(&mut raw, 2, b"bad-sum.bin", 3);
    raw.send(&ClientMessage::PutData {
        request: 2,
        data: b"abc".to_vec(),
    });
    raw.send(&ClientMessage::PutEnd {
        request: 2,
        checksum: ByteBuf::from(vec![0; 16]),
    });
    match raw.recv() {
        Some(DaemonMessage::Error { message, .. }) => {
            assert!(
                message.contains("checksum (XXH3-128) does not match"),
                "{message}"
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // The daemon notices the vanished client and cleans up.
    let names = || -> Vec<String> {
        std::fs::read_dir(files_dir(&daemon))
            .expect("files")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    wait_until(
        "the vanished client's partial upload to be removed",
        Duration::from_secs(10),
        || names().is_empty().then_some(()),
        || format!("left behind: {:?}", names()),
    );
    daemon.assert_serving();
}

/// The sandboxes in a file area (the owner's, or a part of it such as `tokens/default`).
fn sandboxes_in(area: &std::path::Path) -> usize {
    std::fs::read_dir(area.join(".sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The owner's sandboxes.
fn sandboxes(daemon: &Daemon) -> usize {
    sandboxes_in(&files_dir(daemon))
}

#[test]
fn a_sandboxed_job_gets_its_files_and_sends_back_what_matches() {
    let daemon = Daemon::start(&[]);
    let work = daemon.dir.path().join("work");
    std::fs::create_dir(&work).expect("work");
    std::fs::write(work.join("in.txt"), "input\n").expect("input");
    std::fs::write(work.join("other.txt"), "other\n").expect("other");
    let out = daemon
        .ferry()
        .current_dir(&work)
        .args([
            "run",
            "--put",
            "in.txt",
            "other.txt",
            "--get",
            "*.out",
            "--",
        ])
        .args([
            "sh",
            "-c",
            "ls; tr a-z A-Z < in.txt > result.out; echo skip > skip.txt",
        ])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in.txt\nother.txt\n");
    assert_eq!(
        std::fs::read_to_string(work.join("result.out")).expect("result"),
        "INPUT\n"
    );
    assert!(!work.join("skip.txt").exists());
    // The sandbox went with the job's client.
    wait_until(
        "the sandbox to go with its client",
        Duration::from_secs(10),
        || (sandboxes(&daemon) == 0).then_some(()),
        || format!("{} sandboxes", sandboxes(&daemon)),
    );
}

#[test]
fn get_new_brings_back_every_created_or_changed_file_and_keep_keeps_the_sandbox() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["ferry:tls:127.0.0.1:0"]);
    let work = daemon.dir.path().join("work");
    std::fs::create_dir(&work).expect("work");
    std::fs::write(work.join("same.txt"), "same\n").expect("same");
    std::fs::write(work.join("grow.txt"), "grow\n").expect("grow");
    let out = daemon
        .remote()
        .current_dir(&work)
        .args([
            "run",
            "--put",
            "same.txt",
            "grow.txt",
            "--get-new",
            "--keep",
            "--",
        ])
        .args([
            "sh",
            "-c",
            "echo more >> grow.txt; mkdir -p sub; echo deep > sub/new.txt",
        ])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(work.join("grow.txt")).expect("grow"),
        "grow\nmore\n"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("sub/new.txt")).expect("new"),
        "deep\n"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the sandbox is kept"), "{stderr}");
    // In the token holder's own part of the file area.
    assert_eq!(sandboxes_in(&files_dir(&daemon).join("tokens/default")), 1);
}

#[test]
fn links_that_get_would_fetch_are_named_and_not_fetched() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["ferry:tls:127.0.0.1:0"]);
    let work = daemon.dir.path().join("work");
    std::fs::create_dir(&work).expect("work");
    for (get, wanted) in [("--get-new", None), ("--get", Some("*.out"))] {
        let mut command = daemon.remote();
        command.current_dir(&work).args(["run", get]);
        command.args(wanted);
        let out = command
            .args(["--", "sh", "-c"])
            .arg("echo result > real.out; ln -s /etc/passwd link.out; mkfifo pipe.out")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(
            std::fs::read_to_string(work.join("real.out")).expect("fetched"),
            "result\n"
        );
        for (name, what) in [("link.out", "a symbolic link"), ("pipe.out", "a FIFO")] {
            let said = format!("not fetched: {name} is {what} (only regular files are fetched)");
            assert!(stderr.contains(&said), "{get}: {stderr}");
            assert!(
                std::fs::symlink_metadata(work.join(name)).is_err(),
                "{name}"
            );
        }
        std::fs::remove_file(work.join("real.out")).expect("clean");
    }
}

#[test]
fn a_large_file_crosses_tls_both_ways() {
    // Regression: TLS holds written bytes until flushed; the last chunk once stayed behind.
    let daemon = Daemon::start_networked(&[], &["ferry:tls:127.0.0.1:0"]);
    let local = daemon.dir.path().join("large");
    write_random(&local, 48 * 1024 * 1024 + 12_345, 99);
    let put = daemon
        .remote()
        .arg("put")
        .arg(&local)
        .arg("large")
        .output()
        .expect("put");
    assert_eq!(
        put.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let back = daemon.dir.path().join("large.back");
    let get = daemon
        .remote()
        .args(["get", "large"])
        .arg(&back)
        .output()
        .expect("get");
    assert_eq!(
        get.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(std::fs::read(&back).expect("back") == std::fs::read(&local).expect("local"));
}

#[test]
fn ls_and_rm_manage_ones_own_part_and_get_never_overwrites_without_force() {
    let daemon = Daemon::start_networked(&[], &["ferry:tls:127.0.0.1:0"]);
    let work = daemon.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("work");
    std::fs::write(work.join("a.txt"), "alpha\n").expect("write");
    // The owner's files, and a token holder's (over TLS: its own part of the area).
    for args in [["put", "a.txt", "mine/a.txt"], ["put", "a.txt", "top.txt"]] {
        let out = daemon
            .ferry()
            .current_dir(&work)
            .args(args)
            .output()
            .expect("put");
        assert!(out.status.success(), "{out:?}");
    }
    let out = daemon
        .remote()
        .current_dir(&work)
        .args(["put", "a.txt", "theirs.txt"])
        .output()
        .expect("put");
    assert!(out.status.success(), "{out:?}");
    let remote_ls = daemon.remote().args(["ls"]).output().expect("ls");
    let listed = String::from_utf8_lossy(&remote_ls.stdout);
    assert!(
        listed.contains("theirs.txt") && !listed.contains("top.txt"),
        "{listed}"
    );
    let out = daemon.run(&["ls", "mine"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.starts_with("SIZE  MODIFIED") && listed.contains("6     "),
        "{listed}"
    );
    assert!(listed.contains("mine/a.txt"), "{listed}");
    let json = daemon.run(&["ls", "--json"]);
    let paths: Vec<String> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("json")["path"]
                .as_str()
                .expect("path")
                .to_owned()
        })
        .collect();
    assert!(
        paths.contains(&"mine/a.txt".to_string()) && paths.contains(&"top.txt".to_string()),
        "{paths:?}"
    );
    // rm: a file; a directory only with -r; what is not there is an error, and the rest goes on.
    let out = daemon.run(&["rm", "mine"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is a directory: remove it and all it holds with --recursive (-r)"),
        "{out:?}"
    );
    let out = daemon.run(&["rm", "-r", "nothing-here", "mine"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing-here: no such file"),
        "{out:?}"
    );
    assert!(!files_dir(&daemon).join("mine").exists());
    let out = daemon
        .remote()
        .args(["rm", "theirs.txt"])
        .output()
        .expect("rm");
    assert!(out.status.success(), "{out:?}");
    let out = daemon
        .remote()
        .args(["rm", "../top.txt"])
        .output()
        .expect("rm");
    assert!(!out.status.success());
    assert!(files_dir(&daemon).join("top.txt").exists());
    // get: an existing local file is replaced only with --force.
    let out = daemon
        .ferry()
        .current_dir(&work)
        .args(["get", "top.txt", "a.txt"])
        .output()
        .expect("get");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a.txt exists: --force replaces it"),
        "{out:?}"
    );
    std::fs::write(work.join("a.txt"), "changed\n").expect("write");
    let out = daemon
        .ferry()
        .current_dir(&work)
        .args(["get", "--force", "top.txt", "a.txt"])
        .output()
        .expect("get");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(work.join("a.txt")).expect("read"),
        "alpha\n"
    );
}
