//! The documentation's examples run: every ` ```sh ` block of the README and of `docs/` (those
//! not marked ` ```sh skip `: they need other machines, a cluster or the network) runs in
//! bash, `set -euo pipefail`, with the `ferry` under test first in `PATH`, in a fresh home,
//! runtime and state directory of its own (the daemon starts by itself, as for a new user).
//! The README's Rakefile is planned by `ferry rake -n` with the hosts it names.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helper::ferry_bin;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The documents whose examples are run: the README and every page of `docs/`.
fn documents() -> Vec<PathBuf> {
    let mut found = vec![repository().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repository().join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    found.extend(docs);
    found
}

/// The fenced blocks of `text` whose info string is `info`, each with its first line's number.
fn blocks(text: &str, info: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    // The block being read: its first line, its text, and whether it is wanted.
    let mut open: Option<(usize, String, bool)> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (open.take(), fence) {
            (None, Some(rest)) => open = Some((n + 1, String::new(), rest.trim() == info)),
            (None, None) => {}
            (Some((start, body, wanted)), Some(rest)) if rest.trim().is_empty() => {
                if wanted {
                    found.push((start, body));
                }
            }
            (Some((start, mut body, wanted)), _) => {
                body.push_str(line);
                body.push('\n');
                open = Some((start, body, wanted));
            }
        }
    }
    found
}

/// How long one example may take.
const EXAMPLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs `script` as a new user would, in a world of its own; stdout, stderr and success.
fn run_as_a_new_user(script: &str) -> (String, String, bool) {
    let world = tempfile::tempdir().expect("tempdir");
    let (home, runtime, work) = (
        world.path().join("home"),
        world.path().join("run"),
        world.path().join("work"),
    );
    for dir in [&home, &runtime, &work] {
        std::fs::create_dir_all(dir).expect("dir");
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("0700");
    let bin = ferry_bin();
    let path = format!(
        "{}:{}",
        Path::new(&bin).parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // A block that hangs fails (`timeout` ends its whole process group) rather than the test.
    let run = |script: &str| {
        Command::new("timeout")
            .args([
                "--kill-after=10",
                &EXAMPLE_LIMIT.as_secs().to_string(),
                "bash",
            ])
            .args(["-c", &format!("set -euo pipefail\n{script}")])
            .current_dir(&work)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("LANG", "C.UTF-8")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("bash")
    };
    let out = run(script);
    // Whatever the script left running goes with its world.
    let _ = run("ferry status >/dev/null && ferry shutdown || true");
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() == Some(124) {
        stderr.push_str(&format!(
            "--- it ran past {EXAMPLE_LIMIT:?} and was stopped"
        ));
    }
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        out.status.success(),
    )
}

#[test]
fn every_runnable_example_of_the_readme_and_the_docs_runs() {
    let mut ran = 0;
    let mut failures = Vec::new();
    for document in documents() {
        let text = std::fs::read_to_string(&document).expect("read");
        for (line, script) in blocks(&text, "sh") {
            let (stdout, stderr, ok) = run_as_a_new_user(&script);
            ran += 1;
            if !ok {
                failures.push(format!(
                    "{}:{line}:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
                    document.display()
                ));
            }
        }
    }
    assert!(ran >= 2, "the README's quick start and more: {ran} blocks");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_readme_quick_start_prints_what_its_comments_say() {
    let readme = std::fs::read_to_string(repository().join("README.md")).expect("README");
    let (_, script) = blocks(&readme, "sh")
        .into_iter()
        .next()
        .expect("the quick start");
    let (stdout, stderr, ok) = run_as_a_new_user(&script);
    assert!(ok, "{stderr}");
    for said in ["hello\n", "a\nb\n", "exit 3\n", "done\n", "42 in /tmp\n"] {
        assert!(stdout.contains(said), "{said:?} in:\n{stdout}");
    }
}

#[test]
fn the_readme_rakefile_is_planned_with_the_hosts_it_names() {
    let readme = std::fs::read_to_string(repository().join("README.md")).expect("README");
    let rakefiles = blocks(&readme, "Rakefile");
    assert_eq!(rakefiles.len(), 1, "one Rakefile in the README");
    let project = tempfile::tempdir().expect("tempdir");
    std::fs::write(project.path().join("Rakefile"), &rakefiles[0].1).expect("Rakefile");
    let out = Command::new(ferry_bin())
        .args(["rake", "-n"])
        .current_dir(project.path())
        .output()
        .expect("ferry rake -n");
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        plan.starts_with("hosts: build1:7070 build2:7071\n"),
        "{plan}"
    );
    assert!(
        !plan.contains('#'),
        "no comment is taken as a host, a file or a command: {plan}"
    );
    assert!(plan.contains("requires square.c util.h\n"), "{plan}");
}

#[test]
fn every_row_of_the_listener_table_is_in_the_dialects_page_and_the_readme() {
    let dialects = std::fs::read_to_string(repository().join("docs/dialects.md")).expect("read");
    let readme = std::fs::read_to_string(repository().join("README.md")).expect("README");
    for name in ferry_daemon::listeners::dialect_names() {
        let row = format!("| `{name}` |");
        assert!(
            dialects.contains(&row),
            "docs/dialects.md's table has no row {row}"
        );
        let section = format!("## `{name}` (");
        assert!(
            dialects.contains(&section),
            "docs/dialects.md has no section {section}...)"
        );
        assert!(
            readme.contains(&format!("`{name}`")),
            "the README's dialect table does not name `{name}`"
        );
    }
    for (dialect, transport) in ferry_daemon::listeners::served_forms() {
        let form = format!("{}:{}:", dialect.name(), transport.name());
        assert!(
            readme.contains(&form),
            "the README does not say how to listen on {form}"
        );
    }
}
