//! Cross-site request checks for state-changing requests: the request must
//! come from a page of this server (Sec-Fetch-Site, else Origin, else
//! Referer compared with Host), and a browser session must echo its own
//! token. A forged form on another site fails the first test; a script that
//! cannot read our pages cannot know the token.

use axum::http::{HeaderMap, header};

/// What the headers say about where a request comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum Origin {
    /// A page of this server sent it.
    Same,
    /// Another site (or an opaque origin) sent it; the reason says which.
    Cross(String),
    /// No header tells: not a browser (curl, scripts).
    Unknown,
}

/// Where the request comes from, judged from its headers.
pub fn origin(headers: &HeaderMap) -> Origin {
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return match site {
            "same-origin" => Origin::Same,
            other => Origin::Cross(format!("Sec-Fetch-Site is {other}")),
        };
    }
    let host = get(header::HOST.as_str()).unwrap_or("");
    if let Some(origin) = get(header::ORIGIN.as_str()) {
        return match authority_of(origin) {
            Some(authority) if !host.is_empty() && authority.eq_ignore_ascii_case(host) => {
                Origin::Same
            }
            _ => Origin::Cross(format!("Origin {origin} is not this server ({host})")),
        };
    }
    if let Some(referer) = get(header::REFERER.as_str()) {
        return match authority_of(referer) {
            Some(authority) if !host.is_empty() && authority.eq_ignore_ascii_case(host) => {
                Origin::Same
            }
            _ => Origin::Cross(format!("Referer {referer} is not this server ({host})")),
        };
    }
    Origin::Unknown
}

/// `host[:port]` of an http(s) URL or origin.
fn authority_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

/// Compares a token in time independent of where they differ.
pub fn token_matches(expected: &str, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    if expected.is_empty() || expected.len() != given.len() {
        return false;
    }
    expected
        .bytes()
        .zip(given.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn fetch_metadata_decides_first() {
        let h = headers(&[("sec-fetch-site", "same-origin"), ("origin", "http://evil")]);
        assert_eq!(origin(&h), Origin::Same);
        let h = headers(&[("sec-fetch-site", "cross-site"), ("host", "lb:8404")]);
        assert!(matches!(origin(&h), Origin::Cross(_)));
        let h = headers(&[("sec-fetch-site", "same-site")]);
        assert!(matches!(origin(&h), Origin::Cross(_)));
    }

    #[test]
    fn origin_and_referer_must_name_the_host() {
        let h = headers(&[
            ("host", "192.0.2.250:8404"),
            ("origin", "http://192.0.2.250:8404"),
        ]);
        assert_eq!(origin(&h), Origin::Same);
        let h = headers(&[
            ("host", "192.0.2.250:8404"),
            ("origin", "http://evil.example"),
        ]);
        assert!(matches!(origin(&h), Origin::Cross(_)));
        let h = headers(&[("host", "192.0.2.250:8404"), ("origin", "null")]);
        assert!(matches!(origin(&h), Origin::Cross(_)));
        let h = headers(&[
            ("host", "192.0.2.250:8404"),
            ("referer", "http://192.0.2.250:8404/stats?x=1"),
        ]);
        assert_eq!(origin(&h), Origin::Same);
        let h = headers(&[
            ("host", "192.0.2.250:8404"),
            ("referer", "http://192.0.2.250:8404.evil.example/"),
        ]);
        assert!(matches!(origin(&h), Origin::Cross(_)));
        assert_eq!(origin(&headers(&[("host", "x")])), Origin::Unknown);
    }

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("abc", Some("abc")));
        assert!(!token_matches("abc", Some("abd")));
        assert!(!token_matches("abc", Some("ab")));
        assert!(!token_matches("abc", None));
        assert!(!token_matches("", Some("")));
    }
}
