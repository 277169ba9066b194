//! Power control of lab nodes, and a fence agent for it (`linuxha lab fence`, also installed
//! as `fence_linuxha_lab`) that follows the fence-agents convention, so a node's cldaemon can
//! fence its peer in the lab exactly as it would fence a real machine through IPMI.
//!
//! - **off**: freeze every process of the node (its cgroup) and cut all its links at the
//!   switch: it can neither act nor be heard, like a machine without power.
//! - **on**: a fresh boot: kill every process of the node, remove every address the lab did
//!   not configure (VIPs) from its interfaces, thaw it and heal its links; nothing of the old
//!   run survives except files and mounts (a real node's disks). A node that is on already
//!   is left alone.
//! - **reboot**: off, then on.
//! - **status**: exit 0 when on, 2 when off.
//!
//! All of it is idempotent. The agent works from inside another lab node (run by that node's
//! cldaemon, in its network and mount namespaces): it reaches the lab's state file under
//! `/run/linuxha-lab`, the namespaces under `/run/netns` and the node's cgroup under this
//! namespace's own cgroup2 mount ([`Lab::cgroup_here`]).

use anyhow::{bail, Context, Result};

use crate::{sys, Fault, Lab};

/// What the agent is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    /// Power the node off.
    Off,
    /// Power the node on (a fresh boot).
    On,
    /// Off, then on.
    Reboot,
    /// Report the power state (exit 0 on, 2 off).
    Status,
    /// Check that the agent can reach the lab (exit 0).
    Monitor,
}

impl PowerAction {
    /// Parses an `action=` value (fence-agents also use `poweroff`/`poweron`, `list` nothing).
    pub fn parse(text: &str) -> Result<PowerAction> {
        Ok(match text {
            "off" | "poweroff" => PowerAction::Off,
            "on" | "poweron" => PowerAction::On,
            "reboot" => PowerAction::Reboot,
            "status" => PowerAction::Status,
            "monitor" => PowerAction::Monitor,
            other => bail!("unknown action {other:?} (off, on, reboot, status, monitor)"),
        })
    }
}

/// One agent call, as read from stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceRequest {
    /// The lab's name (`lab=`).
    pub lab: String,
    /// The node to act on (`plug=`, else `port=`, else `nodename=`).
    pub target: String,
    /// What to do (`action=`, default `reboot` as in fence-agents).
    pub action: PowerAction,
}

/// Parses the agent's stdin: `name=value` lines; blank lines and `#` comments are skipped,
/// unknown names ignored (they are options meant for other agents), later lines win.
pub fn parse_request(text: &str) -> Result<FenceRequest> {
    let (mut lab, mut plug, mut port, mut nodename, mut action) = (None, None, None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            bail!("stdin line {line:?} is not name=value");
        };
        let value = Some(value.trim().to_string());
        match name.trim() {
            "lab" => lab = value,
            "plug" => plug = value,
            "port" => port = value,
            "nodename" => nodename = value,
            "action" | "option" => action = value,
            _ => {}
        }
    }
    let Some(lab) = lab.filter(|l| !l.is_empty()) else {
        bail!("no lab=<lab name> on stdin");
    };
    let Some(target) = plug.or(port).or(nodename).filter(|t| !t.is_empty()) else {
        bail!("no plug=<node> (or port=, nodename=) on stdin");
    };
    let action = PowerAction::parse(action.as_deref().unwrap_or("reboot"))?;
    Ok(FenceRequest { lab, target, action })
}

/// Runs one request against its lab; the exit code (0 success or on, 2 off) and a line to
/// print.
pub fn run_request(request: &FenceRequest) -> Result<(i32, String)> {
    let mut lab = Lab::load(&request.lab)?;
    let host = request.target.as_str();
    if !lab.host(host)?.is_node {
        bail!("{host} is not a node of lab {}; only nodes can be fenced", request.lab);
    }
    if lab.is_vm() {
        return crate::vm::VmLab::load(&request.lab)?.fence(host, request.action);
    }
    Ok(match request.action {
        PowerAction::Off => {
            lab.power_off(host)?;
            (0, format!("{host}: powered off"))
        }
        PowerAction::On => {
            lab.power_on(host)?;
            (0, format!("{host}: powered on"))
        }
        PowerAction::Reboot => {
            lab.power_off(host)?;
            lab.power_on(host)?;
            (0, format!("{host}: rebooted"))
        }
        PowerAction::Status => {
            if lab.is_powered_off(host)? {
                (2, format!("Status: OFF ({host})"))
            } else {
                (0, format!("Status: ON ({host})"))
            }
        }
        PowerAction::Monitor => (0, format!("lab {} reachable", request.lab)),
    })
}

impl Lab {
    /// Whether `host` is powered off: frozen, and cut from every one of its networks.
    pub fn is_powered_off(&self, host: &str) -> Result<bool> {
        let nets = self.host(host)?.addrs.len();
        let all_cut = (0..nets)
            .all(|net| self.state.faults.contains(&Fault::Cut { host: host.to_string(), net }));
        Ok(all_cut && self.is_frozen(host)?)
    }

