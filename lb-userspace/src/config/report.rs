//! Config errors, and the collector that turns byte spans into line:column so
//! every error can point at the spot an operator has to edit.

use std::fmt;
use std::ops::Range;

/// One problem in the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the error concerns the file as a whole (unreadable).
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted path of the key, e.g. `service.horizon.backend.cs1.address`;
    /// `service[2]` (1-based, in file order) stands for a service whose name
    /// is missing or invalid. Empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in one file, in file order. Never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Marker: the problem was already pushed to the [`Report`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Reported;

/// Collects errors while the tables are walked.
pub(super) struct Report<'t> {
    file: String,
    text: &'t str,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
    errors: Vec<ConfigError>,
}

impl<'t> Report<'t> {
    pub fn new(file: &str, text: &'t str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Report {
            file: file.to_string(),
            text,
            line_starts,
            errors: Vec::new(),
        }
    }

    /// Records an error at the start of `span` (line 1 when unknown).
    pub fn push(&mut self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) {
        let (line, column) = self.position(span.map_or(0, |s| s.start));
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// 1-based line and character column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }

    /// The 1-based line a span starts on, for messages like "first defined on line 4".
    pub fn line_of(&self, span: &Option<Range<usize>>) -> usize {
        self.position(span.as_ref().map_or(0, |s| s.start)).0
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The errors sorted by position; stable, so errors at one spot keep the
    /// order they were found in.
    pub fn into_errors(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.errors
    }
}
