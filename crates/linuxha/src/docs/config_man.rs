//! clconf.xml(5) and appconf.xml(5), generated from docs/config.md so the reference and the
//! pages never drift: the Markdown is parsed with pulldown-cmark and written as man(7) roff
//! with the roff crate (headings become `.SH`/`.SS`, tables become tagged paragraphs, code
//! blocks `.nf` blocks, links keep their text).
//!
//! Every `##` section of the reference goes to clconf.xml(5) except the `appconf.xml` one,
//! which goes to appconf.xml(5); "Building" goes to both.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use roff::{bold, italic, line_break, roman, Inline, Roff};

use super::man::Page;

/// The configuration reference the pages are made of.
pub const CONFIG_MD: &str = include_str!("../../../../docs/config.md");

/// A `##` section of the reference: its title and its Markdown (heading line included).
struct Section<'a> {
    title: String,
    markdown: &'a str,
}

/// The reference cut at its `##` headings (outside code blocks); the text before the first
/// heading is returned as a section with an empty title.
fn sections(markdown: &str) -> Vec<Section<'_>> {
    let mut starts = vec![(0, String::new())];
    let mut offset = 0;
    let mut fenced = false;
    for line in markdown.split_inclusive('\n') {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            if let Some(title) = line.strip_prefix("## ") {
                starts.push((offset, title.trim().replace('`', "")));
            }
        }
        offset += line.len();
    }
    let mut out = Vec::new();
    for (i, (start, title)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(markdown.len(), |(s, _)| *s);
        out.push(Section { title: title.clone(), markdown: &markdown[*start..end] });
    }
    out
}

/// The two pages.
pub fn pages() -> Vec<Page> {
    let all = sections(CONFIG_MD);
    let (mut clconf, mut appconf) = (String::new(), String::new());
    for section in all.iter().skip(1) {
        let is_app = section.title.contains("appconf.xml");
        let shared = section.title.starts_with("Building");
        if !is_app || shared {
            clconf.push_str(section.markdown);
        }
        if is_app || shared {
            appconf.push_str(section.markdown);
        }
    }
    let intro = all.first().map(|s| s.markdown).unwrap_or_default();
    let intro = intro.lines().filter(|l| !l.starts_with("# ")).collect::<Vec<_>>().join("\n");
    vec![
        page(
            "clconf.xml",
            "the linuxha cluster configuration file, /etc/cluster/clconf.xml",
            &format!("{intro}\n\n{clconf}"),
            "appconf.xml(5), clbuild(8), linuxha(8)",
        ),
        page(
            "appconf.xml",
            "a linuxha application configuration file, /etc/cluster/<application>/appconf.xml",
            &format!(
                "How files are read, value formats, paths and messages are described in \
                 clconf.xml(5).\n\n{appconf}"
            ),
            "clconf.xml(5), clbuildapp(8), clstartapp(8), clsplitbrain(8), linuxha(8)",
        ),
    ]
}

fn page(name: &str, what: &str, markdown: &str, see_also: &str) -> Page {
    let mut roff = Roff::new();
    let source = format!("linuxha {}", env!("CARGO_PKG_VERSION"));
    roff.control("TH", [name, "5", "", source.as_str(), "linuxha manual"]);
    roff.control("SH", ["NAME"]).text([roman(format!("{name} - {what}"))]);
    roff.control("SH", ["DESCRIPTION"]);
    markdown_to_roff(markdown, &mut roff);
    roff.control("SH", ["SEE ALSO"]).text([roman(see_also)]);
    Page { file: format!("{name}.5"), section: "5", text: roff.render() }
}

/// A control line's argument: no quotes or backslashes, which a macro argument cannot hold.
fn argument(text: &str) -> String {
    text.replace('"', "'").replace('\\', "/").trim().to_string()
}

/// Markdown → roff, appended to `roff`.
struct Writer<'r> {
    roff: &'r mut Roff,
    line: Vec<Inline>,
    strong: usize,
    emphasis: usize,
    heading: Option<(HeadingLevel, String)>,
    lists: Vec<Option<u64>>,
    code_block: bool,
    table: Option<Table>,
}

/// A table being read: its header cells and rows, each cell as inlines.
#[derive(Default)]
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<Vec<Inline>>>,
    in_head: bool,
}

fn markdown_to_roff(markdown: &str, roff: &mut Roff) {
    let mut w = Writer {
        roff,
        line: Vec::new(),
        strong: 0,
        emphasis: 0,
        heading: None,
        lists: Vec::new(),
        code_block: false,
        table: None,
    };
    for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
        w.event(event);
    }
    w.flush();
}

