//! `ferry chat --wire tsockm`: a TsockM client (filled in with the dialect).

use anyhow::{bail, Result};

use super::screen::Screen;
use crate::cli::ChatArgs;

/// Runs the TsockM chat.
pub fn run(_args: &ChatArgs, _screen: &Screen) -> Result<i32> {
    bail!("not yet")
}
