//! `appconf.xml`: one application (where it may run, its VIPs, filesystems, scripts and
//! monitors). Checked against the built cluster configuration and the other applications.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clconf::{finish, ClusterConfig};
use crate::diag::Diagnostics;
pub use crate::resources::Resource;
use crate::value::{self, read};
use crate::xml::{self, Element, Spanned};
use crate::{FileKind, Host, Loaded};

/// Network attributes that Linuxha.net 1.0 read and 1.1 ignores; they still parse, with a warning.
pub const LEGACY_NETWORK_ATTRIBUTES: [&str; 5] =
    ["broadcast", "checklist", "retries", "retry_interval", "ping_timeout"];

/// A validated application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppConfig {
    /// Application name (also its directory under /etc/cluster).
    pub name: String,
    /// Nodes allowed to run it, most preferred first.
    pub nodes: Vec<String>,
    /// Started by `clform` (unless `--noapps`).
    pub autostart: bool,
    /// What happens when a more preferred node comes back.
    pub failback: Failback,
    /// Service addresses that move with the application.
    pub vips: Vec<Vip>,
    /// Filesystems mounted before the application starts.
    pub filesystems: Vec<Filesystem>,
    /// Start script (none when the application is made of resources only).
    #[serde(default)]
    pub start: Option<Script>,
    /// Stop script (none when the application is made of resources only).
    #[serde(default)]
    pub stop: Option<Script>,
    /// OCF agents and LSB init scripts, started in this order after the VIPs and
    /// filesystems (and before the start script), stopped in reverse.
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// Health checks.
    pub monitors: Vec<Monitor>,
    /// Announce the VIPs again this often while running (`<networks announce_every>`); off
    /// when absent. They are always announced at start and when a partition heals.
    #[serde(default)]
    pub announce_every: Option<Duration>,
    /// Replicated storage (DRBD over LVM or plain disks); none when the application has no
    /// `<vg>` or `<disk>`.
    #[serde(default)]
    pub replication: Option<crate::replication::Replication>,
}

/// Failback policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failback {
    /// Stay where it runs; the administrator moves it back with clswitchapp.
    Manual,
    /// Move back to the most preferred node as soon as it is healthy again.
    Auto,
}

/// One service address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vip {
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
    /// The interface to add it to, per allowed node.
    pub interfaces: BTreeMap<String, String>,
}

/// One filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    /// Block device (or image file) holding it.
    pub device: PathBuf,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Filesystem type (ext4, xfs, …).
    pub fstype: String,
    /// Mount options.
    pub options: String,
    /// Run fsck before mounting.
    pub fsck: bool,
}

/// A start or stop script with its time limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    /// Absolute path as written (resolved under the node's root when run).
    pub path: PathBuf,
    /// Time limit; a stop script that overruns has the application's processes killed.
    pub timeout: Duration,
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Monitor {
    /// What is checked.
    pub kind: MonitorKind,
    /// Time between checks.
    pub interval: Duration,
    /// A check running longer than this has failed.
    pub timeout: Duration,
    /// Local restarts before the application fails over.
    pub restarts: u32,
    /// Failures older than this are forgotten.
    pub window: Duration,
}

/// The kinds of health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorKind {
    /// A process with this name is alive.
    Process {
        /// Process name as in /proc/PID/comm.
        name: String,
    },
    /// A TCP connect succeeds.
    Tcp {
        /// Address to connect to (the first VIP when not given).
        address: Option<IpAddr>,
        /// Port.
        port: u16,
    },
    /// A command exits 0.
    Command {
        /// Absolute path.
        path: PathBuf,
    },
}

/// Default start/stop script timeout.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Parse and validate an appconf.xml for application `expected_name`, against the built
/// cluster configuration and the other built applications.
pub fn load_app(
    file: &str,
    bytes: &[u8],
    expected_name: &str,
    cluster: &ClusterConfig,
    other_apps: &[AppConfig],
    host: &dyn Host,
) -> Loaded<AppConfig> {
    let text_for_positions = String::from_utf8_lossy(bytes);
    let mut diags = Diagnostics::new(file, &text_for_positions);
    let config = xml::decode(bytes, &mut diags).and_then(|text| {
        let doc = xml::parse(text, &mut diags)?;
        let context = Context { expected_name, cluster, other_apps, host };
        resolve(doc.root_element(), &context, &mut diags)
    });
    finish(config, diags)
}

