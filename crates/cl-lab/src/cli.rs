//! `linuxha lab …`: the lab as commands, for the demo and for poking at a cluster by hand.
//!
//! Labs made here are persistent (they outlive the command) and are found again by name through
//! their state file in [`crate::STATE_DIR`].

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use crate::vm::{VmLab, VmLabSpec};
use crate::{Direction, Lab, LabError, LabSpec, Owner};

/// Arguments of `linuxha lab`.
#[derive(Args, Debug)]
#[command(about = "Build network-namespace test clusters and inject faults (needs root)")]
pub struct LabArgs {
    #[command(subcommand)]
    cmd: LabCommand,
}

/// Link state for `lab link`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LinkState {
    /// Bring the interface up.
    Up,
    /// Set the interface down (the node sees NO-CARRIER).
    Down,
}

/// Power actions of `lab power` on a VM node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PowerCmd {
    /// Hard power-off (QMP quit).
    Off,
    /// Power on with the same disks and wait for the boot.
    On,
    /// Hard reset (QMP system_reset) and wait for the boot.
    Reset,
    /// Stop the guest's CPU (QMP stop).
    Freeze,
    /// Resume a frozen guest (QMP cont).
    Thaw,
    /// Print on/off/frozen; exit 0 when on, 2 when off.
    Status,
}

/// The `linuxha lab` subcommands.
#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Build a lab that stays up until `lab down`; prints its name and hosts.
    Up {
        /// Lab name (1-32 of [a-z0-9_-]); default `lh` + 6 random hex digits.
        #[arg(long)]
        name: Option<String>,
        /// Number of cluster nodes, 1 to 16 (`crate::MAX_NODES`).
        #[arg(long, default_value_t = 2, value_parser = node_count)]
        nodes: usize,
        /// Number of networks: 1 (public) or 2 (public and private).
        #[arg(long, default_value_t = 2, value_parser = network_count)]
        networks: usize,
        /// Make the nodes QEMU guests with a real kernel (DRBD, LVM, power control).
        #[arg(long)]
        vm: bool,
        /// VM nodes: directory of the linuxha binary shared with the guests (default: this
        /// program's directory).
        #[arg(long, requires = "vm")]
        binary_dir: Option<std::path::PathBuf>,
        /// VM nodes: size of each data disk in MiB.
        #[arg(long, default_value_t = 256, requires = "vm")]
        data_disk_mib: u64,
        /// VM nodes: create this LVM volume group on each data disk.
        #[arg(long, requires = "vm")]
        vg: Option<String>,
    },
    /// Remove a lab and everything it made (processes, namespaces, cgroups, files).
    Down {
        /// The lab to remove.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        lab: Option<String>,
        /// Remove every lab recorded in /run/linuxha-lab, including other users' test labs.
        #[arg(long)]
        all: bool,
    },
    /// Run a command inside a host (namespaces, mounts and cgroup); exits with its exit code.
    Exec {
        /// The lab.
        lab: String,
        /// `node1`, `node2`, … or `ext`.
        host: String,
        /// VM nodes: give up after this many seconds (the command keeps running in the guest).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        cmd: Vec<OsString>,
    },
    /// Power control of a VM node: off (hard), on, reset, freeze, thaw, status.
    Power {
        /// The lab.
        lab: String,
        /// What to do.
        #[arg(value_enum)]
        action: PowerCmd,
        /// `node1`, `node2`, …
        node: String,
    },
    /// Fence agent inside a VM node (fence-agents convention; also runs as `fence_linuxha_vm`):
    /// reads `plug=` (or `port=`, `nodename=`) and `action=off|on|reboot|status` lines on stdin
    /// unless --action is given, and asks the lab BMC over the `bmc` virtio-serial port.
    /// Exit 0 = success (status: on), 2 = off, 1 = error.
    FenceVm {
        /// The node (instead of `plug=` on stdin).
        #[arg(long)]
        plug: Option<String>,
        /// off, on, reboot, status or monitor; when given, stdin is not read.
        #[arg(long)]
        action: Option<String>,
    },
    /// The lab BMC of a VM lab made by `lab up --vm` (started and stopped by the lab itself).
    #[command(hide = true)]
    Bmc {
        /// The lab.
        lab: String,
    },
    /// Silently isolate a host at the switch (carrier stays up), or drop one direction only.
    Cut {
        /// The lab.
        lab: String,
        /// `node1`, … or `ext`.
        host: String,
        /// Network index (0 public, 1 private); default: all networks of the host.
        #[arg(long)]
        net: Option<usize>,
        /// Drop only IP traffic in this direction (ARP still passes).
        #[arg(long, value_enum)]
        oneway: Option<Direction>,
    },
    /// Drop a random percentage of a host's frames in both directions (0 removes the loss).
    Loss {
        /// The lab.
        lab: String,
        /// `node1`, … or `ext`.
        host: String,
        /// Percentage of frames to drop, 0..=100.
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
        /// Network index; default: all networks of the host.
        #[arg(long)]
        net: Option<usize>,
    },
    /// Remove network faults (cuts, loss, links down) of one host or of all hosts.
    Heal {
        /// The lab.
        lab: String,
        /// The host to heal; default: all hosts.
        host: Option<String>,
    },
    /// Set a host's interface on network NET up or down (down = NO-CARRIER, like a NIC failure).
    Link {
        /// The lab.
        lab: String,
        /// `node1`, … or `ext`.
        host: String,
        /// Network index (0 public, 1 private).
        net: usize,
        /// `up` or `down`.
        #[arg(value_enum)]
        state: LinkState,
    },
    /// Freeze every process of a host (cgroup freezer); the kernel still answers ping and ARP.
    Freeze {
        /// The lab.
        lab: String,
        /// `node1`, … or `ext`.
        host: String,
    },
    /// Fence agent for lab nodes (fence-agents convention; also runs as `fence_linuxha_lab`):
    /// reads `lab=`, `plug=` (or `port=`, `nodename=`) and `action=off|on|reboot|status` lines
    /// on stdin unless --action is given. Exit 0 = success (status: on), 2 = off, 1 = error.
    Fence {
        /// The lab (instead of `lab=` on stdin).
        #[arg(long)]
        lab: Option<String>,
        /// The node (instead of `plug=` on stdin).
        #[arg(long)]
        plug: Option<String>,
        /// off, on, reboot, status or monitor; when given, stdin is not read.
        #[arg(long)]
        action: Option<String>,
    },
    /// Thaw a frozen host.
    Thaw {
        /// The lab.
        lab: String,
        /// `node1`, … or `ext`.
        host: String,
    },
    /// SIGKILL every process of a host (its mounts survive, like a crashed machine's disks).
    Kill {
        /// The lab.
        lab: String,
        /// `node1`, … or `ext`.
        host: String,
    },
    /// List labs with their owner and active faults.
    List,
}

