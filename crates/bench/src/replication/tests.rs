//! Unit tests of the replication benchmark's pure parts.
use super::*;

#[test]
fn timestamps() {
    assert_eq!(parse_timestamp_ns("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_timestamp_ns("2000-03-01T00:00:00.5Z"),
        Some(951_868_800 * 1_000_000_000 + 500_000_000)
    );
    assert_eq!(
        parse_timestamp_ns("2026-12-06T21:11:03.123456Z"),
        Some(1_796_591_463 * 1_000_000_000 + 123_456_000)
    );
    assert_eq!(parse_timestamp_ns("2026-12-06 21:11:03Z"), None);
    assert_eq!(parse_timestamp_ns("2026-13-06T21:11:03Z"), None);
    assert_eq!(parse_timestamp_ns("2026-12-06T21:11:03.12x4Z"), None);
    assert_eq!(parse_timestamp_ns("2026-12-06T21:11:03"), None);
}

const LOG: &str = "\
2026-12-06T21:00:00.000000Z  WARN cldaemon: node node1 is down: old; this node is connected and may take over its applications
2026-12-06T21:00:01.000000Z  INFO cldaemon: starting webdata app=\"webdata\"
2026-12-06T21:00:10.000000Z  INFO cldaemon: heartbeat noise
2026-12-06T21:00:12.000000Z  WARN cldaemon: node node1 is down: heartbeat timeout; this node is connected and may take over its applications node=\"node1\"
2026-12-06T21:00:14.500000Z  INFO cldaemon: starting webdata app=\"webdata\"
2026-12-06T21:00:15.000000Z  INFO cldaemon: DRBD resource webdata-www is Primary here app=\"webdata\"
2026-12-06T21:00:15.250000Z  INFO cldaemon: fsck /dev/drbd0: Clean app=\"webdata\"
2026-12-06T21:00:15.300000Z  INFO cldaemon: mounted /dev/drbd0 on /webdata/www app=\"webdata\"
2026-12-06T21:00:15.900000Z  INFO cldaemon: webdata is running app=\"webdata\"
garbage line
";

#[test]
fn steps_after_the_fault_only() {
    let fault = parse_timestamp_ns("2026-12-06T21:00:08Z").expect("ts");
    let s = steps(LOG, fault, "node1");
    assert_eq!(
        s,
        Steps {
            detected: Some(4.0),
            starting: Some(6.5),
            primary: Some(7.0),
            fsck: Some(7.25),
            mounted: Some(7.3),
            running: Some(7.9),
        }
    );
    // Another peer's name matches nothing, but the later steps are still found in order.
    let s = steps(LOG, fault, "node2");
    assert_eq!(s.detected, None);
    assert_eq!(s.starting, Some(6.5));
    // Nothing after the end of the log.
    let late = parse_timestamp_ns("2026-12-06T22:00:00Z").expect("ts");
    assert_eq!(steps(LOG, late, "node1"), Steps::default());
}

#[test]
fn phases_are_consecutive_differences() {
    let fault = parse_timestamp_ns("2026-12-06T21:00:08Z").expect("ts");
    let rep = FailoverRep {
        rep: 1,
        from: "node1".into(),
        to: "node2".into(),
        seconds: Some(8.2),
        steps: steps(LOG, fault, "node1"),
        clock_uncertainty_s: 0.01,
        resync_s: None,
    };
    let p: Vec<f64> = phases(&rep).iter().map(|(_, v)| v.expect("all present")).collect();
    let want = [4.0, 2.5, 0.5, 0.25, 0.05, 0.6, 0.3];
    assert_eq!(p.len(), want.len());
    for (a, b) in p.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{p:?}");
    }
    let missing = FailoverRep { steps: Steps { fsck: None, ..rep.steps.clone() }, ..rep };
    let p = phases(&missing);
    assert_eq!(p[3].1, None);
    assert_eq!(p[4].1, None);
    assert!(p[5].1.is_some());
}

#[test]
fn ping_summary() {
    let busybox = "20 packets transmitted, 20 packets received, 0% packet loss\nround-trip min/avg/max = 0.512/1.204/3.950 ms\n";
    assert_eq!(parse_ping(busybox), Some((0.512, 1.204, 3.950)));
    let iputils = "rtt min/avg/max/mdev = 0.040/0.052/0.071/0.010 ms";
    assert_eq!(parse_ping(iputils), Some((0.040, 0.052, 0.071)));
    assert_eq!(parse_ping("ping: sendto: Network unreachable"), None);
}

#[test]
fn dd_summary() {
    let out = "48+0 records in\n48+0 records out\n50331648 bytes (50 MB, 48 MiB) copied, 4 s, 12.6 MB/s\n";
    assert_eq!(parse_dd(out), Some(50_331_648.0 / 4.0 / 1e6));
    let gb = "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 0.5 s, 2.1 GB/s";
    assert_eq!(parse_dd(gb), Some(1073741824.0 / 0.5 / 1e6));
    assert_eq!(parse_dd("gdd: error writing: No space left on device"), None);
    assert_eq!(parse_dd("0 bytes copied, 0 s, 0 kB/s"), None);
}

#[test]
fn markdown_ratios() {
    let lat = |target: &str, v: Vec<f64>| LatencyRun {
        target: target.into(),
        rep: 1,
        report: FsyncReport { path: "/x".into(), size: 4096, latencies_us: v, total_s: 1.0 },
    };
    let thr = |target: &str, v: f64| ThroughputRun {
        target: target.into(),
        rep: 1,
        mb_s: Some(v),
        output: String::new(),
    };
    let r = Results {
        command: "bench replication".into(),
        latency: vec![lat("raw", vec![1000.0, 1000.0]), lat("drbd", vec![3000.0, 3000.0])],
        throughput: vec![thr("raw", 100.0), thr("drbd", 25.0)],
        ..Results::default()
    };
    let md = markdown(&r);
    assert!(md.contains("| raw | 2 | 1.00 | 1.00 | 1.00 | 1.00 | 1000.00 |"), "{md}");
    assert!(md.contains("| **drbd ÷ raw** |  | 3.00× | 3.00× | 3.00× | 3.00× | 0.33× |"), "{md}");
    assert!(md.contains("| **drbd ÷ raw** |  | 0.25× |  |  |"), "{md}");
    assert!(!md.contains("Failover"), "{md}");
}