struct Context<'c> {
    expected_name: &'c str,
    cluster: &'c ClusterConfig,
    other_apps: &'c [AppConfig],
    host: &'c dyn Host,
}

fn resolve(
    root: roxmltree::Node<'_, '_>,
    cx: &Context<'_>,
    diags: &mut Diagnostics<'_>,
) -> Option<AppConfig> {
    if !xml::expect_root(root, "appconf", "appconf.xml", diags) {
        return None;
    }
    let mut top = Element::new(root);
    let global = top.child("global", diags);
    if global.is_none() {
        top.missing_child(
            "global",
            "<appconf>: missing <global> section (application name, nodes)",
        );
    }
    let networks = top.child("networks", diags);
    let storage = top.child("storage", diags);
    let application = top.child("application", diags);
    let resources = top.child("resources", diags);
    if application.is_none() && resources.is_none() {
        top.missing_child(
            "application",
            "<appconf>: missing <application> section (start and stop scripts) or <resources> (OCF agents, LSB init scripts)",
        );
    }
    let monitors = top.child("monitors", diags);
    top.finish(diags);

    // Every section is checked even when another one failed, so one run reports everything.
    let global = global.map(|g| read_global(g, cx, diags));
    let (name, nodes, autostart, failback) = match global {
        Some(g) => (g.name, g.nodes, g.autostart, g.failback),
        None => (None, None, Some(true), Some(Failback::Manual)),
    };
    // Unreadable <nodes>: check the rest against every node of the cluster.
    let check_nodes = nodes
        .clone()
        .unwrap_or_else(|| cx.cluster.node_names().iter().map(|s| s.to_string()).collect());
    let announce_every = networks.and_then(|n| {
        let attribute = n.attributes().find(|a| a.name() == "announce_every")?;
        let at = attribute.range_value().start;
        match ranged(Duration::from_secs(1), Duration::from_secs(3600))(attribute.value().trim()) {
            Ok(d) => Some(Some(d)),
            Err(message) => {
                diags.error(at, format!("<networks announce_every>: {message}"));
                Some(None)
            }
        }
    });
    let vips =
        networks.map(|n| read_networks(n, &check_nodes, cx, diags)).unwrap_or(Some(Vec::new()));
    let filesystems = storage.map(|s| read_storage(s, cx, diags)).unwrap_or(Some(Vec::new()));
    let replication = storage
        .map(|s| {
            let app = cx.expected_name;
            let (cluster, others) = (cx.cluster, cx.other_apps);
            let inputs = crate::replication::Inputs { app, nodes: &check_nodes, cluster, others };
            crate::replication::read_replication(s, &inputs, diags)
        })
        .unwrap_or(Some(None));
    let scripts = match application {
        Some(a) => read_application(a, cx, diags).map(|(start, stop)| (Some(start), Some(stop))),
        None => Some((None, None)),
    };
    let resources = resources
        .map(|r| crate::resources::read_resources(r, cx.host, cx.other_apps, diags))
        .unwrap_or(Some(Vec::new()));
    let has_vip = vips.as_ref().is_none_or(|v| !v.is_empty());
    let monitors =
        monitors.map(|m| read_monitors(m, has_vip, cx, diags)).unwrap_or(Some(Vec::new()));
    let (name, nodes, autostart, failback) = (name?, nodes?, autostart?, failback?);
    let (start, stop) = scripts?;
    Some(AppConfig {
        name,
        nodes,
        autostart,
        failback,
        vips: vips?,
        filesystems: filesystems?,
        start,
        stop,
        resources: resources?,
        monitors: monitors?,
        replication: replication?,
        announce_every: match announce_every {
            Some(Some(d)) => Some(d),
            Some(None) => return None,
            None => None,
        },
    })
}

/// `<global>` as read; each part is None when it was wrong (and reported).
struct Global {
    name: Option<String>,
    nodes: Option<Vec<String>>,
    autostart: Option<bool>,
    failback: Option<Failback>,
}

