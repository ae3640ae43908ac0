//! [`Diagnostic`]: an error located in a project file, with line, column and rule.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};

/// A project file kept for diagnostics.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path relative to the project root, as shown to users.
    pub display: String,
    /// The file's text.
    pub text: Arc<str>,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Identifies a file in `Project::files`.
pub type FileId = usize;

/// A byte range in a project file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: FileId,
    /// The byte range.
    pub span: Range<usize>,
}

/// A user error located in a project file: it names the file, line, column and rule.
#[derive(Clone, thiserror::Error, miette::Diagnostic)]
pub struct Diagnostic {
    /// What is wrong, without location.
    pub message: String,
    /// The file, relative to the project root.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The rule the error belongs to, if any.
    pub rule: Option<String>,
    /// How to fix it, when known.
    #[help]
    pub hint: Option<String>,
    /// The file's text, for the snippet; `None` when the line is too long to show (the
    /// location in the message is enough, and a snippet printer cannot lay it out).
    #[source_code]
    source_code: Option<NamedSource<Arc<str>>>,
    #[label("here")]
    label: Option<SourceSpan>,
}

/// Lines longer than this get no snippet, only `file:line:column`.
const MAX_SNIPPET_LINE: usize = 4096;

impl Diagnostic {
    /// Builds a diagnostic pointing at `span` of `file`.
    pub fn new(
        file: &SourceFile,
        span: Range<usize>,
        rule: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = file.line_col(span.start);
        let len = span.end.saturating_sub(span.start);
        let text: &str = &file.text;
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let snippet = line_end - line_start <= MAX_SNIPPET_LINE && len <= MAX_SNIPPET_LINE;
        Self {
            message: message.into(),
            file: file.display.clone(),
            line,
            column,
            rule: rule.map(str::to_owned),
            hint: None,
            source_code: snippet.then(|| NamedSource::new(file.display.clone(), file.text.clone())),
            label: snippet.then(|| (span.start, len).into()),
        }
    }

    /// Adds a `hint:` line.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(rule) = &self.rule {
            write!(f, "rule `{rule}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let f = SourceFile {
            display: "kiln.toml".into(),
            text: "a = 1\nbé = 2\n".into(),
        };
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        assert_eq!(f.line_col(10), (2, 4));
        let d = Diagnostic::new(&f, 6..8, Some("api"), "bad thing");
        assert_eq!(d.to_string(), "kiln.toml:2:1: rule `api`: bad thing");
    }
}
