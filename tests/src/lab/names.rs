//! Lab name prefixes: `<hint><pid>x<seq>`, e.g. `dp4711x0`.
//!
//! The pid keeps concurrent test processes apart, the sequence number labs
//! within one process, and both let a new lab recognise the leftovers of a
//! process that died without tearing down (its pid is gone).

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh prefix for a lab of this process.
pub fn fresh_prefix(hint: &str) -> String {
    let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{hint}{}x{seq}", std::process::id())
}

/// Checks a caller's hint: lowercase letters only (so the pid that follows
/// can be parsed back), short enough for readable names.
pub fn valid_hint(hint: &str) -> bool {
    (1..=6).contains(&hint.len()) && hint.bytes().all(|b| b.is_ascii_lowercase())
}

/// If `name` (a namespace or pin directory, `<prefix>-<node>`) belongs to
/// a lab made with `hint`, the prefix and the pid of the process that made it.
pub fn parse(hint: &str, name: &str) -> Option<(String, u32)> {
    let (prefix, _) = name.split_once('-')?;
    parse_prefix(hint, prefix)
}

/// Like [`parse`], for a bare prefix (`dp4711x0`).
pub fn parse_prefix(hint: &str, prefix: &str) -> Option<(String, u32)> {
    let rest = prefix.strip_prefix(hint)?;
    let (pid, seq) = rest.split_once('x')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid) || !all_digits(seq) {
        return None;
    }
    Some((prefix.to_string(), pid.parse().ok()?))
}

/// Whether a lab found on the system is a leftover we may remove: its
/// process is gone, or it carries exactly the prefix we are about to use
/// (a dead process with our pid made it).
pub fn is_stale(found_prefix: &str, pid: u32, our_prefix: &str) -> bool {
    found_prefix == our_prefix || !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_parse_back() {
        let a = fresh_prefix("dp");
        let b = fresh_prefix("dp");
        assert_ne!(a, b);
        let (prefix, pid) = parse("dp", &format!("{a}-be12")).unwrap();
        assert_eq!(prefix, a);
        assert_eq!(pid, std::process::id());
    }

    #[test]
    fn foreign_names_are_not_taken_for_labs() {
        assert_eq!(parse("dp", "dpx-sw"), None);
        assert_eq!(parse("dp", "dp12-sw"), None);
        assert_eq!(parse("dp", "dp12x-sw"), None);
        assert_eq!(parse("dp", "dp12x3"), None);
        assert_eq!(parse("dp", "other12x3-sw"), None);
        assert_eq!(parse("dp", "dp12x3-lb1"), Some(("dp12x3".into(), 12)));
        assert_eq!(parse_prefix("dp", "dp12x3"), Some(("dp12x3".into(), 12)));
        assert_eq!(parse_prefix("dp", "dp12x3y"), None);
    }

    #[test]
    fn hints_are_short_lowercase_words() {
        assert!(valid_hint("dp"));
        assert!(!valid_hint(""));
        assert!(!valid_hint("dp1"));
        assert!(!valid_hint("toolonghint"));
    }

    #[test]
    fn a_live_process_keeps_its_lab_unless_the_prefix_is_ours() {
        let me = std::process::id();
        assert!(!is_stale("dp1x0", me, "dp1x1"));
        assert!(is_stale("dp1x1", me, "dp1x1"));
        // pid_max is at most 2^22: this pid cannot exist.
        assert!(is_stale("dp9x0", 99_999_999, "dp1x1"));
    }
}
