//! Reading XML strictly: decode, parse with positions, and walk elements while reporting
//! anything unknown, duplicated or missing.

use roxmltree::{Document, Node, ParsingOptions};

use crate::diag::Diagnostics;

/// Largest configuration file we read; real ones are a few kilobytes.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Cap on XML nodes, so hostile input cannot make the parser use much memory.
const MAX_NODES: u32 = 100_000;
/// Deepest element nesting we accept; our schemas are four levels deep.
const MAX_DEPTH: usize = 32;

/// Turn raw file bytes into text, or report why not (size, encoding).
pub fn decode<'b>(bytes: &'b [u8], diags: &mut Diagnostics<'_>) -> Option<&'b str> {
    if bytes.len() > MAX_FILE_BYTES {
        diags.error_at(
            1,
            1,
            format!(
                "file is too large ({} bytes); a configuration file may be at most {} bytes",
                bytes.len(),
                MAX_FILE_BYTES
            ),
        );
        return None;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            // The valid prefix is UTF-8 by definition.
            let prefix = std::str::from_utf8(valid).unwrap_or_default();
            let (line, column) = crate::diag::line_column(prefix, prefix.len());
            let byte = bytes.get(e.valid_up_to()).copied().unwrap_or(0);
            diags.error_at(
                line,
                column,
                format!(
                    "file is not valid UTF-8: byte 0x{byte:02X} here is not part of a UTF-8 character (was it saved as Latin-1?); save the file as UTF-8, e.g. with `iconv -f latin1 -t utf-8`"
                ),
            );
            None
        }
    }
}

/// Parse `text` as XML with entity expansion and DTDs off; report a syntax error with its place.
pub fn parse<'t>(text: &'t str, diags: &mut Diagnostics<'_>) -> Option<Document<'t>> {
    if text.trim().is_empty() {
        diags.error_at(1, 1, "file is empty; expected an XML document");
        return None;
    }
    if let Some((at, c)) =
        text.char_indices().find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        diags.error(
            at,
            format!(
                "control character U+{:04X} is not allowed in a configuration file; is this a binary file rather than XML?",
                u32::from(c)
            ),
        );
        return None;
    }
    let options = ParsingOptions { allow_dtd: false, nodes_limit: MAX_NODES, ..Default::default() };
    match Document::parse_with_options(text, options) {
        Ok(doc) => {
            if let Some(deep) = doc.descendants().find(|n| n.ancestors().count() > MAX_DEPTH + 1) {
                diags.error(
                    deep.range().start,
                    format!(
                        "elements are nested more than {MAX_DEPTH} deep; a configuration file needs only a few levels"
                    ),
                );
                return None;
            }
            Some(doc)
        }
        Err(e) => {
            report_syntax_error(text, &e, diags);
            None
        }
    }
}

/// Turn a roxmltree error into one sentence at the right place.
fn report_syntax_error(text: &str, e: &roxmltree::Error, diags: &mut Diagnostics<'_>) {
    use roxmltree::Error as E;
    let pos = e.pos();
    match e {
        E::DtdDetected => {
            let at = text.find("<!DOCTYPE").unwrap_or(0);
            diags.error(
                at,
                "a <!DOCTYPE> declaration is not allowed in a configuration file (it could define entities that expand the file); remove it",
            );
        }
        E::UnexpectedCloseTag(expected, actual, _) => {
            let close_at = offset_of(text, pos.row, pos.col);
            let open = find_open_tag(text, expected, close_at)
                .map(|at| {
                    let (line, column) = crate::diag::line_column(text, at);
                    format!(" (opened on line {line}, column {column})")
                })
                .unwrap_or_default();
            diags.error_at(
                pos.row,
                pos.col,
                format!(
                    "not well-formed XML: found </{actual}> but <{expected}>{open} is not closed yet; add </{expected}>"
                ),
            );
        }
        E::UnexpectedEndOfStream | E::UnclosedRootNode => {
            diags.error(
                text.trim_end().len(),
                "not well-formed XML: the file ends before every element, comment or tag is closed",
            );
        }
        E::NoRootNode => {
            diags.error_at(1, 1, "not well-formed XML: the file contains no element");
        }
        E::NodesLimitReached => {
            diags.error_at(
                1,
                1,
                format!("the file has more than {MAX_NODES} XML nodes; a configuration file has a few hundred"),
            );
        }
        E::UnknownToken(_) => {
            diags.error_at(
                pos.row,
                pos.col,
                "not well-formed XML: unexpected characters here; expected an element, a comment or the end of a tag",
            );
        }
        other => {
            let message = other.to_string().replace(&format!(" at {pos}"), "");
            diags.error_at(pos.row, pos.col, format!("not well-formed XML: {message}"));
        }
    }
}

