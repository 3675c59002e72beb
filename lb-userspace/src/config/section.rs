//! Reading one TOML table of the spanned document: typed getters that report
//! wrong types, missing keys and bad values instead of stopping, and a
//! `finish` that reports every key nobody asked for (typos).

use std::ops::Range;

use toml_edit::{Item, Table, TableLike, Value};

use super::report::{Report, Reported};

/// A value and where it was written (`None`: not in the file, a default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct At<T> {
    pub value: T,
    pub span: Option<Range<usize>>,
}

/// One table being read, with the dotted path used in error messages.
pub(super) struct Section<'d> {
    table: &'d dyn TableLike,
    /// Dotted key path of this table; empty for the document root.
    pub path: String,
    /// Where errors about the table as a whole point (its header).
    pub span: Option<Range<usize>>,
    /// Keys the schema asked about, whether present or not.
    known: Vec<&'static str>,
    /// Set when every key is a name chosen by the operator (`[node.NAME]`).
    all_known: bool,
}

impl<'d> Section<'d> {
    pub fn root(table: &'d Table) -> Self {
        Section {
            table,
            path: String::new(),
            span: Some(0..0),
            known: Vec::new(),
            all_known: false,
        }
    }

    fn new(
        table: &'d dyn TableLike,
        path: String,
        own: Option<Range<usize>>,
        parent: &Self,
    ) -> Self {
        // Implicit tables (`node` in `[node.lb1]`) have no span of their own:
        // point at their first key instead, else at the parent.
        let first_key = || {
            table
                .iter()
                .filter_map(|(key, _)| table.key(key).and_then(|k| k.span()))
                .min_by_key(|span| span.start)
        };
        let span = own.or_else(first_key).or_else(|| parent.span.clone());
        Section {
            table,
            path,
            span,
            known: Vec::new(),
            all_known: false,
        }
    }

    /// True for a table without any key.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// True when `key` is not written or holds an empty array; false for any
    /// other value, including a wrong type (reported elsewhere).
    pub fn is_absent_or_empty(&self, key: &str) -> bool {
        match self.table.get(key) {
            None => true,
            Some(Item::ArrayOfTables(array)) => array.is_empty(),
            Some(Item::Value(Value::Array(array))) => array.is_empty(),
            Some(_) => false,
        }
    }

