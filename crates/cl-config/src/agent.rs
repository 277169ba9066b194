//! Resource agents: the `type` of a `<resource>` (`ocf:<provider>:<agent>` or `lsb:<name>`) and
//! an OCF agent's self-description (its `meta-data` XML, OCF Resource Agent API 1.1 §5).
//!
//! Pure: the caller runs `<agent> meta-data` and passes the text in; [`AgentMeta::parse`] turns
//! it into the parameters and actions the configuration checks need.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What runs a resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AgentKind {
    /// An OCF resource agent, `$OCF_ROOT/resource.d/<provider>/<agent>`.
    Ocf {
        /// Provider directory, e.g. `heartbeat`.
        provider: String,
        /// Agent file name, e.g. `IPaddr2`.
        agent: String,
    },
    /// An LSB init script, `/etc/init.d/<name>`.
    Lsb {
        /// Script name.
        name: String,
    },
}

/// A provider, agent or init script name: a plain file name, so that `type` can never point
/// outside the agent directories.
fn file_name(text: &str, what: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && !text.starts_with(['.', '-'])
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '@'));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{what} `{}` must be 1 to 64 letters, digits, `-`, `_`, `.`, `+` or `@`, not starting with `.` or `-`",
            crate::xml::shorten(text)
        ))
    }
}

impl AgentKind {
    /// Parse `ocf:<provider>:<agent>` or `lsb:<name>`.
    pub fn parse(text: &str) -> Result<AgentKind, String> {
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            ["ocf", provider, agent] => Ok(AgentKind::Ocf {
                provider: file_name(provider, "OCF provider")?,
                agent: file_name(agent, "OCF agent")?,
            }),
            ["ocf", ..] => Err(format!(
                "`{}` is not an OCF agent type; write ocf:<provider>:<agent>, e.g. ocf:heartbeat:IPaddr2",
                crate::xml::shorten(text)
            )),
            ["lsb", name] => Ok(AgentKind::Lsb { name: file_name(name, "LSB init script")? }),
            _ => Err(format!(
                "`{}` is not a resource type; use ocf:<provider>:<agent> (e.g. ocf:heartbeat:Dummy) or lsb:<init script> (e.g. lsb:nginx)",
                crate::xml::shorten(text)
            )),
        }
    }

    /// The default resource id: the agent's or init script's name.
    pub fn short_name(&self) -> &str {
        match self {
            AgentKind::Ocf { agent, .. } => agent,
            AgentKind::Lsb { name } => name,
        }
    }
}

impl fmt::Display for AgentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentKind::Ocf { provider, agent } => write!(f, "ocf:{provider}:{agent}"),
            AgentKind::Lsb { name } => write!(f, "lsb:{name}"),
        }
    }
}

impl TryFrom<String> for AgentKind {
    type Error = String;
    fn try_from(text: String) -> Result<AgentKind, String> {
        AgentKind::parse(&text)
    }
}

impl From<AgentKind> for String {
    fn from(kind: AgentKind) -> String {
        kind.to_string()
    }
}

/// An OCF agent's meta-data: what the configuration checks need of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentMeta {
    /// `<resource-agent name>`.
    pub name: String,
    /// Its parameters, in the agent's order.
    pub parameters: Vec<ParamMeta>,
    /// Its actions (one entry per `<action>`; monitor may appear once per role/depth).
    pub actions: Vec<ActionMeta>,
}

/// One `<parameter>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamMeta {
    /// Name (the `OCF_RESKEY_<name>` variable).
    pub name: String,
    /// `required="1"`: the agent cannot work without it.
    pub required: bool,
    /// `unique="1"`: two resources of this agent must not share a value.
    pub unique: bool,
    /// `<shortdesc>`, for messages.
    pub shortdesc: String,
}

/// One `<action>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionMeta {
    /// start, stop, monitor, validate-all, meta-data, …
    pub name: String,
    /// Advised minimum timeout.
    pub timeout: Option<Duration>,
    /// Advised interval (monitor).
    pub interval: Option<Duration>,
    /// `role` (Promoted/Unpromoted, or the older Master/Slave) when given.
    pub role: Option<String>,
}