/// Byte offset of 1-based `row` and character column `col` in `text`.
fn offset_of(text: &str, row: u32, col: u32) -> usize {
    let line_start = if row <= 1 {
        0
    } else {
        text.match_indices('\n').nth(row as usize - 2).map(|(i, _)| i + 1).unwrap_or(text.len())
    };
    text[line_start..]
        .char_indices()
        .nth(col.saturating_sub(1) as usize)
        .map(|(i, _)| line_start + i)
        .unwrap_or(text.len())
}

/// The last start tag `<name` before `before`, for pointing at an element left open.
fn find_open_tag(text: &str, name: &str, before: usize) -> Option<usize> {
    let head = text.get(..before)?;
    let pattern = format!("<{name}");
    head.rmatch_indices(&pattern).map(|(i, _)| i).find(|&i| {
        head[i + pattern.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_whitespace() || c == '>' || c == '/')
    })
}

/// Check the document's root element; report and return false when it is not `expected`.
pub fn expect_root(
    root: Node<'_, '_>,
    expected: &str,
    file: &str,
    diags: &mut Diagnostics<'_>,
) -> bool {
    let found = root.tag_name().name();
    if found != expected {
        diags.error(
            root.range().start,
            format!("the root element of {file} must be <{expected}>, not <{found}>"),
        );
        return false;
    }
    true
}

/// A value read from an attribute or element text, with the byte offset where it starts.
#[derive(Debug, Clone, Copy)]
pub struct Spanned<'a> {
    /// The value, trimmed.
    pub value: &'a str,
    /// Byte offset of the value in the file.
    pub at: usize,
}

/// Strict access to one element: every attribute and child asked for is marked as known, and
/// [`Element::finish`] reports the rest.
pub struct Element<'a, 'input> {
    /// The underlying node.
    pub node: Node<'a, 'input>,
    known_attributes: Vec<&'static str>,
    /// Attributes still accepted but no longer documented: never suggested.
    legacy_attributes: Vec<&'static str>,
    known_children: Vec<&'static str>,
    takes_text: bool,
    missing: Vec<Missing>,
}

/// A required attribute or child that is absent, reported by [`Element::finish`] unless a
/// misspelt name explains it.
struct Missing {
    name: &'static str,
    attribute: bool,
    message: String,
}

impl<'a, 'input> Element<'a, 'input> {
    /// Start reading `node`.
    pub fn new(node: Node<'a, 'input>) -> Self {
        Element {
            node,
            known_attributes: Vec::new(),
            legacy_attributes: Vec::new(),
            known_children: Vec::new(),
            takes_text: false,
            missing: Vec::new(),
        }
    }

