//! The events an engine built `with_notifications` hands out, in order, for whole chains.

use std::collections::BTreeMap;

use super::*;
use crate::apps::{Desired, Failback, Want};
use crate::guard::Sabotage;
use crate::notice::HoldReason;
use crate::timing::SafetyTiming;

const LOCAL: &str = "node1";
const PEER: &str = "node2";
const APP: &str = "web";
const LINK: &str = "public";
const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_secs(1);

fn known() -> IpAddr {
    "10.10.0.1".parse().expect("literal address")
}

fn config(fencing: bool) -> NodeConfig {
    let timing = SafetyTiming::new(INTERVAL, TIMEOUT);
    NodeConfig {
        membership: MembershipConfig {
            local: LOCAL.into(),
            peers: vec![PEER.into()],
            links: vec![LINK.into()],
            interval: INTERVAL,
            timeout: TIMEOUT,
            known_connections: vec![known()],
            ping_freshness: timing.freshness,
        },
        guard: GuardConfig {
            local: LOCAL.into(),
            peers: [(PEER.to_string(), fencing)].into_iter().collect(),
            fence_delay: TIMEOUT * 2,
            first: true,
            fence_retry: Duration::from_secs(1),
            probe: true,
            probe_retry: Duration::from_secs(1),
            settle: TIMEOUT,
            lease: None,
            sabotage: Sabotage::None,
        },
        apps: vec![AppPolicy {
            name: APP.into(),
            nodes: vec![PEER.into(), LOCAL.into()],
            autostart: true,
            failback: Failback::Manual,
            restarts: 1,
            window: Duration::from_secs(60),
            replicated: false,
        }],
        takeover_delay: timing.takeover_delay(),
        epoch: 1,
    }
}

struct Harness {
    node: Node,
    now: Time,
}

impl Harness {
    /// A formed node that hears its peer, which runs the application.
    fn with_peer_running(fencing: bool, notifications: bool) -> Harness {
        let mut node = Node::new(config(fencing), Time::ZERO);
        if notifications {
            node = node.with_notifications();
        }
        let mut h = Harness { node, now: Time::ZERO };
        h.feed(NodeInput::Formed { start_autostart: false });
        h.feed(NodeInput::Heartbeat { from: PEER.into(), link: LINK.into(), taking_over: false });
        h.feed(NodeInput::KnownConnectionReply { target: known() });
        h.feed(NodeInput::PeerAnnouncement { peer: PEER.into(), announcement: running() });
        h
    }

    fn feed(&mut self, input: NodeInput) -> Vec<NodeAction> {
        self.node.handle(self.now, input);
        std::iter::from_fn(|| self.node.poll_action()).collect()
    }

    /// Run to `until` in half intervals; the peer beats while `peer_alive`.
    fn run(&mut self, until: Time, peer_alive: bool) -> Vec<NodeAction> {
        let mut actions = Vec::new();
        while self.now < until {
            self.now = (self.now + INTERVAL / 2).min(until);
            self.node.handle_timeout(self.now);
            actions.extend(std::iter::from_fn(|| self.node.poll_action()));
            if peer_alive {
                let beat = NodeInput::Heartbeat {
                    from: PEER.into(),
                    link: LINK.into(),
                    taking_over: false,
                };
                actions.extend(self.feed(beat));
            }
            actions.extend(self.feed(NodeInput::KnownConnectionReply { target: known() }));
        }
        actions
    }
}

fn running() -> Announcement {
    Announcement {
        epoch: 1,
        seq: 1,
        states: [(APP.to_string(), AppState::Running)].into_iter().collect(),
        desired: [(
            APP.to_string(),
            Desired {
                want: Want::Running { node: None },
                stamp: 1,
                by: PEER.into(),
                clears_failures: false,
            },
        )]
        .into_iter()
        .collect(),
        data_blocked: BTreeMap::new(),
        lease: false,
    }
}

/// Only the notifications among `actions`.
fn events(actions: Vec<NodeAction>) -> Vec<ClusterEvent> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            NodeAction::Notify(event) => Some(event),
            _ => None,
        })
        .collect()
}

fn silent() -> Vec<ProbeSeen> {
    vec![ProbeSeen { address: "10.0.0.2".parse().expect("literal"), answer: ProbeAnswer::Silent }]
}

fn answered() -> Vec<ProbeSeen> {
    vec![ProbeSeen {
        address: "10.0.0.2".parse().expect("literal"),
        answer: ProbeAnswer::Answered { by: "52:54:00:00:00:02".into() },
    }]
}

