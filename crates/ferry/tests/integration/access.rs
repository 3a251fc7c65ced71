//! Who may see and touch what: each connection acts for a principal (the owner, a client
//! certificate's name, a token's label), and sees and touches only its own jobs and sessions;
//! the owner sees all; a listener may grant seeing all jobs to operators.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::helper::Daemon;
use crate::remote::{issue_client, tls_init, with_cert};

/// A daemon with the owner's socket, a TLS listener for clients (the `[tls]` token, or a
/// certificate of the clients' CA) and one for operators (a certificate of the operators' CA)
/// whose listener grants seeing every job.
struct Setup {
    daemon: Daemon,
    /// CA directories: the clients' and the operators'.
    clients: PathBuf,
    operators: PathBuf,
    _cas: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let cas = tempfile::tempdir().expect("tempdir");
        let clients = cas.path().join("clients");
        let operators = cas.path().join("operators");
        tls_init(&clients, &[]);
        tls_init(&operators, &[]);
        let (clients_ca, operators_ca) = (clients.join("ca.pem"), operators.join("ca.pem"));
        let daemon = Daemon::start_with_config(|dir: &Path, socket: &Path| {
            let tls = dir.join("tls");
            tls_init(&tls, &[]);
            format!(
                r#"
[tls]
dir = "{tls}"

[[listener]]
spec = "ferry:unix:{socket}"

[[listener]]
spec = "ferry:tls:127.0.0.1:0"
commands = "any"
client_ca = "{clients_ca}"

[[listener]]
spec = "ferry:tls:127.0.0.1:0"
commands = "any"
client_ca = "{operators_ca}"
see_all_jobs = true
"#,
                tls = tls.display(),
                socket = socket.display(),
                clients_ca = clients_ca.display(),
                operators_ca = operators_ca.display(),
            )
        });
        Setup {
            daemon,
            clients,
            operators,
            _cas: cas,
        }
    }

    /// A `ferry` for the clients' listener with the token.
    fn token(&self) -> Command {
        let mut command = Command::new(crate::helper::ferry_bin());
        command
            .env_remove("FERRY_SOCKET")
            .arg("--host")
            .arg(format!("127.0.0.1:{}", self.daemon.ports("tls")[0]))
            .arg("--tls-dir")
            .arg(self.daemon.dir.path().join("tls"));
        command
    }

    /// A `ferry` presenting certificate `name` of `ca` to listener `listener` (0 clients,
    /// 1 operators).
    fn cert(&self, ca: &Path, name: &str, listener: usize) -> Command {
        let issued = ca.join("clients").join(format!("{name}.pem"));
        let (cert, key) = if issued.exists() {
            (issued, ca.join("clients").join(format!("{name}-key.pem")))
        } else {
            issue_client(ca, name)
        };
        let address = format!("127.0.0.1:{}", self.daemon.ports("tls")[listener]);
        with_cert(
            address,
            &self.daemon.dir.path().join("tls/ca.pem"),
            &cert,
            &key,
        )
    }
}

fn run(mut command: Command, args: &[&str]) -> Output {
    command.args(args).output().expect("ferry")
}

/// The ids `ferry ps --json` shows.
fn listed(command: Command) -> Vec<u64> {
    let out = run(command, &["ps", "--json"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let job: serde_json::Value = serde_json::from_str(line).expect("json");
            job["id"].as_u64().expect("id")
        })
        .collect()
}

/// Starts `sleep 300` detached; its id.
fn detached(command: Command) -> u64 {
    let out = run(command, &["run", "--detach", "--", "sleep", "300"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("id")
}

/// Asserts that `args` on job `job` is refused as not the caller's.
fn not_yours(command: Command, args: &[&str], job: u64) {
    let mut args = args.to_vec();
    let id = job.to_string();
    args.push(&id);
    let out = run(command, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
    assert!(
        stderr.contains(&format!("job {job} is not yours")),
        "{args:?}: {stderr}"
    );
}

#[test]
fn principals_see_and_touch_their_own_jobs_only() {
    let setup = Setup::start();
    let owner_job = detached(setup.daemon.ferry());
    let token_job = detached(setup.token());
    let alice_job = detached(setup.cert(&setup.clients, "alice", 0));
    let bob_job = detached(setup.cert(&setup.clients, "bob", 0));

    // Each sees its own jobs only; the owner sees all.
    assert_eq!(listed(setup.token()), [token_job]);
    assert_eq!(listed(setup.cert(&setup.clients, "alice", 0)), [alice_job]);
    assert_eq!(listed(setup.cert(&setup.clients, "bob", 0)), [bob_job]);
    let mut all = listed(setup.daemon.ferry());
    all.sort();
    assert_eq!(all, [owner_job, token_job, alice_job, bob_job]);

    // Nobody reads or kills what is not theirs.
    for verb in [&["log"][..], &["attach"], &["kill", "-s", "KILL"]] {
        for job in [owner_job, alice_job, bob_job] {
            not_yours(setup.token(), verb, job);
        }
        for job in [owner_job, token_job, bob_job] {
            not_yours(setup.cert(&setup.clients, "alice", 0), verb, job);
        }
    }
    // ...but their own, they do.
    let out = run(setup.token(), &["kill", &token_job.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let out = run(
        setup.cert(&setup.clients, "alice", 0),
        &["log", &alice_job.to_string()],
    );
    assert!(out.status.success(), "{out:?}");

    // An operator's listener grants seeing every job, not touching it.
    let oscar = || setup.cert(&setup.operators, "oscar", 1);
    let mut seen = listed(oscar());
    seen.sort();
    assert_eq!(seen, [owner_job, token_job, alice_job, bob_job]);
    let out = run(oscar(), &["log", &owner_job.to_string()]);
    assert!(out.status.success(), "{out:?}");
    not_yours(oscar(), &["kill"], owner_job);

    // The daemon itself is the owner's: no client or operator prunes its history.
    for client in [
        setup.token(),
        setup.cert(&setup.clients, "alice", 0),
        oscar(),
    ] {
        let out = run(client, &["prune", "--keep", "0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        assert!(
            stderr.contains("the daemon is not yours (it belongs to owner; you are ")
                && stderr.contains("only its owner, on its Unix socket, may prune its history"),
            "{stderr}"
        );
    }

    // The owner touches anything; every job the clients tried to kill still runs.
    for job in [owner_job, alice_job, bob_job] {
        let out = run(setup.daemon.ferry(), &["kill", &job.to_string()]);
        assert!(out.status.success(), "job {job}: {out:?}");
    }
}

#[test]
fn sessions_belong_to_whoever_made_them() {
    let setup = Setup::start();
    let out = run(setup.daemon.ferry(), &["session", "new"]);
    let owners = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = run(setup.token(), &["session", "new"]);
    let tokens = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!owners.is_empty() && !tokens.is_empty());
    for args in [
        vec!["session", "state", owners.as_str()],
        vec!["session", "close", owners.as_str()],
        vec!["run", "--session", owners.as_str(), "--", "echo", "hi"],
    ] {
        let out = run(setup.token(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("session '{owners}' is not yours")),
            "{stderr}"
        );
    }
    // Its own session is the token holder's to use; the owner may use any.
    let out = run(
        setup.token(),
        &["run", "--session", &tokens, "--", "echo", "mine"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "mine\n", "{out:?}");
    let out = run(setup.daemon.ferry(), &["session", "state", &tokens]);
    assert!(out.status.success(), "{out:?}");
}
