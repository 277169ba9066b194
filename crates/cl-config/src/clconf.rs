//! `clconf.xml`: the cluster (name, daemon ports, key, heartbeat timing, nodes and their
//! networks, known connections). Raw XML in, a resolved [`ClusterConfig`] or every problem out.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostic, Diagnostics};
use crate::value::{self, read};
use crate::xml::{self, Element, Spanned};
use crate::{FileKind, Host, Loaded};

/// The daemons that listen, each on its own port from `<global>`.
pub const DAEMON_PORTS: [&str; 4] = ["cldaemon", "cllockd", "clnetd", "clhbd"];
/// Most nodes a cluster may have in this version (the guarantees are for two).
pub const MAX_NODES: usize = 2;
/// Most networks one node may have; real nodes have two to four.
pub const MAX_NETWORKS_PER_NODE: usize = 32;

/// A validated cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Cluster name; daemons run as `<daemon>-<name>`.
    pub name: String,
    /// Ports of the listening daemons.
    pub ports: Ports,
    /// Where the shared HMAC key comes from.
    pub key: KeySource,
    /// Heartbeat interval and failure timeout.
    pub heartbeat: HeartbeatTiming,
    /// The nodes, in file order.
    pub nodes: Vec<NodeConfig>,
    /// Addresses outside the cluster that are pinged to tell isolation from a peer failure.
    pub known_connections: Vec<IpAddr>,
    /// The lease arbitrator on a third host, if one is configured.
    #[serde(default)]
    pub arbitrator: Option<Arbitrator>,
    /// Where cldaemon serves Prometheus metrics (`<global>/<metrics>`); `None`: not served.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// Programs run on cluster events (`<global>/<notify>`), in file order.
    #[serde(default)]
    pub notify: Vec<crate::notify::Notifier>,
}

/// cldaemon's Prometheus endpoint (`GET /metrics`, text exposition format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// The address and TCP port it listens on.
    pub listen: SocketAddr,
}

impl Metrics {
    /// The port when `<metrics port>` is not given. Prometheus' list of exporter ports
    /// (9100-9999) is full; 9949 is not used by the cluster's own daemons nor by
    /// drbd-reactor (9942), which often runs beside linuxha.
    pub const DEFAULT_PORT: u16 = 9949;
    /// The address when `<metrics address>` is not given: this node only, never the network
    /// by surprise.
    pub const DEFAULT_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
}

/// The lease arbitrator (`clarbd`) that grants one node at a time the right to take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arbitrator {
    /// Where clarbd listens (UDP).
    pub address: SocketAddr,
    /// How long a grant lasts without renewal, when `<arbitrator lease>` gives it; `None`:
    /// derived from the heartbeat profile (the lease floor of cl-core's `SafetyTiming`: 1.13 s
    /// with the default profile, 0.19 s with the fast one).
    #[serde(default)]
    pub lease: Option<Duration>,
}

impl Arbitrator {
    /// Shortest lease accepted (the fast profile's lease floor is 190 ms).
    pub const MIN_LEASE: Duration = Duration::from_millis(100);
    /// Longest lease accepted.
    pub const MAX_LEASE: Duration = Duration::from_secs(60);
}

/// A node's fence device: a fence-agents style program that powers the node off and on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceDevice {
    /// The agent, as written (absolute; resolved under the node root when run).
    pub agent: PathBuf,
    /// Longest one call of the agent may take before it is killed.
    pub timeout: Duration,
    /// Pause between attempts when a call fails.
    pub retry: Duration,
    /// How long a successful power-off by this device usually takes: the node this device
    /// powers off waits this (plus the detection skew) before it fences its peer in a symmetric
    /// partition, so the peer's fence normally lands first (docs/safety.md, who fences first).
    #[serde(default = "FenceDevice::default_poweroff")]
    pub poweroff: Duration,
    /// `name=value` options passed to the agent on stdin, in file order (never `action`).
    pub options: Vec<(String, String)>,
}

impl FenceDevice {
    /// Agent timeout when `<fence timeout>` is not given.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
    /// Pause between attempts when `<fence retry>` is not given.
    pub const DEFAULT_RETRY: Duration = Duration::from_secs(2);
    /// Power-off time when `<fence poweroff>` is not given (at most the device's timeout).
    pub const DEFAULT_POWEROFF: Duration = Duration::from_secs(2);

    /// [`FenceDevice::DEFAULT_POWEROFF`], for artefacts built before `poweroff` existed.
    fn default_poweroff() -> Duration {
        FenceDevice::DEFAULT_POWEROFF
    }
}

/// Ports of the daemons that listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// Node manager (peer requests, config sync).
    pub cldaemon: u16,
    /// Cluster lock daemon.
    pub cllockd: u16,
    /// Network daemon.
    pub clnetd: u16,
    /// Heartbeat daemon (UDP).
    pub clhbd: u16,
}

/// Where the cluster key is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// Hex text inside clconf.xml.
    Inline(String),
    /// A file holding the key (as made by `clbuild --genkey`).
    File(PathBuf),
}

/// Named heartbeat timing presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Safe on busy machines: detection in under a second.
    Default,
    /// For quiet, dedicated links: detection in under 100 ms.
    Fast,
    /// Interval and timeout set by hand.
    Custom,
}

/// How often heartbeats are sent and how long silence means a node is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatTiming {
    /// Which preset these came from.
    pub profile: Profile,
    /// Time between heartbeats on each link.
    pub interval: Duration,
    /// Silence on all links for this long means the node is down.
    pub timeout: Duration,
}

