//! The rendering, the history's counters and the request parsing; `promtool check metrics`
//! on a full rendering when promtool is installed.

use std::time::Duration;

use cl_core::storage::{ConnectionState, DiskState, ReplicationState, Role, VolumeState};
use cl_wire::msg::{
    ApplicationState, ApplicationStatus, ClusterState, ClusterStatus, GuardSummary,
    KnownConnectionStatus, LeaseState, LeaseSummary, LinkState, LinkStatus, ListenerStatus,
    LocalStateView, MonitorStatus, NodeState, NodeStatus, PeerTakeover, ResourceStatus,
    ServeCounters, TakeoverStage, VolumeStatus,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::*;

fn app(name: &str, state: ApplicationState, node: Option<&str>) -> ApplicationStatus {
    ApplicationStatus {
        name: name.into(),
        state,
        node: node.map(str::to_string),
        restarts: 0,
        last_failure: None,
        last_failure_at: None,
        vips: vec![],
        monitors: vec![],
        resources: vec![],
        volumes: vec![],
        data_blocked: vec![],
    }
}

fn node(name: &str, state: NodeState) -> NodeStatus {
    NodeStatus { name: name.into(), state, links: vec![] }
}

/// node2's view of a formed two-node cluster running `web` on node1.
fn formed() -> ClusterStatus {
    ClusterStatus {
        cluster: "cluster1".into(),
        state: ClusterState::Formed,
        local: "node2".into(),
        local_state: LocalStateView::Connected,
        config_version: 3,
        nodes: vec![
            NodeStatus {
                name: "node1".into(),
                state: NodeState::Up,
                links: vec![
                    LinkStatus {
                        network: "public".into(),
                        state: LinkState::Up,
                        last_heard_ms: Some(120),
                    },
                    LinkStatus {
                        network: "private".into(),
                        state: LinkState::Down,
                        last_heard_ms: None,
                    },
                ],
            },
            node("node2", NodeState::Up),
        ],
        known_connections: vec![KnownConnectionStatus {
            address: "10.10.0.1".parse().expect("address"),
            reachable: true,
            last_reply_ms: Some(1500),
        }],
        applications: vec![app("web", ApplicationState::Running, Some("node1"))],
        warnings: vec!["heartbeat link private to node1 is down".into()],
        alarms: vec![],
        takeover: vec![],
        counters: serde_json::Value::Object(Default::default()),
        listeners: vec![ListenerStatus {
            daemon: cl_wire::Daemon::Cldaemon,
            listener: "peers 10.10.0.12:9901".into(),
            open: 1,
            counters: ServeCounters { accepted: 40, timeouts: 2, ..Default::default() },
            trouble: None,
        }],
        guard: GuardSummary {
            peers: vec![PeerTakeover {
                peer: "node1".into(),
                stage: TakeoverStage::Idle,
                fence_attempts: 0,
            }],
            lease: None,
        },
    }
}

/// The sample lines of `text` (no comments).
fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

fn has(text: &str, line: &str) -> bool {
    samples(text).contains(&line)
}

#[test]
fn nodes_links_and_known_connections_are_rendered_with_base_units() {
    let text = render(&formed(), &History::default());
    assert!(has(&text, "linuxha_cluster_formed 1"), "{text}");
    assert!(has(&text, "linuxha_config_version 3"));
    assert!(has(&text, r#"linuxha_local_state{state="connected"} 1"#));
    assert!(has(&text, r#"linuxha_local_state{state="isolated"} 0"#));
    assert!(has(&text, r#"linuxha_node_state{node="node1",state="up"} 1"#));
    assert!(has(&text, r#"linuxha_node_state{node="node1",state="down"} 0"#));
    assert!(has(&text, r#"linuxha_heartbeat_link_up{node="node1",network="private"} 0"#));
    assert!(has(
        &text,
        r#"linuxha_heartbeat_link_last_heard_age_seconds{node="node1",network="public"} 0.12"#
    ));
    // Never heard: no age rather than a made-up one.
    assert!(!text.contains(r#"last_heard_age_seconds{node="node1",network="private"}"#));
    assert!(has(&text, r#"linuxha_known_connection_reachable{address="10.10.0.1"} 1"#));
    assert!(has(
        &text,
        r#"linuxha_known_connection_last_reply_age_seconds{address="10.10.0.1"} 1.5"#
    ));
    assert!(has(&text, "linuxha_warnings 1"));
    assert!(has(
        &text,
        r#"linuxha_listener_rejected_total{daemon="cldaemon",listener="peers 10.10.0.12:9901",reason="timeout"} 2"#
    ));
}

#[test]
fn application_state_is_one_hot_and_its_node_marked() {
    let mut status = formed();
    let mut web = app("web", ApplicationState::Running, Some("node2"));
    web.restarts = 2;
    web.monitors = vec![MonitorStatus { check: "tcp 80".into(), result: "ok".into(), age_ms: 250 }];
    web.resources = vec![ResourceStatus {
        id: "db".into(),
        kind: "ocf:heartbeat:pgsql".into(),
        result: Some("failed: exit 7".into()),
        age_ms: Some(2000),
    }];
    status.applications = vec![web];
    let text = render(&status, &History::default());
    for &state in render::APPLICATION_STATES {
        let value = if state == ApplicationState::Running { 1 } else { 0 };
        let line =
            format!(r#"linuxha_application_state{{application="web",state="{state}"}} {value}"#);
        assert!(has(&text, &line), "{line} in\n{text}");
    }
    assert!(has(&text, r#"linuxha_application_node{application="web",node="node2"} 1"#));
    assert!(has(&text, r#"linuxha_application_node{application="web",node="node1"} 0"#));
    assert!(has(&text, r#"linuxha_application_recent_restarts{application="web"} 2"#));
    assert!(has(&text, r#"linuxha_monitor_up{application="web",check="tcp 80"} 1"#));
    assert!(has(
        &text,
        r#"linuxha_monitor_result_age_seconds{application="web",check="tcp 80"} 0.25"#
    ));
    assert!(has(
        &text,
        r#"linuxha_resource_up{application="web",resource="db",type="ocf:heartbeat:pgsql"} 0"#
    ));
}

#[test]
fn label_values_are_escaped() {
    let mut status = formed();
    let mut web = app("web", ApplicationState::Running, None);
    web.monitors = vec![MonitorStatus {
        check: "command /x \"y\"\\z\n".into(),
        result: "ok".into(),
        age_ms: 0,
    }];
    status.applications = vec![web];
    let text = render(&status, &History::default());
    assert!(text.contains(r#"check="command /x \"y\"\\z\n"} 1"#), "{text}");
}

#[test]
fn the_guard_the_lease_and_volumes_are_rendered() {
    let mut status = formed();
    status.guard = GuardSummary {
        peers: vec![PeerTakeover {
            peer: "node1".into(),
            stage: TakeoverStage::Fencing,
            fence_attempts: 2,
        }],
        lease: Some(LeaseSummary {
            state: LeaseState::Held,
            holder: Some("node2".into()),
            remaining_ms: Some(2600),
        }),
    };
    let mut web = app("web", ApplicationState::Running, Some("node2"));
    web.volumes = vec![VolumeStatus {
        resource: "r0".into(),
        device: "/dev/drbd0".into(),
        mountpoint: "/srv".into(),
        state: Some(VolumeState {
            role: Role::Primary,
            peer_role: Role::Unknown,
            disk: DiskState::UpToDate,
            peer_disk: DiskState::DUnknown,
            connection: ConnectionState::Connecting,
            replication: ReplicationState::Off,
            suspended: false,
            size_kib: 1024,
            out_of_sync_kib: 16,
            split_brain: false,
        }),
        resync: None,
    }];
    status.applications = vec![web];
    let text = render(&status, &History::default());
    assert!(has(&text, r#"linuxha_takeover_stage{peer="node1",stage="fencing"} 1"#), "{text}");
    assert!(has(&text, r#"linuxha_takeover_stage{peer="node1",stage="idle"} 0"#));
    assert!(has(&text, r#"linuxha_takeover_fence_attempts{peer="node1"} 2"#));
    assert!(has(&text, r#"linuxha_lease_state{state="held"} 1"#));
    assert!(has(&text, r#"linuxha_lease_holder{node="node2"} 1"#));
    assert!(has(&text, "linuxha_lease_remaining_seconds 2.6"));
    let v = r#"application="web",resource="r0""#;
    assert!(has(&text, &format!("linuxha_volume_role{{{v},role=\"Primary\"}} 1")));
    assert!(has(&text, &format!("linuxha_volume_disk_state{{{v},state=\"UpToDate\"}} 1")));
    assert!(has(&text, &format!("linuxha_volume_peer_disk_state{{{v},state=\"DUnknown\"}} 1")));
    assert!(has(&text, &format!("linuxha_volume_connection_state{{{v},state=\"Connecting\"}} 1")));
    assert!(has(&text, &format!("linuxha_volume_out_of_sync_bytes{{{v}}} 16384")));
    assert!(has(&text, &format!("linuxha_volume_size_bytes{{{v}}} 1048576")));
}

#[test]
fn a_node_not_formed_renders_without_cluster_series() {
    let mut status = formed();
    status.state = ClusterState::NotFormed;
    status.nodes = vec![node("node1", NodeState::Unknown), node("node2", NodeState::Unknown)];
    status.applications = vec![];
    status.guard = GuardSummary::default();
    let text = render(&status, &History::default());
    assert!(has(&text, "linuxha_cluster_formed 0"));
    assert!(!text.contains("linuxha_local_state"));
    assert!(!text.contains("linuxha_takeover_stage"));
    assert!(has(&text, r#"linuxha_node_state{node="node1",state="unknown"} 1"#));
}

#[test]
fn a_takeover_counts_one_failover_timed_from_the_peer_declared_down() {
    let mut history = History::default();
    let t = Duration::from_secs;
    let mut status = formed();
    history.observe(&status, t(10));
    // node1 is declared down: web is shown nowhere (the peer's announcement no longer counts).
    status.nodes[0].state = NodeState::Down;
    status.applications = vec![app("web", ApplicationState::Stopped, None)];
    history.observe(&status, t(20));
    status.applications = vec![app("web", ApplicationState::Starting, Some("node2"))];
    history.observe(&status, t(21));
    status.applications = vec![app("web", ApplicationState::Running, Some("node2"))];
    history.observe(&status, Duration::from_millis(23_500));
    // Later snapshots do not count it again.
    history.observe(&status, t(30));
    let f = history.failovers.get("web").cloned().unwrap_or_default();
    assert_eq!(f.total, 1);
    assert_eq!(f.duration.count, 1);
    assert!((f.duration.sum - 3.5).abs() < 1e-9, "{}", f.duration.sum);
    let text = render(&status, &history);
    assert!(has(&text, r#"linuxha_failovers_total{application="web"} 1"#), "{text}");
    assert!(has(&text, r#"linuxha_failover_duration_seconds_bucket{application="web",le="2"} 0"#));
    assert!(has(&text, r#"linuxha_failover_duration_seconds_bucket{application="web",le="5"} 1"#));
    assert!(has(
        &text,
        r#"linuxha_failover_duration_seconds_bucket{application="web",le="+Inf"} 1"#
    ));
    assert!(has(&text, r#"linuxha_failover_duration_seconds_sum{application="web"} 3.5"#));
    assert!(has(&text, r#"linuxha_failover_duration_seconds_count{application="web"} 1"#));
}

#[test]
fn starting_here_without_a_peer_down_is_no_failover() {
    let mut history = History::default();
    let mut status = formed();
    status.applications = vec![app("web", ApplicationState::Stopped, None)];
    history.observe(&status, Duration::from_secs(1));
    // An administrator's start here, node1 up.
    status.applications = vec![app("web", ApplicationState::Running, Some("node2"))];
    history.observe(&status, Duration::from_secs(2));
    // An administrator's switch back and forth with node1 up.
    status.applications = vec![app("web", ApplicationState::Running, Some("node1"))];
    history.observe(&status, Duration::from_secs(3));
    status.applications = vec![app("web", ApplicationState::Running, Some("node2"))];
    history.observe(&status, Duration::from_secs(4));
    assert_eq!(history.failovers.get("web").map(|f| f.total), Some(0));
    // The zero series exist from the start.
    let text = render(&status, &history);
    assert!(has(&text, r#"linuxha_failovers_total{application="web"} 0"#), "{text}");
    assert!(has(&text, r#"linuxha_failover_duration_seconds_count{application="web"} 0"#));
}

#[test]
fn a_peer_back_before_the_takeover_cancels_it() {
    let mut history = History::default();
    let mut status = formed();
    history.observe(&status, Duration::from_secs(1));
    status.nodes[0].state = NodeState::Down;
    status.applications = vec![app("web", ApplicationState::Stopped, None)];
    history.observe(&status, Duration::from_secs(2));
    status.nodes[0].state = NodeState::Up;
    status.applications = vec![app("web", ApplicationState::Running, Some("node1"))];
    history.observe(&status, Duration::from_secs(3));
    // Later moved here by an administrator: not a failover.
    status.applications = vec![app("web", ApplicationState::Running, Some("node2"))];
    history.observe(&status, Duration::from_secs(9));
    assert_eq!(history.failovers.get("web").map(|f| f.total), Some(0));
}

#[test]
fn restarts_count_the_rises_of_the_windowed_count() {
    let mut history = History::default();
    let mut status = formed();
    let mut web = app("web", ApplicationState::Running, Some("node2"));
    for (restarts, at) in [(0, 1), (1, 2), (1, 3), (3, 4), (0, 5), (1, 6)] {
        web.restarts = restarts;
        status.applications = vec![web.clone()];
        history.observe(&status, Duration::from_secs(at));
    }
    assert_eq!(history.restarts.get("web"), Some(&4));
    let text = render(&status, &history);
    assert!(has(&text, r#"linuxha_application_restarts_total{application="web"} 4"#));
}

#[test]
fn fence_attempts_are_counted_once_across_snapshots_and_takeovers() {
    let mut history = History::default();
    let mut status = formed();
    let stages = [
        (TakeoverStage::Idle, 0),
        (TakeoverStage::Fencing, 1),
        (TakeoverStage::Fencing, 1),
        (TakeoverStage::FenceWait, 1),
        (TakeoverStage::Fencing, 3),
        (TakeoverStage::Cleared, 0),
        (TakeoverStage::Idle, 0),
        (TakeoverStage::Fencing, 1),
    ];
    for (i, (stage, fence_attempts)) in stages.into_iter().enumerate() {
        status.guard.peers = vec![PeerTakeover { peer: "node1".into(), stage, fence_attempts }];
        history.observe(&status, Duration::from_secs(i as u64));
    }
    assert_eq!(history.fence_attempts.get("node1"), Some(&4));
}

#[test]
fn histogram_buckets_are_cumulative() {
    let mut h = Histogram::default();
    for s in [0.1, 0.3, 0.3, 7.0, 1000.0] {
        h.observe(s);
    }
    let buckets: Vec<(f64, u64)> = h.cumulative().collect();
    assert_eq!(buckets.first(), Some(&(0.25, 1)));
    assert_eq!(buckets.get(1), Some(&(0.5, 3)));
    assert_eq!(buckets.last(), Some(&(300.0, 4)));
    assert_eq!(h.count, 5);
}

#[test]
fn only_get_metrics_is_served() {
    assert_eq!(
        parse_request(b"GET /metrics HTTP/1.1\r\nHost: x"),
        Request::Metrics { head: false }
    );
    assert_eq!(parse_request(b"HEAD /metrics?x=1 HTTP/1.0"), Request::Metrics { head: true });
    assert_eq!(parse_request(b"GET / HTTP/1.1"), Request::NotFound);
    assert_eq!(parse_request(b"GET /metrics/x HTTP/1.1"), Request::NotFound);
    assert_eq!(parse_request(b"POST /metrics HTTP/1.1"), Request::MethodNotAllowed);
    assert_eq!(parse_request(b"GET /metrics"), Request::BadRequest);
    assert_eq!(parse_request(b"GET metrics HTTP/1.1"), Request::BadRequest);
    assert_eq!(parse_request(b"\xff\xfe"), Request::BadRequest);
    assert_eq!(parse_request(b"GET /metrics SPDY/3"), Request::BadRequest);
}

/// A rendering with every family in it, for promtool.
fn everything() -> String {
    let mut history = History::default();
    let mut status = formed();
    history.observe(&status, Duration::from_secs(1));
    status.nodes[0].state = NodeState::Down;
    status.guard.peers = vec![PeerTakeover {
        peer: "node1".into(),
        stage: TakeoverStage::Fencing,
        fence_attempts: 1,
    }];
    status.guard.lease = Some(LeaseSummary {
        state: LeaseState::Denied,
        holder: Some("node1".into()),
        remaining_ms: None,
    });
    status.applications = vec![app("web", ApplicationState::Stopped, None)];
    history.observe(&status, Duration::from_secs(2));
    let mut web = app("web", ApplicationState::Running, Some("node2"));
    web.restarts = 1;
    web.monitors = vec![MonitorStatus { check: "tcp 80".into(), result: "ok".into(), age_ms: 5 }];
    web.resources = vec![ResourceStatus {
        id: "ip".into(),
        kind: "ocf:heartbeat:IPaddr2".into(),
        result: Some("running".into()),
        age_ms: Some(10),
    }];
    web.volumes = vec![VolumeStatus {
        resource: "r0".into(),
        device: "/dev/drbd0".into(),
        mountpoint: "/srv".into(),
        state: Some(VolumeState::default()),
        resync: None,
    }];
    status.applications = vec![web, app("db", ApplicationState::Stopped, None)];
    history.observe(&status, Duration::from_secs(4));
    render(&status, &history)
}

#[test]
fn promtool_accepts_the_rendering() {
    use std::io::Write;
    let text = everything();
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        println!("SKIPPED: promtool is not installed (Debian package `prometheus`)");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool runs");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}\n{text}");
}

/// Send `request` to `address` and read the answer until the server closes the connection
/// (a reset, when the server left part of the request unread, ends it too).
async fn exchange(address: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await.expect("closed in time");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn the_server_answers_get_metrics_and_refuses_the_rest() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (_tx, status) = watch::channel(formed());
    let history = Arc::new(Mutex::new(History::default()));
    tokio::spawn(serve(listener, address, status, history));

    let ok = exchange(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{ok}");
    let (head, body) = ok.split_once("\r\n\r\n").expect("head and body");
    assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{head}");
    assert!(body.contains("\nlinuxha_cluster_formed 1\n"), "{body}");

    let head_only = exchange(address, b"HEAD /metrics HTTP/1.0\r\n\r\n").await;
    assert!(head_only.starts_with("HTTP/1.1 200 OK\r\n") && head_only.ends_with("\r\n\r\n"));
    let missing = exchange(address, b"GET /stats HTTP/1.1\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"), "{missing}");
    let post = exchange(address, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD\r\n"), "{post}");
    let garbage = exchange(address, b"\x16\x03\x01 hello\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    // A head longer than the bound is not read to its end: the connection is closed unanswered.
    let mut long = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', MAX_REQUEST + 1024));
    let cut = exchange(address, &long).await;
    assert!(cut.is_empty(), "{cut}");
}

#[test]
fn notifications_are_counted_by_result_when_cldaemon_reports_them() {
    let mut status = formed();
    let history = History::default();
    assert!(!render(&status, &history).contains("linuxha_notifications_total"));
    status.counters = serde_json::json!({
        "notify": { "notify_sent": 5, "notify_failed": 1, "notify_dropped": 0 }
    });
    let text = render(&status, &history);
    assert!(has(&text, r#"linuxha_notifications_total{result="sent"} 5"#), "{text}");
    assert!(has(&text, r#"linuxha_notifications_total{result="failed"} 1"#), "{text}");
    assert!(has(&text, r#"linuxha_notifications_total{result="dropped"} 0"#), "{text}");
    assert!(text.contains("# TYPE linuxha_notifications_total counter"));
}
