//! Network and process faults: bridge rules at the switch, links, the freezer and kill.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::{nft, sys, Lab, SETTLE_TIMEOUT};

/// Direction of a one-way cut, seen from the node.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Drop IP traffic sent by the node; it still receives.
    FromNode,
    /// Drop IP traffic sent to the node; it still sends.
    ToNode,
}

/// One network fault at the switch, kept in the lab state and rendered into the nft table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Every frame to and from the host's port is dropped; the carrier stays up.
    Cut {
        /// Host name (`node1`, `ext`).
        host: String,
        /// Network index.
        net: usize,
    },
    /// IP (v4 and v6) frames in one direction are dropped; ARP still passes.
    OneWay {
        /// Host name.
        host: String,
        /// Network index.
        net: usize,
        /// Which direction is dropped.
        direction: Direction,
    },
    /// Every frame between two hosts' ports is dropped, both ways; both still reach the rest
    /// of the network (a partition between the nodes that leaves each of them connected).
    Between {
        /// One host (the fault belongs to it: healing it heals this).
        host: String,
        /// The other host.
        other: String,
        /// Network index.
        net: usize,
    },
    /// Each frame through the host's port is dropped with this probability, both directions.
    Loss {
        /// Host name.
        host: String,
        /// Network index.
        net: usize,
        /// Drop probability in percent (1..=100).
        percent: u8,
    },
}

impl Fault {
    /// The host this fault applies to.
    pub fn host(&self) -> &str {
        match self {
            Fault::Cut { host, .. }
            | Fault::OneWay { host, .. }
            | Fault::Between { host, .. }
            | Fault::Loss { host, .. } => host,
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Cut { host, net } => write!(f, "cut {host} net{net}"),
            Fault::OneWay { host, net, direction: Direction::FromNode } => {
                write!(f, "drop IP from {host} net{net}")
            }
            Fault::OneWay { host, net, direction: Direction::ToNode } => {
                write!(f, "drop IP to {host} net{net}")
            }
            Fault::Loss { host, net, percent } => write!(f, "loss {percent}% {host} net{net}"),
            Fault::Between { host, other, net } => write!(f, "cut {host} from {other} net{net}"),
        }
    }
}

impl Lab {
    /// Networks `net` selects on `host`: the given one (checked) or all of the host's.
    fn nets_of(&self, host: &str, net: Option<usize>) -> Result<Vec<usize>> {
        let h = self.host(host)?;
        match net {
            Some(n) => {
                self.addr(host, n)?;
                Ok(vec![n])
            }
            None => Ok((0..h.addrs.len()).collect()),
        }
    }

    /// Renders all bridge faults into the switch's nft table in one transaction, then saves.
    pub(crate) fn apply_faults(&self) -> Result<()> {
        let path = sys::netns_path(&self.state.switch_netns);
        let net = format!("--net={}", path.display());
        sys::run_with_stdin(
            "nsenter",
            [net.as_str(), "nft", "-f", "-"],
            Some(&nft::render(&self.state.faults)),
        )?;
        self.save()
    }

    /// Adds faults not yet present and applies the result.
    fn add_faults(&mut self, faults: Vec<Fault>) -> Result<()> {
        for f in faults {
            if !self.state.faults.contains(&f) {
                self.state.faults.push(f);
            }
        }
        self.apply_faults()
    }

    /// Silently isolates `host` at the switch on network `net` (all of its networks if `None`):
    /// every frame is dropped while the host still sees carrier, like a dead switch port.
    pub fn cut(&mut self, host: &str, net: Option<usize>) -> Result<()> {
        let nets = self.nets_of(host, net)?;
        self.add_faults(nets.into_iter().map(|net| Fault::Cut { host: host.into(), net }).collect())
    }

    /// Cuts `host` from `other` on network `net` (all of `host`'s if `None`), both ways, while
    /// each still reaches every other host: the symmetric partition of two nodes.
    pub fn partition(&mut self, host: &str, other: &str, net: Option<usize>) -> Result<()> {
        self.host(other)?;
        let nets = self.nets_of(host, net)?;
        self.add_faults(
            nets.into_iter()
                .map(|net| Fault::Between { host: host.into(), other: other.into(), net })
                .collect(),
        )
    }

    /// Drops IP traffic in one direction only on network `net` (all if `None`); ARP still
    /// passes both ways so the other direction keeps working.
    pub fn cut_oneway(
        &mut self,
        host: &str,
        net: Option<usize>,
        direction: Direction,
    ) -> Result<()> {
        let nets = self.nets_of(host, net)?;
        self.add_faults(
            nets.into_iter()
                .map(|net| Fault::OneWay { host: host.into(), net, direction })
                .collect(),
        )
    }

