//! `linuxha`: one binary that is every command by the name it is called with.
//!
//! `clbuild …`, `linuxha clbuild …` and (for daemons) `cldaemon-<cluster> …` all land here;
//! [`cli::normalize_args`] turns the program name into a subcommand, clap parses, and each
//! command returns an [`fail::Outcome`] that becomes one line on stderr and an exit code.

mod cli;
mod cmd;
mod fail;
mod site;

use clap::Parser;

use cli::{Cli, Command};
use fail::{Failure, Outcome};

fn main() {
    let args = cli::normalize_args(std::env::args_os().collect());
    let cli = Cli::parse_from(args);
    let paths = cl_paths::Paths::from_env(cli.root.as_deref());
    match run(&paths, cli.command) {
        Ok(()) => {}
        Err(failure) => {
            eprintln!("{failure}");
            std::process::exit(failure.code);
        }
    }
}

fn run(paths: &cl_paths::Paths, command: Command) -> Outcome<()> {
    match command {
        Command::Clbuild(args) => cmd::build::clbuild(paths, &args),
        Command::Clbuildapp(args) => cmd::build::clbuildapp(paths, &args),
        Command::Clstat(args) => cmd::status::clstat(paths, &args),
        Command::Install(args) => cmd::install::install(paths, &args),
        Command::Uninstall(args) => cmd::install::uninstall(paths, &args),
        Command::Lab(args) => {
            cl_lab::cli::run(args).map_err(|e| Failure::runtime(format!("lab: {e:#}")))
        }
        Command::Demo(args) => cmd::demo::run(&args),
        Command::Clform(_) => not_yet("clform", "cluster formation"),
        Command::Clhalt(_) => not_yet("clhalt", "cluster shutdown"),
        Command::Clstartapp(_) => not_yet("clstartapp", "application control"),
        Command::Clhaltapp(_) => not_yet("clhaltapp", "application control"),
        Command::Clswitchapp(_) => not_yet("clswitchapp", "application control"),
        Command::Cllock(_) => not_yet("cllock", "cluster locks"),
        Command::Cldaemon(_) => not_yet("cldaemon", "the node manager daemon"),
        Command::Cllockd(_) => not_yet("cllockd", "the lock daemon"),
        Command::Clnetd(_) => not_yet("clnetd", "the network daemon"),
        Command::Clhbd(_) | Command::Clhbd2(_) => not_yet("clhbd", "the heartbeat daemon"),
    }
}

/// Commands whose machinery is not in this build say so plainly and change nothing.
fn not_yet(command: &str, what: &str) -> Outcome<()> {
    Err(Failure::runtime(format!(
        "{command}: {what} is not available in this build of linuxha {}; nothing was done",
        cl_paths::PRODUCT_VERSION
    )))
}