fn read_global(
    node: roxmltree::Node<'_, '_>,
    cx: &Context<'_>,
    diags: &mut Diagnostics<'_>,
) -> Global {
    let mut global = Element::new(node);
    let name = match global.child_text("name", diags) {
        Some((text, _)) => read(diags, "<global>/<name>", text, |t| {
            let name = value::name(t, "application name")?;
            if name != cx.expected_name {
                return Err(format!(
                    "`{name}` does not match the application directory `{}`; the name must equal the directory under /etc/cluster (this also keeps application names unique)",
                    cx.expected_name
                ));
            }
            if let Some(clash) = cx.other_apps.iter().find(|a| a.name == name) {
                return Err(format!("application `{}` already exists", clash.name));
            }
            Ok(name)
        }),
        None => {
            if global.node.children().all(|c| c.tag_name().name() != "name") {
                global.missing_child("name", "<global>: missing <name> (the application name)");
            }
            None
        }
    };
    if let Some(v) = global.child("version", diags) {
        diags.warning(
            v.range().start,
            "<global>/<version> is ignored: the built configuration carries its own version",
        );
    }
    let cluster_nodes = cx.cluster.node_names();
    let nodes = match global.child_text("nodes", diags) {
        Some((text, _)) => {
            let mut list: Vec<String> = Vec::new();
            let mut ok = true;
            let mut offset = 0;
            for token in text.value.split_whitespace() {
                let local = text.value[offset..].find(token).map(|i| i + offset).unwrap_or(offset);
                offset = local + token.len();
                let at = text.at + local;
                if !cluster_nodes.contains(&token) {
                    let hint = xml::suggest(token, &cluster_nodes);
                    diags.error(
                        at,
                        format!(
                            "<global>/<nodes>: `{}` is not a node of cluster `{}`{hint}",
                            xml::shorten(token),
                            cx.cluster.name
                        ),
                    );
                    ok = false;
                } else if list.iter().any(|n| n == token) {
                    diags.error(at, format!("<global>/<nodes>: node `{token}` is listed twice"));
                    ok = false;
                } else {
                    list.push(token.to_string());
                }
            }
            ok.then_some(list)
        }
        None => Some(cluster_nodes.iter().map(|s| s.to_string()).collect()),
    };
    let autostart = match global.child_text("autostart", diags) {
        Some((text, _)) => read(diags, "<global>/<autostart>", text, value::switch),
        None => Some(true),
    };
    let failback = match global.child_text("failback", diags) {
        Some((text, _)) => read(diags, "<global>/<failback>", text, |t| match t {
            "manual" => Ok(Failback::Manual),
            "auto" => Ok(Failback::Auto),
            other => Err(format!(
                "`{}` is not a failback policy; use manual or auto",
                xml::shorten(other)
            )),
        }),
        None => Some(Failback::Manual),
    };
    global.finish(diags);
    Global { name, nodes, autostart, failback }
}

