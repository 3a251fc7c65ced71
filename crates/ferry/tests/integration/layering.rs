//! The house rules that keep the crates simple, checked on their sources: every crate reads
//! bottom-up (no module imports, directly or through others, a sibling module that imports
//! it), and the daemon's dialect adapters read their connections only through the one stream
//! reader.
//!
//! Imports are `use` trees and paths written in code (`crate::a::B`, `super::c`, a child
//! module's name); comments and a file's `#[cfg(test)] mod tests` are left out, and so are
//! `mod` declarations. An import between a module and one of its own descendants does not
//! count (the parent is its children's face: it re-exports them, and holds what they share);
//! one between two subtrees counts between the sibling modules they hang from, so that
//! `dialects/cbsd.rs` importing `conn.rs` is `dialects` importing `conn`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's crates.
fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/")
        .to_owned()
}

/// Every `.rs` file under `dir`, relative to it.
fn sources(dir: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at)
            .expect("read a source directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(dir).expect("under dir");
                let text = std::fs::read_to_string(&path).expect("read a source");
                found.insert(relative.to_string_lossy().into_owned(), text);
            }
        }
    }
    found
}

/// The code of a file: comments and its test module left out.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` in a string (a URL) cuts the rest of the line: harmless for imports.
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of a file (`dialects/native/mod.rs` is `dialects::native`).
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file a path leads into: the longest prefix that is a module of the crate.
fn file_of(path: &[String], files: &BTreeMap<String, String>) -> Option<String> {
    for len in (0..=path.len()).rev() {
        let prefix = path[..len].join("/");
        if len == 0 {
            return ["lib.rs", "main.rs"]
                .into_iter()
                .find(|root| files.contains_key(*root))
                .map(str::to_owned);
        }
        for candidate in [format!("{prefix}.rs"), format!("{prefix}/mod.rs")] {
            if files.contains_key(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

/// The paths a `use` tree names, each in full (`a::{b, c::D}` is `a::b` and `a::c::D`).
fn use_tree(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree);
        return vec![path
            .split("::")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()];
    };
    let prefix: Vec<String> = tree[..open]
        .split("::")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let close = tree
        .rfind('}')
        .filter(|close| *close > open)
        .unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|part| !part.trim().is_empty())
        .flat_map(use_tree)
        .map(|rest| {
            let mut full = prefix.clone();
            full.extend(rest.into_iter().filter(|s| s != "self"));
            full
        })
        .collect()
}

/// Paths written in `code` from `crate`, `super`, `self` or a child module: in `use`
/// statements and in expressions alike.
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    // `use` statements (at the start of a line, perhaps `pub`), whole: their trees may span
    // lines.
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let line_start = rest[..at].rfind('\n').map_or(0, |n| n + 1);
        let before = rest[line_start..at].trim();
        let statement = &rest[at + 4..];
        let end = statement.find(';').unwrap_or(statement.len());
        if before.is_empty() || before.starts_with("pub") {
            found.extend(use_tree(&statement[..end]));
        }
        rest = &statement[end..];
    }
    // Paths in code: `crate::a::b`, `super::super::c`, `self::d`, `child::e`.
    let bytes = code.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !word(bytes[i]) || (i > 0 && (word(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && word(bytes[j]) {
                j += 1;
            }
            segments.push(code[start..j].to_owned());
            if code[j..].starts_with("::") && bytes.get(j + 2).is_some_and(|b| word(*b)) {
                j += 2;
            } else {
                break;
            }
        }
        let head = segments[0].as_str();
        if segments.len() > 1
            && (matches!(head, "crate" | "super" | "self") || children.contains(head))
        {
            found.push(segments);
        }
        i = j.max(i + 1);
    }
    found
}

