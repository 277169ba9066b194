//! The events an engine built `with_notifications` hands out, in order, for whole chains.

use super::tests::{answered, silent, Harness, Protection, APP, INTERVAL, LOCAL, PEER, TIMEOUT};
use super::*;
use crate::notice::HoldReason;
use crate::timing::SafetyTiming;

fn events(actions: Vec<NodeAction>) -> Vec<ClusterEvent> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            NodeAction::Notify(event) => Some(event),
            _ => None,
        })
        .collect()
}

#[test]
fn a_failover_tells_node_down_starting_started_and_moved_in_order() {
    let mut h = Harness::notifying(Protection::Probe);
    let mut told = events(h.run(Time::from_millis(4000), true));
    told.extend(events(h.run(Time::from_millis(5200), false)));
    told.extend(events(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() })));
    let delay = SafetyTiming::new(INTERVAL, TIMEOUT).takeover_delay();
    told.extend(events(h.run_silent(h.now + delay)));
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
    let mut h = Harness::with_peer_running(Protection::Probe);
    let mut actions = h.run(Time::from_millis(5200), false);
    actions.extend(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() }));
    assert!(!actions.is_empty());
    assert_eq!(events(actions), vec![]);
}

#[test]
fn a_peer_that_answers_the_probe_holds_the_takeover_back_once() {
    let mut h = Harness::notifying(Protection::Probe);
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
    let mut h = Harness::notifying(Protection::Fencing);
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
    let mut h = Harness::notifying(Protection::Probe);
    h.run(Time::from_millis(5200), false);
    h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() });
    let delay = SafetyTiming::new(INTERVAL, TIMEOUT).takeover_delay();
    h.run_silent(h.now + delay);
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
    let mut h = Harness::notifying(Protection::Probe);
    let split = || NodeInput::Data { app: APP.into(), blocked: Some(NotPromotable::SplitBrain) };
    assert_eq!(events(h.feed(split())), vec![ClusterEvent::SplitBrain { app: APP.into() }]);
    assert_eq!(events(h.feed(split())), vec![]);
    assert_eq!(events(h.feed(NodeInput::Data { app: APP.into(), blocked: None })), vec![]);
    assert_eq!(events(h.feed(split())), vec![ClusterEvent::SplitBrain { app: APP.into() }]);
}