impl HeartbeatTiming {
    /// The default profile: 200 ms interval, 1 s timeout.
    pub const DEFAULT: HeartbeatTiming = HeartbeatTiming {
        profile: Profile::Default,
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(1000),
    };
    /// The fast profile: 20 ms interval, 100 ms timeout.
    pub const FAST: HeartbeatTiming = HeartbeatTiming {
        profile: Profile::Fast,
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(100),
    };
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Node name (the host name, or `LINUXHA_NODE`).
    pub name: String,
    /// The node's networks.
    pub networks: Vec<NodeNetwork>,
    /// How the other node powers this one off, if configured.
    #[serde(default)]
    pub fence: Option<FenceDevice>,
}

/// One network attachment of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNetwork {
    /// Logical network name, the same on every node (applications refer to it).
    pub name: String,
    /// The interface on this node.
    pub interface: String,
    /// The node's own address on it.
    pub address: IpAddr,
    /// Prefix length of the network.
    pub prefix: u8,
    /// Whether heartbeats are sent on it.
    pub heartbeat: bool,
}

impl ClusterConfig {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Names of all nodes, in file order.
    pub fn node_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }
}

impl NodeConfig {
    /// The node's attachment to the network called `name`.
    pub fn network(&self, name: &str) -> Option<&NodeNetwork> {
        self.networks.iter().find(|n| n.name == name)
    }
}

/// Parse and validate clconf.xml. `file` is the name used in messages.
pub fn load_cluster(file: &str, bytes: &[u8], host: &dyn Host) -> Loaded<ClusterConfig> {
    let text_for_positions = String::from_utf8_lossy(bytes);
    let mut diags = Diagnostics::new(file, &text_for_positions);
    let config = xml::decode(bytes, &mut diags).and_then(|text| {
        let doc = xml::parse(text, &mut diags)?;
        resolve(doc.root_element(), host, &mut diags)
    });
    finish(config, diags)
}

/// Shared ending of the loaders: a config only when there were no errors.
pub(crate) fn finish<T>(config: Option<T>, diags: Diagnostics<'_>) -> Loaded<T> {
    let has_errors = diags.has_errors();
    let diagnostics: Vec<Diagnostic> = diags.into_sorted();
    Loaded { config: if has_errors { None } else { config }, diagnostics }
}

fn resolve(
    root: roxmltree::Node<'_, '_>,
    host: &dyn Host,
    diags: &mut Diagnostics<'_>,
) -> Option<ClusterConfig> {
    if !xml::expect_root(root, "linuxha", "clconf.xml", diags) {
        return None;
    }
    let mut top = Element::new(root);
    let global = top.child("global", diags);
    if global.is_none() {
        top.missing_child(
            "global",
            "<linuxha>: missing <global> section (cluster name, ports, key)",
        );
    }
    let node_elements = top.children("node");
    let known = top.child("net_known_connections", diags);
    top.finish(diags);

    // Without <global> the nodes and known connections are still checked, so that one run
    // reports everything.
    let global = global.and_then(|g| read_global(g, host, diags));
    let nodes = read_nodes(root, &node_elements, host, diags);
    let known_connections = read_known_connections(root, known, &nodes, diags);
    let (name, ports, key, heartbeat, arbitrator, metrics, notify) = global?;
    // Only a configuration that is otherwise valid is judged for split-brain safety: with a
    // broken node or <fence> the warning would name the wrong nodes.
    let judge_safety = !diags.has_errors();
    let third_host =
        arbitrator.as_ref().is_some_and(|(arb, at)| !arbitrator_is_a_node(arb, *at, &nodes, diags));
    if judge_safety {
        // An arbitrator on a node's own address is an error above and protects nothing, so
        // the warning about the missing protection is given as well.
        check_split_brain_safety(root, &nodes, third_host, diags);
    }
    let arbitrator = arbitrator.map(|(arb, _)| arb);
    Some(ClusterConfig {
        name,
        ports,
        key,
        heartbeat,
        nodes: nodes.iter().map(ReadNode::config).collect(),
        known_connections,
        arbitrator,
        metrics,
        notify,
    })
}

type Global = (
    String,
    Ports,
    KeySource,
    HeartbeatTiming,
    Option<(Arbitrator, usize)>,
    Option<Metrics>,
    Vec<crate::notify::Notifier>,
);

/// The arbitrator must be a third host: one on a node's own address goes down with that node
/// (and would let the node grant itself the lease). Reports it at `at` and answers true.
fn arbitrator_is_a_node(
    arbitrator: &Arbitrator,
    at: usize,
    nodes: &[ReadNode],
    diags: &mut Diagnostics<'_>,
) -> bool {
    let address = arbitrator.address.ip();
    let Some(node) =
        nodes.iter().find(|n| n.networks.iter().any(|net| net.config.address == address))
    else {
        return false;
    };
    diags.error(
        at,
        format!(
            "<arbitrator address>: {address} is node `{}`'s own address; the arbitrator must run on a third host that stays up when either node fails",
            node.name
        ),
    );
    true
}

/// Warn about the one case where both nodes may run an application: no fencing and no arbitrator.
fn check_split_brain_safety(
    root: roxmltree::Node<'_, '_>,
    nodes: &[ReadNode],
    arbitrator: bool,
    diags: &mut Diagnostics<'_>,
) {
    let unfenced: Vec<&ReadNode> = nodes.iter().filter(|n| n.fence.is_none()).collect();
    if !unfenced.is_empty() && unfenced.len() < nodes.len() {
        warn_partly_fenced(&unfenced, diags);
    }
    if !unfenced.is_empty() && !arbitrator {
        diags.warning(
            root.range().start,
            "neither fencing nor an arbitrator is configured: if the nodes lose each other but both still reach the known connections, both may run the same application (see docs/safety.md)",
        );
    }
}

