//! `ferry completions SHELL` (shell completions, from the command line's own definition) and
//! `ferry man` (man pages, likewise).

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

/// Prints the completion script for the shell asked for.
pub fn completions(args: CompletionsArgs) -> Result<i32> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "ferry", &mut script);
    print(&script)
}

/// Writes `bytes` to stdout; a reader that stopped early (`ferry man | head`) is no error.
fn print(bytes: &[u8]) -> Result<i32> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

/// Prints ferry(1), or writes it and a page per subcommand (ferry-run(1)...) into a directory;
/// ferryd writes its own two there (ferryd(1), ferry-daemon(1): they list the forms of
/// `--listen` from the listener table, which only the daemon's program holds).
pub fn man(args: ManArgs) -> Result<i32> {
    let command = Cli::command();
    let Some(dir) = args.dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command).render(&mut page)?;
        return print(&page);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(command, &dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    let daemon = crate::launch::daemon_program()?;
    let status = std::process::Command::new(&daemon)
        .arg("--man-dir")
        .arg(&dir)
        .status()
        .with_context(|| format!("cannot run {}", daemon.display()))?;
    if !status.success() {
        anyhow::bail!(
            "{} could not write its man pages ({status})",
            daemon.display()
        );
    }
    Ok(0)
}

/// Writes ferryd(1) and ferry-daemon(1) into `dir` (for `ferryd --man-dir`).
pub fn daemon_man_pages(dir: &std::path::Path) -> Result<()> {
    let command = crate::cli::DaemonCli::command_with_forms();
    for (name, bin) in [("ferryd", "ferryd"), ("ferry-daemon", "ferry daemon")] {
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone().name(name).bin_name(bin)).render(&mut page)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
