//! Every decoder's fuzz target, run for a bounded time as rows of the suite.

use std::process::{Command, Stdio};

use super::{Row, Scale};

/// Every decoder's fuzz target for a bounded time (`fuzz/run`: built with coverage on a
/// stable toolchain, the inputs that once crashed one replayed first, then fuzzed on its kept
/// corpus): one row per target, a crash counted as lost. The daemon is not involved.
pub fn fuzzing(scale: &Scale) -> Vec<Row> {
    let seconds = if scale.full { 60 } else { 4 };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let run = Command::new("bash")
        .arg(format!("{root}/fuzz/run"))
        .args(["--seconds", &seconds.to_string()])
        .stdin(Stdio::null())
        .output();
    let row = |case: String, figure: String, lost: u64, failure: Option<String>| Row {
        case,
        figure,
        lost,
        rss: (0, 0),
        fds: (0, 0),
        failure,
    };
    let out = match run {
        Ok(out) => out,
        Err(e) => return vec![row("fuzzing".into(), String::new(), 0, Some(e.to_string()))],
    };
    let mut rows: Vec<Row> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("fuzz ")?.split_whitespace();
            let target = words.next()?;
            let field = |name: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.parse().ok())
                    .unwrap_or(0)
            };
            let crashes = field("crashes=");
            Some(row(
                format!("fuzz {target}"),
                format!(
                    "{} runs in {seconds} s on a corpus of {}; {} new inputs",
                    field("runs="),
                    field("corpus="),
                    field("found=")
                ),
                crashes,
                (crashes > 0).then(|| "crashed: see target/fuzz/".to_owned()),
            ))
        })
        .collect();
    if !out.status.success() && rows.iter().all(|r| r.failure.is_none()) {
        rows.push(row(
            "fuzzing".into(),
            String::new(),
            0,
            Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        ));
    }
    rows
}
