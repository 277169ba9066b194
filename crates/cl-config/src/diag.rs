//! Diagnostics: every problem found in a configuration file, with its position.

use std::fmt;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// The configuration works, but something deserves the administrator's attention.
    Warning,
}

/// One problem at one place in one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// What is wrong, with the value and the rule.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {}: {}", self.file, self.line, self.column, level, self.message)
    }
}

/// A place in a configuration file, kept in a built configuration so that problems found
/// later (e.g. by `clbuildapp --vgbuild` on a node) are reported where the setting is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SourceAt {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

impl SourceAt {
    /// An error at this place of `file`: prints as `file:line:column: error: message`.
    pub fn error(&self, file: &str, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Severity::Error, file, message)
    }

    /// A warning at this place of `file`.
    pub fn warning(&self, file: &str, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Severity::Warning, file, message)
    }

    /// A diagnostic of `severity` at this place of `file`.
    pub fn diagnostic(
        &self,
        severity: Severity,
        file: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            file: file.to_string(),
            line: self.line,
            column: self.column,
            message: message.into(),
        }
    }
}

/// Most diagnostics kept for one file. A hostile or badly mangled file could otherwise produce
/// hundreds of thousands, and nobody reads past the first screenful anyway.
pub const MAX_DIAGNOSTICS: usize = 100;

/// Collects the diagnostics of one file, turning byte offsets into line and column.
#[derive(Debug)]
pub struct Diagnostics<'t> {
    file: String,
    text: &'t str,
    /// Byte offset where each line starts, for finding a line without rescanning the text.
    line_starts: Vec<usize>,
    found: Vec<Diagnostic>,
    /// Diagnostics beyond [`MAX_DIAGNOSTICS`]: how many, whether any was an error, and where
    /// the first was.
    suppressed: usize,
    suppressed_error: bool,
    first_suppressed: Option<(u32, u32)>,
}

impl<'t> Diagnostics<'t> {
    /// A collector for `file`, whose contents are `text`.
    pub fn new(file: impl Into<String>, text: &'t str) -> Self {
        let line_starts =
            std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Diagnostics {
            file: file.into(),
            text,
            line_starts,
            found: Vec::new(),
            suppressed: 0,
            suppressed_error: false,
            first_suppressed: None,
        }
    }

    /// Report an error at byte offset `at`.
    pub fn error(&mut self, at: usize, message: impl Into<String>) {
        self.push(Severity::Error, None, at, message.into());
    }

    /// Report a warning at byte offset `at`.
    pub fn warning(&mut self, at: usize, message: impl Into<String>) {
        self.push(Severity::Warning, None, at, message.into());
    }

    /// Report at an explicit line and column (for positions a parser already computed).
    pub fn error_at(&mut self, line: u32, column: u32, message: impl Into<String>) {
        self.push(Severity::Error, Some((line, column)), 0, message.into());
    }

    fn push(&mut self, severity: Severity, place: Option<(u32, u32)>, at: usize, message: String) {
        if self.found.len() >= MAX_DIAGNOSTICS {
            self.suppressed += 1;
            self.suppressed_error |= severity == Severity::Error;
            if self.first_suppressed.is_none() {
                self.first_suppressed = Some(place.unwrap_or_else(|| self.position(at)));
            }
            return;
        }
        let (line, column) = place.unwrap_or_else(|| self.position(at));
        self.found.push(Diagnostic { severity, file: self.file.clone(), line, column, message });
    }

    /// Line and column of byte offset `at`, for messages that refer to another place.
    pub fn position(&self, at: usize) -> (u32, u32) {
        let mut at = at.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= at).max(1);
        let line_start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = self.text[line_start..at].chars().count() + 1;
        (u32::try_from(line).unwrap_or(u32::MAX), u32::try_from(column).unwrap_or(u32::MAX))
    }

    /// The place of byte offset `at`, to keep in a built configuration.
    pub fn source_at(&self, at: usize) -> SourceAt {
        let (line, column) = self.position(at);
        SourceAt { line, column }
    }

    /// True when at least one error was reported.
    pub fn has_errors(&self) -> bool {
        self.suppressed_error || self.found.iter().any(|d| d.severity == Severity::Error)
    }

    /// All diagnostics, in file order (errors before warnings at the same place); when there
    /// were too many, a last one says how many more were not shown.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.found.sort_by_key(|d| (d.line, d.column, d.severity));
        self.found.dedup();
        if let Some((line, column)) = self.first_suppressed {
            self.found.push(Diagnostic {
                severity: if self.suppressed_error { Severity::Error } else { Severity::Warning },
                file: self.file.clone(),
                line,
                column,
                message: format!(
                    "{} more problems not shown (from here on); fix the ones above first",
                    self.suppressed
                ),
            });
        }
        self.found
    }
}

/// 1-based line and character column of byte offset `at` in `text`.
pub fn line_column(text: &str, at: usize) -> (u32, u32) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (u32::try_from(line).unwrap_or(u32::MAX), u32::try_from(column).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = "ab\né<x";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 5), (2, 2));
        // Past the end: just after the last character.
        assert_eq!(line_column(text, 999), (2, 4));
        let diags = Diagnostics::new("f", text);
        for at in [0, 2, 3, 4, 5, 6, 999] {
            assert_eq!(diags.position(at), line_column(text, at), "offset {at}");
        }
    }

    #[test]
    fn a_kept_place_prints_like_any_diagnostic() {
        let text = "<a>\n  <vg name=\"x\"/>";
        let diags = Diagnostics::new("appconf.xml", text);
        let at = diags.source_at(6);
        assert_eq!(at, SourceAt { line: 2, column: 3 });
        let line = at.error("/etc/cluster/web/appconf.xml", "<vg name=\"x\">: missing on node2");
        assert_eq!(
            line.to_string(),
            "/etc/cluster/web/appconf.xml:2:3: error: <vg name=\"x\">: missing on node2"
        );
        assert_eq!(at.warning("f", "w").severity, Severity::Warning);
    }

    #[test]
    fn too_many_diagnostics_are_summarised() {
        let text = "x\n".repeat(500);
        let mut diags = Diagnostics::new("f", &text);
        for i in 0..300 {
            diags.warning(i * 2, "w");
        }
        diags.error(999, "e");
        assert!(diags.has_errors());
        let all = diags.into_sorted();
        assert_eq!(all.len(), MAX_DIAGNOSTICS + 1);
        let last = &all[MAX_DIAGNOSTICS];
        assert_eq!(last.severity, Severity::Error);
        assert_eq!((last.line, last.column), (101, 1));
        assert!(last.message.starts_with("201 more problems"), "{}", last.message);
    }
}
