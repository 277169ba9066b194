//! The Prometheus text exposition format (version 0.0.4) of a status snapshot and the
//! [`History`]: one function, no IO, so every line is unit-tested.

use std::fmt::Write as _;

use cl_wire::msg::{
    ApplicationState, ClusterState, ClusterStatus, LeaseState, LinkState, LocalStateView,
    NodeState, TakeoverStage,
};

use super::history::History;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The states an application can be in (cldaemon's `clstat` names).
pub const APPLICATION_STATES: &[ApplicationState] = ApplicationState::ALL;
/// The states a node can be in, as this node sees it.
pub const NODE_STATES: &[NodeState] = NodeState::ALL;
/// This node's standing while formed (`unknown` is clstat's, when cldaemon does not answer).
pub const LOCAL_STATES: [LocalStateView; 3] =
    [LocalStateView::Connected, LocalStateView::Undecided, LocalStateView::Isolated];
/// DRBD roles (cl-core `storage::Role`).
const ROLES: [&str; 3] = ["Primary", "Secondary", "Unknown"];
/// DRBD disk states (cl-core `storage::DiskState`).
const DISK_STATES: [&str; 11] = [
    "Diskless",
    "Attaching",
    "Detaching",
    "Failed",
    "Negotiating",
    "Inconsistent",
    "Outdated",
    "DUnknown",
    "Consistent",
    "UpToDate",
    "Unknown",
];
/// DRBD connection states (cl-core `storage::ConnectionState`).
const CONNECTION_STATES: [&str; 7] = [
    "StandAlone",
    "Connecting",
    "Connected",
    "Disconnecting",
    "NetworkFailure",
    "ProtocolError",
    "Unknown",
];

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family being written: its samples are collected, and the family is left out
/// when it has none (a `TYPE` line without samples helps nobody).
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: String,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        Family { name, kind, help, samples: String::new() }
    }

    /// A sample of the family's own name.
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.sample_of(self.name, labels, value);
    }

    /// A sample named `name` (a histogram's `_bucket`, `_sum`, `_count`).
    fn sample_of(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.samples.push_str(name);
        if !labels.is_empty() {
            self.samples.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.samples.push(',');
                }
                let _ = write!(self.samples, "{label}=\"{}\"", escape_label(value));
            }
            self.samples.push('}');
        }
        let _ = writeln!(self.samples, " {}", number(value));
    }

    /// One sample per entry of `all`, 1 for `current` and 0 for the others (a state set).
    fn one_hot(&mut self, labels: &[(&str, &str)], key: &str, all: &[&str], current: &str) {
        let mut labels = labels.to_vec();
        labels.push((key, ""));
        let known = all.contains(&current);
        for state in all.iter().copied().chain((!known).then_some(current)) {
            if let Some(last) = labels.last_mut() {
                last.1 = state;
            }
            self.sample(&labels, if state == current { 1.0 } else { 0.0 });
        }
    }

    fn write_to(self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.name());
        out.push_str(&self.samples);
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format wants.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A sample value: integers without a fraction, infinities as `+Inf`/`-Inf`.
fn number(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    format!("{value}")
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The name serde gives a unit enum variant (DRBD's state names).
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "Unknown".into(),
    }
}

/// The metrics of `status` and `history`, in the text exposition format.
pub fn render(status: &ClusterStatus, history: &History) -> String {
    let mut out = String::new();
    for family in cluster_families(status) {
        family.write_to(&mut out);
    }
    for family in application_families(status, history) {
        family.write_to(&mut out);
    }
    for family in guard_families(status, history) {
        family.write_to(&mut out);
    }
    for family in volume_families(status) {
        family.write_to(&mut out);
    }
    for family in listener_families(status) {
        family.write_to(&mut out);
    }
    notification_family(status).write_to(&mut out);
    out
}