    /// Powers `host` off: freezes its processes, then cuts all its links (see the module doc).
    pub fn power_off(&mut self, host: &str) -> Result<()> {
        // Frozen first: from this instant the node decides nothing more; the cut then makes
        // it silent (the kernel of a frozen node still answers ARP for its VIPs).
        self.freeze(host)?;
        self.cut(host, None)
    }

    /// Powers `host` on as a fresh boot (see the module doc); nothing when it is on already.
    pub fn power_on(&mut self, host: &str) -> Result<()> {
        let nets = self.host(host)?.addrs.len();
        let any_cut = (0..nets)
            .any(|net| self.state.faults.contains(&Fault::Cut { host: host.to_string(), net }));
        if !any_cut && !self.is_frozen(host)? {
            return Ok(());
        }
        // A frozen process still dies of SIGKILL, so the old run ends without ever running
        // another instruction.
        self.kill(host)?;
        self.remove_foreign_addresses(host)?;
        self.unmount_under_root(host)?;
        self.thaw(host)?;
        self.heal(host)
    }

    /// Unmounts, in `host`'s mount namespace, everything mounted under its root (application
    /// filesystems): a booted node starts with its disks unmounted.
    fn unmount_under_root(&self, host: &str) -> Result<()> {
        let h = self.host(host)?.clone();
        let holder = self.holder_pid(host)?;
        let info = std::fs::read_to_string(format!("/proc/{holder}/mountinfo"))
            .with_context(|| format!("reading the mounts of {host}"))?;
        let root = h.root.display().to_string();
        let mut mountpoints: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&format!("{root}/")))
            .collect();
        // Deepest first.
        mountpoints.sort_by_key(|m| std::cmp::Reverse(m.len()));
        let ns = format!("--mount=/proc/{holder}/ns/mnt");
        for mountpoint in mountpoints {
            sys::run_with_stdin("nsenter", [ns.as_str(), "umount", mountpoint], None)
                .with_context(|| format!("unmounting {mountpoint} on {host}"))?;
        }
        Ok(())
    }

    /// Removes every global address from `host`'s `eth<N>` except the one the lab gave it.
    fn remove_foreign_addresses(&self, host: &str) -> Result<()> {
        let h = self.host(host)?.clone();
        for (net, own) in h.addrs.iter().enumerate() {
            let dev = format!("eth{net}");
            let out = sys::ip(&["-n", &h.netns, "-o", "addr", "show", "dev", &dev])?;
            for address in foreign_addresses(&out, &own.to_string()) {
                sys::ip(&["-n", &h.netns, "addr", "del", &address, "dev", &dev])
                    .with_context(|| format!("removing {address} from {host} {dev}"))?;
            }
        }
        Ok(())
    }
}

/// The `address/prefix`es in `ip -o addr show` output other than `own` and link-local ones.
fn foreign_addresses(ip_output: &str, own: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in ip_output.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Some(i) = tokens.iter().position(|t| *t == "inet" || *t == "inet6") else { continue };
        let Some(address) = tokens.get(i + 1) else { continue };
        if tokens.windows(2).any(|w| w == ["scope", "link"] || w == ["scope", "host"]) {
            continue;
        }
        if address.split('/').next() == Some(own) {
            continue;
        }
        found.push((*address).to_string());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_options_are_read_like_fence_agents_do() -> Result<()> {
        let r = parse_request("nodename=node1\nlab=lh1\naction=off\n")?;
        assert_eq!(
            r,
            FenceRequest { lab: "lh1".into(), target: "node1".into(), action: PowerAction::Off }
        );
        // plug beats port beats nodename; unknown options and comments are ignored.
        let r = parse_request(
            "# x\nnodename=node9\nport=node8\nplug=node2\nipaddr=1.2.3.4\nlab = lh1\naction=status",
        )?;
        assert_eq!(r.target, "node2");
        assert_eq!(r.action, PowerAction::Status);
        assert_eq!(parse_request("lab=lh1\nport=node1")?.action, PowerAction::Reboot);
        assert!(parse_request("plug=node1\naction=off").is_err(), "lab is required");
        assert!(parse_request("lab=lh1\naction=off").is_err(), "target is required");
        assert!(parse_request("lab=lh1\nplug=node1\naction=explode").is_err());
        assert!(parse_request("lab=lh1\nplug node1").is_err());
        Ok(())
    }

    #[test]
    fn only_addresses_the_lab_did_not_configure_are_foreign() {
        let out = "\
2: eth0    inet 10.10.0.11/24 scope global eth0\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.10.0.100/24 scope global secondary eth0\\       valid_lft forever
2: eth0    inet6 fd00::100/64 scope global \\       valid_lft forever
2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever";
        assert_eq!(foreign_addresses(out, "10.10.0.11"), ["10.10.0.100/24", "fd00::100/64"]);
    }
}
