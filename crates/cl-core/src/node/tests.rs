//! Whole chains through the engine: a fact goes in, and the exact actions for the shell come
//! out, in order, with the routing between membership, guard and applications done inside.

use std::collections::BTreeMap;

use super::*;
use crate::apps::{Desired, Failback, Want};
use crate::membership::Verdict;
use crate::timing::{HeartbeatGrid, SafetyTiming};

pub(super) const LOCAL: &str = "node1";
pub(super) const PEER: &str = "node2";
pub(super) const APP: &str = "web";
pub(super) const LINK: &str = "public";
pub(super) const INTERVAL: Duration = Duration::from_millis(200);
pub(super) const TIMEOUT: Duration = Duration::from_secs(1);
/// How long this node's own fence device takes to power it off.
pub(super) const POWEROFF: Duration = Duration::from_secs(2);

/// Which protection the two-node cluster has.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Protection {
    /// Known connections and the peer-alive probe.
    Probe,
    /// A fence device for the peer.
    Fencing,
    /// An arbitrator's lease.
    Arbitrator,
}

fn timing(protection: Protection) -> SafetyTiming {
    let timing = SafetyTiming::new(INTERVAL, TIMEOUT);
    match protection {
        Protection::Arbitrator => timing.with_lease(timing.lease_floor()),
        _ => timing,
    }
}

pub(super) fn known() -> IpAddr {
    "10.10.0.1".parse().expect("literal address")
}

pub(super) fn config(protection: Protection) -> NodeConfig {
    let timing = timing(protection);
    NodeConfig {
        membership: MembershipConfig {
            local: LOCAL.into(),
            peers: vec![PEER.into()],
            links: vec![LINK.into()],
            interval: INTERVAL,
            timeout: TIMEOUT,
            known_connections: vec![known()],
            ping_freshness: timing.freshness,
            late_warning: None,
            slow_pings: None,
        },
        guard: GuardConfig::new(
            LOCAL,
            [(PEER.to_string(), protection == Protection::Fencing)].into_iter().collect(),
            true,
            &timing,
            Some(Duration::from_secs(1)),
            POWEROFF,
        ),
        apps: vec![AppPolicy {
            name: APP.into(),
            // The peer is preferred: it runs the application until it fails.
            nodes: vec![PEER.into(), LOCAL.into()],
            autostart: true,
            failback: Failback::Manual,
            restarts: 1,
            window: Duration::from_secs(60),
            replicated: false,
        }],
        epoch: 1,
    }
}

pub(super) fn ms(t: u64) -> Time {
    Time::from_millis(t)
}

/// One node's engine on a fake clock, with the actions it asked for.
pub(super) struct Harness {
    pub(super) node: Node,
    pub(super) now: Time,
}

impl Harness {
    /// A formed node that hears its peer, which runs the application (and, with an
    /// arbitrator, holds the lease).
    pub(super) fn with_peer_running(protection: Protection) -> Harness {
        Harness::formed(Node::new(config(protection), ms(0)), protection)
    }

    /// The same, with an engine built `with_notifications`.
    pub(super) fn notifying(protection: Protection) -> Harness {
        Harness::formed(Node::new(config(protection), ms(0)).with_notifications(), protection)
    }

    fn formed(node: Node, protection: Protection) -> Harness {
        let mut h = Harness { node, now: ms(0) };
        h.feed(NodeInput::Formed { start_autostart: false });
        h.beat(false);
        h.feed(NodeInput::KnownConnectionReply { target: known(), at: h.now });
        let peer_lease = protection == Protection::Arbitrator;
        h.feed(NodeInput::PeerAnnouncement {
            peer: PEER.into(),
            announcement: running(peer_lease),
        });
        h.drain();
        h
    }

    pub(super) fn feed(&mut self, input: NodeInput) -> Vec<NodeAction> {
        self.node.handle(self.now, input);
        self.drain()
    }

    fn beat(&mut self, taking_over: bool) -> Vec<NodeAction> {
        let at = self.now;
        let input = NodeInput::Heartbeat { from: PEER.into(), link: LINK.into(), at, taking_over };
        self.feed(input)
    }

    fn drain(&mut self) -> Vec<NodeAction> {
        std::iter::from_fn(|| self.node.poll_action()).collect()
    }

