//! Parsing the `--sources` argument of `lab-client`: `A-B` (inclusive
//! range), a single address, or a comma-separated list of either.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};

/// Refuse absurd ranges rather than allocating millions of sockets.
const MAX_SOURCES: usize = 65_536;

pub fn parse_sources(text: &str) -> Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let first = parse_addr(first)?;
                let last = parse_addr(last)?;
                if u32::from(last) < u32::from(first) {
                    bail!("source range {part} runs backwards");
                }
                let len = (u32::from(last) - u32::from(first)) as usize + 1;
                if out.len() + len > MAX_SOURCES {
                    bail!("more than {MAX_SOURCES} source addresses in {text}");
                }
                out.extend((u32::from(first)..=u32::from(last)).map(Ipv4Addr::from));
            }
            None => out.push(parse_addr(part)?),
        }
    }
    if out.is_empty() {
        bail!("no source address in {text:?}");
    }
    Ok(out)
}

fn parse_addr(text: &str) -> Result<Ipv4Addr> {
    text.trim()
        .parse()
        .with_context(|| format!("{text:?} is not an IPv4 address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_and_single_addresses() {
        let v = parse_sources("203.0.113.10-203.0.113.209").unwrap();
        assert_eq!(v.len(), 200);
        assert_eq!(v[0], Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(v[199], Ipv4Addr::new(203, 0, 113, 209));
        let v = parse_sources("203.0.113.1, 203.0.113.5-203.0.113.6").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(parse_sources("198.51.100.2").unwrap().len(), 1);
    }

    #[test]
    fn ranges_cross_octet_boundaries() {
        let v = parse_sources("203.0.112.255-203.0.113.1").unwrap();
        assert_eq!(
            v,
            [
                Ipv4Addr::new(203, 0, 112, 255),
                Ipv4Addr::new(203, 0, 113, 0),
                Ipv4Addr::new(203, 0, 113, 1)
            ]
        );
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(parse_sources("").is_err());
        assert!(parse_sources("203.0.113.9-203.0.113.1").is_err());
        assert!(parse_sources("nonsense").is_err());
        assert!(parse_sources("0.0.0.0-255.255.255.255").is_err());
    }
}
