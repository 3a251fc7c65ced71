//! Remote daemons: `ferry tls init`, TLS listeners with a token, plaintext TCP on loopback
//! only, authentication failures, and the command catalog. Loopback only.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::helper::{ferry_bin, ferry_ok, port_in_log, Daemon};

const TLS: &str = "ferry:tls:127.0.0.1:0";

/// Runs `ferry tls init DIR EXTRA...` and checks that it worked.
/// Asserts that the daemon still runs a job for a client on its TLS listener.
fn assert_remote_serves(daemon: &Daemon) {
    let ok = daemon
        .remote()
        .args(["run", "--", "echo", "fine"])
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "fine\n");
}

/// A CA of its own (from `ferry tls init`) in a temporary directory, apart from any
/// daemon's: the directory (kept while it lives) and the CA's directory inside.
fn a_ca_of_its_own() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("tls");
    tls_init(&ca, &[]);
    (dir, ca)
}

pub(crate) fn tls_init(dir: &std::path::Path, extra: &[&str]) {
    let mut args: Vec<std::ffi::OsString> = vec!["tls".into(), "init".into()];
    args.extend(extra.iter().map(Into::into));
    args.push(dir.into());
    ferry_ok(args);
}

/// A `ferry` command for `address` that trusts `ca` and presents `cert`/`key` (no token).
pub(crate) fn with_cert(
    address: String,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Command {
    let mut command = Command::new(ferry_bin());
    command
        .env_remove("FERRY_SOCKET")
        .arg("--host")
        .arg(address)
        .arg("--ca")
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key);
    command
}

#[test]
fn tls_init_makes_private_files_and_prints_the_command_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    let out = Command::new(ferry_bin())
        .args(["tls", "init"])
        .arg(&tls)
        .output()
        .expect("init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ferry daemon --listen ferry:tls:"),
        "{stdout}"
    );
    assert!(stdout.contains("--tls-dir"), "{stdout}");
    let mode = |name: &str| {
        std::fs::metadata(tls.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("token"), 0o600);
    assert_eq!(mode("server-key.pem"), 0o600);
    assert_eq!(mode("ca-key.pem"), 0o600);
    assert_eq!(mode("ca.pem"), 0o644);
    assert_eq!(mode("server.pem"), 0o644);
    assert_eq!(
        std::fs::metadata(&tls).expect("dir").permissions().mode() & 0o777,
        0o700
    );
    // A second init does not overwrite keys by accident.
    let again = Command::new(ferry_bin())
        .args(["tls", "init"])
        .arg(&tls)
        .output()
        .expect("init again");
    assert_ne!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn a_job_runs_over_tls_with_the_token_in_the_daemons_file_area() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &[TLS]);
    let out = daemon
        .remote()
        .env("FERRY_TEST_SECRET", "must-not-travel")
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; pwd; echo \"[$FERRY_TEST_SECRET]\"; exit 4",
        ])
        .output()
        .expect("remote run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A token's holder works in a part of the file area of its own.
    let files = daemon
        .state_dir
        .join("files/tokens/default")
        .canonicalize()
        .expect("files dir");
    assert_eq!(stdout, format!("out\n{}\n[]\n", files.display()));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(4));
    let ps = daemon.remote().args(["ps", "--json"]).output().expect("ps");
    assert!(String::from_utf8_lossy(&ps.stdout).contains("\"exit_code\":4"));
}

#[test]
fn a_wrong_or_missing_token_is_refused_and_the_daemon_serves_others() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &[TLS]);
    let wrong = daemon.dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").expect("write");
    let out = daemon
        .remote()
        .arg("--token-file")
        .arg(&wrong)
        .arg("ps")
        .output()
        .expect("ps");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("authentication failed: wrong token"),
        "{stderr}"
    );
    // Without any token: only the CA.
    let out = Command::new(ferry_bin())
        .arg("--host")
        .arg(format!("127.0.0.1:{}", daemon.port("tls")))
        .arg("--ca")
        .arg(daemon.tls_dir().join("ca.pem"))
        .arg("ps")
        .output()
        .expect("ps");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("authentication failed: no token given"),
        "{stderr}"
    );
    // The token never reaches the log.
    let token = std::fs::read_to_string(daemon.tls_dir().join("token")).expect("token");
    assert!(!daemon.log().contains(token.trim()));
    assert!(daemon.log_shows("authentication failed"));
    assert_remote_serves(&daemon);
}