#[test]
fn a_failover_tells_node_down_starting_started_and_moved_in_order() {
    let mut h = Harness::with_peer_running(false, true);
    let mut told = events(h.run(Time::from_millis(4000), true));
    told.extend(events(h.run(Time::from_millis(5200), false)));
    told.extend(events(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() })));
    let delay = SafetyTiming::new(INTERVAL, TIMEOUT).takeover_delay();
    told.extend(events(h.run(h.now + delay, false)));
    told.extend(events(h.feed(NodeInput::StartFinished {
        app: APP.into(),
        ok: true,
        reason: String::new(),
    })));
    let app = || APP.to_string();
    assert_eq!(
        told,
        vec![
            ClusterEvent::NodeDown {
                node: PEER.into(),
                reason: format!(
                    "silent on every link for {} ms while a known connection answers",
                    TIMEOUT.as_millis()
                ),
                take_over: true,
            },
            ClusterEvent::AppStarting { app: app() },
            ClusterEvent::AppStarted { app: app() },
            ClusterEvent::AppMoved { app: app(), from: PEER.into(), to: LOCAL.into() },
        ]
    );
}

#[test]
fn without_notifications_the_engine_hands_out_none() {
    let mut h = Harness::with_peer_running(false, false);
    let mut actions = h.run(Time::from_millis(5200), false);
    actions.extend(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() }));
    assert!(!actions.is_empty());
    assert_eq!(events(actions), vec![]);
}

#[test]
fn a_peer_that_answers_the_probe_holds_the_takeover_back_once() {
    let mut h = Harness::with_peer_running(false, true);
    h.run(Time::from_millis(2200), false);
    let held = events(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: answered() }));
    let expected = ClusterEvent::TakeoverHeldBack {
        node: PEER.into(),
        why: HoldReason::PeerAlive,
        detail: HoldReason::PeerAlive.describe().into(),
    };
    assert_eq!(held, vec![expected]);
    // Probed again and still alive: nothing new to tell.
    h.run(h.now + Duration::from_millis(1100), false);
    assert_eq!(
        events(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: answered() })),
        vec![]
    );
}

#[test]
fn a_failed_fence_is_told_with_its_result_and_the_hold_back() {
    let mut h = Harness::with_peer_running(true, true);
    let actions = h.run(Time::from_millis(6000), false);
    assert!(actions.contains(&NodeAction::Fence { peer: PEER.into() }));
    let told = events(h.feed(NodeInput::FenceResult {
        peer: PEER.into(),
        ok: false,
        detail: "timed out".into(),
    }));
    assert_eq!(
        told,
        vec![
            ClusterEvent::FenceResult { node: PEER.into(), ok: false, detail: "timed out".into() },
            ClusterEvent::TakeoverHeldBack {
                node: PEER.into(),
                why: HoldReason::FenceFailed,
                detail: HoldReason::FenceFailed.describe().into(),
            },
        ]
    );
    h.run(h.now + Duration::from_millis(1100), false);
    let told = events(h.feed(NodeInput::FenceResult {
        peer: PEER.into(),
        ok: true,
        detail: "off".into(),
    }));
    assert_eq!(
        told.first(),
        Some(&ClusterEvent::FenceResult { node: PEER.into(), ok: true, detail: "off".into() })
    );
    assert!(told.iter().all(|e| !matches!(e, ClusterEvent::TakeoverHeldBack { .. })));
}

#[test]
fn a_failed_monitor_is_told_then_the_restart() {
    let mut h = Harness::with_peer_running(false, true);
    h.run(Time::from_millis(5200), false);
    h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() });
    let delay = SafetyTiming::new(INTERVAL, TIMEOUT).takeover_delay();
    h.run(h.now + delay, false);
    h.feed(NodeInput::StartFinished { app: APP.into(), ok: true, reason: String::new() });
    let told = events(h.feed(NodeInput::MonitorFailed { app: APP.into(), reason: "down".into() }));
    assert_eq!(
        told.first(),
        Some(&ClusterEvent::AppFailed { app: APP.into(), reason: "down".into() })
    );
    assert!(told.iter().any(|e| matches!(e, ClusterEvent::AppStopping { .. })), "{told:?}");
    let told = events(h.feed(NodeInput::StopFinished {
        app: APP.into(),
        ok: true,
        reason: String::new(),
    }));
    assert_eq!(told.first(), Some(&ClusterEvent::AppStopped { app: APP.into() }));
}

#[test]
fn a_split_brain_is_told_once_until_it_is_resolved() {
    let mut h = Harness::with_peer_running(false, true);
    let split = || NodeInput::Data { app: APP.into(), blocked: Some(NotPromotable::SplitBrain) };
    assert_eq!(events(h.feed(split())), vec![ClusterEvent::SplitBrain { app: APP.into() }]);
    assert_eq!(events(h.feed(split())), vec![]);
    assert_eq!(events(h.feed(NodeInput::Data { app: APP.into(), blocked: None })), vec![]);
    assert_eq!(events(h.feed(split())), vec![ClusterEvent::SplitBrain { app: APP.into() }]);
}