impl AgentMeta {
    /// Parse the output of `<agent> meta-data`.
    pub fn parse(text: &str) -> Result<AgentMeta, String> {
        // Agents declare `<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">`; the DTD is never
        // fetched (roxmltree reads no external files) and entities stay limited.
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            nodes_limit: 100_000,
            ..Default::default()
        };
        let doc = roxmltree::Document::parse_with_options(text, options)
            .map_err(|e| format!("its meta-data is not valid XML: {e}"))?;
        let root = doc.root_element();
        if root.tag_name().name() != "resource-agent" {
            return Err(format!(
                "its meta-data has root element <{}>, not <resource-agent>",
                root.tag_name().name()
            ));
        }
        let parameters = child(root, "parameters")
            .map(|p| {
                p.children()
                    .filter(|c| c.is_element() && c.tag_name().name() == "parameter")
                    .filter_map(|p| {
                        Some(ParamMeta {
                            name: p.attribute("name")?.trim().to_string(),
                            required: flag(p.attribute("required")),
                            unique: flag(p.attribute("unique")),
                            shortdesc: child(p, "shortdesc")
                                .and_then(|s| s.text())
                                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                                .unwrap_or_default(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let actions = child(root, "actions")
            .map(|a| {
                a.children()
                    .filter(|c| c.is_element() && c.tag_name().name() == "action")
                    .filter_map(|a| {
                        Some(ActionMeta {
                            name: a.attribute("name")?.trim().to_string(),
                            timeout: a.attribute("timeout").and_then(meta_duration),
                            interval: a.attribute("interval").and_then(meta_duration),
                            role: a.attribute("role").map(str::to_string),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(AgentMeta {
            name: root.attribute("name").unwrap_or_default().to_string(),
            parameters,
            actions,
        })
    }

    /// The action `name` for no particular role (the first one without a role, else the first).
    pub fn action(&self, name: &str) -> Option<&ActionMeta> {
        let mut all = self.actions.iter().filter(|a| a.name == name);
        let first = all.clone().next();
        all.find(|a| a.role.is_none()).or(first)
    }

    /// The parameter `name`.
    pub fn parameter(&self, name: &str) -> Option<&ParamMeta> {
        self.parameters.iter().find(|p| p.name == name)
    }
}

/// The first child element of `node` named `name`.
fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|c| c.is_element() && c.tag_name().name() == name)
}

/// OCF booleans in meta-data: `1`, `true`, `yes` (any case).
fn flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// A time in meta-data as Pacemaker reads it: a number with an optional unit (`ms`, `s`/`sec`,
/// `m`/`min`, `h`/`hr`); no unit means seconds. None when unreadable.
pub fn meta_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" | "msec" => 0.001,
        "" | "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" | "hr" => 3600.0,
        _ => return None,
    };
    let seconds = number * scale;
    (seconds.is_finite() && (0.0..=86_400.0).contains(&seconds))
        .then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMMY: &str = r#"<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="Dummy" version="1.0">
<version>1.0</version>
<longdesc lang="en">x</longdesc>
<shortdesc lang="en">Example stateless resource agent</shortdesc>
<parameters>
<parameter name="state" unique="1">
<longdesc lang="en">Location to store the resource state in.</longdesc>
<shortdesc lang="en">State
  file</shortdesc>
<content type="string" default="/run/x" />
</parameter>
<parameter name="ip" required="1"><shortdesc>IPv4 or IPv6 address</shortdesc></parameter>
</parameters>
<actions>
<action name="start"        timeout="20s" />
<action name="monitor"      timeout="20s" interval="10s" depth="0" role="Promoted"/>
<action name="monitor"      timeout="30" interval="11s" depth="0" />
<action name="meta-data"    timeout="5s" />
<action name="validate-all"   timeout="2min" />
</actions>
</resource-agent>
"#;

    #[test]
    fn meta_data_gives_parameters_and_action_timeouts() {
        let meta = AgentMeta::parse(DUMMY).expect("parses");
        assert_eq!(meta.name, "Dummy");
        let state = meta.parameter("state").expect("state");
        assert!(state.unique && !state.required);
        assert_eq!(state.shortdesc, "State file");
        assert!(meta.parameter("ip").expect("ip").required);
        assert_eq!(meta.action("start").and_then(|a| a.timeout), Some(Duration::from_secs(20)));
        // The role-less monitor wins over the Promoted one.
        let monitor = meta.action("monitor").expect("monitor");
        assert_eq!(monitor.interval, Some(Duration::from_secs(11)));
        assert_eq!(monitor.timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            meta.action("validate-all").and_then(|a| a.timeout),
            Some(Duration::from_secs(120))
        );
        assert!(meta.action("stop").is_none());
    }

    #[test]
    fn bad_meta_data_is_an_error() {
        assert!(AgentMeta::parse("usage: Dummy {start|stop}").is_err());
        assert!(AgentMeta::parse("<other/>").expect_err("root").contains("<resource-agent>"));
    }

    #[test]
    fn meta_durations() {
        assert_eq!(meta_duration("20s"), Some(Duration::from_secs(20)));
        assert_eq!(meta_duration("20"), Some(Duration::from_secs(20)));
        assert_eq!(meta_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(meta_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(meta_duration("fast"), None);
        assert_eq!(meta_duration("1y"), None);
    }

    #[test]
    fn agent_types() {
        assert_eq!(
            AgentKind::parse("ocf:heartbeat:IPaddr2"),
            Ok(AgentKind::Ocf { provider: "heartbeat".into(), agent: "IPaddr2".into() })
        );
        assert_eq!(AgentKind::parse("lsb:nginx"), Ok(AgentKind::Lsb { name: "nginx".into() }));
        assert!(AgentKind::parse("ocf:heartbeat").is_err());
        assert!(AgentKind::parse("ocf:../x:y").is_err());
        assert!(AgentKind::parse("lsb:a/b").is_err());
        assert!(AgentKind::parse("systemd:nginx").expect_err("class").contains("ocf:"));
        let kind = AgentKind::parse("ocf:pacemaker:Stateful").expect("parses");
        assert_eq!(kind.to_string(), "ocf:pacemaker:Stateful");
        let json = serde_json::to_string(&kind).expect("encodes");
        assert_eq!(json, "\"ocf:pacemaker:Stateful\"");
        assert_eq!(serde_json::from_str::<AgentKind>(&json).expect("decodes"), kind);
    }
}
