//! Manual pages and shell completions generated from the clap definitions (and, for the
//! configuration files, from docs/config.md), so they never drift from the program:
//! `linuxha gen-man DIR`, `linuxha gen-completions SHELL DIR`, and the packages' staging tree.

pub mod completions;
pub mod config_man;
pub mod man;

use std::path::Path;

use crate::fail::{Failure, Outcome};

/// Write `text` to `path`, creating its directory; a failure names the command and the path.
pub fn write(command: &str, path: &Path, text: &[u8]) -> Outcome<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::runtime(format!("{command}: cannot create {}: {e}", dir.display()))
        })?;
    }
    std::fs::write(path, text)
        .map_err(|e| Failure::runtime(format!("{command}: cannot write {}: {e}", path.display())))
}
