//! The replication benchmark's pure parts: daemon log timestamps and take-over steps, dd and
//! ping output, the phase breakdown and the markdown report.

use super::*;

/// Unix time in nanoseconds of an RFC 3339 UTC timestamp as the daemons log it
/// (`2026-12-06T21:11:03.123456Z`).
pub fn parse_timestamp_ns(s: &str) -> Option<i128> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let nanos: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    let days = days_from_civil(y, m, day);
    Some(i128::from(days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000_000 + nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The take-over steps in `log` (a cldaemon log: `<time> <level> cldaemon: <message>`) after
/// `fault_ns` (Unix ns, the log's clock): each step is the first matching line after the
/// previous step's, so an earlier take-over in the same log is never picked up.
pub fn steps(log: &str, fault_ns: i128, peer: &str) -> Steps {
    let events: Vec<(i128, &str)> = log
        .lines()
        .filter_map(|l| {
            let (ts, rest) = l.split_once(' ')?;
            let t = parse_timestamp_ns(ts)?;
            (t >= fault_ns).then_some((t, rest))
        })
        .collect();
    let down = format!("node {peer} is down");
    let starting = format!("starting {APP}");
    let running = format!("{APP} is running");
    let patterns: [&dyn Fn(&str) -> bool; 6] = [
        &|m| m.contains(&down),
        &|m| m.contains(&starting),
        &|m| m.contains("is Primary here"),
        &|m| m.contains(": fsck "),
        &|m| m.contains(": mounted "),
        &|m| m.contains(&running),
    ];
    let mut found = [None; 6];
    let mut from = 0;
    for (i, matches) in patterns.iter().enumerate() {
        if let Some(k) = events[from..].iter().position(|(_, m)| matches(m)) {
            let (t, _) = events[from + k];
            found[i] = Some((t - fault_ns) as f64 / 1e9);
            from += k + 1;
        }
    }
    Steps {
        detected: found[0],
        starting: found[1],
        primary: found[2],
        fsck: found[3],
        mounted: found[4],
        running: found[5],
    }
}

/// MB/s (10^6 bytes per second) from GNU dd's summary line
/// (`50331648 bytes (50 MB, 48 MiB) copied, 3.2 s, 15.7 MB/s`), computed from the byte count
/// and the seconds so the unit dd picked does not matter.
pub fn parse_dd(output: &str) -> Option<f64> {
    let line = output.lines().rev().find(|l| l.contains(" bytes") && l.contains(" copied, "))?;
    let bytes: f64 = line.split_whitespace().next()?.parse().ok()?;
    let secs: f64 = line.split(" copied, ").nth(1)?.split_whitespace().next()?.parse().ok()?;
    (secs > 0.0).then(|| bytes / secs / 1e6)
}

/// min/avg/max in milliseconds from ping's summary (`round-trip min/avg/max = 0.3/0.5/1.2 ms`,
/// busybox; iputils says `rtt min/avg/max/mdev = …`).
pub fn parse_ping(output: &str) -> Option<(f64, f64, f64)> {
    let line = output.lines().rev().find(|l| l.contains("min/avg/max"))?;
    let values = line.split('=').nth(1)?.split_whitespace().next()?;
    let mut v = values.split('/').map(|x| x.parse::<f64>().ok());
    Some((v.next()??, v.next()??, v.next()??))
}

pub(super) fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into())
}

/// The duration of each take-over phase in one repetition: consecutive step differences, from
/// the power-off to the client's first answer. `None` where a step is missing.
pub fn phases(rep: &FailoverRep) -> Vec<(&'static str, Option<f64>)> {
    let s = &rep.steps;
    let points =
        [Some(0.0), s.detected, s.starting, s.primary, s.fsck, s.mounted, s.running, rep.seconds];
    let names = [
        "detection (power-off → `node … is down`)",
        "take-over delay (→ `starting webdata`)",
        "VIP probe + DRBD promote (→ `Primary here`)",
        "fsck",
        "mount",
        "VIP + start script (→ `webdata is running`)",
        "until the client's first answer",
    ];
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, points[i].zip(points[i + 1]).map(|(a, b)| b - a)))
        .collect()
}