    /// The element's tag name.
    pub fn name(&self) -> &'input str {
        self.node.tag_name().name()
    }

    /// Byte offset of the element's start tag.
    pub fn at(&self) -> usize {
        self.node.range().start
    }

    /// An attribute's trimmed value and position, if present.
    pub fn attr(&mut self, name: &'static str) -> Option<Spanned<'a>> {
        self.known_attributes.push(name);
        let attribute = self.node.attributes().find(|a| a.name() == name)?;
        let range = attribute.range_value();
        let raw = attribute.value();
        let leading = raw.len() - raw.trim_start().len();
        Some(Spanned { value: raw.trim(), at: range.start + leading })
    }

    /// A legacy attribute's value, if present: accepted, but never offered as a suggestion.
    pub fn legacy_attr(&mut self, name: &'static str) -> Option<Spanned<'a>> {
        self.legacy_attributes.push(name);
        let attribute = self.node.attributes().find(|a| a.name() == name)?;
        let range = attribute.range_value();
        let raw = attribute.value();
        let leading = raw.len() - raw.trim_start().len();
        Some(Spanned { value: raw.trim(), at: range.start + leading })
    }

    /// Mark attributes as accepted without reading them.
    pub fn allow_attrs(&mut self, names: &[&'static str]) {
        self.known_attributes.extend_from_slice(names);
    }

    /// The element's text content (all text children joined), trimmed, with its position.
    pub fn text(&mut self) -> Option<Spanned<'a>> {
        self.takes_text = true;
        let text_node = self
            .node
            .children()
            .find(|c| c.is_text() && !c.text().unwrap_or("").trim().is_empty())?;
        let raw = text_node.text().unwrap_or("");
        let leading = raw.len() - raw.trim_start().len();
        Some(Spanned { value: raw.trim(), at: text_node.range().start + leading })
    }

    /// All child elements named `name`.
    pub fn children(&mut self, name: &'static str) -> Vec<Node<'a, 'input>> {
        self.known_children.push(name);
        self.node.children().filter(|c| c.is_element() && c.tag_name().name() == name).collect()
    }

    /// The one child element named `name`; a second one is reported as a duplicate.
    pub fn child(
        &mut self,
        name: &'static str,
        diags: &mut Diagnostics<'_>,
    ) -> Option<Node<'a, 'input>> {
        let found = self.children(name);
        for extra in found.iter().skip(1) {
            diags.error(
                extra.range().start,
                format!("<{name}> appears more than once in <{}>; keep one", self.name()),
            );
        }
        found.into_iter().next()
    }

    /// The trimmed text of the one child element `name`, with its position.
    pub fn child_text(
        &mut self,
        name: &'static str,
        diags: &mut Diagnostics<'_>,
    ) -> Option<(Spanned<'a>, usize)> {
        let child = self.child(name, diags)?;
        let mut element = Element::new(child);
        let text = element.text();
        element.finish(diags);
        match text {
            Some(text) => Some((text, child.range().start)),
            None => {
                diags.error(
                    child.range().start,
                    format!("<{}>/<{name}> is empty; it needs a value", self.name()),
                );
                None
            }
        }
    }

    /// Report that the required attribute `name` is absent (at the element, when finished).
    pub fn missing_attr(&mut self, name: &'static str, message: impl Into<String>) {
        self.missing.push(Missing { name, attribute: true, message: message.into() });
    }

    /// Report that the required child element `name` is absent (at the element, when finished).
    pub fn missing_child(&mut self, name: &'static str, message: impl Into<String>) {
        self.missing.push(Missing { name, attribute: false, message: message.into() });
    }

    /// Report every attribute and child that was never asked for, with a suggestion, and every
    /// missing one — except those a misspelt name already accounts for, so a typo is one
    /// message, not two.
    pub fn finish(mut self, diags: &mut Diagnostics<'_>) {
        for attribute in self.node.attributes() {
            if !self.known_attributes.contains(&attribute.name())
                && !self.legacy_attributes.contains(&attribute.name())
            {
                let hint = self.hint(attribute.name(), true);
                diags.error(
                    attribute.range().start,
                    format!("<{}>: unknown attribute `{}`{hint}", self.name(), attribute.name()),
                );
            }
        }
        for child in self.node.children() {
            if child.is_element() {
                let name = child.tag_name().name();
                if !self.known_children.contains(&name) {
                    let hint = self.hint(name, false);
                    diags.error(
                        child.range().start,
                        format!("<{}>: unknown element <{name}>{hint}", self.name()),
                    );
                }
            } else if child.is_text() && !self.takes_text {
                let raw = child.text().unwrap_or("");
                if !raw.trim().is_empty() {
                    let leading = raw.len() - raw.trim_start().len();
                    diags.error(
                        child.range().start + leading,
                        format!("<{}>: unexpected text `{}`", self.name(), shorten(raw.trim())),
                    );
                }
            }
        }
        for missing in &self.missing {
            diags.error(self.node.range().start, missing.message.clone());
        }
    }

    /// The suggestion for an unknown name; a suggested name that is missing is then reported
    /// only here.
    fn hint(&mut self, found: &str, attribute: bool) -> String {
        let known = if attribute { &self.known_attributes } else { &self.known_children };
        match closest(found, known) {
            Some(best) => {
                let before = self.missing.len();
                self.missing.retain(|m| !(m.attribute == attribute && m.name == best));
                let required = if self.missing.len() < before { " (required)" } else { "" };
                format!("; did you mean `{best}`{required}?")
            }
            None => suggest(found, known),
        }
    }
}

/// The known name closest to `found`, if one is close enough to be a typo, or is the start of
/// it (`ipaddr` for `ip`, `mount` for `mountpoint`).
pub fn closest<'k>(found: &str, known: &[&'k str]) -> Option<&'k str> {
    let found = found.to_ascii_lowercase();
    let typo = known
        .iter()
        .map(|k| (edit_distance(&found, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k);
    typo.or_else(|| {
        known
            .iter()
            .filter(|k| {
                let k = k.to_ascii_lowercase();
                k.len() >= 2 && found.len() >= 2 && (found.starts_with(&k) || k.starts_with(&found))
            })
            .max_by_key(|k| k.len())
            .copied()
    })
}

/// `; did you mean X?` when a known name is close to `found`, else the list of known names.
pub fn suggest(found: &str, known: &[&str]) -> String {
    match closest(found, known) {
        Some(k) => format!("; did you mean `{k}`?"),
        None if !known.is_empty() => {
            let mut sorted: Vec<&str> = known.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            format!(" (expected one of: {})", sorted.join(", "))
        }
        None => String::new(),
    }
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// At most 40 characters of `text`, for quoting user input in a message.
pub fn shorten(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(40).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_find_close_names() {
        assert_eq!(
            suggest("clhdb_port", &["clhbd_port", "clnetd_port"]),
            "; did you mean `clhbd_port`?"
        );
        assert_eq!(suggest("zzz", &["b", "a"]), " (expected one of: a, b)");
        assert_eq!(closest("ipaddr", &["net", "ip", "prefix"]), Some("ip"));
        assert_eq!(closest("mount", &["device", "mountpoint"]), Some("mountpoint"));
    }
}
