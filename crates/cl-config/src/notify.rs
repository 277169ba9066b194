//! `<notify program="…" timeout="…" events="…"/>` in clconf.xml's `<global>`: programs cldaemon
//! runs, one at a time in event order, on cluster events (docs/cluster.md, "Notifications").

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use cl_core::notice::EventKind;
use serde::{Deserialize, Serialize};

use crate::clconf::{check_root_program, ProgramProblem};
use crate::diag::Diagnostics;
use crate::value::{self, read};
use crate::xml::{self, Element, Spanned};
use crate::Host;

/// Most `<notify>` entries one cluster may have: each event runs every one in turn.
pub const MAX_NOTIFIERS: usize = 8;

/// One notification program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notifier {
    /// The program, as written (absolute; resolved under the node root when run).
    pub program: PathBuf,
    /// Longest one run may take before its process group is killed.
    pub timeout: Duration,
    /// Which events it is told about.
    pub events: EventFilter,
}

impl Notifier {
    /// Timeout when `<notify timeout>` is not given.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Shortest timeout accepted.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
    /// Longest timeout accepted: a notifier holds up every event after it.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

    /// Whether this notifier is told about events of `kind`.
    pub fn wants(&self, kind: EventKind) -> bool {
        match &self.events {
            EventFilter::All => true,
            EventFilter::Only(kinds) => kinds.contains(&kind),
        }
    }
}

/// Which events a notifier is told about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventFilter {
    /// Every event (`events="all"`, the default).
    All,
    /// Only these.
    Only(BTreeSet<EventKind>),
}

/// Read every `<notify>` of `<global>`; `None` when one is wrong (each problem reported).
pub(crate) fn read_notifiers(
    elements: &[roxmltree::Node<'_, '_>],
    host: &dyn Host,
    diags: &mut Diagnostics<'_>,
) -> Option<Vec<Notifier>> {
    if let Some(extra) = elements.get(MAX_NOTIFIERS) {
        diags.error(
            extra.range().start,
            format!(
                "<notify>: more than {MAX_NOTIFIERS} notifiers; this one and the rest are not read"
            ),
        );
        return None;
    }
    let mut ok = true;
    let mut notifiers: Vec<Notifier> = Vec::new();
    for element in elements {
        match read_notifier(*element, host, diags) {
            Some(n) if notifiers.iter().any(|o| o.program == n.program) => {
                diags.error(
                    element.range().start,
                    format!(
                        "<notify program>: `{}` is listed twice; keep one <notify> per program",
                        n.program.display()
                    ),
                );
                ok = false;
            }
            Some(n) => notifiers.push(n),
            None => ok = false,
        }
    }
    ok.then_some(notifiers)
}

fn read_notifier(
    node: roxmltree::Node<'_, '_>,
    host: &dyn Host,
    diags: &mut Diagnostics<'_>,
) -> Option<Notifier> {
    let mut element = Element::new(node);
    let program = element.attr("program");
    let timeout = element.attr("timeout");
    let events = element.attr("events");
    if program.is_none() {
        element.missing_attr(
            "program",
            "<notify>: missing attribute `program` (the program to run on cluster events, e.g. /etc/cluster/notify/mail.sh)",
        );
    }
    element.finish(diags);
    let program = program.and_then(|p| check_program(p, host, diags));
    let timeout = match timeout {
        Some(t) => read(diags, "<notify timeout>", t, notify_timeout),
        None => Some(Notifier::DEFAULT_TIMEOUT),
    };
    let events = match events {
        Some(e) => read(diags, "<notify events>", e, event_filter),
        None => Some(EventFilter::All),
    };
    Some(Notifier { program: program?, timeout: timeout?, events: events? })
}

/// The program must be an absolute path to an executable root alone may change; one not
/// installed yet is only a warning (cldaemon logs and counts each event it cannot tell).
fn check_program(
    program: Spanned<'_>,
    host: &dyn Host,
    diags: &mut Diagnostics<'_>,
) -> Option<PathBuf> {
    match check_root_program(program.value, "a program", host) {
        Ok(path) => Some(path),
        Err(ProgramProblem::Missing) => {
            diags.warning(
                program.at,
                format!("<notify program>: `{}` does not exist on this node; install it on every node, or the events are not told there", xml::shorten(program.value)),
            );
            Some(PathBuf::from(program.value))
        }
        Err(ProgramProblem::Unusable(problem)) => {
            diags.error(program.at, format!("<notify program>: {problem}"));
            None
        }
    }
}

fn notify_timeout(text: &str) -> Result<Duration, String> {
    let d = value::duration(text)?;
    if d < Notifier::MIN_TIMEOUT || d > Notifier::MAX_TIMEOUT {
        return Err(format!(
            "`{}` is out of range ({} to {})",
            xml::shorten(text),
            value::show_duration(Notifier::MIN_TIMEOUT),
            value::show_duration(Notifier::MAX_TIMEOUT)
        ));
    }
    Ok(d)
}

/// `all`, or a comma-separated list of event names.
fn event_filter(text: &str) -> Result<EventFilter, String> {
    if text == "all" {
        return Ok(EventFilter::All);
    }
    let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
    let mut kinds = BTreeSet::new();
    for name in text.split(',').map(str::trim) {
        if name.is_empty() {
            return Err("an empty event name; give `all` or names separated by commas".into());
        }
        match EventKind::from_name(name) {
            Some(kind) => {
                kinds.insert(kind);
            }
            None => {
                let shown = xml::shorten(name);
                return Err(match xml::closest(name, &names) {
                    Some(close) => format!("`{shown}` is not an event; did you mean `{close}`?"),
                    None => format!(
                        "`{shown}` is not an event; give `all` or some of: {}",
                        names.join(", ")
                    ),
                });
            }
        }
    }
    Ok(EventFilter::Only(kinds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_all_or_a_list_of_known_names() {
        assert_eq!(event_filter("all"), Ok(EventFilter::All));
        assert_eq!(
            event_filter("node_down, app_moved"),
            Ok(EventFilter::Only([EventKind::NodeDown, EventKind::AppMoved].into()))
        );
        let err = event_filter("node_down,app_move").expect_err("not an event");
        assert!(err.contains("`app_move` is not an event"), "{err}");
        assert!(event_filter("node_down,,app_moved").is_err());
    }

    #[test]
    fn timeouts_have_units_and_bounds() {
        assert_eq!(notify_timeout("30s"), Ok(Duration::from_secs(30)));
        assert!(notify_timeout("10").is_err());
        assert!(notify_timeout("1h").is_err());
    }
}
