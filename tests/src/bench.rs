//! The arithmetic and the report of `lb-bench`: per-round medians, the
//! median of rounds, the figures net of the empty program, the ratio to the
//! baseline, the printed table and the JSON rows. Pure: the binary does the
//! measuring.

use serde::Serialize;

/// The median of `samples` (the mean of the two middle values for an even
/// count); `None` when there are none. Sorts the slice.
pub fn median<T: Copy + Ord + Into<f64>>(samples: &mut [T]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let n = samples.len();
    let mid = samples[n / 2].into();
    Some(if n % 2 == 1 {
        mid
    } else {
        (samples[n / 2 - 1].into() + mid) / 2.0
    })
}

/// The nearest-rank `p`-th percentile (0 < p <= 100) of sorted samples.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of floating-point values (round medians); `None` when empty.
pub fn median_f64(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One row of `target/bench/xdp.json`, and of the printed table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub case: String,
    /// ns per packet; for a Maglev build, ns per build.
    pub ns_per_packet: f64,
    /// `ns_per_packet` minus the empty program's, measured the same way.
    pub ns_net: Option<f64>,
    /// `ns_per_packet` divided by the baseline's `ns_per_packet` (raw: see
    /// [`test_run_rows`]).
    pub ratio_to_baseline: Option<f64>,
    pub method: String,
}

/// The rows of the test-run cases from their raw ns/packet: each net of
/// `empty`'s figure, and its ratio to `baseline`, both raw (ns/packet over
/// the baseline's ns/packet). Raw, not net: the baseline's parse costs about
/// a nanosecond over the empty program here, so a ratio of net figures
/// would divide by the clock's resolution and swing wildly.
pub fn test_run_rows(raw: &[(String, f64)], empty: &str, baseline: &str, method: &str) -> Vec<Row> {
    let find = |name: &str| raw.iter().find(|(c, _)| c == name).map(|(_, ns)| *ns);
    let empty_ns = find(empty);
    let baseline_ns = find(baseline).filter(|b| *b > 0.0);
    raw.iter()
        .map(|(case, ns)| Row {
            case: case.clone(),
            ns_per_packet: *ns,
            ns_net: empty_ns.map(|e| ns - e),
            ratio_to_baseline: baseline_ns.map(|b| ns / b),
            method: method.to_string(),
        })
        .collect()
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) => format!("{x:.decimals$}"),
        None => "-".to_string(),
    }
}

/// The rows as an aligned text table.
pub fn render_table(rows: &[Row]) -> String {
    let header = [
        "case",
        "ns/packet",
        "net of empty",
        "ratio to baseline",
        "method",
    ];
    let body: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.case.clone(),
                format!("{:.0}", r.ns_per_packet),
                cell(r.ns_net, 0),
                cell(r.ratio_to_baseline, 2),
                r.method.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &body {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 5]| -> String {
        let mut s = format!("{:<w$}", cells[0], w = widths[0]);
        for i in 1..4 {
            s.push_str(&format!(" | {:>w$}", cells[i], w = widths[i]));
        }
        s.push_str(&format!(" | {}", cells[4]));
        s.trim_end().to_string()
    };
    let mut out = line(header);
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 3 * 4));
    out.push('\n');
    for r in &body {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median::<u32>(&mut []), None);
        assert_eq!(median(&mut [30u32, 10, 20]), Some(20.0));
        assert_eq!(median(&mut [40u32, 10, 30, 20]), Some(25.0));
        assert_eq!(median_f64(&[3.0, 1.0, 2.0, 10.0, 0.5]), Some(2.0));
        assert_eq!(median_f64(&[]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 10.0), Some(10));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 1.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&v, 0.0), None);
    }

    fn raw(v: &[(&str, f64)]) -> Vec<(String, f64)> {
        v.iter().map(|(c, n)| (c.to_string(), *n)).collect()
    }

    #[test]
    fn rows_are_net_of_empty_and_relative_to_the_raw_baseline() {
        let rows = test_run_rows(
            &raw(&[("empty", 100.0), ("baseline", 125.0), ("syn", 500.0)]),
            "empty",
            "baseline",
            "m",
        );
        assert_eq!(rows[0].ns_net, Some(0.0));
        assert_eq!(rows[0].ratio_to_baseline, Some(0.8));
        assert_eq!(rows[1].ns_net, Some(25.0));
        assert_eq!(rows[1].ratio_to_baseline, Some(1.0));
        assert_eq!(rows[2].ns_net, Some(400.0));
        assert_eq!(rows[2].ratio_to_baseline, Some(4.0));
        assert_eq!(rows[2].method, "m");
    }

    #[test]
    fn missing_reference_cases_leave_cells_empty() {
        let rows = test_run_rows(&raw(&[("syn", 300.0)]), "empty", "baseline", "m");
        assert_eq!(rows[0].ns_net, None);
        assert_eq!(rows[0].ratio_to_baseline, None);
    }

    #[test]
    fn table_has_a_line_per_row_with_dashes_for_missing_cells() {
        let rows = vec![Row {
            case: "maglev_build_10".into(),
            ns_per_packet: 1234567.4,
            ns_net: None,
            ratio_to_baseline: None,
            method: "wall clock".into(),
        }];
        let t = render_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("case"));
        assert!(lines[2].contains("1234567"));
        let cells: Vec<&str> = lines[2].split('|').map(str::trim).collect();
        assert_eq!(
            cells,
            ["maglev_build_10", "1234567", "-", "-", "wall clock"],
            "{}",
            lines[2]
        );
        assert_eq!(lines[1].len(), lines[0].len().max(lines[1].len()));
    }

    #[test]
    fn json_keys_are_the_documented_ones() {
        let rows = test_run_rows(&raw(&[("empty", 100.0)]), "empty", "baseline", "m");
        let v = serde_json::to_value(&rows).unwrap();
        let obj = v[0].as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "case",
                "method",
                "ns_net",
                "ns_per_packet",
                "ratio_to_baseline"
            ]
        );
        assert!(obj["ratio_to_baseline"].is_null());
    }
}
