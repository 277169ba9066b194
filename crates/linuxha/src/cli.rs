//! The command line: one definition per command, shared by `linuxha <command>` and the
//! `cl*` names the binary is installed under.

use std::path::PathBuf;

use cl_wire::Daemon;
use clap::{Args, Parser, Subcommand};

/// linuxha: a two-node high-availability failover cluster manager (Linuxha.net 1.1).
#[derive(Debug, Parser)]
#[command(name = "linuxha", version, propagate_version = true, disable_help_subcommand = true)]
pub struct Cli {
    /// Root directory all cluster files live under (default `/`).
    #[arg(long, global = true, env = cl_paths::ROOT_ENV, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command; each is also a program name of its own (`clbuild …` = `linuxha clbuild …`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate /etc/cluster/clconf.xml and install it as the new built cluster configuration.
    Clbuild(ClbuildArgs),
    /// Validate and install an application's configuration, or prepare its storage.
    Clbuildapp(ClbuildappArgs),
    /// Form the cluster: start the daemons on every node, then the autostart applications.
    Clform(ClformArgs),
    /// Stop the cluster on all nodes (or take one node out).
    Clhalt(ClhaltArgs),
    /// Show the state of the cluster, its nodes and applications.
    Clstat(ClstatArgs),
    /// Start an application.
    Clstartapp(AppCommandArgs),
    /// Stop an application.
    Clhaltapp(AppCommandArgs),
    /// Move an application to another node.
    Clswitchapp(AppCommandArgs),
    /// Resolve a DRBD data split brain: keep one node's copy, resynchronise the other.
    Clsplitbrain(ClsplitbrainArgs),
    /// Run a command while holding a cluster-wide named lock.
    Cllock(CllockArgs),
    /// The node manager daemon (started at boot; starts and supervises the others).
    Cldaemon(DaemonArgs),
    /// The cluster lock daemon.
    Cllockd(DaemonArgs),
    /// The network daemon: links, VIPs, known-connection pings.
    Clnetd(DaemonArgs),
    /// The heartbeat daemon.
    Clhbd(DaemonArgs),
    /// The heartbeat daemon's partner process.
    Clhbd2(DaemonArgs),
    /// The lease arbitrator, run on a third host (not a node): see docs/arbitrator.md.
    Clarbd(ClarbdArgs),
    /// Install the command links, VERSION file, directories and the cldaemon unit.
    Install(InstallArgs),
    /// Remove the command links and the unit; /etc/cluster is left alone.
    Uninstall(InstallArgs),
    /// Turn a Linuxha.net 1.0 configuration into the 1.1 form (ports, key, known connections,
    /// no 1.0 network attributes), showing the diff and keeping the 1.0 files.
    ///
    /// Reads /etc/cluster/clconf.xml and every /etc/cluster/<app>/appconf.xml (under --root)
    /// and makes the changes the Linuxha.net 1.0 to 1.1 migration guide asks for: the four
    /// daemon ports (9901 to 9904 unless taken) and, without a key, <key
    /// file="/etc/cluster/cluster.key"/> in <global> (the key file is created when missing); a
    /// <net_known_connections> section with this node's default gateway, or a commented
    /// placeholder saying what to write when there is none; and no broadcast, checklist,
    /// retries, retry_interval or ping_timeout attribute on an application's <network>. The
    /// administrator's comments and formatting are kept.
    ///
    /// It prints what changes and a unified diff of each file, then asks (or takes --yes), keeps
    /// each original as <file>.1.0 (<file>.1.0.2 and so on when that exists: a backup is never
    /// overwritten) and writes each file atomically with its old mode. A file that is not
    /// well-formed XML is reported as file:line:column and nothing is written. A configuration
    /// already in the 1.1 form is left alone (exit 0). Then run clbuild --verbose --force.
    Migrate(MigrateArgs),
    /// Build, break and tear down test clusters in network namespaces.
    Lab(cl_lab::cli::LabArgs),
    /// Run the demonstration: a two-node cluster in network namespaces, cleaned up after.
    Demo(DemoArgs),
    /// Called by DRBD (its `handlers` section, written by clbuildapp --vgbuild), not by people.
    DrbdHandler(DrbdHandlerArgs),
    /// Write the manual pages (man5/, man8/) generated from these definitions into DIR.
    #[command(hide = true)]
    GenMan(GenManArgs),
    /// Write the shell completions of linuxha and every command name into DIR.
    #[command(hide = true)]
    GenCompletions(GenCompletionsArgs),
    /// Write the files the packages carry besides the binary, laid out as installed, into DIR.
    #[command(hide = true)]
    PackageTree(PackageTreeArgs),
}

