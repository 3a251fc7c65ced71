//! Finding and starting `ferryd`, the daemon's program: `ferry daemon` becomes it, and a
//! client that needs a daemon starts it in the background.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The daemon's program name.
pub const DAEMON_PROGRAM: &str = "ferryd";

/// The global options that take a value as the next argument (`--socket PATH`), from their
/// definition: skipped when looking for the `daemon` subcommand on a command line.
fn globals_with_values() -> Vec<String> {
    use clap::Args;
    crate::cli::Globals::augment_args(clap::Command::new("ferry"))
        .get_arguments()
        .filter(|arg| arg.get_action().takes_values())
        .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
        .collect()
}

/// Where `ferryd` is: beside this `ferry` (as `cargo build` and `cargo install` put them),
/// else on `PATH`.
pub fn daemon_program() -> Result<PathBuf> {
    let client = std::env::current_exe().context("cannot find the ferry executable")?;
    if let Some(beside) = client.parent().map(|dir| dir.join(DAEMON_PROGRAM)) {
        if is_executable(&beside) {
            return Ok(beside);
        }
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(DAEMON_PROGRAM))
            .find(|candidate| is_executable(candidate))
    });
    match on_path {
        Some(found) => Ok(found),
        None => bail!(
            "cannot find the daemon's program `{DAEMON_PROGRAM}` beside {} or on PATH \
             (`cargo build --release` builds both ferry and ferryd into target/release; \
             `cargo install --path crates/ferry` installs both)",
            client.display()
        ),
    }
}

fn is_executable(path: &Path) -> bool {
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok() && path.is_file()
}

/// `ferry daemon ARGS`, found on the command line `args` (before clap builds ferry's whole
/// command tree): executes `ferryd ARGS` in this process (same pid), with the socket given
/// before `daemon` in `FERRY_SOCKET`. Returns `None` when `args` is not a `ferry daemon` line,
/// and the error when `ferryd` cannot be executed or the line gives a client's option.
pub fn exec_daemon_if_asked(args: &[OsString]) -> Option<anyhow::Error> {
    let (before, rest) = split_at_daemon(args)?;
    let mut socket = None;
    let mut i = 0;
    while i < before.len() {
        let arg = before[i].to_string_lossy();
        if arg == "--socket" {
            socket = before.get(i + 1).cloned();
            i += 1;
        } else if let Some(value) = arg.strip_prefix("--socket=") {
            socket = Some(OsString::from(value));
        } else {
            let option = arg.split('=').next().unwrap_or_default();
            return Some(anyhow::anyhow!(
                "{option} is a client's option, to reach a daemon: it means nothing to `ferry daemon`"
            ));
        }
        i += 1;
    }
    let program = match daemon_program() {
        Ok(program) => program,
        Err(e) => return Some(e),
    };
    let mut command = std::process::Command::new(&program);
    command.args(rest);
    if let Some(socket) = socket {
        command.env("FERRY_SOCKET", socket);
    }
    let error = command.exec();
    Some(anyhow::Error::new(error).context(format!("cannot execute {}", program.display())))
}

/// A `ferry daemon` command line split into the global options before `daemon` and the
/// arguments after it; `None` when `daemon` is not its subcommand.
fn split_at_daemon(args: &[OsString]) -> Option<(&[OsString], &[OsString])> {
    if !args.iter().skip(1).any(|arg| arg == "daemon") {
        return None;
    }
    let mut with_values: Option<Vec<String>> = None;
    let mut i = 1;
    while i < args.len() {
        let arg = &args[i];
        if arg == "daemon" {
            return Some((&args[1..i], &args[i + 1..]));
        }
        if arg.to_str().is_some_and(|a| !a.starts_with('-')) {
            return None; // another subcommand
        }
        let with_values = with_values.get_or_insert_with(globals_with_values);
        if with_values.iter().any(|g| arg == g.as_str()) {
            i += 1;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn the_daemon_gets_what_follows_its_subcommand() {
        for (line, before, rest) in [
            ("ferry daemon", "", ""),
            ("ferry daemon --listen x -v", "", "--listen x -v"),
            (
                "ferry --socket daemon daemon --max-jobs 2",
                "--socket daemon",
                "--max-jobs 2",
            ),
            (
                "ferry --socket=/s daemon --socket /t",
                "--socket=/s",
                "--socket /t",
            ),
            ("ferry --no-tls daemon daemon", "--no-tls", "daemon"),
        ] {
            let line_args = args(line);
            let (b, r) = split_at_daemon(&line_args).expect(line);
            assert_eq!(b, args(before).as_slice(), "{line}");
            assert_eq!(r, args(rest).as_slice(), "{line}");
        }
        for line in [
            "ferry",
            "ferry run -- daemon",
            "ferry --host daemon run",
            "ferry ps",
        ] {
            assert!(split_at_daemon(&args(line)).is_none(), "{line}");
        }
    }
}