    /// Let time run to `until` in steps of half a heartbeat interval, with the peer's heartbeats while
    /// `peer_alive` and the known connection's replies throughout; every action on the way.
    /// [`Harness::run`] with the peer silent, every probe answered at once with silence.
    pub(super) fn run_silent(&mut self, until: Time) -> Vec<NodeAction> {
        let mut actions = Vec::new();
        while self.now < until {
            let step = (self.now + INTERVAL / 2).min(until);
            let got = self.run(step, false);
            let probes = got.iter().filter(|a| matches!(a, NodeAction::Probe { .. })).count();
            actions.extend(got);
            for _ in 0..probes {
                let seen = silent();
                actions.extend(self.feed(NodeInput::ProbeResult { peer: PEER.into(), seen }));
            }
        }
        actions
    }

    pub(super) fn run(&mut self, until: Time, peer_alive: bool) -> Vec<NodeAction> {
        let mut actions = Vec::new();
        while self.now < until {
            self.now = (self.now + INTERVAL / 2).min(until);
            self.node.handle_timeout(self.now);
            actions.extend(self.drain());
            if peer_alive {
                actions.extend(self.beat(false));
            }
            let at = self.now;
            actions.extend(self.feed(NodeInput::KnownConnectionReply { target: known(), at }));
        }
        actions
    }
}

/// The peer's announcement: it runs the application.
pub(super) fn running(lease: bool) -> Announcement {
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
        lease,
        awaiting: Default::default(),
        placements: Some([(APP.to_string(), PEER.to_string())].into_iter().collect()),
        placed_since: [(APP.to_string(), 1)].into_iter().collect(),
        heard: BTreeMap::new(),
        standing_by: false,
    }
}

fn peer_down() -> NodeAction {
    NodeAction::Membership(Action::PeerDown {
        peer: PEER.into(),
        verdict: Verdict::TakeOver,
        reason: format!(
            "silent on every link for {} ms while a known connection answers",
            TIMEOUT.as_millis()
        ),
        silent_since: Some(ms(4000)),
    })
}

fn event(level: Level, text: &str) -> NodeAction {
    NodeAction::Event { level, text: text.into() }
}

fn start() -> NodeAction {
    NodeAction::Start { app: APP.into() }
}

pub(super) fn silent() -> Vec<ProbeSeen> {
    vec![ProbeSeen { address: "10.0.0.2".parse().expect("literal"), answer: ProbeAnswer::Silent }]
}

pub(super) fn answered() -> Vec<ProbeSeen> {
    vec![ProbeSeen {
        address: "10.0.0.2".parse().expect("literal"),
        answer: ProbeAnswer::Answered { by: "52:54:00:00:00:02".into() },
    }]
}

/// The guard's line when it waits `ms` before fencing the peer (the fence race).
fn fencing_in(ms: u128) -> NodeAction {
    let text = format!("fencing node node2 in {ms} ms unless its fence device reports it off: node2 is favoured in the fence race, so if it is alive it fences this node first");
    event(Level::Info, &text)
}

fn notice(peers: &[&str]) -> NodeAction {
    NodeAction::TakingOverNotice { peers: peers.iter().map(|p| p.to_string()).collect() }
}

fn lease_granted(protection: Protection, id: u64) -> NodeInput {
    let lease = timing(protection).lease.map(|l| l.lease).unwrap_or_default();
    NodeInput::LeaseReply { id, granted: true, holder: Some(LOCAL.into()), lease, remaining: lease }
}

