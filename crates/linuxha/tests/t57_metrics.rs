//! cldaemon's Prometheus endpoint on a live lab cluster: `<metrics/>` in clconf.xml serves
//! `GET /metrics` on 127.0.0.1:9949 inside each node; the text passes `promtool check metrics`
//! (when promtool is installed); after node1, which runs apache, is cut off, node2 takes apache
//! over and its failover counter and failover-time histogram count it.

mod cluster;

use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{app_running_on, text, Cluster, APP};

/// What `curl` gets from `url` inside `node`: the HTTP status and the body.
fn scrape(c: &Cluster, node: &str, url: &str) -> (String, String) {
    let out = c
        .lab
        .run(node, &["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", url])
        .expect("curl runs");
    assert!(out.status.success(), "curl {url} on {node}: {}", text(&out));
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = body.rsplit_once('\n').unwrap_or((&body, ""));
    (code.to_string(), body.to_string())
}

/// The value of the sample line that starts with `series ` in `metrics`.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// `promtool check metrics` on `metrics`: `None` when promtool is not installed.
fn promtool(metrics: &str) -> Option<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(metrics.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool runs");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match out.status.success() {
        true => Some(said.trim().to_string()),
        false => Some(format!("{} ({})", said.trim(), out.status)),
    }
}

fn enable_metrics(_: &str, etc: &Path) {
    let path = etc.join("clconf.xml");
    let xml = std::fs::read_to_string(&path).expect("clconf.xml");
    assert!(xml.contains("</global>"), "the example has a <global>");
    let xml = xml.replacen("</global>", "  <metrics/>\n  </global>", 1);
    std::fs::write(&path, xml).expect("write clconf.xml");
}

const METRICS: &str = "http://127.0.0.1:9949/metrics";

#[test]
fn metrics_are_served_checked_and_count_a_failover() {
    let Some(mut c) = Cluster::with_apache("metrics_failover", enable_metrics) else { return };
    c.form();
    c.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
    c.wait_served_by("node1", Duration::from_secs(10));

    let running = format!(r#"linuxha_application_state{{application="{APP}",state="running"}}"#);
    let on_node1 = format!(r#"linuxha_application_node{{application="{APP}",node="node1"}}"#);
    let on_node2 = format!(r#"linuxha_application_node{{application="{APP}",node="node2"}}"#);
    let failovers = format!(r#"linuxha_failovers_total{{application="{APP}"}}"#);
    let count = format!(r#"linuxha_failover_duration_seconds_count{{application="{APP}"}}"#);
    let sum = format!(r#"linuxha_failover_duration_seconds_sum{{application="{APP}"}}"#);

    let (code, before) = scrape(&c, "node2", METRICS);
    assert_eq!(code, "200", "{before}");
    assert_eq!(value(&before, "linuxha_cluster_formed"), Some(1.0), "{before}");
    assert_eq!(value(&before, r#"linuxha_node_state{node="node1",state="up"}"#), Some(1.0));
    assert_eq!(value(&before, &running), Some(1.0), "{before}");
    assert_eq!(value(&before, &on_node1), Some(1.0), "{before}");
    assert_eq!(value(&before, &failovers), Some(0.0), "{before}");
    assert_eq!(value(&before, &count), Some(0.0), "{before}");
    assert!(
        before.contains(r#"linuxha_heartbeat_link_up{node="node1",network="#),
        "heartbeat links are listed: {before}"
    );
    match promtool(&before) {
        Some(said) => assert!(said.is_empty(), "promtool check metrics: {said}\n{before}"),
        None => eprintln!("SKIPPED promtool check: promtool is not installed (package prometheus)"),
    }
    // Only /metrics is served, and the endpoint is on this node's loopback only.
    assert_eq!(scrape(&c, "node2", "http://127.0.0.1:9949/").0, "404");
    let (_, status) = c.status("node2");
    assert!(
        status.listeners.iter().any(|l| l.listener == "metrics 127.0.0.1:9949"),
        "the endpoint is one of cldaemon's listeners in clstat: {status:#?}"
    );

    // node1, running apache, is cut off: node2 declares it down and takes apache over.
    let t = Instant::now();
    c.lab.cut("node1", None).expect("cut node1");
    c.wait_served_by("node2", Duration::from_secs(20));
    let served = t.elapsed();
    // The counters follow the snapshot within a second; poll a little.
    let after = loop {
        let (code, after) = scrape(&c, "node2", METRICS);
        assert_eq!(code, "200");
        if value(&after, &failovers) == Some(1.0) || t.elapsed() > Duration::from_secs(30) {
            break after;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(value(&after, &failovers), Some(1.0), "one failover counted\n{after}");
    assert_eq!(value(&after, &count), Some(1.0), "one failover timed\n{after}");
    let took = value(&after, &sum).expect("a failover time");
    assert!(
        took > 0.0 && took < served.as_secs_f64() + 1.0,
        "the failover took {took} s, measured from node1 declared down; ext was served by node2 {served:?} after the cut"
    );
    assert_eq!(value(&after, &on_node2), Some(1.0), "{after}");
    assert_eq!(value(&after, r#"linuxha_node_state{node="node1",state="down"}"#), Some(1.0));
    match promtool(&after) {
        Some(said) => assert!(said.is_empty(), "promtool check metrics: {said}\n{after}"),
        None => eprintln!("SKIPPED promtool check: promtool is not installed (package prometheus)"),
    }
    eprintln!(
        "cut → ext served by node2 after {served:?}; linuxha_failover_duration_seconds_sum {took}"
    );
}