impl Writer<'_> {
    fn flush(&mut self) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.roff.text(line);
        }
    }

    fn inline_text(&mut self, text: &str) {
        if let Some((_, heading)) = &mut self.heading {
            heading.push_str(text);
            return;
        }
        let text = text.replace('\n', " ");
        let inline = if self.strong > 0 {
            bold(text)
        } else if self.emphasis > 0 {
            italic(text)
        } else {
            roman(text)
        };
        self.push(inline);
    }

    fn push(&mut self, inline: Inline) {
        match &mut self.table {
            Some(table) if table.in_head => {
                if let Inline::Roman(t) | Inline::Bold(t) | Inline::Italic(t) = &inline {
                    if let Some(cell) = table.head.last_mut() {
                        cell.push_str(t);
                    }
                }
            }
            Some(table) => {
                if let Some(cell) = table.rows.last_mut().and_then(|row| row.last_mut()) {
                    cell.push(inline);
                }
            }
            None => self.line.push(inline),
        }
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) if self.code_block => {
                for line in text.lines() {
                    self.roff.text([roman(line)]);
                }
            }
            Event::Text(text) => self.inline_text(&text),
            Event::Code(code) => {
                if let Some((_, heading)) = &mut self.heading {
                    heading.push_str(&code);
                } else {
                    self.push(bold(code.to_string()));
                }
            }
            Event::SoftBreak => self.inline_text(" "),
            Event::HardBreak => self.push(line_break()),
            Event::Html(_) | Event::InlineHtml(_) | Event::Rule => {}
            _ => {}
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Heading { level, .. } => {
                self.flush();
                self.heading = Some((level, String::new()));
            }
            Tag::Paragraph => {
                self.flush();
                if self.lists.is_empty() && self.table.is_none() {
                    self.roff.control("PP", []);
                } else if !self.lists.is_empty() {
                    self.roff.control("sp", []);
                }
            }
            Tag::CodeBlock(_) => {
                self.flush();
                self.code_block = true;
                self.roff.control("PP", []).control("RS", ["4"]).control("nf", []);
            }
            Tag::List(first) => {
                self.flush();
                if !self.lists.is_empty() {
                    self.roff.control("RS", ["2"]);
                }
                self.lists.push(first);
            }
            Tag::Item => {
                self.flush();
                let tag = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let tag = format!("{n}.");
                        *n += 1;
                        tag
                    }
                    _ => "\\(bu".to_string(),
                };
                self.roff.control("IP", [tag.as_str(), "3"]);
            }
            Tag::Table(_) => {
                self.flush();
                self.table = Some(Table::default());
            }
            Tag::TableHead => {
                if let Some(t) = &mut self.table {
                    t.in_head = true;
                }
            }
            Tag::TableRow => {
                if let Some(t) = &mut self.table {
                    t.rows.push(Vec::new());
                }
            }
            Tag::TableCell => {
                if let Some(t) = &mut self.table {
                    if t.in_head {
                        t.head.push(String::new());
                    } else if let Some(row) = t.rows.last_mut() {
                        row.push(Vec::new());
                    }
                }
            }
            Tag::Strong => self.strong += 1,
            Tag::Emphasis => self.emphasis += 1,
            Tag::BlockQuote(_) => {
                self.flush();
                self.roff.control("RS", ["4"]);
            }
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(_) => {
                if let Some((level, text)) = self.heading.take() {
                    let text = argument(&text);
                    if level == HeadingLevel::H2 {
                        self.roff.control("SH", [text.to_uppercase().as_str()]);
                    } else {
                        self.roff.control("SS", [text.as_str()]);
                    }
                }
            }
            TagEnd::Paragraph | TagEnd::Item => self.flush(),
            TagEnd::CodeBlock => {
                self.code_block = false;
                self.roff.control("fi", []).control("RE", []);
            }
            TagEnd::List(_) => {
                self.flush();
                self.lists.pop();
                if self.lists.is_empty() {
                    self.roff.control("PP", []);
                } else {
                    self.roff.control("RE", []);
                }
            }
            TagEnd::TableHead => {
                if let Some(t) = &mut self.table {
                    t.in_head = false;
                }
            }
            TagEnd::Table => {
                if let Some(table) = self.table.take() {
                    self.table_out(table);
                }
            }
            TagEnd::Strong => self.strong = self.strong.saturating_sub(1),
            TagEnd::Emphasis => self.emphasis = self.emphasis.saturating_sub(1),
            TagEnd::BlockQuote(_) => {
                self.flush();
                self.roff.control("RE", []);
            }
            _ => {}
        }
    }

    /// A table as tagged paragraphs: the first cell is the tag; with more than two columns
    /// each further cell is prefixed by its column's header.
    fn table_out(&mut self, table: Table) {
        self.roff.control("PP", []);
        for row in table.rows {
            let mut cells = row.into_iter();
            let first = cells.next().unwrap_or_default();
            self.roff.control("TP", ["4"]).text(if first.is_empty() {
                vec![roman("-")]
            } else {
                first
            });
            let mut body = Vec::new();
            for (i, cell) in cells.enumerate() {
                if cell.is_empty() {
                    continue;
                }
                if table.head.len() > 2 {
                    if !body.is_empty() {
                        body.push(roman("; "));
                    }
                    let header = table.head.get(i + 1).map(|h| h.trim()).unwrap_or_default();
                    if !header.is_empty() {
                        body.push(italic(format!("{header}:")));
                        body.push(roman(" "));
                    }
                } else if !body.is_empty() {
                    body.push(roman(" "));
                }
                body.extend(cell);
            }
            if !body.is_empty() {
                self.roff.text(body);
            }
        }
        self.roff.control("PP", []);
    }
}