    /// The dotted path of a key of this table.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Where the key itself is written, falling back to the table.
    fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table
            .key(key)
            .and_then(|k| k.span())
            .or_else(|| self.span.clone())
    }

    /// Looks a key up and notes it as part of the schema.
    fn lookup(&mut self, key: &'static str) -> Option<(&'d Item, Option<Range<usize>>)> {
        self.known.push(key);
        let table = self.table;
        let item = table.get(key)?;
        let span = item.span().or_else(|| self.key_span(key));
        Some((item, span))
    }

    /// A key that must be present.
    pub fn required<T>(
        &mut self,
        report: &mut Report,
        key: &'static str,
        convert: impl FnOnce(&'d Item) -> Result<T, String>,
    ) -> Option<At<T>> {
        match self.optional(report, key, convert) {
            Ok(Some(found)) => Some(found),
            Ok(None) => {
                report.push(
                    self.span.clone(),
                    &self.key_path(key),
                    "missing; this key is required",
                );
                None
            }
            Err(Reported) => None,
        }
    }

    /// A key that may be absent (`Ok(None)`).
    pub fn optional<T>(
        &mut self,
        report: &mut Report,
        key: &'static str,
        convert: impl FnOnce(&'d Item) -> Result<T, String>,
    ) -> Result<Option<At<T>>, Reported> {
        let Some((item, span)) = self.lookup(key) else {
            return Ok(None);
        };
        match convert(item) {
            Ok(value) => Ok(Some(At { value, span })),
            Err(message) => {
                report.push(span, &self.key_path(key), message);
                Err(Reported)
            }
        }
    }

    /// A key with a default; `None` only when the value written is invalid.
    pub fn or_default<T>(
        &mut self,
        report: &mut Report,
        key: &'static str,
        default: T,
        convert: impl FnOnce(&'d Item) -> Result<T, String>,
    ) -> Option<T> {
        match self.optional(report, key, convert) {
            Ok(found) => Some(found.map_or(default, |at| at.value)),
            Err(Reported) => None,
        }
    }

    /// A sub-table (`[a.b]`, `b = { ... }` or dotted keys); `Ok(None)` if absent.
    pub fn table(
        &mut self,
        report: &mut Report,
        key: &'static str,
    ) -> Result<Option<Section<'d>>, Reported> {
        let Some((item, span)) = self.lookup(key) else {
            return Ok(None);
        };
        let path = self.key_path(key);
        match item.as_table_like() {
            Some(table) => Ok(Some(Section::new(table, path, span, self))),
            None => {
                report.push(
                    span,
                    &path,
                    format!("expected a table ([{path}]), found {}", kind(item)),
                );
                Err(Reported)
            }
        }
    }

    /// An array of tables (`[[a.b]]` or `b = [{...}, ...]`); each element is
    /// named `b[N]` (1-based) until its caller renames it.
    pub fn array_of_tables(&mut self, report: &mut Report, key: &'static str) -> Vec<Section<'d>> {
        let Some((item, span)) = self.lookup(key) else {
            return Vec::new();
        };
        let path = self.key_path(key);
        let element = |i: usize| format!("{path}[{}]", i + 1);
        match item {
            Item::ArrayOfTables(array) => array
                .iter()
                .enumerate()
                .map(|(i, table)| Section::new(table, element(i), table.span(), self))
                .collect(),
            Item::Value(Value::Array(array)) => {
                let mut sections = Vec::new();
                for (i, value) in array.iter().enumerate() {
                    match value.as_inline_table() {
                        Some(table) => {
                            sections.push(Section::new(table, element(i), value.span(), self))
                        }
                        None => report.push(
                            value.span().or_else(|| span.clone()),
                            &element(i),
                            format!("expected a table, found {}", kind_of_value(value)),
                        ),
                    }
                }
                sections
            }
            other => {
                report.push(
                    span,
                    &path,
                    format!(
                        "expected an array of tables ([[{path}]]), found {}",
                        kind(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    /// All entries of this table as named sub-tables (`[node.NAME]`); every
    /// key counts as known.
    pub fn named_tables(&mut self, report: &mut Report) -> Vec<(At<&'d str>, Section<'d>)> {
        self.all_known = true;
        let table = self.table;
        let mut found = Vec::new();
        for (name, item) in table.iter() {
            let key_span = self.key_span(name);
            let path = self.key_path(name);
            match item.as_table_like() {
                Some(sub) => {
                    let own = item.span().or_else(|| key_span.clone());
                    let section = Section::new(sub, path, own, self);
                    found.push((
                        At {
                            value: name,
                            span: key_span,
                        },
                        section,
                    ));
                }
                None => report.push(
                    item.span().or(key_span),
                    &path,
                    format!("expected a table ([{path}]), found {}", kind(item)),
                ),
            }
        }
        found
    }

    /// Reports every key the schema did not ask for, with a suggestion when
    /// one known key is close (a typo like `wieght`).
    pub fn finish(self, report: &mut Report) {
        if self.all_known {
            return;
        }
        for (key, item) in self.table.iter() {
            if self.known.contains(&key) {
                continue;
            }
            let what = if item.is_table() || item.is_array_of_tables() {
                "table"
            } else {
                "key"
            };
            let mut message = format!("unknown {what} `{key}`");
            if let Some(close) = closest(key, &self.known) {
                message.push_str(&format!(" (did you mean `{close}`?)"));
            }
            report.push(self.key_span(key), &self.key_path(key), message);
        }
    }
}

/// The known key within a small edit distance of `key`, if any.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (key.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(key, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// "a string", "an integer", ... for type errors.
fn kind(item: &Item) -> String {
    match item {
        Item::Value(value) => kind_of_value(value),
        other => format!("a {}", other.type_name()),
    }
}

fn kind_of_value(value: &Value) -> String {
    let name = value.type_name();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// Converter for string values: checks the type, then parses the text.
pub(super) fn text<'d, T>(
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> impl FnOnce(&'d Item) -> Result<T, String> {
    move |item| match item.as_str() {
        Some(text) => parse(text),
        None => Err(format!("expected a string, found {}", kind(item))),
    }
}

/// Converter for integer values.
pub(super) fn integer<'d, T>(
    check: impl FnOnce(i64) -> Result<T, String>,
) -> impl FnOnce(&'d Item) -> Result<T, String> {
    move |item| match item.as_integer() {
        Some(value) => check(value),
        None => Err(format!("expected an integer, found {}", kind(item))),
    }
}

/// Converter for boolean values.
pub(super) fn boolean<'d>() -> impl FnOnce(&'d Item) -> Result<bool, String> {
    move |item| match item.as_bool() {
        Some(value) => Ok(value),
        None => Err(format!("expected true or false, found {}", kind(item))),
    }
}

/// Converter for arrays: every element must convert, the first failure is
/// reported with its position.
pub(super) fn array<'d, T>(
    element: impl Fn(&Value) -> Result<T, String>,
) -> impl FnOnce(&'d Item) -> Result<Vec<T>, String> {
    move |item| match item.as_array() {
        Some(values) => values
            .iter()
            .enumerate()
            .map(|(i, value)| element(value).map_err(|e| format!("element {}: {e}", i + 1)))
            .collect(),
        None => Err(format!("expected an array, found {}", kind(item))),
    }
}
