//! Node and application names given on the command line: checked as names (the rules
//! `clconf.xml` and `appconf.xml` names follow) and against the built configuration this node
//! can read, so a mistyped or unknown name is answered at once with exit 2 and the known names.

use cl_config::{AppConfig, ClusterConfig};
use cl_paths::Paths;

use crate::fail::{Failure, Outcome};
use crate::site;

/// What a name given on the command line names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A cluster node.
    Node,
    /// An application.
    Application,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Node => "node name",
            Kind::Application => "application name",
        }
    }
}

/// Check that `name` is a name at all (letters, digits, `-`, `_`, `.`; 1 to 32), exit 2 if not.
pub fn syntax(command: &str, kind: Kind, name: &str) -> Outcome<()> {
    cl_config::value::name(name, kind.what())
        .map(|_| ())
        .map_err(|e| Failure::config(format!("{command}: {e}")))
}

/// Check that `node` is a node of the built cluster, exit 2 naming the nodes if not.
pub fn node(command: &str, cluster: &ClusterConfig, node: &str) -> Outcome<()> {
    syntax(command, Kind::Node, node)?;
    if cluster.nodes.iter().any(|n| n.name == node) {
        return Ok(());
    }
    let known: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
    Err(Failure::config(format!(
        "{command}: there is no node `{node}` in cluster `{}` (its nodes: {})",
        cluster.name,
        known.join(", ")
    )))
}

/// The built application `name`, or exit 2 naming the built applications.
pub fn application(command: &str, paths: &Paths, name: &str) -> Outcome<AppConfig> {
    syntax(command, Kind::Application, name)?;
    let apps: Vec<AppConfig> =
        site::built_apps(command, paths, None)?.into_iter().map(|b| b.config).collect();
    if let Some(app) = apps.iter().find(|a| a.name == name) {
        return Ok(app.clone());
    }
    let known = if apps.is_empty() {
        "no application is built on this node yet".to_string()
    } else {
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        format!("built applications: {}", names.join(", "))
    };
    Err(Failure::config(format!(
        "{command}: there is no built application `{name}` ({known}; clbuildapp --build --application NAME builds one)"
    )))
}

/// Check that `node` may run `app`, exit 2 naming its nodes if not.
pub fn app_node(command: &str, app: &AppConfig, node: &str) -> Outcome<()> {
    if app.nodes.iter().any(|n| n == node) {
        return Ok(());
    }
    Err(Failure::config(format!(
        "{command}: `{node}` is not a node of application `{}` (its nodes: {})",
        app.name,
        app.nodes.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_configuration_rules() {
        for bad in ["../x", "", "-n", ".hidden", "a/b", "x y", &"n".repeat(33)] {
            let e = syntax("clhalt", Kind::Node, bad).err().map(|f| (f.code, f.message));
            assert!(
                matches!(&e, Some((2, m)) if m.starts_with("clhalt: node name")),
                "{bad:?}: {e:?}"
            );
        }
        for good in ["node1", "web-01", "db_2.a"] {
            assert!(syntax("clhalt", Kind::Node, good).is_ok(), "{good}");
        }
    }
}