#[test]
fn a_silent_peer_is_probed_and_taken_over_after_the_takeover_delay() {
    let mut h = Harness::with_peer_running(Protection::Probe);
    assert_eq!(h.run(ms(4000), true), vec![]);
    // Its last heartbeat came at 4 s. Late by all but one probe and one probe interval of the
    // timeout (280 ms), it is probed ahead of the verdict.
    let late = NodeAction::Membership(Action::PeerLate { peer: PEER.into() });
    assert_eq!(h.run(ms(4720), false), vec![late, NodeAction::Probe { peer: PEER.into() }]);
    assert_eq!(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() }), vec![]);
    // One timeout after its last heartbeat it is down, and taken over at once: the notice goes
    // out, and the takeover delay runs from now: the time the peer, if it is the one cut off
    // (or yields to the notice), needs to stop its copy (crate::timing).
    let delay = timing(Protection::Probe).takeover_delay();
    let due = ms(5000) + delay;
    assert_eq!(
        h.run(ms(5000), false),
        vec![
            peer_down(),
            event(Level::Info, "node node2 did not answer on the public network as it fell silent"),
            event(
                Level::Warn,
                &format!(
                    "taking over the applications of node node2: it does not answer on any network; they start in {} ms (the takeover delay)",
                    delay.as_millis()
                )
            ),
            notice(&[PEER]),
        ]
    );
    // Probed again, ending one probe interval before the delay does (so its result is in), so
    // the start needs no probe of its own (dad.rs).
    let plan = crate::dad::probe_plan(INTERVAL);
    let probe_at = due - plan.total() - plan.interval;
    assert_eq!(h.run(probe_at - Duration::from_millis(1), false), vec![]);
    assert_eq!(h.run(probe_at, false), vec![NodeAction::Probe { peer: PEER.into() }]);
    // What it finds decides nothing (the shell keeps it for the start).
    assert_eq!(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() }), vec![]);
    assert_eq!(h.run(due - Duration::from_millis(1), false), vec![]);
    assert_eq!(h.run(due, false), vec![start(), NodeAction::Announce]);
    // Running: watched from now on.
    assert_eq!(
        h.feed(NodeInput::StartFinished { app: APP.into(), ok: true, reason: String::new() }),
        vec![NodeAction::Monitor { app: APP.into() }, NodeAction::Announce]
    );
}

#[test]
fn a_peer_that_answers_the_probe_is_not_taken_over_and_is_probed_again() {
    let mut h = Harness::with_peer_running(Protection::Probe);
    h.run(ms(4000), true);
    h.run(ms(5200), false);
    let text = "node node2 is silent on every heartbeat link but still answers on the public network (10.0.0.2 answered from 52:54:00:00:00:02): it is alive, so this node takes nothing over; check the heartbeat networks";
    assert_eq!(
        h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: answered() }),
        vec![event(Level::Alarm, text)]
    );
    assert_eq!(h.run(ms(6300), false), vec![NodeAction::Probe { peer: PEER.into() }]);
    // Silent now, after answering: it may only now have lost this node, so the engine waits a
    // heartbeat timeout before taking over, then the whole takeover delay.
    let actions = h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() });
    assert_eq!(
        actions,
        vec![event(
            Level::Info,
            "node node2 does not answer on the public network (probed 10.0.0.2)"
        )]
    );
    let settled = h.now + TIMEOUT;
    let delay = timing(Protection::Probe).takeover_delay();
    let started = settled + delay;
    assert_eq!(
        h.run(settled, false),
        vec![
            event(
                Level::Warn,
                &format!("taking over the applications of node node2: it does not answer on any network; they start in {} ms (the takeover delay)", delay.as_millis())
            ),
            notice(&[PEER]),
        ]
    );
    let plan = crate::dad::probe_plan(INTERVAL);
    let probe_at = started - plan.total() - plan.interval;
    assert_eq!(h.run(probe_at, false), vec![NodeAction::Probe { peer: PEER.into() }]);
    assert_eq!(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() }), vec![]);
    assert_eq!(h.run(started - Duration::from_millis(1), false), vec![]);
    assert_eq!(h.run(started, false), vec![start(), NodeAction::Announce]);
}

/// At 5 s, a timeout after the peer's last beat, the peer is declared down; this node, not
/// favoured in the fence race, says it fences in `wait` and asks whether the peer is off.
fn declared_down_then_waits(h: &mut Harness, wait: Duration) {
    assert_eq!(
        h.run(ms(5000), false),
        vec![
            peer_down(),
            fencing_in(wait.as_millis()),
            NodeAction::FenceStatus { peer: PEER.into() }
        ]
    );
}

/// The fence goes out at `fence_at`, not a millisecond before.
fn fences_at(h: &mut Harness, fence_at: Time) {
    assert_eq!(h.run(fence_at - Duration::from_millis(1), false), vec![]);
    assert_eq!(
        h.run(fence_at, false),
        vec![
            event(Level::Warn, "fencing node node2 (attempt 1)"),
            NodeAction::Fence { peer: PEER.into() }
        ]
    );
}

