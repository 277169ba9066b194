//! `cllock --name N --timeout S -- command…`, and the application lock that clstartapp,
//! clhaltapp and clswitchapp hold while they change an application. The locks are cllockd's
//! (see `cl_daemon::lockd`): cluster-wide, held in both nodes' cllockd.

use std::time::Duration;

use cl_daemon::lockclient::{self, AcquireError, HeldLock, RunOutcome};
use cl_paths::Paths;
use cl_wire::lock::{check_name, format_time};

use crate::cli::CllockArgs;
use crate::fail::{Failure, Outcome};
use crate::site;

/// Exit code when the command cannot be started (as shells do).
const EXIT_CANNOT_RUN: i32 = 126;
/// Exit code when the command does not exist.
const EXIT_NOT_FOUND: i32 = 127;

/// Run cllock: take the lock (waiting up to --timeout), run the command with it held, release
/// it, and exit with the command's exit status.
pub fn cllock(paths: &Paths, args: &CllockArgs) -> Outcome<()> {
    let name = &args.name;
    check_name(name).map_err(|e| Failure::config(format!("cllock: {e}")))?;
    let cluster = site::built_cluster("cllock", paths)?;
    let node = site::local_node("cllock")?;
    let shown = summary(&args.command);
    let owner = format!("cllock {shown} on {node} (pid {})", std::process::id());
    let wait = Duration::from_secs(args.timeout);
    let lock = lockclient::acquire(paths, &cluster.config.name, name, &owner, wait).map_err(
        |e| match e {
            AcquireError::NotRunning => Failure::runtime(format!(
                "cllock: the cluster is not formed on this node (cllockd-{} is not running); {shown} was not run",
                cluster.config.name
            )),
            AcquireError::Held { by, since } => Failure::runtime(format!(
                "cllock: lock {name} is held by {by} since {}",
                format_time(since)
            )),
            AcquireError::Failed(why) => {
                Failure::runtime(format!("cllock: lock {name} not taken: {why}"))
            }
        },
    )?;
    let outcome = lockclient::run_holding(lock, &args.command).map_err(|e| {
        let code =
            if e.kind() == std::io::ErrorKind::NotFound { EXIT_NOT_FOUND } else { EXIT_CANNOT_RUN };
        Failure { code, message: format!("cllock: cannot run {}: {e}", args.command[0]) }
    })?;
    match outcome {
        RunOutcome::Exited(status) => match exit_code(status) {
            0 => Ok(()),
            code => Err(Failure { code, message: String::new() }),
        },
        RunOutcome::Lost { reason, .. } => Err(Failure::runtime(format!(
            "cllock: lock {name} was lost ({reason}); {shown} was stopped"
        ))),
    }
}

/// Take the lock `app:<app>` for an application command, without waiting: if someone holds
/// it, fail with who and since when.
pub fn app_lock(command: &str, paths: &Paths, app: &str) -> Outcome<HeldLock> {
    let cluster = site::built_cluster(command, paths)?;
    let node = site::local_node(command)?;
    let owner = format!("{command} on {node} (pid {})", std::process::id());
    let name = format!("app:{app}");
    lockclient::acquire(paths, &cluster.config.name, &name, &owner, Duration::ZERO).map_err(|e| {
        match e {
            AcquireError::Held { by, since } => Failure::runtime(format!(
                "{command}: application {app} is being changed by {by} since {}",
                format_time(since)
            )),
            AcquireError::NotRunning => Failure::runtime(format!(
                "{command}: cllockd-{} is not running on this node, so application {app} cannot be locked; nothing was done",
                cluster.config.name
            )),
            AcquireError::Failed(why) => Failure::runtime(format!(
                "{command}: cannot lock application {app}: {why}; nothing was done"
            )),
        }
    })
}

/// The command as shown in the lock's owner: its words, cut to 60 characters.
fn summary(argv: &[String]) -> String {
    let text = argv.join(" ");
    if text.chars().count() <= 60 {
        text
    } else {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    }
}

/// The exit code a shell would report: the code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_commands_are_cut_in_the_owner() {
        assert_eq!(summary(&["sleep".into(), "3".into()]), "sleep 3");
        let long = vec!["x".repeat(100)];
        assert_eq!(summary(&long).chars().count(), 60);
    }
}