/// A lab command's error that is the caller's mistake (no such lab, host or network; a bad lab
/// name): `linuxha lab` exits 2 for it, 1 for every other failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `--nodes`: a number the lab can address.
fn node_count(text: &str) -> Result<usize, String> {
    let n: usize = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
    if (1..=crate::MAX_NODES).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "a lab has 1 to {} nodes (addresses 10.10.0.11 to 10.10.0.{})",
            crate::MAX_NODES,
            10 + crate::MAX_NODES
        ))
    }
}

/// `--networks`: 1 or 2.
fn network_count(text: &str) -> Result<usize, String> {
    match text {
        "1" => Ok(1),
        "2" => Ok(2),
        _ => Err("a lab has 1 network (public) or 2 (public and private)".into()),
    }
}

/// Runs one `linuxha lab` command. `exec` ends the process with the command's exit code.
/// Unknown labs, hosts and networks and bad names come back as [`UsageError`], except from the
/// fence agents and `power`, whose exit 2 means "off".
pub fn run(args: LabArgs) -> Result<()> {
    let answers_power_state = matches!(
        args.cmd,
        LabCommand::Fence { .. }
            | LabCommand::FenceVm { .. }
            | LabCommand::Power { .. }
            | LabCommand::Bmc { .. }
    );
    run_command(args.cmd).map_err(|e| {
        let mistake = matches!(
            e.downcast_ref::<LabError>(),
            Some(
                LabError::NoSuchLab(_)
                    | LabError::UnknownHost { .. }
                    | LabError::UnknownNetwork { .. }
                    | LabError::BadName(_)
            )
        );
        if mistake && !answers_power_state {
            UsageError(format!("{e:#}")).into()
        } else {
            e
        }
    })
}