#[test]
fn with_fencing_the_peer_is_fenced_then_taken_over_at_once() {
    let protection = Protection::Fencing;
    let mut h = Harness::with_peer_running(protection);
    h.run(ms(4000), true);
    // This node runs nothing and the peer runs the application: it loses the fence race by
    // one unit (the detection skew and the peer's fence powering this node off), so that a
    // peer that is alive fences first. It asks the peer's fence device whether the peer is off
    // already (then it would fence at once): the device says it is on.
    let unit = timing(protection).fence_race_unit(POWEROFF);
    declared_down_then_waits(&mut h, unit);
    let on = NodeInput::FenceStatusResult { peer: PEER.into(), off: false, detail: "on".into() };
    assert_eq!(h.feed(on), vec![]);
    let fence_at = ms(5000) + timing(protection).fence_race_unit(POWEROFF);
    // Its addresses are probed meanwhile, the probe ending as the fence begins: the start then
    // finds them freshly silent and needs no second probe (dad.rs).
    let probe_at = fence_at - crate::dad::probe_plan(INTERVAL).total();
    assert_eq!(h.run(probe_at - Duration::from_millis(1), false), vec![]);
    assert_eq!(h.run(probe_at, false), vec![NodeAction::Probe { peer: PEER.into() }]);
    // What it finds decides nothing: an answering peer is fenced all the same.
    assert_eq!(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: answered() }), vec![]);
    fences_at(&mut h, fence_at);
    assert_eq!(
        h.feed(NodeInput::FenceResult { peer: PEER.into(), ok: true, detail: "off".into() }),
        vec![
            event(Level::Warn, "node node2 was fenced (powered off)"),
            event(Level::Warn, "taking over the applications of node node2: it was fenced"),
            start(),
            NodeAction::Announce,
            notice(&[PEER]),
        ]
    );
}

#[test]
fn with_fencing_and_its_beats_on_a_grid_the_node_not_favoured_waits_the_phase_not_an_interval() {
    let protection = Protection::Fencing;
    let mut config = config(protection);
    // This node's heartbeats leave at …, 3.850, 4.050 s: 50 ms after the peer's last one heard
    // (4 s), 20 ms of it the lateness allowed to the peer's next beat; instead of a whole
    // interval.
    let grid = HeartbeatGrid { origin: ms(50), interval: INTERVAL };
    config.guard.beat_grid = Some(grid);
    let mut h = Harness::formed(Node::new(config, ms(0)), protection);
    h.run(ms(4000), true);
    let wait = timing(protection).fence_race(POWEROFF).wait(Some(grid), Some(ms(4000)));
    declared_down_then_waits(&mut h, wait);
    assert_eq!(
        wait,
        timing(protection).fence_race_unit(POWEROFF) - INTERVAL + ms(50).since_origin()
    );
    let fence_at = ms(5000) + wait;
    let probe_at = fence_at - crate::dad::probe_plan(INTERVAL).total();
    assert_eq!(h.run(probe_at, false), vec![NodeAction::Probe { peer: PEER.into() }]);
    fences_at(&mut h, fence_at);
}

#[test]
fn a_failed_fence_takes_nothing_over_and_is_retried() {
    let protection = Protection::Fencing;
    let mut h = Harness::with_peer_running(protection);
    h.run(ms(4000), true);
    h.run(ms(9000), false);
    let failed =
        h.feed(NodeInput::FenceResult { peer: PEER.into(), ok: false, detail: "timeout".into() });
    assert_eq!(
        failed,
        vec![event(
            Level::Alarm,
            "fencing node node2 failed (attempt 1): timeout; nothing of node2 is taken over until it succeeds; retrying in 1000 ms"
        )]
    );
    assert_eq!(
        h.run(ms(10_000), false),
        vec![
            event(Level::Warn, "fencing node node2 (attempt 2)"),
            NodeAction::Fence { peer: PEER.into() }
        ]
    );
}