/// Some nodes have a `<fence>`, these do not: the others cannot power them off.
fn warn_partly_fenced(unfenced: &[&ReadNode], diags: &mut Diagnostics<'_>) {
    for node in unfenced {
        diags.warning(
            node.at,
            format!(
                "<node name=\"{}\"> has no <fence> while other nodes have one: the peer cannot power this node off before taking over its applications",
                node.name
            ),
        );
    }
}

fn read_global(
    node: roxmltree::Node<'_, '_>,
    host: &dyn Host,
    diags: &mut Diagnostics<'_>,
) -> Option<Global> {
    let mut global = Element::new(node);
    let name = match global.child_text("name", diags) {
        Some((text, _)) => read(diags, "<global>/<name>", text, |t| value::name(t, "cluster name")),
        None => {
            if global.node.children().all(|c| c.tag_name().name() != "name") {
                global.missing_child("name", "<global>: missing <name> (the cluster name)");
            }
            None
        }
    };
    // <version> is written by 1.0 tools; it carries nothing we use.
    if let Some(v) = global.child("version", diags) {
        diags.warning(
            v.range().start,
            "<global>/<version> is ignored: the built configuration carries its own version",
        );
    }
    let ports = read_ports(&mut global, diags);
    let key = read_key(&mut global, host, diags);
    let heartbeat = match global.child("heartbeat", diags) {
        Some(hb) => read_heartbeat(hb, diags),
        None => Some(HeartbeatTiming::DEFAULT),
    };
    let arbitrator = match global.child("arbitrator", diags) {
        Some(arb) => read_arbitrator(arb, heartbeat, diags).map(Some),
        None => Some(None),
    };
    let metrics = match global.child("metrics", diags) {
        Some(m) => read_metrics(m, ports, diags).map(Some),
        None => Some(None),
    };
    let notify_elements = global.children("notify");
    let notify = crate::notify::read_notifiers(&notify_elements, host, diags);
    global.finish(diags);
    Some((name?, ports?, key?, heartbeat?, arbitrator?, metrics?, notify?))
}

/// `<metrics address="…" port="…"/>`: both optional (127.0.0.1 and [`Metrics::DEFAULT_PORT`]).
fn read_metrics(
    node: roxmltree::Node<'_, '_>,
    ports: Option<Ports>,
    diags: &mut Diagnostics<'_>,
) -> Option<Metrics> {
    let mut element = Element::new(node);
    let address = element.attr("address");
    let port = element.attr("port");
    element.finish(diags);
    let ip = match address {
        Some(a) => read(diags, "<metrics address>", a, metrics_address)?,
        None => Metrics::DEFAULT_ADDRESS,
    };
    let (port, port_at) = match port {
        Some(p) => (read(diags, "<metrics port>", p, value::port)?, p.at),
        None => (Metrics::DEFAULT_PORT, node.range().start),
    };
    // cldaemon's own ports listen on every node address; clhbd's is UDP but shares the list
    // so that one port number means one daemon.
    if let Some(ports) = ports {
        let taken = [
            ("cldaemon", ports.cldaemon),
            ("cllockd", ports.cllockd),
            ("clnetd", ports.clnetd),
            ("clhbd", ports.clhbd),
        ];
        if let Some((daemon, _)) = taken.iter().find(|(_, p)| *p == port) {
            diags.error(
                port_at,
                format!("<metrics>: port {port} is already used by {daemon}; give <metrics port> another port"),
            );
            return None;
        }
    }
    Some(Metrics { listen: SocketAddr::new(ip, port) })
}

/// Where the metrics endpoint listens: one local address, or the unspecified address (every
/// address of the node).
fn metrics_address(text: &str) -> Result<IpAddr, String> {
    let ip = value::ip(text)?;
    if ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        return Err(format!(
            "{ip} is not an address to listen on; give one of this node's addresses, 127.0.0.1, or 0.0.0.0 for all"
        ));
    }
    Ok(ip)
}

/// The arbitrator's address: one host's unicast address (loopback is allowed, for a clarbd
/// tried on one machine).
fn arbitrator_address(text: &str) -> Result<std::net::IpAddr, String> {
    let ip = value::ip(text)?;
    if ip.is_multicast()
        || ip.is_unspecified()
        || ip == std::net::IpAddr::from([255, 255, 255, 255])
    {
        return Err(format!(
            "{ip} is not one host's address; give the unicast address of the host running clarbd"
        ));
    }
    Ok(ip)
}

fn read_arbitrator(
    node: roxmltree::Node<'_, '_>,
    heartbeat: Option<HeartbeatTiming>,
    diags: &mut Diagnostics<'_>,
) -> Option<(Arbitrator, usize)> {
    let mut arb = Element::new(node);
    let address = arb.attr("address");
    let port = arb.attr("port");
    let lease = arb.attr("lease");
    if address.is_none() {
        arb.missing_attr(
            "address",
            "<arbitrator>: missing attribute `address` (the IPv4 or IPv6 address of the host running clarbd)",
        );
    }
    if port.is_none() {
        arb.missing_attr(
            "port",
            "<arbitrator>: missing attribute `port` (the UDP port clarbd listens on)",
        );
    }
    arb.finish(diags);
    let address_at = address.map(|a| a.at).unwrap_or(node.range().start);
    let ip = address.and_then(|a| read(diags, "<arbitrator address>", a, arbitrator_address));
    let port = port.and_then(|p| read(diags, "<arbitrator port>", p, value::port));
    let lease = match lease {
        Some(text) => read(
            diags,
            "<arbitrator lease>",
            text,
            ranged(Arbitrator::MIN_LEASE, Arbitrator::MAX_LEASE),
        )
        .map(|d| Some((d, text.at))),
        None => Some(None),
    };
    let (ip, port, given) = (ip?, port?, lease?);
    if let (Some(hb), Some((lease, lease_at))) = (heartbeat, given) {
        let floor = cl_core::timing::SafetyTiming::new(hb.interval, hb.timeout).lease_floor();
        if lease < floor {
            diags.error(
                lease_at,
                format!(
                    "<arbitrator>: lease ({}) is shorter than the lease floor of the heartbeat profile ({}): the node running the applications would stop them whenever two renewals were lost",
                    value::show_duration(lease),
                    value::show_duration(floor)
                ),
            );
            return None;
        }
    }
    let lease = given.map(|(lease, _)| lease);
    Some((Arbitrator { address: SocketAddr::new(ip, port), lease }, address_at))
}

