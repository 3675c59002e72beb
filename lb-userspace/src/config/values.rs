//! Parsers for single values (names, addresses, ports, durations). Pure
//! functions from text or integer to a typed value or the message an operator
//! reads; where the value sits in the file is the caller's business.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use super::schema::{PortRange, StatusMatch};

/// Service and backend names: they appear in metrics labels, admin URLs and
/// `lbd backend set-state SVC/BACKEND`, so they stay short and plain.
pub fn name(text: &str) -> Result<String, String> {
    let valid_first = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid_rest = |c: char| valid_first(c) || c == '_' || c == '-';
    let mut chars = text.chars();
    let ok = match chars.next() {
        Some(first) => valid_first(first) && chars.all(valid_rest) && text.len() <= 32,
        None => false,
    };
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "invalid name `{text}`: use 1 to 32 characters from a-z, 0-9, `_` and `-`, \
             starting with a letter or digit"
        ))
    }
}

/// Node names are matched against the hostname and used in paths
/// (`/run/lbd/<node>.sock`, bpffs pins), so no `/` and no spaces.
pub fn node_name(text: &str) -> Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let ok = !text.is_empty()
        && text.len() <= 64
        && text.chars().all(valid)
        && text.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "invalid node name `{text}`: use 1 to 64 characters from A-Z, a-z, 0-9, `.`, `_` \
             and `-` (usually the host name)"
        ))
    }
}

/// A Linux network device name (at most IFNAMSIZ - 1 = 15 bytes).
pub fn interface(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err(
            "the interface name is empty; name the device the XDP program attaches to, \
                    e.g. \"eth0\""
                .to_string(),
        );
    }
    if text.len() > 15 {
        return Err(format!(
            "interface name `{text}` is longer than 15 bytes, the kernel's limit"
        ));
    }
    if text.contains(|c: char| c == '/' || c == ':' || c.is_whitespace()) || text == "." {
        return Err(format!("`{text}` is not a valid interface name"));
    }
    Ok(text.to_string())
}

/// An IPv4 address a host can own: not 0.0.0.0, broadcast or multicast.
pub fn unicast_ipv4(text: &str) -> Result<Ipv4Addr, String> {
    let address = ipv4(text)?;
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return Err(format!("`{text}` is not a unicast address"));
    }
    Ok(address)
}

fn ipv4(text: &str) -> Result<Ipv4Addr, String> {
    if let Ok(address) = text.parse::<Ipv4Addr>() {
        return Ok(address);
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Err(format!("`{text}`: IPv6 is not supported yet"));
    }
    Err(format!("`{text}` is not an IPv4 address (like 192.0.2.20)"))
}

