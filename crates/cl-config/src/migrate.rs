//! Linuxha.net 1.0 → 1.1: the edits the migration guide asks for, as text in, text out.
//!
//! The edits are spliced into the administrator's file at the positions roxmltree reports, so
//! comments, indentation and attribute order stay as they were; only what the guide asks for
//! changes:
//! - `clconf.xml`: each missing `<…_port>` of [`DAEMON_PORTS`] is added to `<global>`, a
//!   `<key file>` when there is no key, and a `<net_known_connections>` section with the node's
//!   default gateway (or, without one, a commented placeholder saying what to write there);
//! - `appconf.xml`: every [`LEGACY_NETWORK_ATTRIBUTES`] attribute is removed from each
//!   `<networks>/<network>`.
//!
//! Running it on its own output changes nothing. Like the rest of the crate it does no IO:
//! the caller reads the files, finds the gateway and writes the results.

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;

use roxmltree::Node;

use crate::appconf::LEGACY_NETWORK_ATTRIBUTES;
use crate::clconf::DAEMON_PORTS;
use crate::diag::{Diagnostic, Diagnostics};
use crate::xml;

/// The port each daemon gets when the file does not name one (the documented defaults).
pub const DEFAULT_PORTS: [u16; 4] = [9901, 9902, 9903, 9904];

/// Where the key file goes when a 1.0 file has no `<key>` (`clbuild --genkey`'s default).
pub const DEFAULT_KEY_FILE: &str = "/etc/cluster/cluster.key";

/// Words in the placeholder comment that mark it as ours, so a second run finds it.
const PLACEHOLDER_MARK: &str = "linuxha migrate: no default gateway was found";

/// One edit made to a file, for the summary shown before the diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `<global>` got `<{daemon}_port>`.
    AddedPort {
        /// The daemon (`cldaemon`, `cllockd`, `clnetd` or `clhbd`).
        daemon: &'static str,
        /// The port chosen.
        port: u16,
    },
    /// `<global>` got `<key file="…"/>`; the key file itself is the caller's business.
    AddedKeyFile {
        /// The key file, as written in the configuration.
        file: String,
    },
    /// A `<net_known_connections>` section with this address was added.
    AddedKnownConnection(IpAddr),
    /// No usable gateway: a commented `<net_known_connections>` placeholder was added.
    KnownConnectionsPlaceholder {
        /// Why no address could be proposed.
        reason: String,
    },
    /// A 1.0 attribute was removed from a `<network>` element.
    RemovedAttribute {
        /// The attribute.
        attribute: &'static str,
        /// 1-based line of the `<network>` element in the original file.
        line: u32,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddedPort { daemon, port } => {
                write!(f, "add <{daemon}_port>{port}</{daemon}_port> to <global> (new in 1.1)")
            }
            Change::AddedKeyFile { file } => {
                write!(f, "add <key file=\"{file}\"/> to <global> (1.1 authenticates every message)")
            }
            Change::AddedKnownConnection(address) => write!(
                f,
                "add <net_known_connections> with {address}, this node's default gateway"
            ),
            Change::KnownConnectionsPlaceholder { reason } => write!(
                f,
                "add a commented <net_known_connections> placeholder ({reason}): fill it in, or run again with --gateway ADDR"
            ),
            Change::RemovedAttribute { attribute, line } => write!(
                f,
                "remove `{attribute}` from the <network> on line {line} (used by 1.0, ignored by 1.1)"
            ),
        }
    }
}

/// A file after migration: its new text and what changed (nothing: the text is unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The migrated file.
    pub text: String,
    /// The edits, in file order.
    pub changes: Vec<Change>,
}

impl Migration {
    /// True when the file needs no change.
    pub fn is_unchanged(&self) -> bool {
        self.changes.is_empty()
    }
}

/// What the node offers for `<net_known_connections>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gateway {
    /// The default gateway (detected, or given with `--gateway`).
    Found(IpAddr),
    /// None, and why (shown in the placeholder and the summary).
    Missing(String),
}

/// One splice: replace `range` of the original text with `with`.
struct Edit {
    range: Range<usize>,
    with: String,
}