/// The markdown report.
pub fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let mut out = format!(
        "Host: {} CPUs ({}), kernel {}, Debian {}; load average at start {}, at end {}.\n\nGuests: {}. Heartbeat {} ms / {} ms. {}\n\nCommand: `{}`\n\n",
        m.nproc, m.cpu, m.kernel, m.debian, m.load_start, m.load_end, r.guest,
        r.heartbeat_ms.0,
        r.heartbeat_ms.1,
        r.rtt_ms
            .map(|(a, b, c)| format!(
                "Replication network round trip (ping, node1 → node2): min/avg/max {a:.2}/{b:.2}/{c:.2} ms."
            ))
            .unwrap_or_default(),
        r.command
    );
    if !r.latency.is_empty() {
        out += &format!(
            "### Synchronous {} KiB writes (write + fsync, appended to a new file), milliseconds\n\n",
            WRITE_SIZE / 1024
        );
        let mut rows = Vec::new();
        let mut by_target = Vec::new();
        for target in TARGETS {
            let v: Vec<f64> = r
                .latency
                .iter()
                .filter(|l| l.target == target)
                .flat_map(|l| l.report.latencies_us.iter().map(|u| u / 1000.0))
                .collect();
            let s = stats::summarize(&v);
            let avg = mean(&v);
            by_target.push((s, avg));
            if let Some(s) = s {
                rows.push(vec![
                    target.to_string(),
                    s.n.to_string(),
                    format!("{:.2}", s.median),
                    format!("{:.2}", s.p99),
                    ms(avg),
                    format!("{:.2}", s.max),
                    ms(avg.map(|a| 1000.0 / a)),
                ]);
            }
        }
        if let [(Some(raw), raw_mean), (Some(drbd), drbd_mean)] = by_target[..] {
            rows.push(vec![
                "**drbd ÷ raw**".into(),
                String::new(),
                stats::ratio(Some(drbd.median), Some(raw.median)),
                stats::ratio(Some(drbd.p99), Some(raw.p99)),
                stats::ratio(drbd_mean, raw_mean),
                stats::ratio(Some(drbd.max), Some(raw.max)),
                stats::ratio(raw_mean, drbd_mean),
            ]);
        }
        out += &stats::table(
            &["target", "writes", "p50 ms", "p99 ms", "mean ms", "max ms", "writes/s"],
            &rows,
        );
        out += "\n";
    }
    if !r.throughput.is_empty() {
        out += &format!(
            "### Sequential write: `gdd bs=1M count={SEQ_MIB} oflag=direct conv=fsync`, MB/s\n\n"
        );
        let mut rows = Vec::new();
        let mut medians = Vec::new();
        for target in TARGETS {
            let v: Vec<f64> =
                r.throughput.iter().filter(|t| t.target == target).filter_map(|t| t.mb_s).collect();
            let s = stats::summarize(&v);
            medians.push(s.map(|s| s.median));
            if let Some(s) = s {
                rows.push(vec![
                    target.to_string(),
                    s.n.to_string(),
                    format!("{:.1}", s.median),
                    format!("{:.1}", s.min),
                    format!("{:.1}", s.max),
                ]);
            }
        }
        if let [raw, drbd] = medians[..] {
            rows.push(vec![
                "**drbd ÷ raw**".into(),
                String::new(),
                stats::ratio(drbd, raw),
                String::new(),
                String::new(),
            ]);
        }
        out += &stats::table(&["target", "runs", "median MB/s", "min", "max"], &rows);
        out += "\n";
    }
    if !r.failover.is_empty() {
        out += "### Failover with a replicated filesystem: hard power-off → first HTTP answer on the VIP from ext (seconds)\n\n";
        let mut rows = Vec::new();
        let mut all = Vec::new();
        for (from, to) in [("node1", "node2"), ("node2", "node1")] {
            let reps: Vec<&FailoverRep> =
                r.failover.iter().filter(|f| f.from == from && f.to == to).collect();
            if reps.is_empty() {
                continue;
            }
            let values: Vec<f64> = reps.iter().filter_map(|f| f.seconds).collect();
            all.extend(values.iter().copied());
            rows.push(Row {
                scenario: "power-off".into(),
                system: format!("{from} → {to}"),
                failed: reps.len() - values.len(),
                values,
                note: String::new(),
            });
        }
        let failed: usize = rows.iter().map(|r| r.failed).sum();
        let resync: Vec<f64> = r.failover.iter().filter_map(|f| f.resync_s).collect();
        rows.push(Row {
            scenario: "power-off".into(),
            system: "both directions".into(),
            values: all,
            failed,
            note: stats::summarize(&resync)
                .map(|s| format!("power-on → UpToDate/UpToDate again: median {:.1} s", s.median))
                .unwrap_or_default(),
        });
        out += &stats::failover_table(&rows, &[]);
        out += "\n";
        out += "Where the time goes (survivor's cldaemon log, seconds; medians over the repetitions):\n\n";
        let per_rep: Vec<Vec<(&str, Option<f64>)>> = r.failover.iter().map(phases).collect();
        let mut rows = Vec::new();
        if let Some(first) = per_rep.first() {
            for (i, (name, _)) in first.iter().enumerate() {
                let v: Vec<f64> = per_rep.iter().filter_map(|p| p[i].1).collect();
                let cells = match stats::summarize(&v) {
                    Some(s) => vec![
                        s.n.to_string(),
                        format!("{:.3}", s.median),
                        format!("{:.3}", s.min),
                        format!("{:.3}", s.max),
                    ],
                    None => vec!["0".into(), "–".into(), "–".into(), "–".into()],
                };
                let mut row = vec![name.to_string()];
                row.extend(cells);
                rows.push(row);
            }
        }
        out += &stats::table(&["phase", "n", "median s", "min s", "max s"], &rows);
        let unc = r.failover.iter().map(|f| f.clock_uncertainty_s).fold(0.0, f64::max);
        out += &format!("\nClock offset host ↔ survivor known to ±{unc:.3} s.\n\n");
    }
    for e in &r.errors {
        out += &format!("- error: {e}\n");
    }
    out
}