/// A duration parser accepting only `lo..=hi`.
fn ranged(lo: Duration, hi: Duration) -> impl Fn(&str) -> Result<Duration, String> {
    move |t: &str| {
        let d = value::duration(t)?;
        if d < lo || d > hi {
            return Err(format!(
                "`{}` is out of range ({} to {})",
                xml::shorten(t),
                value::show_duration(lo),
                value::show_duration(hi)
            ));
        }
        Ok(d)
    }
}

/// Most `<option>`s one fence device may have.
const MAX_FENCE_OPTIONS: usize = 64;

fn read_fence(
    node_name: &str,
    element: roxmltree::Node<'_, '_>,
    host: &dyn Host,
    diags: &mut Diagnostics<'_>,
) -> Option<FenceDevice> {
    let ctx = format!("<node name=\"{node_name}\">/<fence>");
    let mut fence = Element::new(element);
    let agent = fence.attr("agent");
    let timeout = fence.attr("timeout");
    let retry = fence.attr("retry");
    let poweroff = fence.attr("poweroff");
    let option_elements = fence.children("option");
    if agent.is_none() {
        fence.missing_attr(
            "agent",
            format!("{ctx}: missing attribute `agent` (the fence agent program, e.g. /usr/sbin/fence_ipmilan)"),
        );
    }
    fence.finish(diags);
    let mut ok = true;
    let agent = agent.and_then(|a| check_agent(&ctx, a, host, diags));
    let timeout = match timeout {
        Some(t) => read(
            diags,
            &format!("{ctx} timeout"),
            t,
            ranged(Duration::from_secs(1), Duration::from_secs(300)),
        ),
        None => Some(FenceDevice::DEFAULT_TIMEOUT),
    };
    let retry = match retry {
        Some(t) => read(
            diags,
            &format!("{ctx} retry"),
            t,
            ranged(Duration::from_millis(100), Duration::from_secs(60)),
        ),
        None => Some(FenceDevice::DEFAULT_RETRY),
    };
    let poweroff = read_poweroff(&ctx, poweroff, timeout, diags);
    let mut options: Vec<(String, String)> = Vec::new();
    if let Some(extra) = option_elements.get(MAX_FENCE_OPTIONS) {
        diags.error(
            extra.range().start,
            format!(
                "{ctx}: more than {MAX_FENCE_OPTIONS} options; this one and the rest are not read"
            ),
        );
        ok = false;
    }
    for option in option_elements.iter().take(MAX_FENCE_OPTIONS) {
        match read_fence_option(&ctx, *option, &options, diags) {
            Some(pair) => options.push(pair),
            None => ok = false,
        }
    }
    let (agent, timeout, retry, poweroff) = (agent?, timeout?, retry?, poweroff?);
    ok.then_some(FenceDevice { agent, timeout, retry, poweroff, options })
}

/// `<fence poweroff>`: within the agent's `timeout` (a power-off that takes longer than the
/// agent may run never succeeds); when absent, [`FenceDevice::DEFAULT_POWEROFF`] or the timeout
/// if that is shorter.
fn read_poweroff(
    ctx: &str,
    poweroff: Option<Spanned<'_>>,
    timeout: Option<Duration>,
    diags: &mut Diagnostics<'_>,
) -> Option<Duration> {
    let Some(text) = poweroff else {
        return Some(
            timeout.map_or(FenceDevice::DEFAULT_POWEROFF, |t| FenceDevice::DEFAULT_POWEROFF.min(t)),
        );
    };
    let d = read(
        diags,
        &format!("{ctx} poweroff"),
        text,
        ranged(Duration::from_millis(10), Duration::from_secs(300)),
    )?;
    let timeout = timeout?;
    if d > timeout {
        diags.error(
            text.at,
            format!(
                "{ctx} poweroff: `{}` is longer than the agent's timeout ({}): a power-off that takes longer than the agent may run never succeeds",
                xml::shorten(text.value),
                value::show_duration(timeout)
            ),
        );
        return None;
    }
    Some(d)
}

/// Why a program root would run (a fence agent, a notifier) cannot be used as configured.
pub(crate) enum ProgramProblem {
    /// Not installed on this node.
    Missing,
    /// Anything else, as a sentence fragment naming the file and the fix.
    Unusable(String),
}

/// A program root runs must be an absolute path to an executable that root alone may change
/// (owner and mode, as for every program run as root). `what` names it in the messages.
pub(crate) fn check_root_program(
    text: &str,
    what: &str,
    host: &dyn Host,
) -> Result<PathBuf, ProgramProblem> {
    let path = PathBuf::from(text);
    let shown = xml::shorten(text);
    if !path.is_absolute() {
        return Err(ProgramProblem::Unusable(format!("`{shown}` must be an absolute path")));
    }
    let problem = match host.file_kind(&path) {
        FileKind::Executable => match host.untrusted(&path, false) {
            None => return Ok(path),
            Some(problem) => problem,
        },
        FileKind::Missing => return Err(ProgramProblem::Missing),
        FileKind::Directory => format!("`{shown}` is a directory, not {what}"),
        FileKind::NotExecutable => format!("`{shown}` is not executable; run chmod +x on it"),
    };
    Err(ProgramProblem::Unusable(problem))
}

