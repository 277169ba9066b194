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
            diags.error_at(
                line,
                column,
                "file is not valid UTF-8 (byte offset ".to_string()
                    + &e.valid_up_to().to_string()
                    + "); save it as UTF-8",
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
    if let Some(at) = text.find("<!DOCTYPE") {
        diags.error(
            at,
            "DOCTYPE declarations are not allowed (entity expansion is disabled); remove it",
        );
        return None;
    }
    let options = ParsingOptions { allow_dtd: false, nodes_limit: MAX_NODES, ..Default::default() };
    match Document::parse_with_options(text, options) {
        Ok(doc) => {
            if let Some(deep) = doc.descendants().find(|n| n.ancestors().count() > MAX_DEPTH + 1) {
                diags.error(
                    deep.range().start,
                    format!("elements are nested more than {MAX_DEPTH} deep"),
                );
                return None;
            }
            Some(doc)
        }
        Err(e) => {
            let pos = e.pos();
            diags.error_at(pos.row, pos.col, format!("not well-formed XML: {e}"));
            None
        }
    }
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
    known_children: Vec<&'static str>,
    takes_text: bool,
}

impl<'a, 'input> Element<'a, 'input> {
    /// Start reading `node`.
    pub fn new(node: Node<'a, 'input>) -> Self {
        Element {
            node,
            known_attributes: Vec::new(),
            known_children: Vec::new(),
            takes_text: false,
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
                diags.error(child.range().start, format!("<{name}> is empty; it needs a value"));
                None
            }
        }
    }

    /// Report every attribute and child that was never asked for, with a suggestion.
    pub fn finish(self, diags: &mut Diagnostics<'_>) {
        for attribute in self.node.attributes() {
            if !self.known_attributes.contains(&attribute.name()) {
                let hint = suggest(attribute.name(), &self.known_attributes);
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
                    let hint = suggest(name, &self.known_children);
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
    }
}

/// `; did you mean X?` when a known name is close to `found`.
pub fn suggest(found: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (edit_distance(&found.to_ascii_lowercase(), &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min();
    match best {
        Some((_, k)) => format!("; did you mean `{k}`?"),
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
    }
}
