//! The Rakefile's grammar, and every error with its message.

use super::*;

const EXAMPLE: &str = "\
# A typical Rakefile
PORT  = 6238
HOSTS = build1 build2:6333 [::1]:7000

actionset1:
\tremote-cc -c program.c
\t\trequires program.c program.h
\tremote-cc -c square.c
\t\trequires square.c program.h
\techo a#b   

actionset2:
\t# a comment inside a set
\tremote-cc -o program program.o square.o
\t\trequires program.o square.o
";

#[test]
fn the_example_parses_whole() {
    let rakefile = parse("Rakefile", EXAMPLE).expect("parse");
    assert_eq!(rakefile.port, 6238);
    assert_eq!(
        rakefile.hosts,
        vec![
            Host {
                name: "build1".into(),
                port: 6238
            },
            Host {
                name: "build2".into(),
                port: 6333
            },
            Host {
                name: "::1".into(),
                port: 7000
            },
        ]
    );
    assert_eq!(rakefile.sets.len(), 2);
    let first = &rakefile.sets[0];
    assert_eq!(first.name, "actionset1");
    assert_eq!(first.actions.len(), 3);
    assert_eq!(first.actions[0].command, "cc -c program.c");
    assert!(first.actions[0].remote);
    assert_eq!(first.actions[0].requires, ["program.c", "program.h"]);
    assert_eq!(first.actions[0].line, 6);
    assert_eq!(
        first.actions[2].command, "echo a#b",
        "a # inside a command is the command's"
    );
    assert!(!first.actions[2].remote);
    assert!(first.actions[2].requires.is_empty());
    assert_eq!(
        rakefile.sets[1].actions[0].requires,
        ["program.o", "square.o"]
    );
    let plan = rakefile.plan();
    assert!(
        plan.starts_with(
            "hosts: build1:6238 build2:6333 [::1]:7000\nactionset1 (3 action(s), run together):\n"
        ),
        "{plan}"
    );
    assert!(
        plan.contains("  remote  cc -c program.c\n          requires program.c program.h\n"),
        "{plan}"
    );
}

#[test]
fn trailing_comments_end_hosts_ports_and_requires_but_not_commands() {
    let source = "\
PORT  = 7070   # the port of hosts named without one
HOSTS = build1 build2:7071   # ferry daemons, reached with the usual --tls-dir
actionset1:
\tremote-cc -c square.c   # one tab: an action
\t\trequires square.c util.h    # two tabs: the files it needs
\techo a#b
\techo 'a #b' \"c #d\" e\\ #f   # a comment
";
    let rakefile = parse("Rakefile", source).expect("parse");
    assert_eq!(rakefile.port, 7070);
    let hosts: Vec<String> = rakefile
        .hosts
        .iter()
        .map(|h| format!("{}:{}", h.name, h.port))
        .collect();
    assert_eq!(hosts, ["build1:7070", "build2:7071"]);
    let actions = &rakefile.sets[0].actions;
    assert_eq!(actions[0].requires, ["square.c", "util.h"]);
    // An action's comment goes where a shell's would; a `#` inside a word or quotes stays.
    assert_eq!(actions[0].command, "cc -c square.c");
    assert_eq!(actions[1].command, "echo a#b");
    assert_eq!(actions[2].command, "echo 'a #b' \"c #d\" e\\ #f");
}

#[test]
fn defaults_and_local_only_rakefiles() {
    let rakefile = parse("R", "actionset1:\n\techo hi\n").expect("parse");
    assert_eq!(rakefile.port, DEFAULT_PORT);
    assert!(rakefile.hosts.is_empty());
    let rakefile = parse("R", "HOSTS = a\r\nactionset1:\r\n\tremote-true\r\n").expect("CRLF");
    assert_eq!(rakefile.hosts[0].port, 6238);
}

#[test]
fn a_cluster_stands_in_for_the_hosts() {
    let source = "HOSTS = reapi://127.0.0.1:8980/main\nactionset1:\n\tremote-true\n";
    let rakefile = parse("R", source).expect("parse");
    assert_eq!(
        rakefile.cluster.as_deref(),
        Some("reapi://127.0.0.1:8980/main")
    );
    assert!(rakefile.hosts.is_empty());
    assert!(rakefile
        .plan()
        .starts_with("cluster: reapi://127.0.0.1:8980/main\n"));
    // A cluster named on the command line: remote actions need no HOSTS line.
    let source = "actionset1:\n\tremote-true\n";
    assert!(parse("R", source).is_err());
    assert!(parse_for_cluster("R", source)
        .expect("parse")
        .cluster
        .is_none());
    let tls = parse("R", "HOSTS = reapis://grid.example:443\n").expect("parse");
    assert_eq!(tls.cluster.as_deref(), Some("reapis://grid.example:443"));
}

/// The error for `source`: (line, column, expected), and its rendering.
fn error(source: &str) -> (usize, usize, String, String) {
    let e = parse("Rakefile", source).expect_err("an error");
    (e.line, e.column, e.expected.clone(), e.to_string())
}