/// Apply non-overlapping edits to `text`; inserted lines end as the file's lines do (`\r\n` in
/// a file written on Windows).
fn apply(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|e| (e.range.start, e.range.end));
    let crlf = text.contains("\r\n");
    let mut out = String::with_capacity(text.len() + 256);
    let mut at = 0;
    for edit in edits {
        out.push_str(&text[at..edit.range.start]);
        if crlf {
            out.push_str(&edit.with.replace('\n', "\r\n"));
        } else {
            out.push_str(&edit.with);
        }
        at = edit.range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Decode and parse `bytes`, or every problem with its file:line:column.
fn with_document<T>(
    file: &str,
    bytes: &[u8],
    root_name: &str,
    file_kind: &str,
    walk: impl FnOnce(&str, Node<'_, '_>, &Diagnostics<'_>) -> T,
) -> Result<T, Vec<Diagnostic>> {
    let text_for_positions = String::from_utf8_lossy(bytes);
    let mut diags = Diagnostics::new(file, &text_for_positions);
    let Some(text) = xml::decode(bytes, &mut diags) else { return Err(diags.into_sorted()) };
    let Some(doc) = xml::parse(text, &mut diags) else { return Err(diags.into_sorted()) };
    if !xml::expect_root(doc.root_element(), root_name, file_kind, &mut diags) {
        return Err(diags.into_sorted());
    }
    Ok(walk(text, doc.root_element(), &diags))
}

/// The white space that starts the line `at` is on, when only white space precedes `at`.
fn indent_of(text: &str, at: usize) -> Option<&str> {
    let line_start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let before = &text[line_start..at];
    before.chars().all(|c| c == ' ' || c == '\t').then_some(before)
}

/// One indentation step as the file writes it: the first child's indent minus its parent's.
fn indent_step(text: &str, parent: Node<'_, '_>) -> String {
    let parent_indent = indent_of(text, parent.range().start).unwrap_or("");
    parent
        .children()
        .filter(Node::is_element)
        .find_map(|c| indent_of(text, c.range().start))
        .and_then(|child| child.strip_prefix(parent_indent))
        .filter(|step| !step.is_empty())
        .unwrap_or("  ")
        .to_string()
}

/// Where new children of `parent` go (after its last element or comment, so a closing comment
/// stays above the additions; else just after its start tag) and the indent they get.
fn insertion_point(text: &str, parent: Node<'_, '_>) -> Option<(usize, String)> {
    let parent_indent = indent_of(text, parent.range().start).unwrap_or("").to_string();
    if let Some(last) = parent.children().rev().find(|c| c.is_element() || c.is_comment()) {
        let indent = indent_of(text, last.range().start)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{parent_indent}{}", indent_step(text, parent)));
        return Some((last.range().end, indent));
    }
    // No element child: just after the start tag (not possible for a self-closing element).
    let body = &text[parent.range()];
    if body.ends_with("/>") {
        return None;
    }
    let start_tag_end = parent.range().start + body.find('>')? + 1;
    Some((start_tag_end, format!("{parent_indent}  ")))
}

/// Migrate a 1.0 `clconf.xml` (`file` names it in messages).
///
/// Errors: the file is not well-formed XML, or its root is not `<linuxha>`, or it has no
/// `<global>` element to add the ports to; nothing is proposed then.
pub fn migrate_cluster(
    file: &str,
    bytes: &[u8],
    gateway: &Gateway,
) -> Result<Migration, Vec<Diagnostic>> {
    let result = with_document(file, bytes, "linuxha", "clconf.xml", |text, root, _| {
        cluster_edits(text, root, gateway)
            .map(|(edits, changes)| Migration { text: apply(text, edits), changes })
    })?;
    result.map_err(|(at, message)| {
        let text = String::from_utf8_lossy(bytes);
        let mut diags = Diagnostics::new(file, &text);
        diags.error(at, message);
        diags.into_sorted()
    })
}

type Edits = (Vec<Edit>, Vec<Change>);

fn cluster_edits(
    text: &str,
    root: Node<'_, '_>,
    gateway: &Gateway,
) -> Result<Edits, (usize, String)> {
    let mut edits = Vec::new();
    let mut changes = Vec::new();
    let global = root.children().find(|c| c.has_tag_name("global")).ok_or((
        root.range().start,
        "<linuxha>: there is no <global> section to add the 1.1 ports to; add <global> with the cluster's <name> first".to_string(),
    ))?;
    let (mut lines, mut global_changes) = (Vec::new(), Vec::new());
    let mut taken: Vec<u16> = DAEMON_PORTS
        .iter()
        .filter_map(|d| child_text(global, &format!("{d}_port")))
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    for (daemon, default) in DAEMON_PORTS.into_iter().zip(DEFAULT_PORTS) {
        let element = format!("{daemon}_port");
        if global.children().any(|c| c.has_tag_name(element.as_str())) {
            continue;
        }
        let port = free_port(default, &taken);
        taken.push(port);
        lines.push(format!("<{element}>{port}</{element}>"));
        global_changes.push(Change::AddedPort { daemon, port });
    }
    if !global.children().any(|c| c.has_tag_name("key")) {
        lines.push(format!("<key file=\"{DEFAULT_KEY_FILE}\"/>"));
        global_changes.push(Change::AddedKeyFile { file: DEFAULT_KEY_FILE.to_string() });
    }
    if !lines.is_empty() {
        let (at, indent) = insertion_point(text, global).ok_or((
            global.range().start,
            "<global/> is empty; add the cluster's <name> to it first".to_string(),
        ))?;
        let mut with = format!("\n{indent}<!-- Added by linuxha migrate: required as of 1.1. -->");
        for line in lines {
            with.push_str(&format!("\n{indent}{line}"));
        }
        edits.push(Edit { range: at..at, with });
        changes.extend(global_changes);
    }
    if !root.children().any(|c| c.has_tag_name("net_known_connections")) {
        if let Some(edit) = known_connections_edit(text, root, gateway, &mut changes) {
            edits.push(edit);
        }
    }
    Ok((edits, changes))
}

/// The trimmed text of `parent`'s child element `name`.
fn child_text<'a>(parent: Node<'a, '_>, name: &str) -> Option<&'a str> {
    parent.children().find(|c| c.has_tag_name(name)).and_then(|c| c.text())
}

/// `wanted`, or the next port up that no other daemon has.
fn free_port(wanted: u16, taken: &[u16]) -> u16 {
    (wanted..=u16::MAX).chain(1024..wanted).find(|p| !taken.contains(p)).unwrap_or(wanted)
}

/// The `<net_known_connections>` section (or the placeholder for one), placed after the last
/// element of `<linuxha>`; a placeholder from an earlier run is replaced by a real section and
/// otherwise left alone.
fn known_connections_edit(
    text: &str,
    root: Node<'_, '_>,
    gateway: &Gateway,
    changes: &mut Vec<Change>,
) -> Option<Edit> {
    let placeholder = root
        .children()
        .find(|c| c.is_comment() && c.text().is_some_and(|t| t.contains(PLACEHOLDER_MARK)));
    let node_addresses: Vec<IpAddr> = root
        .children()
        .filter(|c| c.has_tag_name("node"))
        .flat_map(|n| n.children().filter(|c| c.has_tag_name("network")))
        .filter_map(|n| n.attribute("address"))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    let usable = match gateway {
        Gateway::Found(address) if node_addresses.contains(address) => {
            Err(format!("the gateway {address} is one of the nodes' own addresses"))
        }
        Gateway::Found(address) => Ok(*address),
        Gateway::Missing(reason) => Err(reason.clone()),
    };
    let (at, indent) = insertion_point(text, root)?;
    match usable {
        Ok(address) => {
            changes.push(Change::AddedKnownConnection(address));
            let section = format!(
                "{indent}<!-- Added by linuxha migrate: addresses outside the cluster that answer ping (this node's\n\
                 {indent}     default gateway), to tell a partition from a dead peer. Add more if you have them. -->\n\
                 {indent}<net_known_connections>\n{indent}{address}\n{indent}</net_known_connections>"
            );
            Some(match placeholder {
                Some(old) => Edit { range: old.range(), with: section.trim_start().to_string() },
                None => Edit { range: at..at, with: format!("\n\n{section}") },
            })
        }
        Err(_) if placeholder.is_some() => None,
        Err(reason) => {
            // `--` may not appear inside an XML comment.
            let reason = reason.replace("--", "- -");
            let with = format!(
                "\n\n{indent}<!-- {PLACEHOLDER_MARK} ({reason}).\n\
                 {indent}     1.1 strongly recommends addresses outside the cluster that answer ping (routers,\n\
                 {indent}     firewalls), to tell a partition from a dead peer. Write them here, e.g.\n\
                 {indent}<net_known_connections>\n{indent}192.168.1.1\n{indent}</net_known_connections>\n\
                 {indent}-->"
            );
            changes.push(Change::KnownConnectionsPlaceholder { reason });
            Some(Edit { range: at..at, with })
        }
    }
}

/// Migrate a 1.0 `appconf.xml`: remove the 1.0 `<network>` attributes.
///
/// Errors: the file is not well-formed XML or its root is not `<appconf>`.
pub fn migrate_app(file: &str, bytes: &[u8]) -> Result<Migration, Vec<Diagnostic>> {
    with_document(file, bytes, "appconf", "appconf.xml", |text, root, diags| {
        let mut edits = Vec::new();
        let mut changes = Vec::new();
        let networks = root
            .children()
            .filter(|c| c.has_tag_name("networks"))
            .flat_map(|n| n.children().filter(|c| c.has_tag_name("network")));
        for network in networks {
            let (line, _) = diags.position(network.range().start);
            for attribute in network.attributes() {
                let Some(&name) =
                    LEGACY_NETWORK_ATTRIBUTES.iter().find(|l| **l == attribute.name())
                else {
                    continue;
                };
                // The attribute and the white space before it (there always is some).
                let end = attribute.range().end;
                let start = text[..attribute.range().start].trim_end().len();
                edits.push(Edit { range: start..end, with: String::new() });
                changes.push(Change::RemovedAttribute { attribute: name, line });
            }
        }
        Migration { text: apply(text, edits), changes }
    })
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;
