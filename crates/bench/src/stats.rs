//! Statistics and the markdown table: pure functions over the measured samples, unit-tested so
//! `cargo test --workspace` covers the benchmark without running it.

use serde::Serialize;

/// Summary of one set of measurements (seconds or milliseconds, as the caller chose).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// The median (linear interpolation between the two middle values).
    pub median: f64,
    /// The 90th percentile (linear interpolation, as numpy's default).
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// The `q` quantile (0..=1) of `sorted` (ascending, not empty), interpolating linearly between
/// the two nearest ranks so that small samples (10 repetitions) still give distinct p90s.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            let frac = pos - lo as f64;
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
    }
}

/// The summary of `values` (NaNs ignored), or `None` when there is nothing to summarise.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    Some(Summary {
        n: sorted.len(),
        median: quantile(&sorted, 0.5),
        p90: quantile(&sorted, 0.9),
        p99: quantile(&sorted, 0.99),
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    })
}

/// `ours / theirs` as text (`0.31×`), or `–` when either is missing or theirs is zero.
pub fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// One row of the failover table: a system in a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Scenario label, e.g. `a: isolated`.
    pub scenario: String,
    /// System label, e.g. `keepalived advert 1s`.
    pub system: String,
    /// The measured values in seconds (failed repetitions excluded).
    pub values: Vec<f64>,
    /// Repetitions that did not recover within the limit.
    pub failed: usize,
    /// Free text for the last column (e.g. `two owners: 0/10`).
    pub note: String,
}

/// Formats seconds with millisecond precision.
fn secs(v: f64) -> String {
    format!("{v:.3}")
}

/// The markdown table of `rows`: per row n, median, p90, min, max (seconds), and the ratio of
/// the median of each reference system (`linuxha`, `linuxha-fast`) in the same scenario to
/// this row's median, so "0.30×" reads "linuxha needs 30 % of this system's time".
pub fn failover_table(rows: &[Row], references: &[&str]) -> String {
    let mut out = String::from("| scenario | system | n | median s | p90 s | min s | max s |");
    for r in references {
        out += &format!(" {r} ÷ this |");
    }
    out += " notes |\n|---|---|---:|---:|---:|---:|---:|";
    for _ in references {
        out += "---:|";
    }
    out += "---|\n";
    for row in rows {
        let summary = summarize(&row.values);
        let cells = match summary {
            Some(s) => format!(
                "{} | {} | {} | {} | {}",
                s.n,
                secs(s.median),
                secs(s.p90),
                secs(s.min),
                secs(s.max)
            ),
            None => "0 | – | – | – | –".into(),
        };
        out += &format!("| {} | {} | {cells} |", row.scenario, row.system);
        for reference in references {
            let ours = rows
                .iter()
                .find(|r| r.scenario == row.scenario && r.system == *reference)
                .and_then(|r| summarize(&r.values))
                .map(|s| s.median);
            out += &format!(" {} |", ratio(ours, summary.map(|s| s.median)));
        }
        let mut note = row.note.clone();
        if row.failed > 0 {
            if !note.is_empty() {
                note += "; ";
            }
            note += &format!("{} not recovered", row.failed);
        }
        out += &format!(" {note} |\n");
    }
    out
}

/// A generic markdown table from a header and rows of cells.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n|", header.join(" | "));
    for _ in header {
        out += "---|";
    }
    out.push('\n');
    for row in rows {
        out += &format!("| {} |\n", row.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 5.5);
        assert!((quantile(&v, 0.9) - 9.1).abs() < 1e-9);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 10.0);
        assert_eq!(quantile(&[3.0], 0.9), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn summary_sorts_and_skips_nan() {
        let s = summarize(&[3.0, f64::NAN, 1.0, 2.0]).expect("values");
        assert_eq!(s.n, 3);
        assert_eq!(s.median, 2.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 3.0);
        assert!((s.p90 - 2.8).abs() < 1e-9);
        assert!(summarize(&[]).is_none());
        assert!(summarize(&[f64::NAN]).is_none());
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25×");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "–");
        assert_eq!(ratio(None, Some(1.0)), "–");
        assert_eq!(ratio(Some(2.0), None), "–");
    }

    #[test]
    fn failover_table_has_ratios_per_scenario() {
        let rows = vec![
            Row {
                scenario: "a".into(),
                system: "linuxha".into(),
                values: vec![1.0, 1.0, 1.0],
                failed: 0,
                note: String::new(),
            },
            Row {
                scenario: "a".into(),
                system: "keepalived".into(),
                values: vec![4.0, 2.0, 3.0],
                failed: 1,
                note: "two owners: 0/3".into(),
            },
            Row {
                scenario: "b".into(),
                system: "keepalived".into(),
                values: vec![],
                failed: 2,
                note: String::new(),
            },
        ];
        let t = failover_table(&rows, &["linuxha"]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].starts_with("| scenario | system | n | median s |"), "{t}");
        assert!(lines[0].contains("linuxha ÷ this"), "{t}");
        assert_eq!(lines[2], "| a | linuxha | 3 | 1.000 | 1.000 | 1.000 | 1.000 | 1.00× |  |");
        assert_eq!(
            lines[3],
            "| a | keepalived | 3 | 3.000 | 3.800 | 2.000 | 4.000 | 0.33× | two owners: 0/3; 1 not recovered |"
        );
        assert_eq!(lines[4], "| b | keepalived | 0 | – | – | – | – | – | 2 not recovered |");
    }

    #[test]
    fn generic_table() {
        let t = table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}
