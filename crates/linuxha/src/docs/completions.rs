//! Shell completions from the clap definitions (clap_complete): one script per program name
//! (`linuxha` and every command name), named as each shell looks them up.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, COMMAND_NAMES};
use crate::fail::{Failure, Outcome};

/// The shells completions are generated for (bash, zsh, fish).
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The shell named `name` (bash, zsh or fish).
pub fn shell(name: &str) -> Outcome<Shell> {
    SHELLS.into_iter().find(|s| s.to_string() == name).ok_or_else(|| {
        Failure::config(format!("gen-completions: unknown shell `{name}` (bash, zsh or fish)"))
    })
}

/// The file name `shell` loads the completion of `program` from.
pub fn file_name(shell: Shell, program: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{program}"),
        Shell::Fish => format!("{program}.fish"),
        _ => program.to_string(),
    }
}

/// The clap command `program` parses with: the whole CLI for `linuxha`, else its subcommand.
fn command(program: &'static str) -> Outcome<clap::Command> {
    let mut root = Cli::command();
    if program == "linuxha" {
        return Ok(root);
    }
    root.build();
    root.find_subcommand(program)
        .map(|sub| sub.clone().name(program).bin_name(program).display_name(program))
        .ok_or_else(|| Failure::runtime(format!("gen-completions: no command {program}")))
}

/// Write the completions of `linuxha` and every command name for `shell` into `dir`.
pub fn write(shell: Shell, dir: &Path) -> Outcome<Vec<PathBuf>> {
    let mut written = Vec::new();
    for program in std::iter::once("linuxha").chain(COMMAND_NAMES) {
        let mut cmd = command(program)?;
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, program, &mut text);
        let path = dir.join(file_name(shell, program));
        super::write("gen-completions", &path, &text)?;
        written.push(path);
    }
    Ok(written)
}