#[test]
fn with_an_arbitrator_a_lost_peer_asks_for_the_lease_and_starts_at_once_once_granted() {
    let protection = Protection::Arbitrator;
    let mut h = Harness::with_peer_running(protection);
    assert_eq!(h.run(ms(4000), true), vec![]);
    assert_eq!(
        h.run(ms(5100), false),
        vec![peer_down(), NodeAction::Lease { id: 1, op: ArbOp::Acquire }]
    );
    // Denied: the peer's lease runs 310 ms more. The probe (210 ms) is timed to end then, so
    // that what it finds is fresh when the grant comes.
    let denied = NodeInput::LeaseReply {
        id: 1,
        granted: false,
        holder: Some(PEER.into()),
        lease: timing(protection).lease.map(|l| l.lease).unwrap_or_default(),
        remaining: Duration::from_millis(310),
    };
    let actions = h.feed(denied);
    assert!(!actions.iter().any(|a| matches!(a, NodeAction::Probe { .. })), "{actions:?}");
    assert_eq!(h.run(ms(5200), false), vec![NodeAction::Probe { peer: PEER.into() }]);
    assert_eq!(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() }), vec![]);
    assert_eq!(h.run(ms(5400), false), vec![NodeAction::Lease { id: 2, op: ArbOp::Acquire }]);
    // Granted: the peer cannot hold it, so no takeover delay, and it was silent just now.
    assert_eq!(
        h.feed(lease_granted(protection, 2)),
        vec![
            event(Level::Warn, "this node holds the arbitrator's lease again"),
            event(
                Level::Info,
                "node node2 did not answer on the public network while this node waited for the lease"
            ),
            event(
                Level::Warn,
                "taking over the applications of node node2: it does not answer on any network and this node holds the arbitrator's lease"
            ),
            start(),
            NodeAction::Announce,
            notice(&[PEER]),
        ]
    );
}

#[test]
fn with_an_arbitrator_a_probe_done_before_a_long_denial_is_sent_again_to_end_at_the_grant() {
    let protection = Protection::Arbitrator;
    let mut h = Harness::with_peer_running(protection);
    h.run(ms(4000), true);
    assert_eq!(
        h.run(ms(5100), false),
        vec![peer_down(), NodeAction::Lease { id: 1, op: ArbOp::Acquire }]
    );
    // The arbitrator is slow: the early probe goes out one answer timeout after the request
    // (with the next request), and finds the peer silent.
    let sent = h.run(ms(5200), false);
    assert!(sent.contains(&NodeAction::Probe { peer: PEER.into() }), "{sent:?}");
    assert_eq!(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() }), vec![]);
    // Then a denial: the peer's lease runs 1.5 s more. That silence would be stale by the
    // grant (older than a heartbeat timeout), so the probe is sent again, timed to end then,
    // instead of after the grant.
    let denied = NodeInput::LeaseReply {
        id: 2,
        granted: false,
        holder: Some(PEER.into()),
        lease: timing(protection).lease.map(|l| l.lease).unwrap_or_default(),
        remaining: Duration::from_millis(1500),
    };
    h.feed(denied);
    let again = ms(5200) + Duration::from_millis(1500) - crate::dad::probe_plan(INTERVAL).total();
    let before = h.run(again - Duration::from_millis(1), false);
    assert!(!before.contains(&NodeAction::Probe { peer: PEER.into() }), "{before:?}");
    let at = h.run(again, false);
    assert!(at.contains(&NodeAction::Probe { peer: PEER.into() }), "{at:?}");
}

#[test]
fn with_an_arbitrator_a_peer_back_before_its_new_announcement_does_not_stop_the_holder() {
    let protection = Protection::Arbitrator;
    let mut h = Harness::with_peer_running(protection);
    h.run(ms(4000), true);
    h.run(ms(5100), false);
    h.feed(lease_granted(protection, 1));
    let took_over = h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() });
    assert!(took_over.contains(&start()), "{took_over:?}");
    h.feed(NodeInput::StartFinished { app: APP.into(), ok: true, reason: String::new() });
    // The partition heals at once: the peer is heard again, and what it last announced (it
    // held the lease) is stale, since this node holds the lease now. The application stays.
    let back = h.beat(false);
    assert!(
        !back.iter().any(|a| matches!(a, NodeAction::Stop { .. })),
        "the holder stopped its application when the peer came back: {back:?}"
    );
}