#[test]
fn every_error_names_file_line_column_what_was_expected_and_shows_a_caret() {
    let cases: &[(&str, usize, usize, &str)] = &[
        (
            "PORT = x\n",
            1,
            8,
            "a port number (1 to 65535) after `PORT =`",
        ),
        ("PORT = 70000\n", 1, 8, "a port number"),
        (
            "PORT = 1\nPORT = 2\n",
            2,
            1,
            "one PORT line (the first is line 1)",
        ),
        ("HOSTS =\n", 1, 8, "at least one host after `HOSTS =`"),
        (
            "HOSTS = a b:x\n",
            1,
            13,
            "a port number (1 to 65535) after the host's `:`",
        ),
        (
            "HOSTS = a\nHOSTS = b\n",
            2,
            1,
            "one HOSTS line (the first is line 1)",
        ),
        (
            "HOSTS = reapi://grid\n",
            1,
            17,
            "HOST:PORT after `reapi://` (then an optional /INSTANCE)",
        ),
        (
            "HOSTS = reapi://grid:8980 b\n",
            1,
            26,
            "nothing after the cluster's URL",
        ),
        ("COLOR = red\n", 1, 1, "not a setting `COLOR`"),
        (
            "hello\n",
            1,
            1,
            "`PORT = N`, `HOSTS = HOST...` or `actionsetN:`",
        ),
        (
            "actionset1\n\ttrue\n",
            1,
            11,
            "`:` at the end of the set's line",
        ),
        (
            "actionset2:\n\ttrue\n",
            1,
            10,
            "actionset1: (sets are numbered from 1, in order)",
        ),
        (
            "actionset1:\n\ttrue\nactionset3:\n\ttrue\n",
            3,
            10,
            "actionset2:",
        ),
        (
            "actionset1:\nactionset2:\n\ttrue\n",
            1,
            1,
            "at least one action in actionset1",
        ),
        (
            "actionset1:\n\ttrue\nactionset2:\n",
            3,
            1,
            "at least one action in actionset2",
        ),
        (
            "\ttrue\n",
            1,
            2,
            "an `actionsetN:` line before the first action",
        ),
        (
            "actionset1:\n  true\n",
            2,
            1,
            "a tab (actions are indented by one tab",
        ),
        ("actionset1:\n\t true\n", 2, 2, "a tab"),
        ("actionset1:\n\t\t\ttrue\n", 2, 3, "at most two tabs"),
        (
            "actionset1:\n\tremote-\n",
            2,
            9,
            "a command after `remote-`",
        ),
        (
            "actionset1:\n\t\trequires a\n",
            2,
            3,
            "an action before its `requires` line",
        ),
        (
            "actionset1:\n\ttrue\n\t\tneeds a\n",
            3,
            3,
            "`requires FILE...`",
        ),
        (
            "actionset1:\n\ttrue\n\t\trequiresa\n",
            3,
            3,
            "`requires FILE...`",
        ),
        (
            "actionset1:\n\ttrue\n\t\trequires\n",
            3,
            11,
            "at least one file after `requires`",
        ),
        (
            "actionset1:\n\ttrue\n\t\trequires a\n\t\trequires b\n",
            4,
            3,
            "one `requires` line per action",
        ),
        (
            "actionset1:\n\ttrue\n\t\trequires ok /etc/passwd\n",
            3,
            15,
            "a file inside this directory (not an absolute path)",
        ),
        (
            "actionset1:\n\ttrue\n\t\trequires ../up\n",
            3,
            12,
            "a file inside this directory (no `..`)",
        ),
        (
            "actionset1:\n\tremote-true\n",
            2,
            2,
            "a `HOSTS = HOST...` line: remote actions go to its hosts",
        ),
    ];
    for (source, line, column, expected) in cases {
        let (l, c, e, shown) = error(source);
        assert!(
            e.contains(expected),
            "{source:?}: expected {expected:?} in {e:?}"
        );
        assert_eq!((l, c), (*line, *column), "{source:?}: {shown}");
        assert!(
            shown.starts_with(&format!("Rakefile:{line}:{column}: expected ")),
            "{shown}"
        );
        // The line is shown, and the caret sits under the column.
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "{shown}");
        let gutter = format!("{line} | ");
        assert!(lines[1].starts_with(&gutter), "{shown}");
        assert_eq!(
            lines[2].chars().count(),
            gutter.chars().count() + column,
            "{shown}"
        );
        assert!(lines[2].ends_with('^'), "{shown}");
    }
}

proptest::proptest! {
    /// No text makes the parser panic; an error always points inside the file.
    #[test]
    fn any_text_parses_or_points_at_a_line(text in "(PORT|HOSTS|actionset[0-9]|\t|\t\t|requires| |=|:|#|[a-z0-9./]{1,6}|\n){0,40}") {
        match parse("R", &text) {
            Ok(_) => {}
            Err(e) => {
                proptest::prop_assert!(e.line >= 1 && e.line <= text.lines().count().max(1));
                proptest::prop_assert!(e.column >= 1);
            }
        }
    }
}