fn read_networks(
    node: roxmltree::Node<'_, '_>,
    nodes: &[String],
    cx: &Context<'_>,
    diags: &mut Diagnostics<'_>,
) -> Option<Vec<Vip>> {
    let mut section = Element::new(node);
    section.allow_attrs(&["announce_every"]);
    let elements = section.children("network");
    section.finish(diags);
    let mut vips: Vec<Vip> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut ok = true;
    for element in elements {
        match read_vip(element, nodes, cx, diags) {
            Some((vip, at)) => {
                if !seen.insert(vip.address) {
                    diags.error(at, format!("<network ip>: VIP {} is listed twice", vip.address));
                    ok = false;
                } else {
                    vips.push(vip);
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(vips)
}

fn read_vip(
    element: roxmltree::Node<'_, '_>,
    nodes: &[String],
    cx: &Context<'_>,
    diags: &mut Diagnostics<'_>,
) -> Option<(Vip, usize)> {
    let mut net = Element::new(element);
    let network_name = net.attr("net");
    let interface = net.attr("interface");
    let address = net.attr("ip");
    let prefix = net.attr("prefix");
    let netmask = net.attr("netmask");
    for name in LEGACY_NETWORK_ATTRIBUTES {
        if let Some(found) = net.legacy_attr(name) {
            diags.warning(
                found.at,
                format!("<network>: attribute `{name}` was used by Linuxha.net 1.0 and is ignored in 1.1; remove it when convenient"),
            );
        }
    }
    let overrides = net.children("interface");
    let ctx = match address {
        Some(a) => format!("<network ip=\"{}\">", xml::shorten(a.value)),
        None => "<network>".to_string(),
    };
    if address.is_none() {
        net.missing_attr(
            "ip",
            format!("{ctx}: missing attribute `ip` (the application's service address)"),
        );
    }
    if prefix.is_none() && netmask.is_none() {
        net.missing_attr(
            "prefix",
            format!(
                "{ctx}: missing attribute `prefix` (e.g. 24), or give netmask=\"255.255.255.0\""
            ),
        );
    }
    if network_name.is_none() && interface.is_none() {
        net.missing_attr(
            "net",
            format!(
                "{ctx}: missing attribute `net` (a network name from clconf.xml) or `interface`"
            ),
        );
    }
    net.finish(diags);
    let address_text = address?;
    let address = read(diags, "<network ip>", address_text, value::ip)?;
    let prefix = match (prefix, netmask) {
        (Some(_), Some(m)) => {
            diags.error(m.at, format!("{ctx}: give prefix or netmask, not both"));
            None
        }
        (Some(p), None) => read(diags, "<network prefix>", p, |t| value::prefix(t, Some(address))),
        (None, Some(m)) => {
            read(diags, "<network netmask>", m, |t| value::netmask_for(t, Some(address)))
        }
        (None, None) => None,
    };
    let mut interfaces = BTreeMap::new();
    let mut ok = prefix.is_some();
    if let Some(problem) = prefix.and_then(|p| value::host_address_problem(address, p)) {
        diags.error(address_text.at, format!("<network ip>: VIP {problem}"));
        ok = false;
    }
    // The subnets the VIP lands in on its nodes: it must be a host address there too, and
    // its prefix no wider than theirs (a wider one would claim addresses outside the network).
    let mut landing: Vec<(IpAddr, u8)> = Vec::new();
    match (network_name, interface) {
        (Some(_), Some(i)) => {
            diags.error(i.at, format!("{ctx}: give net=\"…\" or interface=\"…\", not both"));
            ok = false;
        }
        (None, None) => ok = false,
        (Some(network), None) => {
            // Nodes without this network, and nodes where the VIP is outside it.
            let mut lacking: Vec<&str> = Vec::new();
            let mut outside: Vec<(&str, IpAddr, u8)> = Vec::new();
            for node_name in nodes {
                let Some(node) = cx.cluster.node(node_name) else { continue };
                match node.network(network.value) {
                    Some(attachment) => {
                        if value::in_subnet(address, attachment.address, attachment.prefix) {
                            landing.push((attachment.address, attachment.prefix));
                        } else {
                            outside.push((
                                node_name,
                                value::network_of(attachment.address, attachment.prefix),
                                attachment.prefix,
                            ));
                        }
                        interfaces.insert(node_name.clone(), attachment.interface.clone());
                    }
                    None => lacking.push(node_name),
                }
            }
            if lacking.len() == nodes.len() && !lacking.is_empty() {
                let mut known: Vec<&str> = cx
                    .cluster
                    .nodes
                    .iter()
                    .flat_map(|n| n.networks.iter().map(|net| net.name.as_str()))
                    .collect();
                known.sort_unstable();
                known.dedup();
                diags.error(
                    network.at,
                    format!(
                        "<network net>: there is no network `{}` in clconf.xml{}",
                        xml::shorten(network.value),
                        xml::suggest(network.value, &known)
                    ),
                );
                ok = false;
            } else {
                for node_name in &lacking {
                    diags.error(
                        network.at,
                        format!(
                            "<network net>: node `{node_name}` has no network `{}`, so the application could not run there; remove the node from <nodes> or add the network to it in clconf.xml",
                            xml::shorten(network.value)
                        ),
                    );
                    ok = false;
                }
            }
            let mut subnets: Vec<(IpAddr, u8)> = outside.iter().map(|o| (o.1, o.2)).collect();
            subnets.dedup();
            for (subnet, bits) in subnets {
                let on: Vec<&str> =
                    outside.iter().filter(|o| (o.1, o.2) == (subnet, bits)).map(|o| o.0).collect();
                diags.error(
                    address_text.at,
                    format!(
                        "<network ip>: VIP {address} is outside network `{}`, which is {subnet}/{bits} on {}; choose an address in that subnet",
                        network.value,
                        node_list(&on)
                    ),
                );
                ok = false;
            }
        }
        (None, Some(interface)) => {
            let interface_name = read(diags, "<network interface>", interface, value::interface);
            let mut outside: Vec<&str> = Vec::new();
            for node_name in nodes {
                let Some(node) = cx.cluster.node(node_name) else { continue };
                let inside: Vec<(IpAddr, u8)> = node
                    .networks
                    .iter()
                    .filter(|n| value::in_subnet(address, n.address, n.prefix))
                    .map(|n| (n.address, n.prefix))
                    .collect();
                if inside.is_empty() {
                    outside.push(node_name);
                }
                landing.extend(inside);
                if let Some(name) = &interface_name {
                    interfaces.insert(node_name.clone(), name.clone());
                }
            }
            if !outside.is_empty() {
                diags.error(
                    address_text.at,
                    format!(
                        "<network ip>: VIP {address} is outside every network of {}; it could not be reached there",
                        node_list(&outside)
                    ),
                );
                ok = false;
            }
            ok &= interface_name.is_some();
        }
    }
    ok &= check_vip_in_networks(address, prefix, &landing, address_text.at, diags);
    for over in overrides {
        let mut o = Element::new(over);
        let node_attr = o.attr("node");
        let text = o.text();
        o.finish(diags);
        match (node_attr, text) {
            (Some(n), Some(t)) if nodes.iter().any(|x| x == n.value) => {
                match read(diags, "<interface>", t, value::interface) {
                    Some(name) => {
                        interfaces.insert(n.value.to_string(), name);
                    }
                    None => ok = false,
                }
            }
            (Some(n), Some(_)) => {
                diags.error(
                    n.at,
                    format!(
                        "<interface node>: `{}` is not a node allowed to run this application ({})",
                        xml::shorten(n.value),
                        nodes.join(", ")
                    ),
                );
                ok = false;
            }
            _ => {
                diags.error(
                    over.range().start,
                    "<interface>: needs node=\"…\" and the interface name as text, e.g. <interface node=\"node1\">eth0</interface>",
                );
                ok = false;
            }
        }
    }
    for node in &cx.cluster.nodes {
        if node.networks.iter().any(|n| n.address == address) {
            diags.error(address_text.at, format!("<network ip>: {address} is node `{}`'s own address, not a free service address", node.name));
            ok = false;
        }
    }
    for other in cx.other_apps {
        if other.vips.iter().any(|v| v.address == address) {
            diags.error(
                address_text.at,
                format!(
                    "<network ip>: VIP {address} is already used by application `{}`",
                    other.name
                ),
            );
            ok = false;
        }
    }
    if cx.cluster.known_connections.contains(&address) {
        diags.error(
            address_text.at,
            format!("<network ip>: {address} is listed in <net_known_connections> in clconf.xml; a VIP must be an address nothing else uses"),
        );
        ok = false;
    }
    let prefix = prefix?;
    ok.then_some((Vip { address, prefix, interfaces }, address_text.at))
}

/// The VIP `address`/`prefix` inside the node networks `landing`: not their network or
/// broadcast address, and no wider than they are. False when something was reported.
fn check_vip_in_networks(
    address: IpAddr,
    prefix: Option<u8>,
    landing: &[(IpAddr, u8)],
    at: usize,
    diags: &mut Diagnostics<'_>,
) -> bool {
    let mut subnets: Vec<(IpAddr, u8)> =
        landing.iter().map(|&(a, p)| (value::network_of(a, p), p)).collect();
    subnets.sort();
    subnets.dedup();
    let mut ok = true;
    for (network, bits) in subnets {
        if prefix.is_some_and(|p| value::host_address_problem(address, p).is_some()) {
            // Already reported with the VIP's own prefix.
        } else if let Some(problem) = value::host_address_problem(address, bits) {
            diags.error(at, format!("<network ip>: VIP {problem}"));
            ok = false;
        }
        if let Some(p) = prefix.filter(|&p| p < bits) {
            diags.error(
                at,
                format!(
                    "<network prefix>: VIP {address}/{p} is wider than its network {network}/{bits}; use prefix=\"{bits}\" (or longer)"
                ),
            );
            ok = false;
        }
    }
    ok
}

/// "node `a`" or "nodes `a` and `b`".
fn node_list(names: &[&str]) -> String {
    match names {
        [one] => format!("node `{one}`"),
        _ => {
            let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            match quoted.split_last() {
                Some((last, rest)) if !rest.is_empty() => {
                    format!("nodes {} and {last}", rest.join(", "))
                }
                _ => format!("nodes {}", quoted.join(", ")),
            }
        }
    }
}

fn read_storage(
    node: roxmltree::Node<'_, '_>,
    cx: &Context<'_>,
    diags: &mut Diagnostics<'_>,
) -> Option<Vec<Filesystem>> {
    let mut section = Element::new(node);
    let elements = section.children("filesystem");
    for name in crate::replication::STORAGE_ELEMENTS {
        section.children(name); // read by crate::replication
    }
    section.finish(diags);
    let mut found: Vec<Filesystem> = Vec::new();
    // Index into `found` and value position by mount point and by device, for the duplicate
    // checks (maps, so that a file with thousands of filesystems stays fast).
    let mut by_mountpoint: BTreeMap<PathBuf, (usize, usize)> = BTreeMap::new();
    let mut by_device: BTreeMap<PathBuf, (usize, usize)> = BTreeMap::new();
    let mut ok = true;
    for element in elements {
        let mut fs = Element::new(element);
        let device = fs.attr("device");
        let mountpoint = fs.attr("mountpoint");
        let fstype = fs.attr("type");
        let options = fs.attr("options");
        let fsck = fs.attr("fsck");
        if device.is_none() {
            fs.missing_attr(
                "device",
                "<filesystem>: missing attribute `device` (the block device, e.g. /dev/vg01/apache)",
            );
        }
        if mountpoint.is_none() {
            fs.missing_attr(
                "mountpoint",
                "<filesystem>: missing attribute `mountpoint` (the absolute directory to mount it on)",
            );
        }
        if fstype.is_none() {
            fs.missing_attr("type", "<filesystem>: missing attribute `type` (e.g. ext4 or xfs)");
        }
        fs.finish(diags);
        let device_at = device.map(|d| d.at).unwrap_or(element.range().start);
        let mount_at = mountpoint.map(|m| m.at).unwrap_or(element.range().start);
        let device =
            device.and_then(|d| read(diags, "<filesystem device>", d, value::absolute_path));
        let mount = mountpoint
            .and_then(|m| read(diags, "<filesystem mountpoint>", m, value::absolute_path));
        let fstype = fstype.and_then(|t| read(diags, "<filesystem type>", t, value::fs_type));
        let fsck = match fsck {
            Some(f) => read(diags, "<filesystem fsck>", f, value::switch),
            None => Some(true),
        };
        let mut usable = true;
        if let Some(mountpoint) = &mount {
            if mountpoint == std::path::Path::new("/") {
                diags.error(
                    mount_at,
                    "<filesystem mountpoint>: `/` cannot be an application filesystem",
                );
                usable = false;
            } else if let Some(&(first, at)) = by_mountpoint.get(mountpoint) {
                let (line, _) = diags.position(at);
                diags.error(
                    mount_at,
                    format!(
                        "<filesystem mountpoint>: {} is already the mount point of {} (line {line}); each filesystem needs its own",
                        mountpoint.display(),
                        found[first].device.display()
                    ),
                );
                usable = false;
            } else if let Some(app) = cx
                .other_apps
                .iter()
                .find(|a| a.mounted_filesystems().any(|f| &f.mountpoint == mountpoint))
            {
                diags.error(
                    mount_at,
                    format!(
                        "<filesystem mountpoint>: {} is already a mount point of application `{}`",
                        mountpoint.display(),
                        app.name
                    ),
                );
                usable = false;
            }
        }
        if let Some(device) = &device {
            if let Some(&(first, at)) = by_device.get(device) {
                let (line, _) = diags.position(at);
                diags.error(
                    device_at,
                    format!(
                        "<filesystem device>: {} is already mounted on {} (line {line}); a device can hold only one filesystem",
                        device.display(),
                        found[first].mountpoint.display()
                    ),
                );
                usable = false;
            } else if let Some(app) =
                cx.other_apps.iter().find(|a| a.block_devices().any(|d| &d == device))
            {
                diags.error(
                    device_at,
                    format!(
                        "<filesystem device>: {} already belongs to application `{}`; two applications must not share a device",
                        device.display(),
                        app.name
                    ),
                );
                usable = false;
            }
        }
        match (device, mount, fstype, fsck) {
            (Some(device), Some(mountpoint), Some(fstype), Some(fsck)) if usable => {
                let filesystem = Filesystem {
                    device,
                    mountpoint,
                    fstype,
                    options: options.map(|o| o.value.to_string()).unwrap_or_default(),
                    fsck,
                };
                by_mountpoint.insert(filesystem.mountpoint.clone(), (found.len(), mount_at));
                by_device.insert(filesystem.device.clone(), (found.len(), device_at));
                found.push(filesystem);
            }
            _ => ok = false,
        }
    }
    ok.then_some(found)
}

fn check_executable(
    cx: &Context<'_>,
    what: &str,
    value: Spanned<'_>,
    diags: &mut Diagnostics<'_>,
) -> Option<PathBuf> {
    let path = PathBuf::from(value.value);
    if !path.is_absolute() {
        diags.error(
            value.at,
            format!("{what}: `{}` must be an absolute path", xml::shorten(value.value)),
        );
        return None;
    }
    match cx.host.file_kind(&path) {
        FileKind::Executable => match cx.host.untrusted(&path, false) {
            None => Some(path),
            Some(problem) => {
                diags.error(value.at, format!("{what}: {problem}"));
                None
            }
        },
        FileKind::Missing => {
            diags.error(value.at, format!("{what}: `{}` does not exist on this node", value.value));
            None
        }
        FileKind::Directory => {
            diags
                .error(value.at, format!("{what}: `{}` is a directory, not a script", value.value));
            None
        }
        FileKind::NotExecutable => {
            diags.error(
                value.at,
                format!("{what}: `{}` is not executable; run chmod +x on it", value.value),
            );
            None
        }
    }
}

pub(crate) fn ranged(lo: Duration, hi: Duration) -> impl Fn(&str) -> Result<Duration, String> {
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

fn read_application(
    node: roxmltree::Node<'_, '_>,
    cx: &Context<'_>,
    diags: &mut Diagnostics<'_>,
) -> Option<(Script, Script)> {
    let mut app = Element::new(node);
    let start = app.child("startscript", diags);
    let stop = app.child("stopscript", diags);
    let max_start = app.child_text("maxstarttime", diags);
    let max_stop = app.child_text("maxstoptime", diags);
    if start.is_none() {
        app.missing_child(
            "startscript",
            "<application>: missing <startscript> (the absolute path of the script that starts the application)",
        );
    }
    if stop.is_none() {
        app.missing_child(
            "stopscript",
            "<application>: missing <stopscript> (the absolute path of the script that stops the application)",
        );
    }
    app.finish(diags);
    // A 1.0 time limit in whole seconds; `script` is the element whose timeout it sets.
    let legacy_seconds = |found: Option<(Spanned<'_>, usize)>,
                          element: &str,
                          script: Option<roxmltree::Node<'_, '_>>,
                          diags: &mut Diagnostics<'_>|
     -> Option<Option<Duration>> {
        let (text, at) = match found {
            Some(found) => found,
            None => return Some(None),
        };
        let script_name = if element == "maxstarttime" { "startscript" } else { "stopscript" };
        let seconds = read(diags, &format!("<{element}>"), text, |t| {
            value::count(t, 1, 3600).map_err(|_| {
                format!(
                    "`{}` must be a whole number of seconds from 1 to 3600 (this 1.0 element takes no unit)",
                    xml::shorten(t)
                )
            })
        });
        if script.is_some_and(|s| s.has_attribute("timeout")) {
            diags.warning(
                at,
                format!("<{element}> is ignored because <{script_name}> has a timeout attribute; remove <{element}>"),
            );
        } else {
            let example = seconds.map(|s| format!("{s}s")).unwrap_or_else(|| "…".to_string());
            diags.warning(
                at,
                format!("<{element}> is from Linuxha.net 1.0; it still works, but write timeout=\"{example}\" on <{script_name}> instead"),
            );
        }
        seconds.map(|s| Some(Duration::from_secs(u64::from(s))))
    };
    let legacy_start = legacy_seconds(max_start, "maxstarttime", start, diags);
    let legacy_stop = legacy_seconds(max_stop, "maxstoptime", stop, diags);
    let script = |element: Option<roxmltree::Node<'_, '_>>,
                  name: &str,
                  legacy: Option<Option<Duration>>,
                  diags: &mut Diagnostics<'_>|
     -> Option<Script> {
        let element = element?;
        let mut e = Element::new(element);
        let timeout = e.attr("timeout");
        let path = e.text();
        e.finish(diags);
        let Some(path) = path else {
            diags.error(
                element.range().start,
                format!("<{name}> is empty; give the script's absolute path"),
            );
            return None;
        };
        let path = check_executable(cx, &format!("<{name}>"), path, diags);
        let timeout = match timeout {
            Some(t) => read(
                diags,
                &format!("<{name} timeout>"),
                t,
                ranged(Duration::from_secs(1), Duration::from_secs(3600)),
            ),
            None => Some(legacy?.unwrap_or(DEFAULT_SCRIPT_TIMEOUT)),
        };
        Some(Script { path: path?, timeout: timeout? })
    };
    let start = script(start, "startscript", legacy_start, diags);
    let stop = script(stop, "stopscript", legacy_stop, diags);
    Some((start?, stop?))
}

fn read_monitors(
    node: roxmltree::Node<'_, '_>,
    has_vip: bool,
    cx: &Context<'_>,
    diags: &mut Diagnostics<'_>,
) -> Option<Vec<Monitor>> {
    let mut section = Element::new(node);
    let mut elements = section.children("process");
    elements.extend(section.children("tcp"));
    elements.extend(section.children("command"));
    elements.sort_by_key(|e| e.range().start);
    section.finish(diags);
    let mut monitors = Vec::new();
    let mut ok = true;
    for element in elements {
        let kind_name = element.tag_name().name();
        let mut m = Element::new(element);
        let interval = m.attr("interval");
        let timeout = m.attr("timeout");
        let restarts = m.attr("restarts");
        let window = m.attr("window");
        let kind = match kind_name {
            "process" => {
                let name = m.attr("name");
                match name {
                    Some(n) if !n.value.is_empty() && n.value.len() <= 15 => {
                        Some(MonitorKind::Process { name: n.value.to_string() })
                    }
                    Some(n) => {
                        diags.error(n.at, format!("<process name>: `{}` must be 1 to 15 characters (the kernel's process name limit)", xml::shorten(n.value)));
                        None
                    }
                    None => {
                        m.missing_attr(
                            "name",
                            "<process>: missing attribute `name` (the process name as ps shows it)",
                        );
                        None
                    }
                }
            }
            "tcp" => {
                let port = m.attr("port");
                let address = m.attr("address");
                let address = match address {
                    Some(a) => read(diags, "<tcp address>", a, value::ip).map(Some),
                    None if has_vip => Some(None),
                    None => {
                        m.missing_attr(
                            "address",
                            "<tcp>: missing attribute `address`: without it the first VIP is checked, but this application has no VIP",
                        );
                        None
                    }
                };
                let port = match port {
                    Some(p) => read(diags, "<tcp port>", p, value::port),
                    None => {
                        m.missing_attr(
                            "port",
                            "<tcp>: missing attribute `port` (the TCP port the application listens on)",
                        );
                        None
                    }
                };
                match (address, port) {
                    (Some(address), Some(port)) => Some(MonitorKind::Tcp { address, port }),
                    _ => None,
                }
            }
            _ => {
                let text = m.text();
                match text {
                    Some(t) => check_executable(cx, "<command>", t, diags)
                        .map(|path| MonitorKind::Command { path }),
                    None => {
                        diags.error(
                            element.range().start,
                            "<command> is empty; give the check's absolute path",
                        );
                        None
                    }
                }
            }
        };
        m.finish(diags);
        let interval = match interval {
            Some(t) => read(
                diags,
                &format!("<{kind_name} interval>"),
                t,
                ranged(Duration::from_millis(100), Duration::from_secs(3600)),
            ),
            None => Some(Duration::from_secs(10)),
        };
        let timeout = match timeout {
            Some(t) => read(
                diags,
                &format!("<{kind_name} timeout>"),
                t,
                ranged(Duration::from_millis(50), Duration::from_secs(600)),
            ),
            None => Some(Duration::from_secs(5)),
        };
        let restarts = match restarts {
            Some(t) => {
                read(diags, &format!("<{kind_name} restarts>"), t, |v| value::count(v, 0, 100))
            }
            None => Some(3),
        };
        let window = match window {
            Some(t) => read(
                diags,
                &format!("<{kind_name} window>"),
                t,
                ranged(Duration::from_secs(1), Duration::from_secs(86_400)),
            ),
            None => Some(Duration::from_secs(600)),
        };
        match (kind, interval, timeout, restarts, window) {
            (Some(kind), Some(interval), Some(timeout), Some(restarts), Some(window)) => {
                monitors.push(Monitor { kind, interval, timeout, restarts, window });
            }
            _ => ok = false,
        }
    }
    ok.then_some(monitors)
}