#[test]
fn with_an_arbitrator_a_grant_before_the_probe_was_sent_probes_then_starts() {
    let protection = Protection::Arbitrator;
    let mut h = Harness::with_peer_running(protection);
    h.run(ms(4000), true);
    h.run(ms(5100), false);
    assert_eq!(
        h.feed(lease_granted(protection, 1)),
        vec![NodeAction::Probe { peer: PEER.into() }, NodeAction::Announce]
    );
    assert_eq!(
        h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() }),
        vec![
            event(Level::Info, "node node2 does not answer on the public network (probed 10.0.0.2)"),
            event(
                Level::Warn,
                "taking over the applications of node node2: it does not answer on any network and this node holds the arbitrator's lease"
            ),
            start(),
            NodeAction::Announce,
            notice(&[PEER]),
        ]
    );
}

#[test]
fn with_an_arbitrator_a_peer_that_answered_while_the_lease_was_awaited_is_probed_again() {
    let protection = Protection::Arbitrator;
    let mut h = Harness::with_peer_running(protection);
    h.run(ms(4000), true);
    h.run(ms(5100), false);
    let denied = NodeInput::LeaseReply {
        id: 1,
        granted: false,
        holder: Some(PEER.into()),
        lease: timing(protection).lease.map(|l| l.lease).unwrap_or_default(),
        remaining: Duration::from_millis(100),
    };
    h.feed(denied);
    assert_eq!(h.run(ms(5200), false), vec![NodeAction::Probe { peer: PEER.into() }]);
    assert_eq!(h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: answered() }), vec![]);
    // It may have been releasing its addresses until its lease ran out: a fresh probe decides.
    let granted = h.run(ms(5400), false);
    assert_eq!(granted, vec![NodeAction::Lease { id: 2, op: ArbOp::Acquire }]);
    assert_eq!(
        h.feed(lease_granted(protection, 2)),
        vec![
            event(Level::Warn, "this node holds the arbitrator's lease again"),
            NodeAction::Probe { peer: PEER.into() },
            NodeAction::Announce
        ]
    );
}

#[test]
fn with_an_arbitrator_the_lease_is_held_ahead_of_a_start() {
    let protection = Protection::Arbitrator;
    let mut config = config(protection);
    config.apps[0].nodes = vec![LOCAL.into(), PEER.into()];
    config.apps[0].autostart = true;
    let mut h = Harness { node: Node::new(config, ms(0)), now: ms(0) };
    // The application should run here: this node asks for the lease before anything else.
    assert_eq!(
        h.feed(NodeInput::Formed { start_autostart: true }),
        vec![NodeAction::Lease { id: 1, op: ArbOp::Acquire }, NodeAction::Announce]
    );
    // Held, but the peer is not heard yet: nothing starts (it might run it).
    assert_eq!(h.feed(lease_granted(protection, 1)), vec![NodeAction::Announce]);
    assert_eq!(
        h.beat(false),
        vec![NodeAction::Membership(Action::PeerUp { peer: PEER.into() }), NodeAction::Announce]
    );
    let mut idle = running(false);
    idle.states.insert(APP.into(), AppState::Stopped);
    idle.desired.clear();
    // The peer runs nothing and agrees once it has our announcement; the lease is already held,
    // so the start needs no further request.
    h.feed(NodeInput::PeerAnnouncement { peer: PEER.into(), announcement: idle.clone() });
    idle.seq = 2;
    let ours = h.node.announcement();
    idle.desired = ours.desired;
    // ... and places it here, having heard where this node places it.
    idle.placements = Some([(APP.to_string(), LOCAL.to_string())].into_iter().collect());
    idle.heard = [(LOCAL.to_string(), (ours.epoch, ours.seq))].into_iter().collect();
    assert_eq!(
        h.feed(NodeInput::PeerAnnouncement { peer: PEER.into(), announcement: idle }),
        vec![start(), NodeAction::Announce]
    );
}

