//! `<resources>` in `appconf.xml`: OCF resource agents and LSB init scripts that an
//! application runs besides (or instead of) its start and stop scripts.
//!
//! Each `<resource>` is checked against what the agent says of itself (its meta-data, through
//! [`Host::ocf_agent`]): unknown parameters, missing required ones and values of `unique`
//! parameters used twice are errors at their place in the file, and the agent's
//! `validate-all` runs when it has one. Time limits the file leaves out come from the
//! agent's advised timeouts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::{AgentKind, AgentMeta};
use crate::appconf::{ranged, AppConfig, DEFAULT_SCRIPT_TIMEOUT};
use crate::diag::Diagnostics;
use crate::value::{self, read};
use crate::xml::{self, Element};
use crate::{AgentLookup, FileKind, Host};

/// An OCF action's time limit when neither the file nor the agent's meta-data gives one
/// (Pacemaker's default operation timeout).
pub const DEFAULT_OCF_TIMEOUT: Duration = Duration::from_secs(20);
/// Monitor interval when neither the file nor the agent gives one.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(10);
/// Where LSB init scripts live (under the node's root).
pub const INIT_DIR: &str = "/etc/init.d";

/// One resource of an application, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Its name, unique in the cluster (`OCF_RESOURCE_INSTANCE`).
    pub id: String,
    /// What runs it.
    #[serde(rename = "type")]
    pub kind: AgentKind,
    /// Parameters (`OCF_RESKEY_<name>`), as written.
    pub params: BTreeMap<String, String>,
    /// Time limit of `start`.
    pub start_timeout: Duration,
    /// Time limit of `stop`.
    pub stop_timeout: Duration,
    /// Time between `monitor` (LSB: `status`) runs while the application runs.
    pub monitor_interval: Duration,
    /// Time limit of one `monitor`.
    pub monitor_timeout: Duration,
    /// Local restarts before the application fails over.
    pub restarts: u32,
    /// Failures older than this are forgotten.
    pub window: Duration,
}