#[test]
fn plaintext_spoken_to_the_tls_port_is_dropped_and_others_are_served() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &[TLS]);
    let mut plain =
        std::net::TcpStream::connect(("127.0.0.1", daemon.port("tls"))).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // A native Hello frame, in the clear.
    plain
        .write_all(
            b"\x00\x00\x00\x23\xa1\x65Hello\xa3\x67version\x01\x66client\x63cli\x65token\xf6",
        )
        .expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.windows(7).any(|w| w == b"Welcome"),
        "no Welcome in the clear"
    );
    assert_remote_serves(&daemon);
    assert!(daemon.log_shows("TLS handshake failed"));
}

#[test]
fn plaintext_tcp_is_served_on_loopback_with_the_token() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["ferry:tcp:127.0.0.1:0"]);
    let out = Command::new(ferry_bin())
        .arg("--host")
        .arg(format!("127.0.0.1:{}", daemon.port("tcp")))
        .arg("--no-tls")
        .arg("--token-file")
        .arg(daemon.tls_dir().join("token"))
        .args(["run", "--", "echo", "over tcp"])
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tcp\n");
}

#[test]
fn a_plaintext_listener_beyond_loopback_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "secret\n").expect("token");
    let start = |spec: &str| {
        Command::new(ferry_bin())
            .args(["daemon", "--listen", spec, "--token-file"])
            .arg(&token)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .expect("daemon")
    };
    let out = start("ferry:tcp:0.0.0.0:0");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback addresses only"), "{stderr}");
    assert!(
        stderr.contains("ferry:tls:0.0.0.0:0"),
        "points to TLS: {stderr}"
    );
    // An IPv6 address is advised in the form that parses.
    let out = start("ferry:tcp:[::]:0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("use TLS (ferry:tls:[::]:0 "), "{stderr}");
    let advised = ferry_daemon::ListenSpec::parse("ferry:tls:[::]:0");
    assert!(advised.is_ok(), "{advised:?}");
    // A dialect not served over TLS is advised no TLS form that does not exist.
    for dialect in ["rake64", "tsockm", "c2"] {
        let out = start(&format!("{dialect}:tcp:0.0.0.0:0"));
        assert_eq!(out.status.code(), Some(125));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("the {dialect} dialect is not served over TLS")),
            "{stderr}"
        );
        assert!(!stderr.contains(&format!("{dialect}:tls:")), "{stderr}");
    }
}

