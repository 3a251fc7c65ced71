//! The command line's own outputs: shell completions that the shells load, man pages.

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
