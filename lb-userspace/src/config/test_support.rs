//! Checks shared by the config tests of the `[admin]` and `[[vrrp]]`
//! tables.

use super::*;

pub(super) fn ok(text: &str) -> Config {
    parse(text, "lbd.toml").unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"))
}

/// The only error of `text`, checked for file, key, column, the line
/// holding `line_of` and a part of its message.
pub(super) fn only_error(text: &str, key: &str, line_of: &str, message_part: &str) {
    let errors = match parse(text, "lbd.toml") {
        Ok(config) => panic!("expected an error, got {config:#?}"),
        Err(errors) => errors,
    };
    assert_eq!(errors.len(), 1, "expected one error, got:\n{errors}");
    let error = &errors.0[0];
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(line_of))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "`{line_of}` must be on exactly one line");
    assert_eq!(error.file, "lbd.toml");
    assert_eq!(error.key, key, "key of {error}");
    assert_eq!(error.line, lines[0], "line of {error}");
    assert!(error.column > 0, "column of {error}");
    assert!(
        error.message.contains(message_part),
        "message of `{error}` lacks `{message_part}`"
    );
}
