//! The command line: what it refuses and how it exits, shell completions that the shells
//! load, man pages.

use std::process::Command;

use crate::helper::ferry_bin;

#[test]
fn bash_sources_the_completions_and_they_complete_subcommands() {
    // The words typed so far are `ferry pe`: the completion offers `peers`.
    let script = format!(
        r#"source <("{ferry}" completions bash) || exit 3
complete -p ferry || exit 4
COMP_WORDS=(ferry pe); COMP_CWORD=1; COMP_LINE='ferry pe'; COMP_POINT=8
_ferry ferry pe ferry
echo "offered: ${{COMPREPLY[*]}}""#,
        ferry = ferry_bin()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("-F _ferry ferry"), "{stdout}");
    assert!(stdout.contains("offered: peers"), "{stdout}");
    for shell in ["zsh", "fish"] {
        let out = Command::new(ferry_bin())
            .args(["completions", shell])
            .output()
            .expect("ferry");
        assert!(
            out.status.success() && out.stdout.len() > 100,
            "{shell}: {out:?}"
        );
    }
}

#[test]
fn man_pages_are_written_for_every_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(ferry_bin())
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .expect("ferry");
    assert!(out.status.success(), "{out:?}");
    for page in [
        "ferry.1",
        "ferry-run.1",
        "ferry-peers.1",
        "ferry-peers-kick.1",
        "ferry-daemon.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).expect(page);
        assert!(text.contains(".TH "), "{page}: {text}");
    }
    let daemon_page = std::fs::read_to_string(dir.path().join("ferry-daemon.1")).expect("page");
    assert!(
        daemon_page.contains("fanos:unix:PATH"),
        "the listener forms are in it"
    );
}

#[test]
fn a_typo_before_the_command_is_refused_with_ferrys_own_status() {
    let daemon = crate::helper::Daemon::start(&[]);
    let out = daemon.run(&["run", "--detatch", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unexpected argument '--detatch'") && stderr.contains("--detach"),
        "{stderr}"
    );
    // Nothing ran.
    let ps = daemon.run(&["ps", "--all"]);
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).lines().count(),
        1,
        "{ps:?}"
    );
    // After `--`, everything is the command's; help and the version exit 0.
    let out = daemon.run(&["run", "--no-fds", "--", "echo", "--detatch"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "--detatch\n");
    for args in [["run", "--help"], ["--version", "ps"]] {
        let out = Command::new(ferry_bin())
            .args(args)
            .output()
            .expect("ferry");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
}