#[test]
fn a_network_listener_needs_a_way_to_authenticate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    tls_init(&tls, &[]);
    let out = Command::new(ferry_bin())
        .args(["daemon", "--listen", TLS, "--tls-cert"])
        .arg(tls.join("server.pem"))
        .arg("--tls-key")
        .arg(tls.join("server-key.pem"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("daemon");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a way to authenticate"), "{stderr}");
}

#[test]
fn network_listeners_run_catalog_commands_only_by_default() {
    let daemon = Daemon::start_networked(&[], &[TLS]);
    let out = daemon
        .remote()
        .args(["run", "--", "id"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'id' is not in this daemon's command catalog"),
        "{stderr}"
    );
    assert!(stderr.contains("rule: commands = catalog"), "{stderr}");
    // The owner's socket still runs anything.
    let local = daemon.run(&["run", "--", "echo", "local"]);
    assert_eq!(String::from_utf8_lossy(&local.stdout), "local\n");
}

/// Issues a client certificate from `dir`'s CA; returns (cert, key).
pub(crate) fn issue_client(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    ferry_ok([
        std::ffi::OsStr::new("tls"),
        "client".as_ref(),
        dir.as_os_str(),
        name.as_ref(),
    ]);
    let clients = dir.join("clients");
    (
        clients.join(format!("{name}.pem")),
        clients.join(format!("{name}-key.pem")),
    )
}

#[test]
fn a_client_certificate_from_the_daemons_ca_authenticates_without_a_token() {
    // The daemon's --client-ca is a CA of its own, apart from its server CA.
    let (_ca_dir, ca) = a_ca_of_its_own();
    let client_ca = ca.join("ca.pem");
    let client_ca_arg = client_ca.to_str().expect("utf8");
    let daemon = Daemon::start_networked(
        &["--allow-any-command", "--client-ca", client_ca_arg],
        &[TLS],
    );
    let (cert, key) = issue_client(&ca, "alice");
    let address = format!("127.0.0.1:{}", daemon.port("tls"));
    let server_ca = daemon.tls_dir().join("ca.pem");
    let out = with_cert(address.clone(), &server_ca, &cert, &key)
        .args(["run", "--", "echo", "by certificate"])
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "by certificate\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A certificate from an unknown CA is refused during the TLS handshake.
    let (_stranger, other) = a_ca_of_its_own();
    let (cert, key) = issue_client(&other, "mallory");
    let out = with_cert(address, &server_ca, &cert, &key)
        .args(["run", "--", "echo", "should not run"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125));
    assert!(out.stdout.is_empty());
    assert!(daemon.log_shows("TLS handshake failed"), "{}", daemon.log());
    assert_remote_serves(&daemon);
}

#[test]
fn without_a_token_a_client_certificate_is_required() {
    let (_ca_dir, ca) = a_ca_of_its_own();
    let client_ca = ca.join("ca.pem");
    let daemon = Daemon::start_networked_without_token(
        &[
            "--allow-any-command",
            "--client-ca",
            client_ca.to_str().expect("utf8"),
        ],
        &[TLS],
    );
    let address = format!("127.0.0.1:{}", daemon.port("tls"));
    let server_ca = daemon.tls_dir().join("ca.pem");
    // Neither a certificate nor a token: refused before anything runs.
    let out = Command::new(ferry_bin())
        .env_remove("FERRY_SOCKET")
        .arg("--host")
        .arg(&address)
        .arg("--ca")
        .arg(&server_ca)
        .args(["run", "--", "echo", "should not run"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("present a client certificate"),
        "{out:?}"
    );
    // A certificate from the client CA still works.
    let (cert, key) = issue_client(&ca, "alice");
    let out = with_cert(address, &server_ca, &cert, &key)
        .args(["run", "--", "echo", "by certificate"])
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "by certificate\n",
        "{out:?}"
    );
}

#[test]
fn the_config_file_sets_listeners_and_the_catalog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    tls_init(&tls, &[]);
    let socket = dir.path().join("ferry.sock");
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            r#"
state_dir = "{state}"

[limits]
kill_grace = "1s"

[tls]
dir = "{tls}"

[[listener]]
spec = "ferry:unix:{socket}"

[[listener]]
spec = "ferry:tls:127.0.0.1:0"

[catalog.greet]
program = "/bin/echo"
args = ["hello"]
"#,
            state = dir.path().join("state").display(),
            tls = tls.display(),
            socket = socket.display(),
        ),
    )
    .expect("config");
    let log = dir.path().join("daemon.log");
    let mut daemon = Command::new(ferry_bin())
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("daemon");
    let port = port_in_log(&log, "ferry:tls:127.0.0.1:");
    let remote = |args: &[&str]| {
        Command::new(ferry_bin())
            .arg("--host")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tls-dir")
            .arg(&tls)
            .args(args)
            .output()
            .expect("remote")
    };
    let greet = remote(&["run", "--", "greet", "world"]);
    let refused = remote(&["run", "--", "id"]);
    crate::helper::send_signal(daemon.id(), libc::SIGTERM);
    assert_eq!(
        crate::helper::wait_with_timeout(&mut daemon, Duration::from_secs(10)),
        Some(0)
    );
    assert_eq!(String::from_utf8_lossy(&greet.stdout), "hello world\n");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("'id' is not in this daemon's command catalog"),
        "{stderr}"
    );
}

#[test]
fn config_errors_name_the_line_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("daemon.toml");
    for (text, expected) in [
        ("[limits]\nmax_jobs = 2\nmax_jbos = 3\n", "line 3"),
        (
            "[limits]\nkill_grace = \"later\"\n",
            "line 2, key limits.kill_grace",
        ),
        (
            "[[listener]]\nspec = \"gopher:unix:/x\"\n",
            "line 2, key listener.spec",
        ),
        (
            "[[listener]]\nspec = \"ferry:unix:/tmp/x\"\ncommands = \"some\"\n",
            "line 3, key listener.commands",
        ),
    ] {
        std::fs::write(&config, text).expect("config");
        let out = Command::new(ferry_bin())
            .arg("daemon")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .expect("daemon");
        assert_eq!(out.status.code(), Some(125), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(stderr.contains("daemon.toml"), "{stderr}");
    }
}

#[test]
fn a_host_named_in_the_client_config_file_brings_its_files() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &[TLS]);
    let config_home = daemon.dir.path().join("config");
    std::fs::create_dir_all(config_home.join("ferry")).expect("config dir");
    std::fs::write(
        config_home.join("ferry").join("client.toml"),
        format!(
            "[hosts.lab]\naddress = \"127.0.0.1:{}\"\ntls_dir = \"{}\"\n",
            daemon.port("tls"),
            daemon.tls_dir().display()
        ),
    )
    .expect("client.toml");
    let out = Command::new(ferry_bin())
        .env("XDG_CONFIG_HOME", &config_home)
        .env_remove("FERRY_SOCKET")
        .args(["--host", "lab", "run", "--", "echo", "via the config file"])
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "via the config file\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unknown = Command::new(ferry_bin())
        .env("XDG_CONFIG_HOME", &config_home)
        .args(["--host", "nowhere", "ps"])
        .output()
        .expect("ps");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("client configuration file"), "{stderr}");
}