/// `IPv4:port`, e.g. `198.51.100.21:443`.
pub fn socket_address(text: &str) -> Result<SocketAddrV4, String> {
    if text.parse::<SocketAddrV6>().is_ok() || text.parse::<Ipv6Addr>().is_ok() {
        return Err(format!("`{text}`: IPv6 is not supported yet"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{text}` has no port: write address:port, like 198.51.100.21:443"
        ));
    };
    let address = unicast_ipv4(host)?;
    let port = port
        .parse::<i64>()
        .map_err(|_| format!("`{port}` in `{text}` is not a port number"))
        .and_then(self::port)?;
    Ok(SocketAddrV4::new(address, port))
}

pub fn port(value: i64) -> Result<u16, String> {
    match u16::try_from(value) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("port {value} is out of range 1..=65535")),
    }
}

/// Lowest port a SNAT range may start at: below are the well-known and
/// registered service ports the host itself may use.
pub const SNAT_MIN_PORT: u16 = 1024;

/// `"A-B"`, inclusive, with 1024 <= A <= B <= 65535.
pub fn snat_port_range(text: &str) -> Result<PortRange, String> {
    let usage =
        || format!("`{text}` is not a port range: write \"FIRST-LAST\", like \"20000-24999\"");
    let (min, max) = text.split_once('-').ok_or_else(usage)?;
    let bound = |part: &str| -> Result<u16, String> {
        let value = part.trim().parse::<i64>().map_err(|_| usage())?;
        port(value)
    };
    let (min, max) = (bound(min)?, bound(max)?);
    if min > max {
        return Err(format!(
            "`{text}`: the first port is above the last; write \"{max}-{min}\""
        ));
    }
    if min < SNAT_MIN_PORT {
        return Err(format!(
            "`{text}` starts below {SNAT_MIN_PORT}; keep SNAT ports out of the well-known range"
        ));
    }
    Ok(PortRange { min, max })
}

/// A humantime duration ("30s", "1h", "500ms", "1h 30m") greater than zero.
pub fn duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. \"30s\", \"1h\" or \"500ms\"")
    })?;
    if duration.is_zero() {
        return Err("the duration must be greater than zero".to_string());
    }
    Ok(duration)
}

pub fn weight(value: i64) -> Result<u32, String> {
    match u32::try_from(value) {
        Ok(weight) if weight <= 256 => Ok(weight),
        _ => Err(format!(
            "weight {value} is out of range 0..=256 (0 takes no new clients)"
        )),
    }
}

/// New connections per second a service must sustain: 1..=10,000,000.
pub fn connection_rate(value: i64) -> Result<u32, String> {
    match u32::try_from(value) {
        Ok(rate) if (1..=10_000_000).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "{value} is out of range 1..=10000000 (new connections per second)"
        )),
    }
}

/// A BPF map size: 1..=u32::MAX.
pub fn size(value: i64) -> Result<u32, String> {
    match u32::try_from(value) {
        Ok(size) if size > 0 => Ok(size),
        Ok(_) => Err("must be at least 1".to_string()),
        Err(_) => Err(format!("{value} is out of range 1..={}", u32::MAX)),
    }
}

/// One of a fixed set of words; `planned` lists words that will mean
/// something later and get a "not supported yet" answer instead of "unknown".
pub fn choice<T: Copy>(text: &str, known: &[(&str, T)], planned: &[&str]) -> Result<T, String> {
    if let Some((_, value)) = known.iter().find(|(word, _)| *word == text) {
        return Ok(*value);
    }
    if planned.contains(&text) {
        return Err(format!("`{text}` is not supported yet"));
    }
    let words: Vec<String> = known.iter().map(|(word, _)| format!("`{word}`")).collect();
    Err(format!(
        "unknown value `{text}`; expected {}",
        words.join(" or ")
    ))
}

/// Trial division; ring sizes are at most a few million.
pub fn prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// `rise` and `fall`: how many checks in a row decide a state change.
pub fn check_count(value: i64) -> Result<u32, String> {
    match u32::try_from(value) {
        Ok(count) if (1..=1000).contains(&count) => Ok(count),
        _ => Err(format!(
            "{value} is out of range 1..=1000 (checks in a row)"
        )),
    }
}

/// The request path of an http check: absolute, printable ASCII, no spaces
/// (it goes verbatim into the request line).
pub fn http_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "`{text}` does not start with `/`; write the path part of the URL, like \"/favicon.ico\""
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "`{text}` has spaces or non-ASCII characters; percent-encode them"
        ));
    }
    Ok(text.to_string())
}

/// A Host header value: a name or address, optionally with `:port`.
pub fn host_header(text: &str) -> Result<String, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "`{text}` is not a host name; write e.g. \"horizon.example.com\""
        ));
    }
    Ok(text.to_string())
}

/// The server name sent as SNI: a DNS name (TLS sends no SNI for addresses).
pub fn server_name(text: &str) -> Result<String, String> {
    use rustls::pki_types::ServerName;
    match ServerName::try_from(text) {
        Ok(ServerName::DnsName(_)) => Ok(text.to_string()),
        Ok(_) => Err(format!(
            "`{text}` is an address; SNI carries DNS names only (leave `sni` out to send none)"
        )),
        Err(_) => Err(format!(
            "`{text}` is not a DNS name; write e.g. \"horizon.example.com\""
        )),
    }
}

/// One `expect` entry: a status code (200) or a class ("2xx").
pub fn status_match(value: &toml_edit::Value) -> Result<StatusMatch, String> {
    if let Some(code) = value.as_integer() {
        return match u16::try_from(code) {
            Ok(code) if (100..=599).contains(&code) => Ok(StatusMatch::Code(code)),
            _ => Err(format!("status {code} is out of range 100..=599")),
        };
    }
    if let Some(text) = value.as_str() {
        let bytes = text.as_bytes();
        if let [class @ b'1'..=b'5', b'x', b'x'] = bytes {
            return Ok(StatusMatch::Class(class - b'0'));
        }
        return Err(format!(
            "`{text}` is not a status class; write \"2xx\" (or a code like 200)"
        ));
    }
    Err("expected a status code like 200 or a class like \"2xx\"".to_string())
}
