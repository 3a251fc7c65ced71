//! Files a host sends back to `ferry rake` (and `ferry get`) land only inside the project:
//! never through a symbolic link, never in `.git/`, never over the Rakefile, never outside.
//! A hostile rake64 server (a fixture speaking the wire by hand), a pool daemon whose action
//! makes the same names in its sandbox, and (in `reapi.rs`) a cluster's output tree.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::helper::{ferry_bin, Daemon};

/// A project a hostile host would like to harm, and the directory outside it holding the
/// victim: `finallink` is a symbolic link to the victim, `link` one to the outside directory.
pub struct Exposed {
    /// The project (the Rakefile's directory).
    pub project: tempfile::TempDir,
    outside: tempfile::TempDir,
}

/// What the Rakefile holds before the run.
const RAKEFILE_MARK: &str = "# the user's own Rakefile\n";

/// The names a host makes in its sandbox, as a shell command: each would harm the project if
/// written as sent; `fine` is an honest result.
pub const HARMFUL_COMMAND: &str = "mkdir -p .git/hooks link && printf '#!/bin/sh\\necho owned\\n' > .git/hooks/pre-commit && echo out > link/x && echo evil > finallink && echo evil > Rakefile && echo fine > fine";

/// The names [`HARMFUL_COMMAND`] makes that must be refused, each with a word of its reason.
pub const REFUSED: &[(&str, &str)] = &[
    (".git/hooks/pre-commit", ".git/"),
    ("link/x", "symbolic link"),
    ("finallink", "symbolic link"),
    ("Rakefile", "is the Rakefile"),
];

impl Exposed {
    /// A project with the traps laid and a Rakefile of `hosts_line` and one remote action
    /// running `command`.
    pub fn new(hosts_line: &str, command: &str) -> Exposed {
        let project = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("victim"), "safe").expect("victim");
        std::os::unix::fs::symlink(
            outside.path().join("victim"),
            project.path().join("finallink"),
        )
        .expect("symlink");
        std::os::unix::fs::symlink(outside.path(), project.path().join("link")).expect("symlink");
        std::fs::write(
            project.path().join("Rakefile"),
            format!("{RAKEFILE_MARK}{hosts_line}\nactionset1:\n\tremote-{command}\n"),
        )
        .expect("Rakefile");
        Exposed { project, outside }
    }

    /// Asserts the run failed naming every refused name with its reason, that nothing outside
    /// or protected changed, that `fine` landed and no temporary file was left.
    pub fn assert_unharmed(&self, out: &Output, refused: &[(&str, &str)]) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        for (name, reason) in refused {
            let said = stderr
                .lines()
                .any(|line| line.contains(&format!("{name}: ")) && line.contains(reason));
            assert!(said, "{name} ({reason}) not said in:\n{stderr}");
        }
        let root = self.project.path();
        assert_eq!(read(&self.outside.path().join("victim")), "safe");
        let outside: Vec<PathBuf> = entries(self.outside.path());
        assert_eq!(
            outside,
            vec![self.outside.path().join("victim")],
            "{stderr}"
        );
        let rakefile = read(&root.join("Rakefile"));
        assert!(rakefile.starts_with(RAKEFILE_MARK), "{rakefile}");
        assert!(!root.join(".git").exists(), "{stderr}");
        assert!(root.join("finallink").is_symlink());
        assert_eq!(read(&root.join("fine")), "fine\n", "{stderr}");
        let left: Vec<PathBuf> = entries(root)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("ferry-part"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// `ferry rake ARGS` in `dir`, with `local` as the local daemon.
pub fn rake(dir: &Path, local: &Daemon, args: &[&str]) -> Output {
    Command::new(ferry_bin())
        .current_dir(dir)
        .arg("--socket")
        .arg(&local.socket)
        .arg("rake")
        .args(args)
        .output()
        .expect("ferry rake")
}

/// A 64-byte rake64 header of `text`, padded with spaces.
fn header(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(64, b' ');
    bytes
}

/// A hostile rake64 server: it answers cost polls, runs no command and answers each with
/// success and a filestream of `files`, asking for nothing; it serves until the test ends.
fn hostile_rake64_server(files: Vec<(&'static str, &'static [u8])>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let files = files.clone();
            std::thread::spawn(move || serve_hostile(stream, &files));
        }
    });
    port
}