    /// Random loss of `percent`% of frames in each direction on network `net` (all if `None`);
    /// 0 removes the loss, and a new value replaces an old one.
    pub fn loss(&mut self, host: &str, net: Option<usize>, percent: u8) -> Result<()> {
        if percent > 100 {
            bail!("loss percent must be 0..=100, not {percent}");
        }
        let nets = self.nets_of(host, net)?;
        self.state.faults.retain(
            |f| !matches!(f, Fault::Loss { host: h, net: n, .. } if h == host && nets.contains(n)),
        );
        if percent == 0 {
            return self.apply_faults();
        }
        self.add_faults(
            nets.into_iter().map(|net| Fault::Loss { host: host.into(), net, percent }).collect(),
        )
    }

    /// Removes `host`'s network faults: its bridge rules, and links it had set down come back
    /// up. A frozen host stays frozen (see [`Lab::thaw`]): that is a process fault.
    pub fn heal(&mut self, host: &str) -> Result<()> {
        self.host(host)?;
        self.state.faults.retain(|f| f.host() != host);
        let down: Vec<usize> =
            self.state.links_down.iter().filter(|(h, _)| h == host).map(|(_, n)| *n).collect();
        let mut result = self.apply_faults();
        for net in down {
            if let Err(e) = self.link_up(host, net) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// [`Lab::heal`] for every host.
    pub fn heal_all(&mut self) -> Result<()> {
        self.state.faults.clear();
        let down: Vec<(String, usize)> = self.state.links_down.iter().cloned().collect();
        let mut result = self.apply_faults();
        for (host, net) in down {
            if let Err(e) = self.link_up(&host, net) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Takes the switch end of `host`'s `eth<net>` down, like a pulled cable or a dead NIC: the
    /// host sees NO-CARRIER on `eth<net>` (its own interface stays administratively up, so
    /// nothing the node does can "repair" it).
    pub fn link_down(&mut self, host: &str, net: usize) -> Result<()> {
        self.set_link(host, net, false)
    }

    /// Undoes [`Lab::link_down`]: carrier returns, addresses were never removed.
    pub fn link_up(&mut self, host: &str, net: usize) -> Result<()> {
        self.set_link(host, net, true)
    }

    /// Shared body of [`Lab::link_down`] and [`Lab::link_up`].
    fn set_link(&mut self, host: &str, net: usize, up: bool) -> Result<()> {
        self.addr(host, net)?;
        let port = nft::port_name(host, net);
        let sw = self.state.switch_netns.clone();
        sys::ip(&["-n", &sw, "link", "set", &port, if up { "up" } else { "down" }])?;
        if up {
            self.state.links_down.remove(&(host.to_owned(), net));
        } else {
            self.state.links_down.insert((host.to_owned(), net));
        }
        self.save()
    }

    /// Freezes every process in `host`'s cgroup (cgroup v2 freezer) and waits until the kernel
    /// reports it frozen. The kernel still answers ARP and ping for a frozen host.
    pub fn freeze(&mut self, host: &str) -> Result<()> {
        self.set_frozen(host, true)
    }

    /// Undoes [`Lab::freeze`].
    pub fn thaw(&mut self, host: &str) -> Result<()> {
        self.set_frozen(host, false)
    }

    /// Shared body of [`Lab::freeze`] and [`Lab::thaw`].
    fn set_frozen(&mut self, host: &str, frozen: bool) -> Result<()> {
        self.not_vm_node(host)?;
        let cg = self.cgroup_here(host)?;
        sys::cg_write(&cg, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        if !sys::wait_until(SETTLE_TIMEOUT, || sys::cg_event(&cg, "frozen") == Some(frozen)) {
            bail!("{} did not become {}", cg.display(), if frozen { "frozen" } else { "thawed" });
        }
        if frozen {
            self.state.frozen.insert(host.to_owned());
        } else {
            self.state.frozen.remove(host);
        }
        self.save()
    }

    /// SIGKILLs every process of `host` (its cgroup, and anything else in its network namespace)
    /// except the holder, like a crash of everything on the node; its mounts survive, as a real
    /// node's disks would. A frozen host stays frozen for processes started later.
    pub fn kill(&mut self, host: &str) -> Result<()> {
        self.not_vm_node(host)?;
        let mut h = self.host(host)?.clone();
        h.cgroup = self.cgroup_here(host)?;
        let mut errors = Vec::new();
        if let Err(e) = sys::cg_write(&h.cgroup, "cgroup.kill", "1") {
            errors.push(format!("{e:#}"));
            for pid in sys::cg_pids(&h.cgroup).unwrap_or_default() {
                if let Err(e) = sys::kill_pid(pid) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        for pid in sys::netns_pids(&h.netns).unwrap_or_default() {
            if pid != h.holder_pid {
                if let Err(e) = sys::kill_pid(pid) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        if !sys::wait_until(SETTLE_TIMEOUT, || sys::cg_event(&h.cgroup, "populated") != Some(true))
        {
            errors.push(format!("{} still has processes", h.cgroup.display()));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("kill {host}: {}", errors.join("; "))
        }
    }
}
