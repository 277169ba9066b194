//! `clconf.xml`: the cluster (name, daemon ports, key, heartbeat timing, nodes and their
//! networks, known connections). Raw XML in, a resolved [`ClusterConfig`] or every problem out.

use std::collections::BTreeMap;
use std::net::IpAddr;
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
    if root.tag_name().name() != "linuxha" {
        diags.error(
            root.range().start,
            format!(
                "the root element of clconf.xml must be <linuxha>, not <{}>",
                root.tag_name().name()
            ),
        );
        return None;
    }
    let mut top = Element::new(root);
    let global = top.child("global", diags);
    let node_elements = top.children("node");
    let known = top.child("net_known_connections", diags);
    top.finish(diags);

    let Some(global) = global else {
        diags.error(
            root.range().start,
            "<linuxha>: missing <global> section (cluster name, ports, key)",
        );
        return None;
    };
    let global = read_global(global, host, diags);
    let nodes = read_nodes(root, &node_elements, diags);
    let known_connections = read_known_connections(root, known, &nodes, diags);
    let (name, ports, key, heartbeat) = global?;
    Some(ClusterConfig {
        name,
        ports,
        key,
        heartbeat,
        nodes: nodes.into_iter().map(|n| n.config).collect(),
        known_connections,
    })
}

type Global = (String, Ports, KeySource, HeartbeatTiming);

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
                diags.error(global.at(), "<global>: missing <name> (the cluster name)");
            }
            None
        }
    };
    global.allow_attrs(&[]);
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
    global.finish(diags);
    Some((name?, ports?, key?, heartbeat?))
}