/// The files each file of a crate imports.
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (file, text) in files {
        let code = code(text);
        let module = module_of(file);
        let children: BTreeSet<String> = code
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                let line = line.strip_prefix("pub(crate) ").unwrap_or(line);
                let line = line.strip_prefix("pub ").unwrap_or(line);
                line.strip_prefix("mod ")?
                    .strip_suffix(';')
                    .map(str::to_owned)
            })
            .collect();
        let mut targets = BTreeSet::new();
        for path in paths(&code, &children) {
            let (mut full, rest): (Vec<String>, &[String]) = match path[0].as_str() {
                "crate" => (Vec::new(), &path[1..]),
                "self" => (module.clone(), &path[1..]),
                "super" => {
                    let mut parent = module.clone();
                    let mut rest = &path[..];
                    while rest.first().is_some_and(|s| s == "super") {
                        parent.pop();
                        rest = &rest[1..];
                    }
                    (parent, rest)
                }
                child => {
                    let mut within = module.clone();
                    within.push(child.to_owned());
                    (within, &path[1..])
                }
            };
            full.extend(rest.iter().cloned());
            if let Some(target) = file_of(&full, files) {
                if &target != file {
                    targets.insert(target);
                }
            }
        }
        graph.insert(file.clone(), targets);
    }
    graph
}

/// The imports between sibling modules that the file imports make (see the module
/// documentation): each module by its path, `a::b`.
fn sibling_imports(
    files: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, targets) in files {
        let from = module_of(file);
        for target in targets {
            let to = module_of(target);
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue;
            }
            graph
                .entry(from[..=common].join("::"))
                .or_default()
                .insert(to[..=common].join("::"));
        }
    }
    graph
}

/// The groups of modules that import one another (strongly connected, more than one).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = graph.keys().chain(graph.values().flatten()).collect();
    // Modules that reach each other, the simple way: crates are small.
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from.clone()];
        while let Some(at) = pending.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    pending.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|node| (*node, reach(node))).collect();
    let mut groups: Vec<Vec<String>> = Vec::new();
    for node in &nodes {
        if groups.iter().any(|g| g.contains(*node)) {
            continue;
        }
        let group: Vec<String> = nodes
            .iter()
            .filter(|other| {
                *other == node
                    || (reached[*node].contains(**other) && reached[**other].contains(*node))
            })
            .map(|other| (*other).clone())
            .collect();
        if group.len() > 1 {
            groups.push(group);
        }
    }
    groups
}

#[test]
fn every_crate_reads_bottom_up() {
    let mut found = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(crates_dir()).expect("crates/").flatten() {
        let src = entry.path().join("src");
        if !src.is_dir() {
            continue;
        }
        let files = sources(&src);
        checked += files.len();
        for group in circles(&sibling_imports(&imports(&files))) {
            found.push(format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                group.join(", ")
            ));
        }
    }
    assert!(checked > 50, "only {checked} source files found");
    assert!(
        found.is_empty(),
        "files that import one another in a circle:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_sees_a_circle_through_use_trees_and_paths() {
    let files: BTreeMap<String, String> = [
        ("lib.rs", "mod a;\nmod b;\nmod c;\npub use a::T;\n"),
        ("a.rs", "use crate::{b::Thing, c};\npub struct T;\n"),
        ("b/mod.rs", "mod inner;\npub fn f() { inner::g() }\n"),
        ("b/inner.rs", "pub fn g() { crate::c::h() }\n"),
        (
            "c.rs",
            "fn h() -> crate::a::T { todo!() }\n// crate::b::not_an_import\n",
        ),
        ("d.rs", "use super::T;\n"),
    ]
    .into_iter()
    .map(|(file, text)| (file.to_owned(), text.to_owned()))
    .collect();
    let graph = imports(&files);
    assert!(
        !graph["c.rs"].contains("b/mod.rs"),
        "a comment is no import"
    );
    assert!(graph["b/inner.rs"].contains("c.rs"));
    // a -> b (through b/inner) -> c -> a; lib and d import their parent: no circle.
    assert_eq!(
        circles(&sibling_imports(&graph)),
        vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
    );
}

#[test]
fn only_the_stream_reader_reads_a_connection() {
    let daemon = crates_dir().join("daemon").join("src");
    let dialects = sources(&daemon.join("dialects"));
    assert!(dialects.len() >= 7, "the adapters: {:?}", dialects.keys());
    for (file, text) in dialects {
        let code = code(&text);
        for reading in ["take_io", "AsyncRead", "FrameReader", "BoxRead", "recvmsg"] {
            assert!(
                !code.contains(reading),
                "dialects/{file} reads its connection itself ({reading}): read through crate::reader"
            );
        }
    }
}
