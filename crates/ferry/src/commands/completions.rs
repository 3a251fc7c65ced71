//! `ferry completions SHELL` (shell completions, from the command line's own definition) and
//! `ferry man` (man pages, likewise).

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

/// Prints the completion script for the shell asked for.
pub fn completions(args: CompletionsArgs) -> Result<i32> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "ferry", &mut std::io::stdout());
    Ok(0)
}

/// Prints ferry(1), or writes it and a page per subcommand (ferry-run(1)...) into a directory.
pub fn man(args: ManArgs) -> Result<i32> {
    let command = Cli::command();
    let Some(dir) = args.dir else {
        clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
        return Ok(0);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(command, &dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    Ok(0)
}
