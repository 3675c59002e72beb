//! TOML syntax errors. A TOML parser stops at its first error; to report
//! more than one, the offending line is blanked (same length, so later byte
//! offsets stay true) and the text parsed again, as long as each new error
//! lies further down the file. Table headers are never blanked: that would
//! merge two tables and invent duplicate-key errors. When any syntax error
//! was found, the document is not checked further.

use toml_edit::ImDocument;

use super::report::Report;

/// At most this many syntax errors are reported; the rest is noise.
const MAX_SYNTAX_ERRORS: usize = 20;

pub(super) fn parse_document(text: &str, report: &mut Report) -> Option<ImDocument<String>> {
    let mut source = text.to_string();
    let mut found = 0;
    let mut last_line = 0;
    loop {
        let error = match ImDocument::parse(source.clone()) {
            Ok(document) => return (found == 0).then_some(document),
            Err(error) => error,
        };
        let span = error.span().unwrap_or(0..0);
        let (line, _) = report.position(span.start);
        if line <= last_line {
            // No progress: this error follows from one already reported.
            return None;
        }
        report.push(Some(span), "", one_line(error.message()));
        found += 1;
        last_line = line;
        if found >= MAX_SYNTAX_ERRORS || !blank_line(&mut source, line) {
            return None;
        }
    }
}

/// Replaces the text of 1-based `line` with spaces; false for a table
/// header or a line past the end.
fn blank_line(source: &mut String, line: usize) -> bool {
    let Some(start) = line_start(source, line) else {
        return false;
    };
    let end = source[start..]
        .find('\n')
        .map_or(source.len(), |i| start + i);
    if source[start..end].trim_start().starts_with('[') {
        return false;
    }
    let blanks = " ".repeat(end - start);
    source.replace_range(start..end, &blanks);
    true
}

fn line_start(source: &str, line: usize) -> Option<usize> {
    if line == 1 {
        return Some(0);
    }
    source
        .match_indices('\n')
        .nth(line - 2)
        .map(|(i, _)| i + 1)
        .filter(|&start| start <= source.len())
}

/// The parser's message on one line (it may span several).
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