/// Options of gen-man.
#[derive(Debug, Args)]
pub struct GenManArgs {
    /// The directory to write man5/ and man8/ into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Options of gen-completions.
#[derive(Debug, Args)]
pub struct GenCompletionsArgs {
    /// The shell.
    #[arg(value_name = "SHELL", value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
    /// The directory to write the scripts into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Options of package-tree.
#[derive(Debug, Args)]
pub struct PackageTreeArgs {
    /// The staging directory (emptied first), e.g. target/release/package-tree.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Print what was written.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Options of drbd-handler.
#[derive(Debug, Args)]
pub struct DrbdHandlerArgs {
    /// Which handler DRBD runs.
    #[arg(value_enum)]
    pub handler: DrbdHandler,
    /// The resource (default: DRBD_RESOURCE from DRBD's environment).
    #[arg(long)]
    pub resource: Option<String>,
    /// How long fence-peer waits for the cluster to decide about the peer before giving up
    /// (DRBD then keeps I/O frozen until the administrator acts).
    #[arg(long, value_parser = humantime_secs, default_value = "120")]
    pub wait: std::time::Duration,
}

/// The DRBD handlers linuxha provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrbdHandler {
    /// The replication link is lost while this node is Primary: outdate the peer's copy
    /// through the cluster, or confirm the peer is gone.
    FencePeer,
    /// A resync to this node ended (DRBD lifts the Outdated mark itself): logged.
    AfterResyncTarget,
    /// DRBD found a split brain: logged (cldaemon raises the alarm from DRBD's events).
    SplitBrain,
}

fn humantime_secs(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<u64>()
        .map(std::time::Duration::from_secs)
        .map_err(|_| format!("`{s}` is not a number of seconds"))
}

/// Options of clbuild.
#[derive(Debug, Args)]
pub struct ClbuildArgs {
    /// Print each step.
    #[arg(short, long)]
    pub verbose: bool,
    /// Build even when nothing changed or the cluster is running; with --genkey, replace the key.
    #[arg(short, long)]
    pub force: bool,
    /// Create a new random cluster key file instead of building.
    #[arg(long, conflicts_with = "rollback")]
    pub genkey: bool,
    /// Where --genkey writes the key (default /etc/cluster/cluster.key).
    #[arg(long, value_name = "FILE", requires = "genkey")]
    pub key_file: Option<PathBuf>,
    /// Reinstall the previous built configuration (as a new version).
    #[arg(long)]
    pub rollback: bool,
}

/// Options of clbuildapp.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action").required(true).multiple(true).args(["build", "vgbuild"])))]
pub struct ClbuildappArgs {
    /// The application (its directory under /etc/cluster).
    #[arg(short, long, value_name = "NAME")]
    pub application: String,
    /// Validate appconf.xml and install it as the application's built configuration.
    #[arg(long)]
    pub build: bool,
    /// Prepare the application's storage: build its replicated volumes on both nodes, or
    /// check that every unreplicated device holds its filesystem.
    #[arg(long)]
    pub vgbuild: bool,
    /// Rebuild when unchanged; with --vgbuild, create missing filesystems on empty devices
    /// (unreplicated), and with --source keep that node's data (replicated).
    #[arg(short, long)]
    pub force: bool,
    /// Print each step.
    #[arg(short, long)]
    pub verbose: bool,
    /// With --vgbuild --force: the node whose copy is kept where a volume holds data without
    /// DRBD metadata (the other node's copy is overwritten).
    #[arg(long, value_name = "NODE", requires = "force")]
    pub source: Option<String>,
    /// Do not ask before overwriting data (needed when not run on a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Return once the initial synchronisation has started instead of following it.
    #[arg(long)]
    pub no_wait: bool,
}

/// Options of clsplitbrain.
#[derive(Debug, Args)]
pub struct ClsplitbrainArgs {
    /// The application whose data is in split brain.
    #[arg(short, long, value_name = "NAME")]
    pub application: String,
    /// The node whose copy is kept; the other node's changes since the split are discarded.
    #[arg(long, value_name = "NODE")]
    pub keep: String,
    /// Do not ask for confirmation (needed when not run on a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Return once the resynchronisation has started instead of following it.
    #[arg(long)]
    pub no_wait: bool,
    /// Print each step.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Options of clform.
#[derive(Debug, Args)]
pub struct ClformArgs {
    /// Start no applications, not even autostart ones.
    #[arg(long)]
    pub noapps: bool,
    /// Print progress.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Options of clhalt.
#[derive(Debug, Args)]
pub struct ClhaltArgs {
    /// Stop running applications first instead of refusing.
    #[arg(short, long)]
    pub force: bool,
    /// Take only this node out of the cluster.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Print progress.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Options of clstat.
#[derive(Debug, Args)]
pub struct ClstatArgs {
    /// Machine-readable output (stable field names).
    #[arg(long)]
    pub json: bool,
    /// Show counters and per-link detail.
    #[arg(short, long)]
    pub verbose: bool,
    /// Redraw every half second until interrupted.
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,
}

/// Options of the application commands.
#[derive(Debug, Args)]
pub struct AppCommandArgs {
    /// The application.
    #[arg(short, long, value_name = "NAME")]
    pub application: String,
    /// The node to run it on.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Print progress.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Options of cllock.
#[derive(Debug, Args)]
pub struct CllockArgs {
    /// Lock name.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Give up after waiting this many seconds for the lock.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    /// The command to run while holding the lock.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Options shared by the daemons.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Stay in the foreground instead of detaching.
    #[arg(long)]
    pub foreground: bool,
    /// The cluster (default: the one in the built configuration; set from the program name
    /// `<daemon>-<cluster>`).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
}

/// Options of clarbd.
#[derive(Debug, Args)]
pub struct ClarbdArgs {
    /// Stay in the foreground instead of detaching.
    #[arg(long)]
    pub foreground: bool,
    /// The cluster expected in the configuration (set from the program name `clarbd-<cluster>`).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The cluster's clconf.xml, as a path on a node (resolved under --root).
    #[arg(long, value_name = "FILE", default_value = "/etc/cluster/clconf.xml")]
    pub config: PathBuf,
    /// Listen on this UDP address and port instead of the <arbitrator> ones.
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub listen: Option<std::net::SocketAddr>,
}

/// Options of install and uninstall.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Installation prefix; command links go to `<prefix>/sbin` (under --root).
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Print each step.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Options of migrate.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Show the changes as a unified diff and change nothing.
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
    /// Apply the changes without asking (needed when not run on a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// The address proposed for <net_known_connections> instead of this node's default
    /// gateway (an address outside the cluster that answers ping).
    #[arg(long, value_name = "ADDRESS")]
    pub gateway: Option<std::net::IpAddr>,
}

/// Options of demo.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the lab running at the end (remove it with `linuxha lab down NAME`).
    #[arg(long)]
    pub keep: bool,
    /// Replicated storage on real kernels: two QEMU guests (DRBD under LVM), a file written on
    /// node1, node1 powered off, node2 serving the same file.
    #[arg(long)]
    pub replicated: bool,
}

/// Program names the binary answers to, besides `linuxha`.
pub const COMMAND_NAMES: [&str; 16] = [
    "clbuild",
    "clbuildapp",
    "clform",
    "clhalt",
    "clstat",
    "clstartapp",
    "clhaltapp",
    "clswitchapp",
    "clsplitbrain",
    "cllock",
    "cldaemon",
    "cllockd",
    "clnetd",
    "clhbd",
    "clhbd2",
    "clarbd",
];

/// Subcommands of linuxha (not installed as program names) that have a page of their own,
/// `linuxha-<command>(8)`, as git names its subcommands' pages.
pub const SUBCOMMAND_PAGES: [&str; 1] = ["migrate"];

/// The lab's fence agent, under the name fence-agents style agents have: `linuxha lab fence`.
pub const LAB_FENCE_AGENT: &str = "fence_linuxha_lab";

/// The fence agent inside VM lab nodes: `linuxha lab fence-vm` (asks the lab BMC).
pub const VM_FENCE_AGENT: &str = "fence_linuxha_vm";

/// Turn `argv` as the program was called into `linuxha <command> …` arguments.
///
/// `clbuild -v` becomes `linuxha clbuild -v`; `clhbd-cluster1 …` (as the daemons show in `ps`)
/// becomes `linuxha clhbd --cluster cluster1 …`.
pub fn normalize_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(program) = args.first() else { return vec!["linuxha".into()] };
    let base = std::path::Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if base == LAB_FENCE_AGENT {
        let mut out = vec!["linuxha".into(), "lab".into(), "fence".into()];
        out.extend(args.into_iter().skip(1));
        return out;
    }
    if base == VM_FENCE_AGENT {
        let mut out = vec!["linuxha".into(), "lab".into(), "fence-vm".into()];
        out.extend(args.into_iter().skip(1));
        return out;
    }
    if COMMAND_NAMES.contains(&base.as_str()) {
        let mut out = vec!["linuxha".into(), base.into()];
        out.extend(args.into_iter().skip(1));
        return out;
    }
    // Daemons also run as `<daemon>-<cluster>`.
    for daemon in Daemon::ALL.map(Daemon::name) {
        if let Some(cluster) = base.strip_prefix(daemon).and_then(|rest| rest.strip_prefix('-')) {
            if !cluster.is_empty() {
                let mut out =
                    vec!["linuxha".into(), daemon.into(), "--cluster".into(), cluster.into()];
                out.extend(args.into_iter().skip(1));
                return out;
            }
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(|a| a.into()).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn vm_guests_link_every_command_name() {
        let guest = cl_lab::vm::assets::GUEST_COMMANDS;
        for name in COMMAND_NAMES.iter().chain([&LAB_FENCE_AGENT, &VM_FENCE_AGENT, &"linuxha"]) {
            assert!(guest.contains(name), "{name} missing from cl_lab::vm::assets::GUEST_COMMANDS");
        }
    }

    #[test]
    fn program_name_selects_the_command() {
        assert_eq!(norm(&["/usr/sbin/clbuild", "--verbose"]), ["linuxha", "clbuild", "--verbose"]);
        assert_eq!(norm(&["linuxha", "clstat"]), ["linuxha", "clstat"]);
        assert_eq!(norm(&["clhbd2-cluster1"]), ["linuxha", "clhbd2", "--cluster", "cluster1"]);
        assert_eq!(
            norm(&["clarbd-cluster1", "--foreground"]),
            ["linuxha", "clarbd", "--cluster", "cluster1", "--foreground"]
        );
        assert_eq!(norm(&["/usr/sbin/fence_linuxha_lab"]), ["linuxha", "lab", "fence"]);
        assert_eq!(norm(&["/usr/sbin/fence_linuxha_vm"]), ["linuxha", "lab", "fence-vm"]);
        assert_eq!(
            norm(&["clhbd-c-1", "--foreground"]),
            ["linuxha", "clhbd", "--cluster", "c-1", "--foreground"]
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
