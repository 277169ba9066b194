//! `linuxha`: one binary that is every command by the name it is called with.
//!
//! `clbuild …`, `linuxha clbuild …` and (for daemons) `cldaemon-<cluster> …` all land here;
//! [`cli::normalize_args`] turns the program name into a subcommand, clap parses (a usage
//! error is one line, [`usage`]), and each
//! command returns an [`fail::Outcome`] that becomes one line on stderr and an exit code.

mod cli;
mod cmd;
mod docs;
mod fail;
mod names;
mod site;
mod units;
mod usage;

use cl_daemon::Daemon;
use cl_wire::msg::AppCommand;

use cli::Command;
use fail::{Failure, Outcome};

fn main() {
    let (cli, called) = match usage::parse(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(failure) => {
            eprintln!("{failure}");
            std::process::exit(failure.code);
        }
    };
    let paths = cl_paths::Paths::from_env(cli.root.as_deref());
    match run(&paths, &called, cli.command) {
        Ok(()) => {}
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("{failure}");
            }
            std::process::exit(failure.code);
        }
    }
}

fn run(paths: &cl_paths::Paths, called: &str, command: Command) -> Outcome<()> {
    match command {
        Command::Clbuild(args) => cmd::build::clbuild(paths, &args),
        Command::Clbuildapp(args) => cmd::build::clbuildapp(paths, &args),
        Command::Clstat(args) => cmd::cluster::clstat(paths, &args),
        Command::Install(args) => cmd::install::install(paths, &args),
        Command::Uninstall(args) => cmd::install::uninstall(paths, &args),
        Command::Migrate(args) => cmd::migrate::migrate(paths, &args),
        Command::Lab(args) => cl_lab::cli::run(args).map_err(|e| {
            // The caller's mistakes (no such lab, host or network; a bad name) exit 2.
            let code = if e.downcast_ref::<cl_lab::cli::UsageError>().is_some() {
                fail::EXIT_CONFIG
            } else {
                fail::EXIT_FAILED
            };
            Failure { code, message: format!("{called}: {e:#}") }
        }),
        Command::Demo(args) if args.replicated => cmd::demo_replicated::run(&args),
        Command::Demo(args) => cmd::demo::run(&args),
        Command::DrbdHandler(args) => cmd::storage::drbd_handler(paths, &args),
        Command::GenMan(args) => docs::man::write_pages("gen-man", &args.dir, false).map(|_| ()),
        Command::GenCompletions(args) => {
            docs::completions::write(docs::completions::shell(&args.shell)?, &args.dir).map(|_| ())
        }
        Command::PackageTree(args) => cmd::package::package_tree(&args),
        Command::Clform(args) => cmd::cluster::clform(paths, &args),
        Command::Clhalt(args) => cmd::cluster::clhalt(paths, &args),
        Command::Clstartapp(args) => {
            cmd::cluster::app_command("clstartapp", paths, AppCommand::Start, &args)
        }
        Command::Clhaltapp(args) => {
            cmd::cluster::app_command("clhaltapp", paths, AppCommand::Stop, &args)
        }
        Command::Clswitchapp(args) => {
            cmd::cluster::app_command("clswitchapp", paths, AppCommand::Switch, &args)
        }
        Command::Clsplitbrain(args) => cmd::splitbrain::clsplitbrain(paths, &args),
        Command::Cllock(args) => cmd::lock::cllock(paths, &args),
        Command::Cldaemon(args) => daemon(Daemon::Cldaemon, paths, &args),
        Command::Cllockd(args) => daemon(Daemon::Cllockd, paths, &args),
        Command::Clnetd(args) => daemon(Daemon::Clnetd, paths, &args),
        Command::Clhbd(args) => daemon(Daemon::Clhbd, paths, &args),
        Command::Clhbd2(args) => daemon(Daemon::Clhbd2, paths, &args),
        Command::Clarbd(args) => cl_daemon::arbd::start(cl_daemon::arbd::ArbdOptions {
            paths: paths.clone(),
            config: Some(args.config),
            listen: args.listen,
            foreground: args.foreground,
            cluster: args.cluster,
        })
        .map_err(|e| Failure::runtime(format!("clarbd: {e:#}"))),
    }
}

/// Run one of the daemons; cldaemon detaches unless --foreground, the others never do.
fn daemon(which: Daemon, paths: &cl_paths::Paths, args: &cli::DaemonArgs) -> Outcome<()> {
    let foreground = args.foreground || which != Daemon::Cldaemon;
    cl_daemon::start(which, paths.clone(), foreground, args.cluster.as_deref())
        .map_err(|e| Failure::runtime(format!("{}: {e:#}", which.name())))
}