#[test]
fn a_grant_shorter_than_the_configured_lease_or_for_another_node_does_not_count() {
    let protection = Protection::Arbitrator;
    let mut h = Harness::with_peer_running(protection);
    h.run(ms(4000), true);
    h.run(ms(5100), false);
    let short = NodeInput::LeaseReply {
        id: 1,
        granted: true,
        holder: Some(LOCAL.into()),
        lease: Duration::from_millis(100),
        remaining: Duration::from_millis(100),
    };
    let actions = h.feed(short);
    assert_eq!(
        actions.first(),
        Some(&event(
            Level::Alarm,
            "the arbitrator grants 100 ms leases, this node's configuration says 1130 ms: not counted as held"
        ))
    );
    assert!(!actions
        .iter()
        .any(|a| matches!(a, NodeAction::Probe { .. } | NodeAction::Start { .. })));
    let other = NodeInput::LeaseReply {
        id: 2,
        granted: true,
        holder: Some(PEER.into()),
        lease: Duration::from_secs(3),
        remaining: Duration::from_secs(3),
    };
    let actions = h.feed(other);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, NodeAction::Probe { .. } | NodeAction::Start { .. })));
}

#[test]
fn a_peer_taking_over_makes_this_node_stop_its_applications() {
    let mut config = config(Protection::Probe);
    config.apps[0].nodes = vec![LOCAL.into(), PEER.into()];
    let mut h = Harness { node: Node::new(config, ms(0)), now: ms(0) };
    h.feed(NodeInput::Formed { start_autostart: false });
    h.beat(false);
    h.feed(NodeInput::KnownConnectionReply { target: known(), at: h.now });
    h.feed(NodeInput::Adopted { app: APP.into() });
    let mut idle = running(false);
    idle.states.insert(APP.into(), AppState::Stopped);
    h.feed(NodeInput::PeerAnnouncement { peer: PEER.into(), announcement: idle });
    assert_eq!(
        h.beat(true),
        vec![
            event(
                Level::Alarm,
                "node node2 cannot hear this node and is taking over its applications: stopping them here"
            ),
            NodeAction::Stop { app: APP.into(), reason: "this node is isolated".into(), urgent: true },
            NodeAction::Announce,
        ]
    );
}

#[test]
fn a_healed_partition_reannounces_what_runs_here_and_withdraws_the_notice() {
    let mut h = Harness::with_peer_running(Protection::Probe);
    h.run(ms(4000), true);
    h.run(ms(5200), false);
    h.feed(NodeInput::ProbeResult { peer: PEER.into(), seen: silent() });
    h.run_silent(ms(8000));
    h.feed(NodeInput::StartFinished { app: APP.into(), ok: true, reason: String::new() });
    assert_eq!(
        h.beat(false),
        vec![
            NodeAction::Membership(Action::PeerUp { peer: PEER.into() }),
            NodeAction::Reannounce { app: APP.into() },
            NodeAction::Announce,
            notice(&[]),
        ]
    );
}

#[test]
fn the_probe_verdict() {
    let error = ProbeSeen {
        address: "10.0.0.3".parse().expect("literal"),
        answer: ProbeAnswer::Error { reason: "interface down".into() },
    };
    // Nothing could be probed: nothing is known, so the peer counts as alive.
    assert_eq!(
        probe::verdict(std::slice::from_ref(&error)),
        (true, "no address could be probed from this node".to_string())
    );
    assert!(!probe::verdict(&[silent(), vec![error.clone()]].concat()).0);
    let (alive, detail) = probe::verdict(&[silent(), answered(), vec![error]].concat());
    assert!(alive);
    assert_eq!(detail, "10.0.0.2 answered from 52:54:00:00:00:02");
}

#[test]
fn without_inputs_the_engine_only_asks_to_be_woken_for_judging() {
    let h = Harness::with_peer_running(Protection::Probe);
    // Heard at 0: the peer is judged one timeout later (no heartbeat-interval wake-ups).
    // The first deadline is the late warning, a probe and a probe interval before that.
    let plan = crate::dad::probe_plan(INTERVAL);
    assert_eq!(h.node.poll_timeout(), Some(ms(0) + TIMEOUT - plan.total() - plan.interval));
}

#[test]
fn admin_requests_about_unknown_applications_or_nodes_are_refused() {
    let h = Harness::with_peer_running(Protection::Probe);
    assert_eq!(h.node.check_admin(&AdminOp::Stop { app: APP.into() }), Ok(()));
    assert_eq!(
        h.node.check_admin(&AdminOp::Stop { app: "mail".into() }),
        Err("there is no built application `mail` on node1".into())
    );
    assert_eq!(
        h.node.check_admin(&AdminOp::Switch { app: APP.into(), node: Some("node3".into()) }),
        Err("`node3` is not a node of application `web` (its nodes: node2, node1)".into())
    );
}