/// The agent must be an absolute path to an executable on this node (the configuration is
/// checked again on every node it is installed on, and either node may have to run it).
fn check_agent(
    ctx: &str,
    agent: Spanned<'_>,
    host: &dyn Host,
    diags: &mut Diagnostics<'_>,
) -> Option<PathBuf> {
    let problem = match check_root_program(agent.value, "a fence agent", host) {
        Ok(path) => return Some(path),
        Err(ProgramProblem::Missing) => format!(
            "`{}` does not exist on this node; install the fence agent (e.g. the fence-agents package) on every node",
            xml::shorten(agent.value)
        ),
        Err(ProgramProblem::Unusable(problem)) => problem,
    };
    diags.error(agent.at, format!("{ctx} agent: {problem}"));
    None
}

fn read_fence_option(
    ctx: &str,
    element: roxmltree::Node<'_, '_>,
    earlier: &[(String, String)],
    diags: &mut Diagnostics<'_>,
) -> Option<(String, String)> {
    let mut option = Element::new(element);
    let name = option.attr("name");
    let value = option.attr("value");
    if name.is_none() {
        option.missing_attr("name", format!("{ctx}/<option>: missing attribute `name`"));
    }
    if value.is_none() {
        option.missing_attr("value", format!("{ctx}/<option>: missing attribute `value`"));
    }
    option.finish(diags);
    let (name, value) = (name?, value?);
    let valid = !name.value.is_empty()
        && name.value.len() <= 64
        && name.value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        diags.error(
            name.at,
            format!(
                "{ctx}/<option name>: `{}` is not an option name; use lower-case letters, digits and _ (as the agent's man page writes them, e.g. ipaddr, login)",
                xml::shorten(name.value)
            ),
        );
        return None;
    }
    if name.value == "action" {
        diags.error(
            name.at,
            format!("{ctx}/<option name>: `action` cannot be configured; the cluster sets it on each call (off, on, reboot, status)"),
        );
        return None;
    }
    if earlier.iter().any(|(n, _)| n == name.value) {
        diags.error(name.at, format!("{ctx}/<option>: option `{}` is given twice", name.value));
        return None;
    }
    // The agent reads one `name=value` per line: a newline in the value would inject options.
    if value.value.contains(['\n', '\r']) {
        diags.error(
            value.at,
            format!("{ctx}/<option name=\"{}\">: the value must be on one line", name.value),
        );
        return None;
    }
    Some((name.value.to_string(), value.value.to_string()))
}

fn read_ports(global: &mut Element<'_, '_>, diags: &mut Diagnostics<'_>) -> Option<Ports> {
    // Each port with the position of its value.
    let mut found: Vec<Option<(u16, usize)>> = Vec::new();
    for daemon in DAEMON_PORTS {
        let element = match daemon {
            "cldaemon" => "cldaemon_port",
            "cllockd" => "cllockd_port",
            "clnetd" => "clnetd_port",
            _ => "clhbd_port",
        };
        let port = match global.child_text(element, diags) {
            Some((text, _)) => read(diags, &format!("<global>/<{element}>"), text, value::port)
                .map(|p| (p, text.at)),
            None => {
                if global.node.children().all(|c| c.tag_name().name() != element) {
                    global.missing_child(
                        element,
                        format!(
                            "<global>: missing <{element}>, the port {daemon} listens on; as of 1.1 each of cldaemon, cllockd, clnetd and clhbd needs its own port"
                        ),
                    );
                }
                None
            }
        };
        found.push(port);
    }
    for (i, a) in found.iter().enumerate() {
        for (j, b) in found.iter().enumerate().skip(i + 1) {
            if let (Some((pa, _)), Some((pb, at))) = (a, b) {
                if pa == pb {
                    diags.error(
                        *at,
                        format!(
                            "<global>/<{}_port>: port {pb} is already used by {}; every daemon needs its own port",
                            DAEMON_PORTS[j], DAEMON_PORTS[i]
                        ),
                    );
                }
            }
        }
    }
    match found.as_slice() {
        [Some(a), Some(b), Some(c), Some(d)] => {
            Some(Ports { cldaemon: a.0, cllockd: b.0, clnetd: c.0, clhbd: d.0 })
        }
        _ => None,
    }
}

fn read_key(
    global: &mut Element<'_, '_>,
    host: &dyn Host,
    diags: &mut Diagnostics<'_>,
) -> Option<KeySource> {
    let Some(key_node) = global.child("key", diags) else {
        global.missing_child(
            "key",
            "<global>: missing <key>: heartbeats must be authenticated; run `clbuild --genkey` and add <key file=\"/etc/cluster/cluster.key\"/>",
        );
        return None;
    };
    let mut key = Element::new(key_node);
    let file = key.attr("file");
    let inline = key.text();
    key.finish(diags);
    match (file, inline) {
        (Some(_), Some(text)) => {
            diags
                .error(text.at, "<key>: give either a file attribute or the key as text, not both");
            None
        }
        (None, None) => {
            diags.error(
                key_node.range().start,
                "<key> is empty: give file=\"…\" (made by `clbuild --genkey`) or the key as hexadecimal text",
            );
            None
        }
        (None, Some(text)) => read(diags, "<key>", text, check_hex_key).map(KeySource::Inline),
        (Some(file), None) => {
            let path = PathBuf::from(file.value);
            if !path.is_absolute() {
                diags.error(
                    file.at,
                    format!("<key file>: `{}` must be an absolute path", xml::shorten(file.value)),
                );
                return None;
            }
            match host.file_kind(&path) {
                FileKind::Missing => {
                    diags.error(
                        file.at,
                        format!(
                            "<key file>: `{}` does not exist; create it with `clbuild --genkey`",
                            file.value
                        ),
                    );
                    None
                }
                FileKind::Directory => {
                    diags.error(
                        file.at,
                        format!("<key file>: `{}` is a directory, not a key file", file.value),
                    );
                    None
                }
                _ => match host.untrusted(&path, true) {
                    None => Some(KeySource::File(path)),
                    Some(problem) => {
                        diags.error(file.at, format!("<key file>: {problem}"));
                        None
                    }
                },
            }
        }
    }
}

