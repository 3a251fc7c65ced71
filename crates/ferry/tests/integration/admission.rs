//! Admission that cannot starve the owner: connections still authenticating have a pool of
//! their own per listener (closed at the handshake time limit), authenticated ones a pool per
//! listener and a count per principal, and the owner's Unix socket has pools no network peer
//! can take a place in.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ferry_client::{Client, ClientError, Endpoint};

use crate::helper::{wait_until, Daemon};
use crate::remote::tls_init;

/// Connections each attack opens: more than every default pool holds.
const FLOOD: usize = 300;
/// The default pools: handshakes per listener, connections per principal.
const HANDSHAKES: usize = 64;
const PER_PRINCIPAL: usize = 64;

/// A daemon with the owner's socket and a TLS listener, two tokens (`default`, from the
/// `[tls]` directory, and `ops`), a handshake time limit of `handshake_timeout`, and `limits`
/// added to its `[limits]` and `listener` to the TLS listener's section.
fn start(handshake_timeout: &str, limits: &str, listener: &str) -> Daemon {
    Daemon::start_with_config(|dir: &Path, socket: &Path| {
        let tls = dir.join("tls");
        tls_init(&tls, &[]);
        let ops = dir.join("ops.token");
        std::fs::write(&ops, "a-second-token-for-operators\n").expect("ops token");
        format!(
            r#"
[tls]
dir = "{tls}"

[tokens]
ops = "{ops}"

[limits]
handshake_timeout = "{handshake_timeout}"
{limits}

[[listener]]
spec = "ferry:unix:{socket}"

[[listener]]
spec = "ferry:tls:127.0.0.1:0"
commands = "any"
{listener}
"#,
            tls = tls.display(),
            ops = ops.display(),
            socket = socket.display(),
        )
    })
}

/// The owner runs a command on their Unix socket, and it works.
fn owner_runs(daemon: &Daemon) {
    let out = daemon.run(&["run", "--", "echo", "owner got in"]);
    assert!(out.status.success(), "{out:?}\n{}", daemon.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "owner got in\n");
}

/// `ferry ps` over TLS with the `default` token.
fn remote_ps(daemon: &Daemon) -> Output {
    daemon.remote().arg("ps").output().expect("ferry ps")
}

/// Waits until a TLS client is served again, once `what`.
fn wait_for_a_network_client(daemon: &Daemon, what: &str) {
    wait_until(
        &format!("a TLS client to be served once {what}"),
        Duration::from_secs(20),
        || remote_ps(daemon).status.success().then_some(()),
        || daemon.log(),
    );
}

/// The TLS endpoint with the token `label` (`default` or `ops`).
fn endpoint(daemon: &Daemon, label: &str) -> Endpoint {
    let tls = daemon.dir.path().join("tls");
    let token_file = match label {
        "default" => tls.join("token"),
        _ => daemon.dir.path().join(format!("{label}.token")),
    };
    let token = std::fs::read_to_string(token_file).expect("token");
    let config = ferry_client::tls::client_config(&tls.join("ca.pem"), None).expect("TLS config");
    Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port: daemon.ports("tls")[0],
        tls: Some(config),
        token: Some(token.trim().to_owned()),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Waits until the daemon's log shows `needle` `count` times.
fn wait_for_log_lines(daemon: &Daemon, needle: &str, count: usize) {
    wait_until(
        &format!("{count} log lines with '{needle}'"),
        Duration::from_secs(20),
        || (daemon.log().matches(needle).count() >= count).then_some(()),
        || daemon.log(),
    );
}

#[test]
fn silent_connections_to_a_tls_port_cannot_lock_the_owner_out() {
    let daemon = start("60s", "", "");
    let port = daemon.ports("tls")[0];
    // Connections that never start their TLS handshake.
    let silent: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    // The listener keeps its handshake pool's worth and closes the rest as they arrive.
    wait_for_log_lines(
        &daemon,
        "too many connections still authenticating on ferry:tls:",
        FLOOD - HANDSHAKES,
    );
    owner_runs(&daemon);
    // A network client finds no room until the pool has some again...
    // (closed at once, before or after its hello arrived: an EOF or a reset).
    let refused = remote_ps(&daemon);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("the daemon closed the connection during the TLS handshake (")
            && said.contains("): it may have too many connections still authenticating"),
        "{refused:?}"
    );
    drop(silent);
    // ...which it has as soon as the silent connections go.
    wait_for_a_network_client(&daemon, "the silent connections are gone");
}

#[test]
fn tls_handshakes_that_never_say_hello_cannot_lock_the_owner_out() {
    let daemon = start("60s", "", "");
    let port = daemon.ports("tls")[0];
    let config = ferry_client::tls::client_config(&daemon.dir.path().join("tls/ca.pem"), None)
        .expect("TLS config");
    let runtime = runtime();
    // Each finishes its TLS handshake, then sends nothing: the listener keeps exactly its
    // handshake pool's worth of them.
    let mut handshaken = Vec::new();
    for _ in 0..FLOOD {
        let tls = runtime.block_on(async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            ferry_client::tls::connect(config.clone(), "127.0.0.1", stream).await
        });
        if let Ok(tls) = tls {
            handshaken.push(tls);
        }
    }
    owner_runs(&daemon);
    assert_eq!(handshaken.len(), HANDSHAKES, "{}", daemon.log());
    runtime.block_on(async { drop(handshaken) });
    wait_for_a_network_client(&daemon, "the handshaken connections are gone");
}