/// One connection of [`hostile_rake64_server`]; ends when the client says `!D` or goes.
fn serve_hostile(mut stream: TcpStream, files: &[(&str, &[u8])]) -> Option<()> {
    loop {
        let mut request = [0u8; 64];
        stream.read_exact(&mut request).ok()?;
        let text = String::from_utf8_lossy(&request).trim_end().to_owned();
        match &text[..2] {
            "!E" => {
                stream.write_all(&header("!E1")).ok()?;
                stream.write_all(b"1").ok()?;
            }
            "!C" => {
                let len: usize = text[2..].parse().ok()?;
                let mut command = vec![0u8; len];
                stream.read_exact(&mut command).ok()?;
                // Success, no stdout, files incoming; then the filestream, its count in its
                // header (the authors' form).
                stream.write_all(&header("!SSI 0")).ok()?;
                stream
                    .write_all(&header(&format!("!SSIF{}", files.len())))
                    .ok()?;
                for (name, data) in files {
                    for (asked, answer) in [
                        ("!N", name.as_bytes()),
                        ("!Z", &*data.len().to_string().into_bytes()),
                    ] {
                        stream.read_exact(&mut request).ok()?;
                        (&request[..2] == asked.as_bytes()).then_some(())?;
                        let answer_header = format!("!S{asked}F{}", answer.len());
                        stream.write_all(&header(&answer_header)).ok()?;
                        stream.write_all(answer).ok()?;
                    }
                    stream.read_exact(&mut request).ok()?;
                    (&request[..2] == b"!T").then_some(())?;
                    stream.write_all(data).ok()?;
                }
            }
            _ => return Some(()),
        }
    }
}

#[test]
fn a_hostile_rake64_servers_files_never_land_outside_through_links_or_on_the_project() {
    let port = hostile_rake64_server(vec![
        ("../x", b"up"),
        ("/abs", b"abs"),
        ("finallink", b"evil"),
        ("link/x", b"out"),
        (".git/hooks/pre-commit", b"#!/bin/sh\necho owned\n"),
        ("Rakefile", b"evil"),
        ("fine", b"fine\n"),
    ]);
    let local = Daemon::start(&[]);
    let exposed = Exposed::new(&format!("HOSTS = 127.0.0.1:{port}"), "true");
    let out = rake(exposed.project.path(), &local, &["--wire", "rake64"]);
    let mut refused = REFUSED.to_vec();
    refused.extend([("../x", "'..'"), ("/abs", "absolute")]);
    exposed.assert_unharmed(&out, &refused);
    // The action failed for its files, not for its host.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("cost poll"), "{stderr}");
    assert!(stderr.contains("may not land here"), "{stderr}");
}

#[test]
fn files_a_pool_action_makes_land_only_where_they_may() {
    let shared = tempfile::tempdir().expect("tempdir");
    let token = shared.path().join("token");
    std::fs::write(&token, "returned-test-token\n").expect("token");
    let token_arg = token.to_string_lossy().into_owned();
    let host = Daemon::start_networked(
        &["--allow-any-command", "--token-file", &token_arg],
        &["ferry:tcp:127.0.0.1:0"],
    );
    let local = Daemon::start(&[]);
    let exposed = Exposed::new(
        &format!("HOSTS = 127.0.0.1:{}", host.port("tcp")),
        HARMFUL_COMMAND,
    );
    let out = Command::new(ferry_bin())
        .current_dir(exposed.project.path())
        .arg("--socket")
        .arg(&local.socket)
        .arg("--no-tls")
        .arg("--token-file")
        .arg(&token)
        .arg("rake")
        .output()
        .expect("ferry rake");
    exposed.assert_unharmed(&out, REFUSED);
}

#[test]
fn ferry_get_never_writes_through_a_symbolic_link_and_run_get_never_into_git() {
    let daemon = Daemon::start(&[]);
    let here = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("victim"), "safe").expect("victim");
    std::os::unix::fs::symlink(outside.path().join("victim"), here.path().join("mine"))
        .expect("symlink");
    std::fs::write(here.path().join("payload"), "evil").expect("payload");
    let ferry = |args: &[&str]| {
        Command::new(ferry_bin())
            .current_dir(here.path())
            .arg("--socket")
            .arg(&daemon.socket)
            .args(args)
            .output()
            .expect("ferry")
    };
    let put = ferry(&["put", "payload", "payload"]);
    assert!(put.status.success(), "{put:?}");
    // Without --force the link is an existing name; with it, still never followed.
    let got = ferry(&["get", "payload", "mine"]);
    let stderr = String::from_utf8_lossy(&got.stderr);
    assert!(!got.status.success());
    assert!(
        stderr.contains("mine exists: --force replaces it"),
        "{stderr}"
    );
    let forced = ferry(&["get", "--force", "payload", "mine"]);
    let stderr = String::from_utf8_lossy(&forced.stderr);
    assert!(!forced.status.success());
    assert!(stderr.contains("mine: is a symbolic link here"), "{stderr}");
    assert_eq!(read(&outside.path().join("victim")), "safe");
    // A job in a sandbox that makes .git/hooks: its results are fetched, that one refused.
    let ran = ferry(&[
        "run",
        "--get-new",
        "--",
        "sh",
        "-c",
        "mkdir -p .git/hooks && echo x > .git/hooks/pre-commit && echo ok > result",
    ]);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(!ran.status.success(), "{stderr}");
    assert!(
        stderr.contains(".git/hooks/pre-commit: a server never writes into .git/"),
        "{stderr}"
    );
    assert!(!here.path().join(".git").exists());
    assert_eq!(read(&here.path().join("result")), "ok\n");
}