/// Read `<resources>`: None when anything in it was wrong (and reported).
pub(crate) fn read_resources(
    node: roxmltree::Node<'_, '_>,
    host: &dyn Host,
    other_apps: &[AppConfig],
    diags: &mut Diagnostics<'_>,
) -> Option<Vec<Resource>> {
    let mut section = Element::new(node);
    let elements = section.children("resource");
    section.finish(diags);
    let mut found: Vec<Resource> = Vec::new();
    let mut ok = true;
    // Unique parameter values seen so far: (agent, parameter, value) → resource id.
    let mut unique: BTreeMap<(AgentKind, String, String), String> = BTreeMap::new();
    for app in other_apps {
        for r in &app.resources {
            for (name, value) in &r.params {
                unique.insert(
                    (r.kind.clone(), name.clone(), value.clone()),
                    format!("{} of application `{}`", r.id, app.name),
                );
            }
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for element in elements {
        match read_resource(element, host, other_apps, &mut ids, &mut unique, diags) {
            Some(r) => found.push(r),
            None => ok = false,
        }
    }
    ok.then_some(found)
}

fn read_resource(
    element: roxmltree::Node<'_, '_>,
    host: &dyn Host,
    other_apps: &[AppConfig],
    ids: &mut std::collections::BTreeSet<String>,
    unique: &mut BTreeMap<(AgentKind, String, String), String>,
    diags: &mut Diagnostics<'_>,
) -> Option<Resource> {
    let at = element.range().start;
    let mut e = Element::new(element);
    let kind = e.attr("type");
    let id = e.attr("id");
    let start_timeout = e.attr("start_timeout");
    let stop_timeout = e.attr("stop_timeout");
    let monitor_interval = e.attr("monitor_interval");
    let monitor_timeout = e.attr("monitor_timeout");
    let restarts = e.attr("restarts");
    let window = e.attr("window");
    let params = e.children("param");
    if kind.is_none() {
        e.missing_attr(
            "type",
            "<resource>: missing attribute `type`: ocf:<provider>:<agent> (e.g. ocf:heartbeat:IPaddr2) or lsb:<init script>",
        );
    }
    e.finish(diags);
    let kind = read(diags, "<resource type>", kind?, AgentKind::parse)?;
    let kind_at = element.attribute_node("type").map(|a| a.range_value().start).unwrap_or(at);
    let id = match id {
        Some(i) => read(diags, "<resource id>", i, |t| value::name(t, "resource id"))?,
        None => kind.short_name().to_string(),
    };
    let ctx = format!("<resource id=\"{id}\" type=\"{kind}\">");
    let id_at = element.attribute_node("id").map(|a| a.range_value().start).unwrap_or(at);
    let mut ok = true;
    if !ids.insert(id.clone()) {
        diags.error(
            id_at,
            format!("{ctx}: resource id `{id}` is used twice in this application; give each resource its own id=\"…\""),
        );
        ok = false;
    } else if let Some(app) = other_apps.iter().find(|a| a.resources.iter().any(|r| r.id == id)) {
        diags.error(
            id_at,
            format!("{ctx}: resource id `{id}` is already used by application `{}`; ids are the agents' instance names and must be unique in the cluster", app.name),
        );
        ok = false;
    }

    // Parameters as written, with where each name and value is.
    let mut written: BTreeMap<String, String> = BTreeMap::new();
    let mut places: Vec<(String, usize, usize)> = Vec::new();
    for param in params {
        let mut p = Element::new(param);
        let name = p.attr("name");
        let val = p.attr("value");
        if name.is_none() {
            p.missing_attr("name", "<param>: missing attribute `name` (the agent's parameter)");
        }
        if val.is_none() {
            p.missing_attr("value", "<param>: missing attribute `value`");
        }
        p.finish(diags);
        let (Some(name), Some(val)) = (name, val) else {
            ok = false;
            continue;
        };
        let valid = !name.value.is_empty()
            && name.value.len() <= 64
            && name.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            diags.error(
                name.at,
                format!(
                    "<param name>: `{}` must be 1 to 64 letters, digits or `_` (it becomes OCF_RESKEY_<name>)",
                    xml::shorten(name.value)
                ),
            );
            ok = false;
        } else if written.contains_key(name.value) {
            diags.error(name.at, format!("{ctx}: parameter `{}` is given twice", name.value));
            ok = false;
        } else {
            written.insert(name.value.to_string(), val.value.to_string());
            places.push((name.value.to_string(), name.at, val.at));
        }
    }

    // What the agent says of itself.
    let meta: Option<AgentMeta> = match &kind {
        AgentKind::Ocf { provider, agent } => match host.ocf_agent(provider, agent) {
            AgentLookup::Found(meta) => Some(meta),
            AgentLookup::Missing(reason) => {
                diags.error(kind_at, format!("<resource type>: OCF agent `{kind}` {reason}"));
                ok = false;
                None
            }
            AgentLookup::Unchecked => None,
        },
        AgentKind::Lsb { name } => {
            let path = format!("{INIT_DIR}/{name}");
            let problem = match host.file_kind(std::path::Path::new(&path)) {
                FileKind::Executable => host.untrusted(std::path::Path::new(&path), false),
                FileKind::Missing => Some(format!("{path} does not exist on this node")),
                FileKind::Directory => Some(format!("{path} is a directory, not a script")),
                FileKind::NotExecutable => {
                    Some(format!("{path} is not executable; run chmod +x on it"))
                }
            };
            if let Some(problem) = problem {
                diags.error(
                    kind_at,
                    format!("<resource type>: LSB init script `{name}`: {problem}"),
                );
                ok = false;
            }
            for (name, at, _) in &places {
                diags.error(
                    *at,
                    format!("{ctx}: parameter `{name}`: LSB init scripts take no parameters"),
                );
                ok = false;
            }
            None
        }
    };
    if let Some(meta) = &meta {
        let known: Vec<&str> = meta.parameters.iter().map(|p| p.name.as_str()).collect();
        for (name, name_at, value_at) in &places {
            match meta.parameter(name) {
                None => {
                    let hint = xml::suggest(name, &known);
                    let hint = if hint.is_empty() {
                        format!("; it takes: {}", known.join(", "))
                    } else {
                        hint
                    };
                    diags.error(
                        *name_at,
                        format!("{ctx}: `{kind}` has no parameter `{}`{hint}", xml::shorten(name)),
                    );
                    ok = false;
                }
                Some(p) if p.unique => {
                    let value = written.get(name).cloned().unwrap_or_default();
                    let key = (kind.clone(), name.clone(), value.clone());
                    if let Some(other) = unique.get(&key) {
                        diags.error(
                            *value_at,
                            format!("{ctx}: parameter `{name}` = `{}` is already used by resource {other}; the agent requires each resource to have its own", xml::shorten(&value)),
                        );
                        ok = false;
                    } else {
                        unique.insert(key, id.clone());
                    }
                }
                Some(_) => {}
            }
        }
        for p in meta.parameters.iter().filter(|p| p.required && !written.contains_key(&p.name)) {
            let what =
                if p.shortdesc.is_empty() { String::new() } else { format!(" ({})", p.shortdesc) };
            diags.error(
                at,
                format!(
                    "{ctx}: missing required parameter `{}`{what}; add <param name=\"{}\" value=\"…\"/>",
                    p.name, p.name
                ),
            );
            ok = false;
        }
    }

    // Time limits: the file's, else the agent's advice, else the defaults.
    let advised = |action: &str| {
        meta.as_ref()
            .and_then(|m| m.action(action))
            .and_then(|a| a.timeout)
            .map(|t| t.max(Duration::from_secs(1)))
    };
    let default_timeout = match kind {
        AgentKind::Ocf { .. } => DEFAULT_OCF_TIMEOUT,
        AgentKind::Lsb { .. } => DEFAULT_SCRIPT_TIMEOUT,
    };
    let limit = ranged(Duration::from_secs(1), Duration::from_secs(3600));
    let mut time = |value: Option<xml::Spanned<'_>>, attr: &str, fallback: Duration| match value {
        Some(v) => read(diags, &format!("<resource {attr}>"), v, &limit),
        None => Some(fallback),
    };
    let start_timeout =
        time(start_timeout, "start_timeout", advised("start").unwrap_or(default_timeout));
    let stop_timeout =
        time(stop_timeout, "stop_timeout", advised("stop").unwrap_or(default_timeout));
    let monitor_timeout = time(
        monitor_timeout,
        "monitor_timeout",
        advised(if matches!(kind, AgentKind::Lsb { .. }) { "status" } else { "monitor" })
            .unwrap_or(DEFAULT_OCF_TIMEOUT),
    );
    let advised_interval = meta
        .as_ref()
        .and_then(|m| m.action("monitor"))
        .and_then(|a| a.interval)
        .filter(|i| *i >= Duration::from_secs(1));
    let monitor_interval = time(
        monitor_interval,
        "monitor_interval",
        advised_interval.unwrap_or(DEFAULT_MONITOR_INTERVAL),
    );
    let restarts = match restarts {
        Some(t) => read(diags, "<resource restarts>", t, |v| value::count(v, 0, 100)),
        None => Some(3),
    };
    let window = match window {
        Some(t) => read(
            diags,
            "<resource window>",
            t,
            ranged(Duration::from_secs(1), Duration::from_secs(86_400)),
        ),
        None => Some(Duration::from_secs(600)),
    };
    let resource = Resource {
        id,
        kind,
        params: written,
        start_timeout: start_timeout?,
        stop_timeout: stop_timeout?,
        monitor_interval: monitor_interval?,
        monitor_timeout: monitor_timeout?,
        restarts: restarts?,
        window: window?,
    };
    if !ok {
        return None;
    }
    // The agent's own check, once everything it is given is known to be well formed.
    if meta.as_ref().is_some_and(|m| m.action("validate-all").is_some()) {
        if let Err(reason) = host.validate_resource(&resource) {
            diags.error(at, format!("{ctx}: the agent's validate-all rejects it: {reason}"));
            return None;
        }
    }
    Some(resource)
}