/// A key (inline or in its file) must be hex digits, whitespace ignored, at least 128 bits.
pub fn check_hex_key(text: &str) -> Result<String, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    // The offending character is not quoted: a key file may be a link to any file.
    if let Some(position) = compact.chars().position(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "the key may only contain hexadecimal digits (0-9, a-f), and digit {} is something else; `clbuild --genkey` makes a valid one",
            position + 1
        ));
    }
    if compact.len() < 32 {
        return Err(format!(
            "the key is too short: {} hexadecimal digits ({} bits), at least 32 (128 bits) are needed; `clbuild --genkey` makes a 256-bit one",
            compact.len(),
            compact.len() * 4
        ));
    }
    if compact.len() % 2 != 0 {
        return Err(format!(
            "the key has an odd number of hexadecimal digits ({}); every byte is two digits",
            compact.len()
        ));
    }
    Ok(compact.to_ascii_lowercase())
}

fn read_heartbeat(
    node: roxmltree::Node<'_, '_>,
    diags: &mut Diagnostics<'_>,
) -> Option<HeartbeatTiming> {
    let mut hb = Element::new(node);
    let profile = hb.attr("profile");
    let interval = hb.attr("interval");
    let timeout = hb.attr("timeout");
    hb.finish(diags);
    let base = match profile {
        None => HeartbeatTiming::DEFAULT,
        Some(Spanned { value: "default", .. }) => HeartbeatTiming::DEFAULT,
        Some(Spanned { value: "fast", .. }) => HeartbeatTiming::FAST,
        Some(other) => {
            diags.error(
                other.at,
                format!(
                    "<heartbeat profile>: `{}` is not a profile; use default or fast",
                    xml::shorten(other.value)
                ),
            );
            return None;
        }
    };
    let mut timing = base;
    let limits = |lo: u64, hi: u64| {
        move |t: &str| {
            let d = value::duration(t)?;
            if d < Duration::from_millis(lo) || d > Duration::from_millis(hi) {
                return Err(format!(
                    "`{}` is out of range ({} to {})",
                    xml::shorten(t),
                    value::show_duration(Duration::from_millis(lo)),
                    value::show_duration(Duration::from_millis(hi))
                ));
            }
            Ok(d)
        }
    };
    let mut ok = true;
    if let Some(text) = interval {
        match read(diags, "<heartbeat interval>", text, limits(10, 10_000)) {
            Some(d) => timing.interval = d,
            None => ok = false,
        }
    }
    if let Some(text) = timeout {
        match read(diags, "<heartbeat timeout>", text, limits(30, 60_000)) {
            Some(d) => timing.timeout = d,
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    if interval.is_some() || timeout.is_some() {
        timing.profile = if timing == base { base.profile } else { Profile::Custom };
    }
    if timing.timeout <= timing.interval * 2 {
        let at = timeout.or(interval).map(|s| s.at).unwrap_or(node.range().start);
        diags.error(
            at,
            format!(
                "<heartbeat>: timeout ({}) must be larger than twice the interval ({}): one lost heartbeat must never look like a dead node",
                value::show_duration(timing.timeout),
                value::show_duration(timing.interval)
            ),
        );
        return None;
    }
    Some(timing)
}

/// A node as read, with the positions semantic checks need.
struct ReadNode {
    name: String,
    /// Byte offset of the `<node>` start tag.
    at: usize,
    networks: Vec<ReadNetwork>,
    /// The node's fence device, if it has a valid one.
    fence: Option<FenceDevice>,
    /// Every `<network>` of the node was valid (and there was at least one). Checks that compare
    /// whole nodes skip incomplete ones: a network that failed to parse is already reported, and
    /// must not be reported again as "missing".
    complete: bool,
}

/// A node's network as read, with the positions of its values.
struct ReadNetwork {
    config: NodeNetwork,
    name_at: usize,
    address_at: usize,
    heartbeat_at: usize,
}

impl ReadNode {
    fn network(&self, name: &str) -> Option<&ReadNetwork> {
        self.networks.iter().find(|n| n.config.name == name)
    }

    fn config(&self) -> NodeConfig {
        NodeConfig {
            name: self.name.clone(),
            networks: self.networks.iter().map(|n| n.config.clone()).collect(),
            fence: self.fence.clone(),
        }
    }
}

fn read_nodes(
    root: roxmltree::Node<'_, '_>,
    elements: &[roxmltree::Node<'_, '_>],
    host: &dyn Host,
    diags: &mut Diagnostics<'_>,
) -> Vec<ReadNode> {
    let mut nodes: Vec<ReadNode> = Vec::new();
    // Position of each node name's value, for the duplicate check.
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for element in elements {
        let mut node = Element::new(*element);
        let name = node.attr("name");
        let networks = node.children("network");
        let fence_element = node.child("fence", diags);
        if name.is_none() {
            node.missing_attr("name", "<node>: missing attribute `name` (the node's host name)");
        }
        node.finish(diags);
        let Some(name) = name else { continue };
        let Some(node_name) = read(diags, "<node name>", name, |t| value::name(t, "node name"))
        else {
            continue;
        };
        if let Some(&first_at) = names.get(&node_name) {
            let (line, _) = diags.position(first_at);
            diags.error(
                name.at,
                format!("<node>: node `{node_name}` is defined twice (first on line {line})"),
            );
            continue;
        }
        names.insert(node_name.clone(), name.at);
        let mut read_networks: Vec<ReadNetwork> = Vec::new();
        let mut complete = !networks.is_empty();
        if let Some(extra) = networks.get(MAX_NETWORKS_PER_NODE) {
            diags.error(
                extra.range().start,
                format!(
                    "<node name=\"{node_name}\">: more than {MAX_NETWORKS_PER_NODE} networks; this one and the rest are not read"
                ),
            );
            complete = false;
        }
        for network in networks.iter().take(MAX_NETWORKS_PER_NODE) {
            match read_node_network(&node_name, *network, &read_networks, diags) {
                Some(n) => read_networks.push(n),
                None => complete = false,
            }
        }
        if networks.is_empty() {
            diags.error(
                element.range().start,
                format!(
                    "<node name=\"{node_name}\"> has no <network>; every node needs at least one (two heartbeat networks are recommended)"
                ),
            );
        }
        let fence = fence_element.and_then(|f| read_fence(&node_name, f, host, diags));
        nodes.push(ReadNode {
            name: node_name,
            at: element.range().start,
            networks: read_networks,
            fence,
            complete,
        });
    }
    if elements.is_empty() {
        diags.error(root.range().start, "<linuxha>: no <node> defined; a cluster has two nodes");
    } else if nodes.len() == 1 && elements.len() == 1 {
        diags.error(root.range().start, "<linuxha>: only one <node> defined; a cluster needs two");
    }
    if nodes.len() > MAX_NODES {
        diags.error(
            nodes[MAX_NODES].at,
            format!("<node>: at most {MAX_NODES} nodes are supported in this version"),
        );
    }
    // Nodes beyond the supported number are already an error; comparing them all with each
    // other would only cost time on a hostile file.
    check_networks_across_nodes(&nodes[..nodes.len().min(MAX_NODES)], diags);
    nodes
}

fn read_node_network(
    node: &str,
    element: roxmltree::Node<'_, '_>,
    earlier: &[ReadNetwork],
    diags: &mut Diagnostics<'_>,
) -> Option<ReadNetwork> {
    let mut net = Element::new(element);
    let name = net.attr("name");
    let interface = net.attr("interface");
    let address = net.attr("address");
    let prefix = net.attr("prefix");
    let netmask = net.attr("netmask");
    let heartbeat = net.attr("heartbeat");
    let ctx = format!("<node name=\"{node}\">/<network>");
    let mut missing = |attr: &'static str, why: &str| {
        net.missing_attr(attr, format!("{ctx}: missing attribute `{attr}` ({why})"));
    };
    if name.is_none() {
        missing("name", "the logical network name, the same on every node");
    }
    if interface.is_none() {
        missing("interface", "e.g. eth0");
    }
    if address.is_none() {
        missing("address", "this node's address on the network");
    }
    if prefix.is_none() && netmask.is_none() {
        missing("prefix", "e.g. 24, or give netmask=\"255.255.255.0\"");
    }
    net.finish(diags);
    let attr_ctx = |attr: &str| format!("<node name=\"{node}\">/<network {attr}>");
    let name_at = name.map(|n| n.at);
    let name =
        name.and_then(|n| read(diags, &attr_ctx("name"), n, |t| value::name(t, "network name")));
    let interface =
        interface.and_then(|i| read(diags, &attr_ctx("interface"), i, value::interface));
    let address_at = address.map(|a| a.at);
    let address = address.and_then(|a| read(diags, &attr_ctx("address"), a, value::ip));
    let prefix = match (prefix, netmask) {
        (Some(p), Some(m)) => {
            diags.error(m.at, format!("{ctx}: give prefix or netmask, not both"));
            read(diags, &attr_ctx("prefix"), p, |t| value::prefix(t, address))
        }
        (Some(p), None) => read(diags, &attr_ctx("prefix"), p, |t| value::prefix(t, address)),
        (None, Some(m)) => read(diags, &attr_ctx("netmask"), m, |t| value::netmask_for(t, address)),
        (None, None) => None,
    };
    if let (Some(address), Some(prefix), Some(at)) = (address, prefix, address_at) {
        if let Some(problem) = value::host_address_problem(address, prefix) {
            diags.error(at, format!("{}: {problem}", attr_ctx("address")));
        }
    }
    let heartbeat_at = heartbeat.map(|h| h.at).unwrap_or(element.range().start);
    let heartbeat = match heartbeat {
        Some(h) => read(diags, &attr_ctx("heartbeat"), h, value::switch),
        None => Some(true),
    };
    let (name, interface, address, prefix, heartbeat) =
        (name?, interface?, address?, prefix?, heartbeat?);
    let (name_at, address_at) = (name_at?, address_at?);
    if let Some(first) = earlier.iter().find(|n| n.config.name == name) {
        let (line, _) = diags.position(first.name_at);
        diags.error(
            name_at,
            format!(
                "{ctx}: network `{name}` is defined twice on this node (first on line {line}, interface {})",
                first.config.interface
            ),
        );
        return None;
    }
    if let Some(other) = earlier
        .iter()
        .map(|n| &n.config)
        .find(|n| value::subnets_overlap(n.address, n.prefix, address, prefix))
    {
        diags.error(
            address_at,
            format!(
                "{ctx}: {address}/{prefix} overlaps network `{}` ({}/{}) on the same node; each network needs its own subnet",
                other.name, other.address, other.prefix
            ),
        );
        return None;
    }
    Some(ReadNetwork {
        config: NodeNetwork { name, interface, address, prefix, heartbeat },
        name_at,
        address_at,
        heartbeat_at,
    })
}

fn check_networks_across_nodes(nodes: &[ReadNode], diags: &mut Diagnostics<'_>) {
    // Duplicate addresses anywhere in the cluster.
    let mut seen: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for node in nodes {
        for network in &node.networks {
            if let Some(owner) = seen.insert(network.config.address, &node.name) {
                diags.error(
                    network.address_at,
                    format!(
                        "<node name=\"{}\">/<network name=\"{}\">: address {} is already used by node `{owner}`",
                        node.name, network.config.name, network.config.address
                    ),
                );
            }
        }
    }
    // The same logical network must be one subnet, and heartbeat networks must exist on every node.
    for (i, node) in nodes.iter().enumerate() {
        for network in &node.networks {
            let ours = &network.config;
            for other in nodes.iter().skip(i + 1) {
                match other.network(&ours.name) {
                    Some(theirs) => {
                        let theirs = &theirs.config;
                        if !value::in_subnet(
                            theirs.address,
                            ours.address,
                            ours.prefix.min(theirs.prefix),
                        ) || theirs.prefix != ours.prefix
                        {
                            diags.error(
                                network.address_at,
                                format!(
                                    "<network name=\"{}\">: {}/{} on node `{}` and {}/{} on node `{}` are not the same subnet; a logical network must be one subnet on every node",
                                    ours.name, ours.address, ours.prefix, node.name, theirs.address, theirs.prefix, other.name
                                ),
                            );
                        }
                        if theirs.heartbeat != ours.heartbeat {
                            diags.error(
                                network.heartbeat_at,
                                format!(
                                    "<network name=\"{}\">: heartbeat is {} on node `{}` but {} on node `{}`; set it the same on both",
                                    ours.name,
                                    yes_no(ours.heartbeat),
                                    node.name,
                                    yes_no(theirs.heartbeat),
                                    other.name
                                ),
                            );
                        }
                    }
                    None if other.complete => report_missing_network(network, node, other, diags),
                    None => {}
                }
            }
            for earlier in nodes.iter().take(i) {
                if earlier.complete && earlier.network(&ours.name).is_none() {
                    report_missing_network(network, node, earlier, diags);
                }
            }
        }
        if !node.complete {
            continue;
        }
        let heartbeat_links = node.networks.iter().filter(|n| n.config.heartbeat).count();
        if heartbeat_links == 0 {
            diags.error(node.at, format!("<node name=\"{}\">: no network carries heartbeats; set heartbeat=\"yes\" on at least one (two recommended)", node.name));
        } else if heartbeat_links == 1 {
            diags.warning(
                node.at,
                format!(
                    "<node name=\"{}\">: only one heartbeat network; a single failed link will then look like a dead node — two or more are recommended",
                    node.name
                ),
            );
        }
    }
}

/// `network` of `node` has no counterpart on `other`: an error for a heartbeat network.
fn report_missing_network(
    network: &ReadNetwork,
    node: &ReadNode,
    other: &ReadNode,
    diags: &mut Diagnostics<'_>,
) {
    let message = format!(
        "<network name=\"{}\">: node `{}` has this network but node `{}` does not",
        network.config.name, node.name, other.name
    );
    if network.config.heartbeat {
        diags.error(
            network.name_at,
            format!("{message}; a heartbeat network must connect every node"),
        );
    } else {
        diags.warning(
            network.name_at,
            format!("{message}; applications can use it only on node `{}`", node.name),
        );
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn read_known_connections(
    root: roxmltree::Node<'_, '_>,
    element: Option<roxmltree::Node<'_, '_>>,
    nodes: &[ReadNode],
    diags: &mut Diagnostics<'_>,
) -> Vec<IpAddr> {
    const WHY: &str = "without known connections a node cannot tell its own isolation from its peer's failure, so partition detection is impossible";
    let Some(element) = element else {
        diags.warning(
            root.range().start,
            format!("<linuxha>: no <net_known_connections> section; {WHY}. Add one or more addresses outside the cluster that answer ping (routers, firewalls)"),
        );
        return Vec::new();
    };
    let mut section = Element::new(element);
    let text = section
        .node
        .children()
        .filter(|c| c.is_text())
        .map(|c| (c.text().unwrap_or(""), c.range().start))
        .collect::<Vec<_>>();
    section.text();
    section.finish(diags);
    let node_addresses: BTreeMap<IpAddr, &str> = nodes
        .iter()
        .flat_map(|n| n.networks.iter().map(move |net| (net.config.address, n.name.as_str())))
        .collect();
    let mut found = Vec::new();
    // Also in `found`; a set, so that a huge list stays fast to check.
    let mut seen = std::collections::BTreeSet::new();
    let mut bad_tokens = 0;
    for (chunk, start) in text {
        let mut offset = 0;
        for token in chunk.split_whitespace() {
            let local = chunk[offset..].find(token).map(|i| i + offset).unwrap_or(offset);
            offset = local + token.len();
            let at = start + local;
            match value::ip(token) {
                Ok(address) => {
                    if !seen.insert(address) {
                        diags.warning(
                            at,
                            format!("<net_known_connections>: {address} is listed twice"),
                        );
                        continue;
                    }
                    if let Some(node) = node_addresses.get(&address) {
                        diags.error(
                            at,
                            format!("<net_known_connections>: {address} is node `{node}`'s own address; known connections must be outside the cluster"),
                        );
                        continue;
                    }
                    found.push(address);
                }
                Err(message) => {
                    bad_tokens += 1;
                    diags.error(at, format!("<net_known_connections>: {message}"));
                }
            }
        }
    }
    if found.is_empty() && bad_tokens == 0 {
        diags.warning(element.range().start, format!("<net_known_connections> is empty; {WHY}"));
    }
    found
}
