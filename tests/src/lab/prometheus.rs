//! Reading the Prometheus / OpenMetrics text that lbd's `/metrics` serves,
//! strictly enough that a malformed exposition fails the test: every
//! sample line must parse, every sample must belong to a family declared
//! with `# TYPE`, and an OpenMetrics body must end with `# EOF`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

/// One sample: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: the declared family types and every sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    /// Family name -> type (`counter`, `gauge`, ...).
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The samples named `name` whose labels include every pair of `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
    }

    /// The value of the one sample `name` with (at least) `labels`; fails
    /// when there is none or more than one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let found: Vec<&Sample> = self.find(name, labels).collect();
        match found.as_slice() {
            [one] => Ok(one.value),
            [] => bail!("/metrics has no sample {name}{labels:?}"),
            many => bail!(
                "/metrics has {} samples {name}{labels:?}, expected one",
                many.len()
            ),
        }
    }
}

/// Parses Prometheus text format 0.0.4 or OpenMetrics 1.0 text.
pub fn parse(text: &str) -> Result<Exposition> {
    let mut exposition = Exposition::default();
    let mut saw_eof = false;
    for (number, line) in text.lines().enumerate() {
        let at = || format!("/metrics line {}: {line:?}", number + 1);
        if saw_eof {
            bail!("{}: text after # EOF", at());
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("EOF") => saw_eof = true,
                Some("TYPE") => {
                    let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                        bail!("{}: # TYPE needs a name and a type", at());
                    };
                    exposition.types.insert(name.to_string(), kind.to_string());
                }
                _ => {}
            }
            continue;
        }
        let sample = parse_sample(line).with_context(at)?;
        if family_of(&sample.name, &exposition.types).is_none() {
            bail!("{}: sample of an undeclared family", at());
        }
        exposition.samples.push(sample);
    }
    let openmetrics = text.contains("# EOF");
    if openmetrics && !saw_eof {
        bail!("/metrics: # EOF is not on a line of its own");
    }
    Ok(exposition)
}

/// The declared family a sample name belongs to (`x_total` and `x_created`
/// belong to counter `x`, `x_bucket` etc. to histogram `x`).
fn family_of<'a>(name: &str, types: &'a BTreeMap<String, String>) -> Option<&'a str> {
    if let Some(kind) = types.get(name) {
        return Some(kind);
    }
    for suffix in ["_total", "_created", "_bucket", "_count", "_sum", "_info"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(kind) = types.get(base)
        {
            return Some(kind);
        }
    }
    None
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        bail!("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().context("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().with_context(|| format!("bad value {v:?}"))?,
    };
    // An optional timestamp may follow; nothing else.
    if let Some(ts) = fields.next() {
        ts.parse::<f64>()
            .with_context(|| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        bail!("trailing text after the value");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` (after the `{`); returns what follows the `}`.
fn parse_labels<'a>(mut text: &'a str, labels: &mut BTreeMap<String, String>) -> Result<&'a str> {
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok(after);
        }
        let eq = text.find('=').context("label without =")?;
        let key = text[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("bad label name {key:?}");
        }
        let after_eq = text[eq + 1..]
            .strip_prefix('"')
            .context("label value without quotes")?;
        let mut value = String::new();
        let mut chars = after_eq.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => bail!("bad escape in label value: {other:?}"),
                },
                Some((_, c)) => value.push(c),
                None => bail!("unterminated label value"),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            bail!("label {key} given twice");
        }
        text = &after_eq[end + 1..];
        text = text.trim_start();
        if let Some(after) = text.strip_prefix(',') {
            text = after;
        } else if !text.starts_with('}') {
            bail!("expected , or }} after a label");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "\
# HELP lb_backend_packets Packets forwarded, by direction.
# TYPE lb_backend_packets counter
lb_backend_packets_total{service=\"web\",backend=\"be1\",direction=\"to_backend\"} 12
lb_backend_packets_total{service=\"web\",backend=\"be1\",direction=\"to_client\"} 10
# TYPE lb_backend_up gauge
lb_backend_up{service=\"web\",backend=\"be \\\"x\\\"\"} 1
# TYPE lb_agent_start_time_seconds gauge
lb_agent_start_time_seconds 1.7e9
# EOF
";

    #[test]
    fn reads_openmetrics_counters_gauges_and_escapes() {
        let e = parse(OPENMETRICS).unwrap();
        assert_eq!(e.types["lb_backend_packets"], "counter");
        assert_eq!(e.samples.len(), 4);
        let v = e
            .value(
                "lb_backend_packets_total",
                &[("backend", "be1"), ("direction", "to_client")],
            )
            .unwrap();
        assert_eq!(v, 10.0);
        assert_eq!(
            e.value("lb_backend_up", &[("backend", "be \"x\"")])
                .unwrap(),
            1.0
        );
        assert_eq!(e.value("lb_agent_start_time_seconds", &[]).unwrap(), 1.7e9);
        assert!(
            e.value("lb_backend_packets_total", &[]).is_err(),
            "two match"
        );
        assert!(e.value("lb_nothing", &[]).is_err());
    }

    #[test]
    fn refuses_malformed_text() {
        for bad in [
            "# TYPE a gauge\na{b=\"c\" 1\n",
            "# TYPE a gauge\na{b=c} 1\n",
            "# TYPE a gauge\na one\n",
            "undeclared 1\n",
            "# TYPE a gauge\na 1\n# EOF\na 2\n",
            "# TYPE a gauge\na{b=\"1\",b=\"2\"} 1\n",
            "# TYPE a gauge\na 1 2 3\n",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn reads_plain_prometheus_text_with_timestamps() {
        let e = parse("# TYPE x_total counter\nx_total{a=\"b\"} 3 1700000000000\n").unwrap();
        assert_eq!(e.value("x_total", &[("a", "b")]).unwrap(), 3.0);
    }
}