fn read_ports(global: &mut Element<'_, '_>, diags: &mut Diagnostics<'_>) -> Option<Ports> {
    let mut found: Vec<Option<(u16, usize)>> = Vec::new();
    for daemon in DAEMON_PORTS {
        let element = match daemon {
            "cldaemon" => "cldaemon_port",
            "cllockd" => "cllockd_port",
            "clnetd" => "clnetd_port",
            _ => "clhbd_port",
        };
        let port = match global.child_text(element, diags) {
            Some((text, at)) => {
                read(diags, &format!("<global>/<{element}>"), text, value::port).map(|p| (p, at))
            }
            None => {
                if global.node.children().all(|c| c.tag_name().name() != element) {
                    diags.error(
                        global.at(),
                        format!(
                            "<global>: missing <{element}>: as of 1.1 every daemon that listens needs its port ({daemon})"
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
        diags.error(
            global.at(),
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
                "<key> is empty: give file=\"…\" or the key as hex text",
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
                _ => Some(KeySource::File(path)),
            }
        }
    }
}

/// A key given inline must be hex and at least 128 bits.
pub fn check_hex_key(text: &str) -> Result<String, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 32
        || compact.len() % 2 != 0
        || !compact.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err("the key must be at least 32 hexadecimal characters (128 bits); `clbuild --genkey` makes one".into());
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
    let limits = |lo: u64, hi: u64, what: &'static str| {
        move |t: &str| {
            let d = value::duration(t)?;
            if d < Duration::from_millis(lo) || d > Duration::from_millis(hi) {
                return Err(format!(
                    "{what} {} is out of range ({} to {})",
                    value::show_duration(d),
                    value::show_duration(Duration::from_millis(lo)),
                    value::show_duration(Duration::from_millis(hi))
                ));
            }
            Ok(d)
        }
    };
    let mut ok = true;
    if let Some(text) = interval {
        match read(diags, "<heartbeat interval>", text, limits(10, 10_000, "interval")) {
            Some(d) => timing.interval = d,
            None => ok = false,
        }
    }
    if let Some(text) = timeout {
        match read(diags, "<heartbeat timeout>", text, limits(30, 60_000, "timeout")) {
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
    config: NodeConfig,
    at: usize,
    network_at: Vec<usize>,
}

fn read_nodes(
    root: roxmltree::Node<'_, '_>,
    elements: &[roxmltree::Node<'_, '_>],
    diags: &mut Diagnostics<'_>,
) -> Vec<ReadNode> {
    let mut nodes: Vec<ReadNode> = Vec::new();
    for element in elements {
        let mut node = Element::new(*element);
        let name = node.attr("name");
        let networks = node.children("network");
        node.finish(diags);
        let Some(name) = name else {
            diags.error(
                element.range().start,
                "<node>: missing attribute `name` (the node's host name)",
            );
            continue;
        };
        let Some(node_name) = read(diags, "<node name>", name, |t| value::name(t, "node name"))
        else {
            continue;
        };
        if nodes.iter().any(|n| n.config.name == node_name) {
            diags.error(name.at, format!("<node>: node `{node_name}` is defined twice"));
            continue;
        }
        let mut read_networks = Vec::new();
        let mut network_at = Vec::new();
        for network in networks {
            if let Some(n) = read_node_network(&node_name, network, &read_networks, diags) {
                read_networks.push(n);
                network_at.push(network.range().start);
            }
        }
        if read_networks.is_empty() {
            diags.error(
                element.range().start,
                format!("<node name=\"{node_name}\">: has no <network>; a node needs at least one"),
            );
        }
        nodes.push(ReadNode {
            config: NodeConfig { name: node_name, networks: read_networks },
            at: element.range().start,
            network_at,
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
    check_networks_across_nodes(&nodes, diags);
    nodes
}

fn read_node_network(
    node: &str,
    element: roxmltree::Node<'_, '_>,
    earlier: &[NodeNetwork],
    diags: &mut Diagnostics<'_>,
) -> Option<NodeNetwork> {
    let mut net = Element::new(element);
    let name = net.attr("name");
    let interface = net.attr("interface");
    let address = net.attr("address");
    let prefix = net.attr("prefix");
    let netmask = net.attr("netmask");
    let heartbeat = net.attr("heartbeat");
    net.finish(diags);
    let ctx = format!("<node name=\"{node}\">/<network>");
    let mut missing = |attr: &str, why: &str| {
        diags.error(element.range().start, format!("{ctx}: missing attribute `{attr}` ({why})"));
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
        missing("prefix", "e.g. 24");
    }
    let name = read(diags, &format!("{ctx} name"), name?, |t| value::name(t, "network name"));
    let interface = read(diags, &format!("{ctx} interface"), interface?, |t| {
        if t.is_empty() || t.len() > 15 || t.contains(['/', ' ']) {
            Err(format!(
                "`{}` is not an interface name (1 to 15 characters, no `/` or spaces)",
                xml::shorten(t)
            ))
        } else {
            Ok(t.to_string())
        }
    });
    let address_at = address?.at;
    let address = read(diags, &format!("{ctx} address"), address?, value::ip);
    let prefix = match (prefix, netmask) {
        (Some(p), Some(m)) => {
            diags.error(m.at, format!("{ctx}: give prefix or netmask, not both"));
            read(diags, &format!("{ctx} prefix"), p, |t| value::prefix(t, address))
        }
        (Some(p), None) => read(diags, &format!("{ctx} prefix"), p, |t| value::prefix(t, address)),
        (None, Some(m)) => read(diags, &format!("{ctx} netmask"), m, value::netmask),
        (None, None) => None,
    };
    let heartbeat = match heartbeat {
        Some(h) => read(diags, &format!("{ctx} heartbeat"), h, value::switch)?,
        None => true,
    };
    let (name, interface, address, prefix) = (name?, interface?, address?, prefix?);
    if let Some(first) = earlier.iter().find(|n| n.name == name) {
        diags.error(
            element.range().start,
            format!("{ctx}: network `{name}` is defined twice (first on {})", first.interface),
        );
        return None;
    }
    if let Some(other) =
        earlier.iter().find(|n| value::subnets_overlap(n.address, n.prefix, address, prefix))
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
    Some(NodeNetwork { name, interface, address, prefix, heartbeat })
}

fn check_networks_across_nodes(nodes: &[ReadNode], diags: &mut Diagnostics<'_>) {
    // Duplicate addresses anywhere in the cluster.
    let mut seen: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for node in nodes {
        for (network, at) in node.config.networks.iter().zip(&node.network_at) {
            if let Some(owner) = seen.insert(network.address, &node.config.name) {
                diags.error(
                    *at,
                    format!("<node name=\"{}\">/<network name=\"{}\">: address {} is already used by node `{owner}`", node.config.name, network.name, network.address),
                );
            }
        }
    }
    // The same logical network must be one subnet, and heartbeat networks must exist on every node.
    for (i, node) in nodes.iter().enumerate() {
        for (network, at) in node.config.networks.iter().zip(&node.network_at) {
            for other in nodes.iter().skip(i + 1) {
                match other.config.network(&network.name) {
                    Some(theirs) => {
                        if !value::in_subnet(
                            theirs.address,
                            network.address,
                            network.prefix.min(theirs.prefix),
                        ) || theirs.prefix != network.prefix
                        {
                            diags.error(
                                *at,
                                format!(
                                    "<network name=\"{}\">: {}/{} on node `{}` and {}/{} on node `{}` are not the same subnet",
                                    network.name, network.address, network.prefix, node.config.name, theirs.address, theirs.prefix, other.config.name
                                ),
                            );
                        }
                        if theirs.heartbeat != network.heartbeat {
                            diags.error(
                                *at,
                                format!(
                                    "<network name=\"{}\">: heartbeat is {} on node `{}` but {} on node `{}`; set it the same on both",
                                    network.name,
                                    yes_no(network.heartbeat),
                                    node.config.name,
                                    yes_no(theirs.heartbeat),
                                    other.config.name
                                ),
                            );
                        }
                    }
                    None => {
                        let message = format!(
                            "<network name=\"{}\">: node `{}` has this network but node `{}` does not",
                            network.name, node.config.name, other.config.name
                        );
                        if network.heartbeat {
                            diags.error(
                                *at,
                                format!("{message}; a heartbeat network must connect every node"),
                            );
                        } else {
                            diags.warning(*at, message);
                        }
                    }
                }
            }
            for earlier in nodes.iter().take(i) {
                if earlier.config.network(&network.name).is_none() {
                    let message = format!(
                        "<network name=\"{}\">: node `{}` has this network but node `{}` does not",
                        network.name, node.config.name, earlier.config.name
                    );
                    if network.heartbeat {
                        diags.error(
                            *at,
                            format!("{message}; a heartbeat network must connect every node"),
                        );
                    } else {
                        diags.warning(*at, message);
                    }
                }
            }
        }
        let heartbeat_links = node.config.networks.iter().filter(|n| n.heartbeat).count();
        if heartbeat_links == 0 && !node.config.networks.is_empty() {
            diags.error(node.at, format!("<node name=\"{}\">: no network carries heartbeats; set heartbeat=\"yes\" on at least one (two recommended)", node.config.name));
        } else if heartbeat_links == 1 {
            diags.warning(
                node.at,
                format!(
                    "<node name=\"{}\">: only one heartbeat network; a single failed link will then look like a dead node — two or more are recommended",
                    node.config.name
                ),
            );
        }
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
    let mut found = Vec::new();
    let mut bad_tokens = 0;
    for (chunk, start) in text {
        let mut offset = 0;
        for token in chunk.split_whitespace() {
            let local = chunk[offset..].find(token).map(|i| i + offset).unwrap_or(offset);
            offset = local + token.len();
            let at = start + local;
            match value::ip(token) {
                Ok(address) => {
                    if found.contains(&address) {
                        diags.warning(
                            at,
                            format!("<net_known_connections>: {address} is listed twice"),
                        );
                        continue;
                    }
                    if let Some(node) = nodes
                        .iter()
                        .find(|n| n.config.networks.iter().any(|net| net.address == address))
                    {
                        diags.error(
                            at,
                            format!("<net_known_connections>: {address} is node `{}`'s own address; known connections must be outside the cluster", node.config.name),
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
