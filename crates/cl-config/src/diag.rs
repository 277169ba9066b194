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

/// Collects the diagnostics of one file, turning byte offsets into line and column.
#[derive(Debug)]
pub struct Diagnostics<'t> {
    file: String,
    text: &'t str,
    found: Vec<Diagnostic>,
}

impl<'t> Diagnostics<'t> {
    /// A collector for `file`, whose contents are `text`.
    pub fn new(file: impl Into<String>, text: &'t str) -> Self {
        Diagnostics { file: file.into(), text, found: Vec::new() }
    }

    /// Report an error at byte offset `at`.
    pub fn error(&mut self, at: usize, message: impl Into<String>) {
        self.push(Severity::Error, at, message.into());
    }

    /// Report a warning at byte offset `at`.
    pub fn warning(&mut self, at: usize, message: impl Into<String>) {
        self.push(Severity::Warning, at, message.into());
    }

    /// Report at an explicit line and column (for positions a parser already computed).
    pub fn error_at(&mut self, line: u32, column: u32, message: impl Into<String>) {
        self.found.push(Diagnostic {
            severity: Severity::Error,
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        });
    }

    fn push(&mut self, severity: Severity, at: usize, message: String) {
        let (line, column) = line_column(self.text, at);
        self.found.push(Diagnostic { severity, file: self.file.clone(), line, column, message });
    }

    /// True when at least one error was reported.
    pub fn has_errors(&self) -> bool {
        self.found.iter().any(|d| d.severity == Severity::Error)
    }

    /// All diagnostics, in file order (errors before warnings at the same place).
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.found
            .sort_by(|a, b| (a.line, a.column, a.severity).cmp(&(b.line, b.column, b.severity)));
        self.found.dedup();
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
        assert_eq!(line_column(text, 999), (2, 3));
    }
}