/// The body of [`run`].
fn run_command(cmd: LabCommand) -> Result<()> {
    match cmd {
        LabCommand::Up { name, nodes, networks, vm: false, .. } => {
            let mut lab = Lab::up(LabSpec { nodes, networks, name })?;
            lab.detach()?;
            print_lab(&lab);
            Ok(())
        }
        LabCommand::Up { name, nodes, networks, vm: true, binary_dir, data_disk_mib, vg } => {
            let binary_dir = match binary_dir {
                Some(d) => d,
                None => std::env::current_exe()
                    .context("finding this program")?
                    .parent()
                    .context("this program has no directory")?
                    .to_path_buf(),
            };
            let mut spec = VmLabSpec::new(binary_dir);
            spec.name = name;
            spec.nodes = nodes;
            spec.networks = networks;
            spec.data_disk_mib = data_disk_mib;
            spec.vg = vg;
            let mut vm = VmLab::up(spec)?;
            vm.detach()?;
            print_lab(vm.lab());
            for node in vm.nodes() {
                println!("{node}: console {}", vm.console_log(&node)?.display());
            }
            Ok(())
        }
        LabCommand::Down { lab: Some(name), .. } => {
            if !Lab::exists_by_name(&name)? {
                return Err(UsageError(format!(
                    "no lab named {name:?}: nothing to remove (`linuxha lab list` shows the labs)"
                ))
                .into());
            }
            Lab::down_by_name(&name)?;
            println!("removed {name}");
            Ok(())
        }
        LabCommand::Down { lab: None, .. } => {
            let mut failed = Vec::new();
            for info in Lab::list()? {
                match Lab::down_by_name(&info.name) {
                    Ok(()) => println!("removed {}", info.name),
                    Err(e) => failed.push(format!("{e:#}")),
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                bail!("{}", failed.join("\n"))
            }
        }
        LabCommand::Exec { lab, host, timeout, cmd } if is_vm_node(&lab, &host)? => {
            let vm = VmLab::load(&lab)?;
            let script: Vec<String> =
                cmd.iter().map(|a| crate::vm::assets::sh_quote(&a.to_string_lossy())).collect();
            let out = vm.exec(&host, &script.join(" "), std::time::Duration::from_secs(timeout))?;
            print!("{}", out.stdout);
            if !out.stdout.is_empty() && !out.stdout.ends_with('\n') {
                println!();
            }
            if out.rc != 0 {
                std::process::exit(out.rc);
            }
            Ok(())
        }
        LabCommand::Exec { lab, host, cmd, .. } => {
            let lab = Lab::load(&lab)?;
            let status = lab
                .exec(&host, &cmd)?
                .status()
                .with_context(|| format!("running {cmd:?} on {host}"))?;
            // Pass the exit code through like `ssh` does; a signal becomes 128 + signal.
            let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        LabCommand::Cut { lab, host, net, oneway } => {
            let mut lab = Lab::load(&lab)?;
            match oneway {
                Some(direction) => lab.cut_oneway(&host, net, direction),
                None => lab.cut(&host, net),
            }
        }
        LabCommand::Loss { lab, host, percent, net } => Lab::load(&lab)?.loss(&host, net, percent),
        LabCommand::Heal { lab, host } if Lab::load(&lab)?.is_vm() => {
            let mut vm = VmLab::load(&lab)?;
            match host {
                Some(host) => vm.heal(&host),
                None => vm.heal_all(),
            }
        }
        LabCommand::Heal { lab, host: Some(host) } => Lab::load(&lab)?.heal(&host),
        LabCommand::Heal { lab, host: None } => Lab::load(&lab)?.heal_all(),
        LabCommand::Link { lab, host, net, state } if Lab::load(&lab)?.is_vm() => {
            let mut vm = VmLab::load(&lab)?;
            match state {
                LinkState::Up => vm.link_up(&host, net),
                LinkState::Down => vm.link_down(&host, net),
            }
        }
        LabCommand::Link { lab, host, net, state } => {
            let mut lab = Lab::load(&lab)?;
            match state {
                LinkState::Up => lab.link_up(&host, net),
                LinkState::Down => lab.link_down(&host, net),
            }
        }
        LabCommand::Fence { lab, plug, action } => {
            let mut input = String::new();
            if action.is_none() {
                use std::io::Read as _;
                std::io::stdin().read_to_string(&mut input).context("reading stdin")?;
            }
            for (name, value) in [("lab", lab), ("plug", plug), ("action", action)] {
                if let Some(value) = value {
                    input.push_str(&format!("\n{name}={value}\n"));
                }
            }
            let request = crate::fence::parse_request(&input)?;
            let (code, message) = crate::fence::run_request(&request)?;
            println!("{message}");
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        LabCommand::Freeze { lab, host } if is_vm_node(&lab, &host)? => {
            VmLab::load(&lab)?.freeze(&host)
        }
        LabCommand::Thaw { lab, host } if is_vm_node(&lab, &host)? => {
            VmLab::load(&lab)?.thaw(&host)
        }
        LabCommand::Freeze { lab, host } => Lab::load(&lab)?.freeze(&host),
        LabCommand::Thaw { lab, host } => Lab::load(&lab)?.thaw(&host),
        LabCommand::Power { lab, action, node } => {
            let mut vm = VmLab::load(&lab)?;
            match action {
                PowerCmd::Off => vm.power_off(&node),
                PowerCmd::On => vm
                    .power_on(&node)
                    .map(|t| println!("{node}: booted in {:.1}s", t.as_secs_f64())),
                PowerCmd::Reset => {
                    vm.reset(&node).map(|t| println!("{node}: booted in {:.1}s", t.as_secs_f64()))
                }
                PowerCmd::Freeze => vm.freeze(&node),
                PowerCmd::Thaw => vm.thaw(&node),
                PowerCmd::Status => {
                    if !vm.is_running(&node)? {
                        println!("{node}: off");
                        std::process::exit(2);
                    }
                    println!("{node}: {}", if vm.is_frozen(&node)? { "frozen" } else { "on" });
                    Ok(())
                }
            }
        }
        LabCommand::FenceVm { plug, action } => {
            let mut input = String::new();
            if action.is_none() {
                use std::io::Read as _;
                std::io::stdin().read_to_string(&mut input).context("reading stdin")?;
            }
            for (name, value) in [("plug", plug), ("action", action)] {
                if let Some(value) = value {
                    input.push_str(&format!("\n{name}={value}\n"));
                }
            }
            // The request format is the lab agent's; the lab is implied by the guest's BMC port.
            let request = crate::fence::parse_request(&format!("lab=this\n{input}"))?;
            let (code, message) = crate::vm::bmc::guest_request(
                request.action,
                &request.target,
                std::time::Duration::from_secs(90),
            )?;
            println!("{message}");
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        LabCommand::Bmc { lab } => {
            let lab = Lab::load(&lab)?;
            crate::vm::bmc::serve_forever(lab.dir(), &lab.nodes())
        }
        LabCommand::Kill { lab, host } => Lab::load(&lab)?.kill(&host),
        LabCommand::List => {
            let labs = Lab::list()?;
            if labs.is_empty() {
                println!("no labs");
            }
            for info in labs {
                let owner = match info.owner {
                    Owner::Persistent => "persistent".to_owned(),
                    Owner::Process { pid, .. } => {
                        format!("pid {pid}{}", if info.stale { " (dead: stale)" } else { "" })
                    }
                };
                let kind = if Lab::load(&info.name).is_ok_and(|l| l.is_vm()) { " vm" } else { "" };
                println!(
                    "{}  nodes={}{kind} networks={} owner={owner}",
                    info.name, info.nodes, info.networks
                );
                for f in &info.faults {
                    println!("  fault: {f}");
                }
                for (host, net) in &info.links_down {
                    println!("  link down: {host} eth{net}");
                }
                for host in &info.frozen {
                    println!("  frozen: {host}");
                }
            }
            Ok(())
        }
    }
}

/// Whether `host` is a VM node of lab `lab`.
fn is_vm_node(lab: &str, host: &str) -> Result<bool> {
    let lab = Lab::load(lab)?;
    Ok(lab.is_vm() && lab.host(host)?.is_node)
}

/// Prints a lab's name and a table of its hosts, for `lab up`.
fn print_lab(lab: &Lab) {
    println!("{}", lab.name());
    println!("{:<8} {:<20} {:<34} ROOT", "HOST", "NETNS", "ADDRESSES");
    for h in lab.hosts() {
        let addrs: Vec<String> =
            h.addrs.iter().enumerate().map(|(i, a)| format!("eth{i}={a}")).collect();
        println!("{:<8} {:<20} {:<34} {}", h.name, h.netns, addrs.join(" "), h.root.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// Stand-in for the `linuxha` binary's parser.
    #[derive(Parser, Debug)]
    struct Top {
        #[command(flatten)]
        lab: LabArgs,
    }

    #[test]
    fn cli_definition_is_consistent() {
        Top::command().debug_assert();
    }

    #[test]
    fn commands_parse() -> Result<()> {
        let t =
            Top::try_parse_from(["x", "cut", "lh1", "node1", "--net", "1", "--oneway", "to-node"])?;
        assert!(matches!(
            t.lab.cmd,
            LabCommand::Cut { net: Some(1), oneway: Some(Direction::ToNode), .. }
        ));
        let t =
            Top::try_parse_from(["x", "exec", "lh1", "ext", "--", "ping", "-c1", "10.10.0.11"])?;
        assert!(matches!(t.lab.cmd, LabCommand::Exec { ref cmd, .. } if cmd.len() == 3));
        assert!(Top::try_parse_from(["x", "loss", "lh1", "node1", "101"]).is_err());
        assert!(Top::try_parse_from(["x", "down"]).is_err());
        assert!(Top::try_parse_from(["x", "down", "--all"]).is_ok());
        assert!(Top::try_parse_from(["x", "link", "lh1", "node2", "0", "down"]).is_ok());
        assert!(Top::try_parse_from(["x", "up", "--nodes", "16"]).is_ok());
        for bad in [
            ["x", "up", "--nodes", "99"],
            ["x", "up", "--nodes", "0"],
            ["x", "up", "--networks", "3"],
        ] {
            assert!(Top::try_parse_from(bad).is_err(), "{bad:?}");
        }
        Ok(())
    }
}