#[test]
fn authenticated_idle_connections_cannot_lock_the_owner_out() {
    let daemon = start("60s", "", "");
    let runtime = runtime();
    let default = endpoint(&daemon, "default");
    let mut idle = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..FLOOD {
        match runtime.block_on(Client::connect(&default, "idle")) {
            Ok(client) => idle.push(client),
            Err(e) => refusals.push(e),
        }
    }
    owner_runs(&daemon);
    // One principal holds its share and no more; every other attempt was told why.
    assert_eq!(idle.len(), PER_PRINCIPAL, "{}", daemon.log());
    assert_eq!(refusals.len(), FLOOD - PER_PRINCIPAL);
    for refusal in &refusals {
        assert!(
            matches!(refusal, ClientError::Busy(message)
                if message == "too many connections as token:default (the limit is 64 per client)"),
            "{refusal}"
        );
    }
    // Another principal has room of its own on the same listener.
    let ops = endpoint(&daemon, "ops");
    let mut operator = runtime
        .block_on(Client::connect(&ops, "ops"))
        .expect("another token's client is served");
    let jobs = runtime
        .block_on(operator.jobs(true))
        .expect("the operator lists jobs");
    assert!(jobs.is_empty(), "the owner's job is not the operator's");
    runtime.block_on(async { drop((idle, operator)) });
}

#[test]
fn a_listener_and_a_principal_each_have_a_limit_of_their_own() {
    let daemon = start(
        "60s",
        "max_connections_per_principal = 3",
        "max_connections = 4",
    );
    let runtime = runtime();
    let (default, ops) = (endpoint(&daemon, "default"), endpoint(&daemon, "ops"));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            runtime
                .block_on(Client::connect(&default, "a"))
                .expect("under both limits"),
        );
    }
    let over_principal = runtime
        .block_on(Client::connect(&default, "a"))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        over_principal.as_deref(),
        Some(
            "the daemon is busy: too many connections as token:default (the limit is 3 per client)"
        )
    );
    held.push(
        runtime
            .block_on(Client::connect(&ops, "b"))
            .expect("the listener's last place"),
    );
    let over_listener = runtime
        .block_on(Client::connect(&ops, "b"))
        .err()
        .map(|e| e.to_string());
    let expected = format!(
        "the daemon is busy: too many connections on ferry:tls:127.0.0.1:{} (the limit is 4)",
        daemon.ports("tls")[0]
    );
    assert_eq!(over_listener.as_deref(), Some(expected.as_str()));
    owner_runs(&daemon);
    // A place given back is a place for the next client.
    runtime.block_on(async { drop(held.pop()) });
    wait_until(
        "a freed place to serve another client",
        Duration::from_secs(10),
        || runtime.block_on(Client::connect(&ops, "b")).ok(),
        || daemon.log(),
    );
    runtime.block_on(async { drop(held) });
}

#[test]
fn the_handshake_time_limit_counts_from_the_accept_and_frees_the_place() {
    let daemon = start("1s", "max_handshakes = 1", "");
    let port = daemon.ports("tls")[0];
    // A connection that never starts its TLS handshake is closed at the limit...
    let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut byte = [0u8; 1];
    let closed = silent.read(&mut byte);
    assert!(
        matches!(closed, Ok(0))
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "closed, not {closed:?}"
    );
    assert!(
        daemon.log_shows("TLS handshake timed out"),
        "{}",
        daemon.log()
    );
    // ...and its place serves the next client.
    let out = remote_ps(&daemon);
    assert!(out.status.success(), "{out:?}");
    // One that finishes TLS and says nothing is told, at the same limit.
    let config = ferry_client::tls::client_config(&daemon.dir.path().join("tls/ca.pem"), None)
        .expect("TLS config");
    let runtime = runtime();
    let told = runtime.block_on(async {
        use tokio::io::AsyncReadExt;
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut tls = ferry_client::tls::connect(config, "127.0.0.1", stream).await?;
        // Everything until the daemon closes (with or without a TLS close_notify).
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        let read_all = async {
            while let Ok(n @ 1..) = tls.read(&mut chunk).await {
                answer.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read_all)
            .await
            .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(answer)
    });
    let told = told.expect("read until closed");
    assert!(
        String::from_utf8_lossy(&told).contains("no Hello within 1000 ms"),
        "{told:?}"
    );
}

#[test]
fn the_daemon_raises_its_open_files_limit_to_hold_full_pools() {
    // One Unix listener's pools (256 + 64), 64 running jobs' fds (8 each) and 128 more, as
    // far as the hard limit lets it.
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    let expected = hard.map_or(960, |hard| hard.min(960));
    let daemon = Daemon::start_after("ulimit -Sn 200", &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid()))
        .expect("the daemon's limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .map(|line| {
            line.split_whitespace()
                .nth(3)
                .unwrap_or_default()
                .to_owned()
        });
    assert_eq!(open_files, Some(expected.to_string()), "{limits}");
    assert!(
        daemon.log_shows(&format!(
            "raised the open-files limit from 200 to {expected}"
        )),
        "{}",
        daemon.log()
    );
    owner_runs(&daemon);
}
