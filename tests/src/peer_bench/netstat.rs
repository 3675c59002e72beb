//! Counters from a namespace's `/proc/net/netstat` and `/proc/net/snmp`:
//! pairs of lines, one naming the fields of a group (`TcpExt: A B ...`),
//! the next holding their values (`TcpExt: 1 2 ...`).

/// The value of `field` in group `group` (e.g. `TcpExt`, `TCPSynRetrans`).
pub fn counter(text: &str, group: &str, field: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let position = names.split_whitespace().position(|n| n == field);
        if let Some(i) = position {
            return values.split_whitespace().nth(i)?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_found_by_its_header() {
        let text = "TcpExt: SyncookiesSent TCPSynRetrans TCPTimeouts\n\
                    TcpExt: 0 17 3\n\
                    IpExt: InNoRoutes\n\
                    IpExt: 5\n";
        assert_eq!(counter(text, "TcpExt", "TCPSynRetrans"), Some(17));
        assert_eq!(counter(text, "IpExt", "InNoRoutes"), Some(5));
        assert_eq!(counter(text, "TcpExt", "Missing"), None);
        assert_eq!(counter(text, "Udp", "InDatagrams"), None);
    }
}