#[test]
fn client_certificates_are_configured_per_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    let clients = dir.path().join("clients");
    for d in [&tls, &clients] {
        // The server certificate must also name the second listener's address.
        tls_init(d, &["--name", "127.0.0.2"]);
    }
    let (cert, key) = issue_client(&clients, "carol");
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "allow_any_command = true\n[tls]\ndir = \"{tls}\"\n\n[[listener]]\nspec = \"ferry:unix:{sock}\"\n\n[[listener]]\nspec = \"ferry:tls:127.0.0.1:0\"\nclient_ca = \"{ca}\"\n\n[[listener]]\nspec = \"ferry:tls:127.0.0.2:0\"\n",
            tls = tls.display(),
            sock = dir.path().join("s").display(),
            ca = clients.join("ca.pem").display(),
        ),
    )
    .expect("config");
    let log = dir.path().join("daemon.log");
    let mut daemon = Command::new(ferry_bin())
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("daemon");
    let port_of = |host: &str| port_in_log(&log, &format!("ferry:tls:{host}:"));
    let run = |address: String| {
        with_cert(address, &tls.join("ca.pem"), &cert, &key)
            .args(["run", "--", "echo", "cert"])
            .output()
            .expect("run")
    };
    let mutual = run(format!("127.0.0.1:{}", port_of("127.0.0.1")));
    let plain = run(format!("127.0.0.2:{}", port_of("127.0.0.2")));
    crate::helper::send_signal(daemon.id(), libc::SIGTERM);
    let _ = crate::helper::wait_with_timeout(&mut daemon, Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&mutual.stdout), "cert\n");
    // On the listener without a client CA the certificate counts for nothing: a token is needed.
    assert_ne!(plain.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("no token given"), "{stderr}");
}

#[test]
fn a_remote_client_cannot_shut_the_daemon_down() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &[TLS]);
    let out = daemon.remote().arg("shutdown").output().expect("shutdown");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        "ferry: the daemon is not yours (it belongs to owner; you are token:default): only its owner, on its Unix socket, may shut it down\n"
    );
    daemon.assert_serving();
}

#[test]
fn each_certificate_client_has_a_file_area_of_its_own() {
    let (_ca_dir, ca) = a_ca_of_its_own();
    let client_ca = ca.join("ca.pem");
    let daemon =
        Daemon::start_networked(&["--client-ca", client_ca.to_str().expect("utf8")], &[TLS]);
    let daemon = &daemon;
    let as_client = |name: &str| {
        let (cert, key) = issue_client(&ca, name);
        move |args: &[&str]| {
            let address = format!("127.0.0.1:{}", daemon.port("tls"));
            with_cert(address, &daemon.tls_dir().join("ca.pem"), &cert, &key)
                .args(args)
                .current_dir(daemon.dir.path())
                .output()
                .expect("ferry")
        }
    };
    let alice = as_client("alice");
    let bob = as_client("bob");
    let secret = daemon.dir.path().join("secret.txt");
    std::fs::write(&secret, "alice's\n").expect("write");
    let put = alice(&["put", secret.to_str().expect("utf8"), "secret.txt"]);
    assert_eq!(
        put.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(daemon
        .state_dir
        .join("files/clients/alice/secret.txt")
        .exists());
    let stolen = bob(&["get", "secret.txt", "stolen.txt"]);
    assert_ne!(stolen.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&stolen.stderr).contains("no such file"));
    let own = alice(&["get", "secret.txt", "mine.txt"]);
    assert_eq!(
        own.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
}

#[test]
fn tls_and_plaintext_mismatches_say_what_to_change() {
    let daemon = Daemon::start_networked(&[], &["ferry:tls:127.0.0.1:0", "ferry:tcp:127.0.0.1:0"]);
    let tls = daemon.tls_dir();
    let ferry = |port: u16, args: &[&str]| {
        Command::new(ferry_bin())
            .arg("--host")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .arg("ps")
            .output()
            .expect("ferry")
    };
    let token = tls.join("token");
    let token = token.to_str().expect("utf-8");
    // Plaintext to the TLS port.
    let out = ferry(daemon.port("tls"), &["--no-tls", "--token-file", token]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ferry: handshake failed: that port speaks TLS, and this client spoke plaintext: drop --no-tls (the daemon's CA comes from --tls-dir DIR or --ca FILE)\n"
    );
    // TLS to the plaintext port.
    let out = ferry(
        daemon.port("tcp"),
        &["--tls-dir", tls.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.ends_with("that port does not speak TLS (a plaintext listener, served on loopback only): add --no-tls\n"),
        "{stderr}"
    );
    daemon.assert_serving();
}