fn cluster_families(status: &ClusterStatus) -> Vec<Family> {
    let mut info = Family::new(
        "linuxha_node_info",
        Kind::Gauge,
        "Always 1: the cluster, the node answering and its linuxha version.",
    );
    info.sample(
        &[
            ("cluster", &status.cluster),
            ("node", &status.local),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    );
    let mut formed = Family::new(
        "linuxha_cluster_formed",
        Kind::Gauge,
        "1 when the cluster is formed on this node (its cluster daemons run).",
    );
    formed.sample(&[], bool_value(status.state == ClusterState::Formed));
    let mut config = Family::new(
        "linuxha_config_version",
        Kind::Gauge,
        "Version of the built cluster configuration on this node.",
    );
    config.sample(&[], status.config_version as f64);
    let mut local = Family::new(
        "linuxha_local_state",
        Kind::Gauge,
        "This node's standing, one series per state, 1 for the current one (while formed).",
    );
    if status.state == ClusterState::Formed {
        let states = LOCAL_STATES.map(LocalStateView::name);
        local.one_hot(&[], "state", &states, status.local_state.name());
    }
    let mut nodes = Family::new(
        "linuxha_node_state",
        Kind::Gauge,
        "Each node's state as this node sees it, one series per state, 1 for the current one.",
    );
    let mut link_up = Family::new(
        "linuxha_heartbeat_link_up",
        Kind::Gauge,
        "1 when heartbeats from the node arrive on the network.",
    );
    let mut link_age = Family::new(
        "linuxha_heartbeat_link_last_heard_age_seconds",
        Kind::Gauge,
        "Seconds since the last heartbeat from the node on the network (absent before the first).",
    );
    let node_states: Vec<&str> = NODE_STATES.iter().map(|s| s.name()).collect();
    for node in &status.nodes {
        nodes.one_hot(&[("node", &node.name)], "state", &node_states, node.state.name());
        for link in &node.links {
            let labels = [("node", node.name.as_str()), ("network", link.network.as_str())];
            link_up.sample(&labels, bool_value(link.state == LinkState::Up));
            if let Some(ms) = link.last_heard_ms {
                link_age.sample(&labels, seconds(ms));
            }
        }
    }
    let mut reachable = Family::new(
        "linuxha_known_connection_reachable",
        Kind::Gauge,
        "1 when the known connection answered recently.",
    );
    let mut reply_age = Family::new(
        "linuxha_known_connection_last_reply_age_seconds",
        Kind::Gauge,
        "Seconds since the known connection last answered (absent before its first answer).",
    );
    for known in &status.known_connections {
        let address = known.address.to_string();
        reachable.sample(&[("address", &address)], bool_value(known.reachable));
        if let Some(ms) = known.last_reply_ms {
            reply_age.sample(&[("address", &address)], seconds(ms));
        }
    }
    let mut alarms = Family::new(
        "linuxha_alarms",
        Kind::Gauge,
        "Conditions that need the administrator now (clstat's alarms).",
    );
    alarms.sample(&[], status.alarms.len() as f64);
    let mut warnings =
        Family::new("linuxha_warnings", Kind::Gauge, "Warnings in clstat (a lost link, …).");
    warnings.sample(&[], status.warnings.len() as f64);
    vec![
        info, formed, config, local, nodes, link_up, link_age, reachable, reply_age, alarms,
        warnings,
    ]
}

fn application_families(status: &ClusterStatus, history: &History) -> Vec<Family> {
    let mut state = Family::new(
        "linuxha_application_state",
        Kind::Gauge,
        "Each application's state, one series per state, 1 for the current one.",
    );
    let mut node = Family::new(
        "linuxha_application_node",
        Kind::Gauge,
        "1 for the node an application is active on, 0 for the other nodes.",
    );
    let mut recent = Family::new(
        "linuxha_application_recent_restarts",
        Kind::Gauge,
        "Local restarts of the application within its monitors' window.",
    );
    let mut monitor_up = Family::new(
        "linuxha_monitor_up",
        Kind::Gauge,
        "1 when the monitor's latest result on this node is ok.",
    );
    let mut monitor_age = Family::new(
        "linuxha_monitor_result_age_seconds",
        Kind::Gauge,
        "Seconds since the monitor's latest result on this node.",
    );
    let mut resource_up = Family::new(
        "linuxha_resource_up",
        Kind::Gauge,
        "1 when the resource's latest monitor result on this node is running.",
    );
    let mut resource_age = Family::new(
        "linuxha_resource_result_age_seconds",
        Kind::Gauge,
        "Seconds since the resource's latest monitor result on this node.",
    );
    let app_states: Vec<&str> = APPLICATION_STATES.iter().map(|s| s.name()).collect();
    for app in &status.applications {
        let name = app.name.as_str();
        state.one_hot(&[("application", name)], "state", &app_states, app.state.name());
        for n in &status.nodes {
            let here = app.node.as_deref() == Some(n.name.as_str());
            node.sample(&[("application", name), ("node", &n.name)], bool_value(here));
        }
        recent.sample(&[("application", name)], f64::from(app.restarts));
        for m in &app.monitors {
            let labels = [("application", name), ("check", m.check.as_str())];
            monitor_up.sample(&labels, bool_value(m.result == "ok"));
            monitor_age.sample(&labels, seconds(m.age_ms));
        }
        for r in &app.resources {
            let Some(result) = &r.result else { continue };
            let labels = [("application", name), ("resource", r.id.as_str()), ("type", &r.kind)];
            resource_up.sample(&labels, bool_value(result == "running"));
            if let Some(ms) = r.age_ms {
                resource_age.sample(&labels, seconds(ms));
            }
        }
    }
    let mut restarts = Family::new(
        "linuxha_application_restarts_total",
        Kind::Counter,
        "Local restarts of the application after a failed monitor, since cldaemon started.",
    );
    for (app, total) in &history.restarts {
        restarts.sample(&[("application", app)], *total as f64);
    }
    let mut failovers = Family::new(
        "linuxha_failovers_total",
        Kind::Counter,
        "Applications this node took over from a node declared down, since cldaemon started.",
    );
    let mut duration = Family::new(
        "linuxha_failover_duration_seconds",
        Kind::Histogram,
        "Time from this node declaring the node running the application down (after the heartbeat timeout) to the application running here.",
    );
    for (app, f) in &history.failovers {
        failovers.sample(&[("application", app)], f.total as f64);
        for (bound, count) in f.duration.cumulative() {
            let le = number(bound);
            duration.sample_of(
                "linuxha_failover_duration_seconds_bucket",
                &[("application", app), ("le", &le)],
                count as f64,
            );
        }
        duration.sample_of(
            "linuxha_failover_duration_seconds_bucket",
            &[("application", app), ("le", "+Inf")],
            f.duration.count as f64,
        );
        duration.sample_of(
            "linuxha_failover_duration_seconds_sum",
            &[("application", app)],
            f.duration.sum,
        );
        duration.sample_of(
            "linuxha_failover_duration_seconds_count",
            &[("application", app)],
            f.duration.count as f64,
        );
    }
    vec![
        state,
        node,
        recent,
        restarts,
        failovers,
        duration,
        monitor_up,
        monitor_age,
        resource_up,
        resource_age,
    ]
}

fn guard_families(status: &ClusterStatus, history: &History) -> Vec<Family> {
    let stages: Vec<&str> = TakeoverStage::ALL.iter().map(|s| s.name()).collect();
    let mut stage = Family::new(
        "linuxha_takeover_stage",
        Kind::Gauge,
        "Where the takeover of each peer stands (idle while it is up), 1 for the current stage.",
    );
    let mut attempts = Family::new(
        "linuxha_takeover_fence_attempts",
        Kind::Gauge,
        "Fence attempts in the current takeover of the peer.",
    );
    for t in &status.guard.peers {
        stage.one_hot(&[("peer", &t.peer)], "stage", &stages, t.stage.name());
        attempts.sample(&[("peer", &t.peer)], f64::from(t.fence_attempts));
    }
    let mut fence_total = Family::new(
        "linuxha_fence_attempts_total",
        Kind::Counter,
        "Times this node ran the peer's fence agent, since cldaemon started.",
    );
    for (peer, total) in &history.fence_attempts {
        fence_total.sample(&[("peer", peer)], *total as f64);
    }
    let states: Vec<&str> = LeaseState::ALL.iter().map(|s| s.name()).collect();
    let mut lease = Family::new(
        "linuxha_lease_state",
        Kind::Gauge,
        "The arbitrator's lease as this node sees it, 1 for the current state (with an arbitrator).",
    );
    let mut holder = Family::new(
        "linuxha_lease_holder",
        Kind::Gauge,
        "1 for the node known to hold the arbitrator's lease.",
    );
    let mut remaining = Family::new(
        "linuxha_lease_remaining_seconds",
        Kind::Gauge,
        "How long this node still holds the arbitrator's lease without a renewal.",
    );
    if let Some(l) = &status.guard.lease {
        lease.one_hot(&[], "state", &states, l.state.name());
        if let Some(h) = &l.holder {
            holder.sample(&[("node", h)], 1.0);
        }
        if let Some(ms) = l.remaining_ms {
            remaining.sample(&[], seconds(ms));
        }
    }
    vec![stage, attempts, fence_total, lease, holder, remaining]
}

fn volume_families(status: &ClusterStatus) -> Vec<Family> {
    let mut role = Family::new(
        "linuxha_volume_role",
        Kind::Gauge,
        "The replicated volume's DRBD role on this node, 1 for the current one.",
    );
    let mut peer_role = Family::new(
        "linuxha_volume_peer_role",
        Kind::Gauge,
        "The replicated volume's DRBD role on the peer, 1 for the current one.",
    );
    let mut disk = Family::new(
        "linuxha_volume_disk_state",
        Kind::Gauge,
        "The replicated volume's disk state on this node, 1 for the current one.",
    );
    let mut peer_disk = Family::new(
        "linuxha_volume_peer_disk_state",
        Kind::Gauge,
        "The replicated volume's disk state on the peer, 1 for the current one.",
    );
    let mut connection = Family::new(
        "linuxha_volume_connection_state",
        Kind::Gauge,
        "The replicated volume's connection to the peer, 1 for the current state.",
    );
    let mut out_of_sync = Family::new(
        "linuxha_volume_out_of_sync_bytes",
        Kind::Gauge,
        "Data of the replicated volume not yet in sync with the peer.",
    );
    let mut size =
        Family::new("linuxha_volume_size_bytes", Kind::Gauge, "Size of the replicated device.");
    let mut split_brain = Family::new(
        "linuxha_volume_split_brain",
        Kind::Gauge,
        "1 when DRBD found an unresolved split brain on the volume.",
    );
    let mut suspended = Family::new(
        "linuxha_volume_io_suspended",
        Kind::Gauge,
        "1 while I/O on the volume is suspended (fence-peer handler running or failed).",
    );
    for app in &status.applications {
        for v in &app.volumes {
            let Some(s) = &v.state else { continue };
            let labels = [("application", app.name.as_str()), ("resource", v.resource.as_str())];
            role.one_hot(&labels, "role", &ROLES, &serde_name(&s.role));
            peer_role.one_hot(&labels, "role", &ROLES, &serde_name(&s.peer_role));
            disk.one_hot(&labels, "state", &DISK_STATES, &serde_name(&s.disk));
            peer_disk.one_hot(&labels, "state", &DISK_STATES, &serde_name(&s.peer_disk));
            connection.one_hot(&labels, "state", &CONNECTION_STATES, &serde_name(&s.connection));
            out_of_sync.sample(&labels, s.out_of_sync_kib.saturating_mul(1024) as f64);
            size.sample(&labels, s.size_kib.saturating_mul(1024) as f64);
            split_brain.sample(&labels, bool_value(s.split_brain));
            suspended.sample(&labels, bool_value(s.suspended));
        }
    }
    vec![role, peer_role, disk, peer_disk, connection, out_of_sync, size, split_brain, suspended]
}

fn listener_families(status: &ClusterStatus) -> Vec<Family> {
    let mut open = Family::new(
        "linuxha_listener_open_connections",
        Kind::Gauge,
        "Connections open now on a daemon's listening socket.",
    );
    let mut accepted = Family::new(
        "linuxha_listener_accepted_total",
        Kind::Counter,
        "Connections accepted and served on a daemon's listening socket.",
    );
    let mut rejected = Family::new(
        "linuxha_listener_rejected_total",
        Kind::Counter,
        "Connections or requests a daemon's listening socket refused or rejected, by reason.",
    );
    for l in &status.listeners {
        let labels = [("daemon", l.daemon.name()), ("listener", l.listener.as_str())];
        open.sample(&labels, l.open as f64);
        accepted.sample(&labels, l.counters.accepted as f64);
        let c = &l.counters;
        for (reason, n) in [
            ("refused_per_address", c.refused_per_address),
            ("refused_total", c.refused_total),
            ("accept_error", c.accept_errors),
            ("timeout", c.timeouts),
            ("bad_input", c.bad_input),
        ] {
            let labels = [labels[0], labels[1], ("reason", reason)];
            rejected.sample(&labels, n as f64);
        }
    }
    vec![open, accepted, rejected]
}

/// What the `<notify>` programs did, from the counters clstat shows (`counters.notify`).
fn notification_family(status: &ClusterStatus) -> Family {
    let mut total = Family::new(
        "linuxha_notifications_total",
        Kind::Counter,
        "Notifier runs by result (sent: exited 0; failed: failed, timed out or not run) and events dropped because the queue was full.",
    );
    let counters = &status.counters["notify"];
    for (result, key) in
        [("sent", "notify_sent"), ("failed", "notify_failed"), ("dropped", "notify_dropped")]
    {
        if let Some(n) = counters[key].as_u64() {
            total.sample(&[("result", result)], n as f64);
        }
    }
    total
}
