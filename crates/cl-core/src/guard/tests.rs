use super::*;
use crate::timing::{FenceRace, HeartbeatGrid};

const PEER: &str = "node2";

fn config(fenced: bool, probe: bool, lease: bool) -> GuardConfig {
    GuardConfig {
        local: "node1".into(),
        peers: [(PEER.to_string(), fenced)].into_iter().collect(),
        fence_race: race(Duration::ZERO),
        beat_grid: None,
        first: true,
        fence_retry: Duration::from_secs(2),
        probe,
        probe_time: Duration::from_millis(300),
        probe_retry: Duration::from_secs(1),
        settle: Duration::from_secs(1),
        // The takeover delay has tests of its own (`delayed` below).
        takeover_delay: Duration::ZERO,
        lease: lease.then_some(LeaseTiming {
            lease: Duration::from_secs(6),
            answer_timeout: Duration::from_millis(500),
            stop_margin: Duration::from_secs(2),
            renew_after: Duration::from_secs(2),
        }),
        sabotage: Sabotage::None,
    }
}

/// A fence race whose unit is `unit` whatever the grid.
fn race(unit: Duration) -> FenceRace {
    FenceRace { interval: Duration::ZERO, margin: unit, lateness: Duration::ZERO }
}

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn down(verdict: Verdict) -> MembershipAction {
    MembershipAction::PeerDown {
        peer: PEER.into(),
        verdict,
        reason: "silent".into(),
        silent_since: None,
    }
}

fn drain(guard: &mut Guard) -> Vec<GuardAction> {
    std::iter::from_fn(|| guard.poll_action())
        .filter(|a| {
            !matches!(a, GuardAction::Event { .. } | GuardAction::Apps(AppInput::Lease { .. }))
        })
        .collect()
}

fn app(input: AppInput) -> GuardAction {
    GuardAction::Apps(input)
}

fn takeover() -> GuardAction {
    app(AppInput::PeerDown { peer: PEER.into(), take_over: true })
}

fn no_takeover() -> GuardAction {
    app(AppInput::PeerDown { peer: PEER.into(), take_over: false })
}

#[test]
fn without_gates_a_take_over_verdict_passes_straight_through() {
    let mut g = Guard::new(config(false, false, false));
    g.on_membership(t(0), &down(Verdict::TakeOver));
    assert_eq!(drain(&mut g), vec![no_takeover(), no_takeover(), takeover()]);
}

#[test]
fn a_stand_by_verdict_never_takes_over() {
    let mut g = Guard::new(config(true, true, true));
    g.on_membership(t(0), &down(Verdict::StandBy));
    assert_eq!(drain(&mut g), vec![no_takeover()]);
    assert_eq!(g.poll_timeout(), None);
}

#[test]
fn a_peer_that_answers_the_probe_is_not_taken_over_and_raises_an_alarm() {
    let mut g = Guard::new(config(false, true, false));
    g.on_membership(t(0), &down(Verdict::TakeOver));
    assert_eq!(drain(&mut g), vec![no_takeover(), GuardAction::Probe { peer: PEER.into() }]);
    g.handle(
        t(100),
        GuardInput::ProbeResult { peer: PEER.into(), alive: true, detail: "10.0.0.2".into() },
    );
    assert_eq!(drain(&mut g), vec![]);
    assert_eq!(g.status().alarms.len(), 1, "{:?}", g.status());
    assert!(g.status().alarms[0].contains("still answers"));
    // Probed again later; once it is silent, taken over.
    assert_eq!(g.poll_timeout(), Some(t(1100)));
    g.handle_timeout(t(1100));
    assert_eq!(drain(&mut g), vec![GuardAction::Probe { peer: PEER.into() }]);
    g.handle(
        t(1200),
        GuardInput::ProbeResult { peer: PEER.into(), alive: false, detail: "".into() },
    );
    // It may have lost this node only now: it gets a heartbeat timeout to notice.
    assert_eq!(drain(&mut g), vec![]);
    assert!(g.status().alarms.is_empty());
    g.handle_timeout(t(2200));
    assert_eq!(drain(&mut g), vec![no_takeover(), takeover()]);
}

#[test]
fn a_fenced_peer_is_taken_over_at_once_and_a_failed_fence_is_retried() {
    let mut g = Guard::new(config(true, true, false));
    g.on_membership(t(0), &down(Verdict::TakeOver));
    assert_eq!(drain(&mut g), vec![no_takeover(), GuardAction::Fence { peer: PEER.into() }]);
    g.handle(
        t(500),
        GuardInput::FenceResult { peer: PEER.into(), ok: false, detail: "timeout".into() },
    );
    assert_eq!(drain(&mut g), vec![]);
    assert!(g.status().alarms[0].contains("fencing node node2 failed"));
    assert_eq!(g.status().gates[PEER], Gate::FenceAt { at: t(2500), attempts: 1 });
    g.handle_timeout(t(2500));
    assert_eq!(drain(&mut g), vec![GuardAction::Fence { peer: PEER.into() }]);
    g.handle(t(2600), GuardInput::FenceResult { peer: PEER.into(), ok: true, detail: "".into() });
    assert_eq!(drain(&mut g), vec![app(AppInput::PeerFenced { peer: PEER.into() })]);
    assert!(g.status().alarms.is_empty());
}

/// A node that is not favoured in the fence race (1 s unit) whose peer went down at 0: it
/// asks the peer's fence device whether the peer is off already.
fn waiting_to_fence() -> Guard {
    let mut c = config(true, false, false);
    c.fence_race = race(Duration::from_secs(1));
    c.first = false;
    let mut g = Guard::new(c);
    g.on_membership(t(0), &down(Verdict::TakeOver));
    assert_eq!(drain(&mut g), vec![no_takeover(), fence_status()]);
    g
}

#[test]
fn the_less_preferred_node_waits_before_fencing() {
    let mut g = waiting_to_fence();
    // The device says the peer is on: the wait stands.
    g.handle(t(50), status_result(false));
    assert_eq!(drain(&mut g), vec![]);
    g.handle_timeout(t(999));
    assert_eq!(drain(&mut g), vec![]);
    g.handle_timeout(t(1000));
    assert_eq!(drain(&mut g), vec![GuardAction::Fence { peer: PEER.into() }]);
}

fn fence_status() -> GuardAction {
    GuardAction::FenceStatus { peer: PEER.into() }
}

fn status_result(off: bool) -> GuardInput {
    GuardInput::FenceStatusResult { peer: PEER.into(), off, detail: "agent".into() }
}

#[test]
fn a_peer_its_fence_device_reports_off_is_fenced_without_the_race_wait() {
    let mut g = waiting_to_fence();
    // Off (crashed, lost its power): it is not racing this node, so the fence (which
    // confirms it off) runs now, not when the unit ends.
    g.handle(t(50), status_result(true));
    assert_eq!(drain(&mut g), vec![GuardAction::Fence { peer: PEER.into() }]);
    // A late answer once the fence runs changes nothing.
    g.handle(t(60), status_result(true));
    assert_eq!(drain(&mut g), vec![]);
    g.handle(t(90), GuardInput::FenceResult { peer: PEER.into(), ok: true, detail: "".into() });
    assert_eq!(drain(&mut g), vec![app(AppInput::PeerFenced { peer: PEER.into() })]);
}

#[test]
fn a_peer_back_before_the_fence_answers_cancels_the_takeover() {
    let mut g = Guard::new(config(true, false, false));
    g.on_membership(t(0), &down(Verdict::TakeOver));
    drain(&mut g);
    g.on_membership(t(100), &MembershipAction::PeerUp { peer: PEER.into() });
    g.handle(t(200), GuardInput::FenceResult { peer: PEER.into(), ok: true, detail: "".into() });
    assert_eq!(drain(&mut g), vec![app(AppInput::PeerUp { peer: PEER.into() })]);
}

#[test]
fn with_the_lease_granted_the_node_takes_over_and_renews_it() {
    let mut g = Guard::new(config(false, false, true));
    g.on_membership(t(0), &down(Verdict::TakeOver));
    assert_eq!(
        drain(&mut g),
        vec![no_takeover(), GuardAction::Lease { id: 1, op: ArbOp::Acquire }]
    );
    g.handle(t(20), GuardInput::LeaseReply { id: 1, granted: true, holder: None, remaining: None });
    assert_eq!(drain(&mut g), vec![no_takeover(), takeover()]);
    assert!(g.holds_lease());
    // Renewed renew_after (2 s) after the request was sent.
    assert_eq!(g.poll_timeout(), Some(t(2000)));
    g.handle_timeout(t(2000));
    assert_eq!(drain(&mut g), vec![GuardAction::Lease { id: 2, op: ArbOp::Renew }]);
    g.handle(
        t(2010),
        GuardInput::LeaseReply { id: 2, granted: true, holder: None, remaining: None },
    );
    // 2000 + 6000 less 2 % drift.
    assert_eq!(g.status().lease, Some(LeaseView::Held { until: t(7880) }));
    // The peer returns and nothing runs here: the lease is left to run out, never released
    // (a release could race with a start).
    g.on_membership(t(3000), &MembershipAction::PeerUp { peer: PEER.into() });
    assert_eq!(drain(&mut g), vec![app(AppInput::PeerUp { peer: PEER.into() })]);
    assert!(g.holds_lease(), "held until it runs out");
}

#[test]
fn a_denied_lease_stops_the_local_applications_and_a_later_grant_resumes() {
    let mut g = Guard::new(config(false, false, true));
    g.on_membership(t(0), &down(Verdict::TakeOver));
    drain(&mut g);
    g.handle(
        t(20),
        GuardInput::LeaseReply {
            id: 1,
            granted: false,
            holder: Some(PEER.into()),
            remaining: None,
        },
    );
    assert_eq!(drain(&mut g), vec![app(AppInput::Isolated)]);
    assert!(g.status().alarms[0].contains("held by node2"));
    // Asked again while the holder's lease could run out.
    g.handle_timeout(t(1520));
    assert_eq!(drain(&mut g), vec![GuardAction::Lease { id: 2, op: ArbOp::Acquire }]);
    g.handle(
        t(1530),
        GuardInput::LeaseReply { id: 2, granted: true, holder: None, remaining: None },
    );
    assert_eq!(drain(&mut g), vec![app(AppInput::Reconnected), no_takeover(), takeover()]);
    assert!(g.status().alarms.is_empty());
}

#[test]
fn an_unanswered_request_counts_as_refused() {
    let mut g = Guard::new(config(false, false, true));
    g.on_membership(t(0), &down(Verdict::TakeOver));
    drain(&mut g);
    assert_eq!(g.poll_timeout(), Some(t(500)));
    g.handle_timeout(t(500));
    assert_eq!(
        drain(&mut g),
        vec![GuardAction::Lease { id: 2, op: ArbOp::Acquire }, app(AppInput::Isolated)]
    );
    // A late answer to the first request is ignored.
    g.handle(
        t(600),
        GuardInput::LeaseReply { id: 1, granted: true, holder: None, remaining: None },
    );
    assert!(!g.holds_lease());
}

#[test]
fn a_lease_that_cannot_be_renewed_stops_the_applications_before_it_expires() {
    let mut g = Guard::new(config(false, false, true));
    g.on_membership(t(0), &down(Verdict::TakeOver));
    drain(&mut g);
    g.handle(t(10), GuardInput::LeaseReply { id: 1, granted: true, holder: None, remaining: None });
    drain(&mut g);
    // Renewals go unanswered; the lease (until 6010 at the arbitrator, counted from the
    // sending at 0 less 2 % drift: 5880) must be dropped at 5880 - 2000.
    let mut now = 2000;
    while now < 3880 {
        g.handle_timeout(t(now));
        drain(&mut g);
        assert!(g.holds_lease(), "at {now}");
        now = g.poll_timeout().map(|t| t.since_origin().as_millis() as u64).unwrap_or(now + 100);
    }
    g.handle_timeout(t(3880));
    let actions = drain(&mut g);
    assert!(actions.contains(&app(AppInput::Isolated)), "{actions:?}");
    assert!(!g.holds_lease());
}

#[test]
fn the_lease_is_not_asked_for_while_isolated() {
    let mut g = Guard::new(config(false, false, true));
    g.on_membership(t(0), &down(Verdict::StandBy));
    g.on_membership(t(0), &MembershipAction::Isolated { reason: "cut".into() });
    assert_eq!(drain(&mut g), vec![no_takeover(), app(AppInput::Isolated)]);
    assert_eq!(g.poll_timeout(), None);
}

#[test]
fn sabotage_skips_every_gate() {
    let mut c = config(true, true, true);
    c.sabotage = Sabotage::SkipGates;
    let mut g = Guard::new(c);
    g.on_membership(t(0), &down(Verdict::TakeOver));
    let actions = drain(&mut g);
    assert_eq!(actions[..2], [no_takeover(), app(AppInput::PeerFenced { peer: PEER.into() })]);
}

#[test]
fn a_node_running_applications_holds_the_lease_ahead_of_time_and_stops_when_it_cannot_renew() {
    let mut g = Guard::new(config(false, false, true));
    // The peer is up; applications run here: the lease is asked for at once.
    g.handle(t(0), GuardInput::LocalApps { active: true, wanted: false, peer_active: false });
    assert_eq!(drain(&mut g), vec![GuardAction::Lease { id: 1, op: ArbOp::Acquire }]);
    g.handle(t(5), GuardInput::LeaseReply { id: 1, granted: true, holder: None, remaining: None });
    let all: Vec<GuardAction> = std::iter::from_fn(|| g.poll_action()).collect();
    assert!(all.contains(&app(AppInput::Lease { held: true })), "{all:?}");
    // Renewed renew_after (2 s) after the request was sent.
    assert_eq!(g.poll_timeout(), Some(t(2000)));
    g.handle_timeout(t(2000));
    assert_eq!(drain(&mut g), vec![GuardAction::Lease { id: 2, op: ArbOp::Renew }]);
    // No answer ever again: stopped before 6000 - 120 (drift) at the latest, peer up or not.
    let mut now = 2000;
    while !g.stopped_for_lease() {
        now = g.poll_timeout().map(|t| t.since_origin().as_millis() as u64).unwrap_or(now + 100);
        assert!(now <= 3880, "still running at {now}");
        g.handle_timeout(t(now));
        drain(&mut g);
    }
    assert!(!g.holds_lease());
}

#[test]
fn a_node_running_nothing_lets_its_lease_run_out_without_releasing_it() {
    let mut g = Guard::new(config(false, false, true));
    g.handle(t(0), GuardInput::LocalApps { active: true, wanted: false, peer_active: false });
    drain(&mut g);
    g.handle(t(5), GuardInput::LeaseReply { id: 1, granted: true, holder: None, remaining: None });
    drain(&mut g);
    g.handle(t(100), GuardInput::LocalApps { active: false, wanted: false, peer_active: false });
    let mut actions = Vec::new();
    for now in (200..8000).step_by(100) {
        g.handle_timeout(t(now));
        actions.extend(drain(&mut g));
    }
    assert!(actions.is_empty(), "{actions:?}");
    assert!(!g.stopped_for_lease());
    assert!(!g.holds_lease());
}

#[test]
fn without_an_arbitrator_the_favoured_node_fences_at_once_and_the_other_waits_one_unit() {
    let unit = Duration::from_secs(2);
    // (this node active, peer active, first) -> wait before fencing
    for (active, peer_active, first, wait) in [
        (true, false, false, Duration::ZERO),
        (true, false, true, Duration::ZERO),
        (true, true, true, Duration::ZERO),
        (true, true, false, unit),
        (false, true, true, unit),
        (false, true, false, unit),
        (false, false, true, Duration::ZERO),
        (false, false, false, unit),
    ] {
        let mut c = config(true, false, false);
        c.fence_race = race(unit);
        c.first = first;
        let mut g = Guard::new(c);
        g.handle(t(0), GuardInput::LocalApps { active, wanted: false, peer_active });
        g.on_membership(t(0), &down(Verdict::TakeOver));
        let actions = drain(&mut g);
        let case = format!("active {active}, peer active {peer_active}, first {first}");
        if wait.is_zero() {
            assert!(actions.contains(&GuardAction::Fence { peer: PEER.into() }), "{case}");
        } else {
            assert_eq!(actions, vec![no_takeover(), fence_status()], "{case}");
            assert_eq!(g.status().gates[PEER], Gate::FenceAt { at: t(0) + wait, attempts: 0 });
        }
    }
}

#[test]
fn the_node_that_is_not_favoured_waits_only_the_phase_of_its_own_next_beat_after_the_last_heard() {
    // Unit 500 ms = interval 200 + 300 for latency, slack and power-off, 20 ms of lateness;
    // this node's beats leave at 30, 230, 430 … ms.
    let ms = Duration::from_millis;
    let fence_race = FenceRace { interval: ms(200), margin: ms(300), lateness: ms(20) };
    let grid = HeartbeatGrid { origin: t(30), interval: ms(200) };
    // (when the peer was last heard, this node's grid) -> wait
    for (heard, beat_grid, wait) in [
        (Some(4_000), Some(grid), 20 + 10 + 300),
        (Some(4_100), Some(grid), 20 + 110 + 300),
        (Some(4_030), Some(grid), 500),
        (None, Some(grid), 500),
        (Some(4_000), None, 500),
    ] {
        let mut c = config(true, false, false);
        c.fence_race = fence_race;
        c.beat_grid = beat_grid;
        c.first = false;
        let mut g = Guard::new(c);
        g.handle(t(0), GuardInput::LocalApps { active: false, wanted: false, peer_active: true });
        let down = MembershipAction::PeerDown {
            peer: PEER.into(),
            verdict: Verdict::TakeOver,
            reason: "silent".into(),
            silent_since: heard.map(t),
        };
        g.on_membership(t(5_000), &down);
        assert_eq!(drain(&mut g), vec![no_takeover(), fence_status()], "{heard:?}");
        let at = t(5_000) + ms(wait);
        assert_eq!(g.status().gates[PEER], Gate::FenceAt { at, attempts: 0 }, "{heard:?}");
    }
}

#[test]
fn a_grid_learnt_later_counts_and_a_peer_that_left_gets_the_whole_unit() {
    let ms = Duration::from_millis;
    let mut c = config(true, false, false);
    c.fence_race = FenceRace { interval: ms(200), margin: ms(300), lateness: ms(20) };
    c.first = false;
    let mut g = Guard::new(c);
    g.handle(t(0), GuardInput::LocalApps { active: false, wanted: false, peer_active: true });
    g.set_beat_grid(Some(HeartbeatGrid { origin: t(30), interval: ms(200) }));
    let down = |silent_since| MembershipAction::PeerDown {
        peer: PEER.into(),
        verdict: Verdict::TakeOver,
        reason: "silent".into(),
        silent_since,
    };
    g.on_membership(t(5_000), &down(Some(t(4_000))));
    assert_eq!(g.status().gates[PEER], Gate::FenceAt { at: t(5_330), attempts: 0 });
    // Back, then down without a last frame (it left, or came back into a reconnect): the
    // phase of the earlier silence is not used.
    g.on_membership(t(6_000), &MembershipAction::PeerUp { peer: PEER.into() });
    g.on_membership(t(9_000), &down(None));
    assert_eq!(g.status().gates[PEER], Gate::FenceAt { at: t(9_500), attempts: 0 });
}

#[test]
fn a_node_that_wants_applications_is_favoured_like_one_that_runs_them() {
    let mut c = config(true, false, false);
    c.fence_race = race(Duration::from_secs(2));
    c.first = false;
    let mut g = Guard::new(c);
    g.handle(t(0), GuardInput::LocalApps { active: false, wanted: true, peer_active: false });
    g.on_membership(t(0), &down(Verdict::TakeOver));
    assert!(drain(&mut g).contains(&GuardAction::Fence { peer: PEER.into() }));
}

#[test]
fn with_an_arbitrator_the_lease_holder_fences_without_the_race_wait() {
    let mut c = config(true, false, true);
    c.fence_race = race(Duration::from_secs(2));
    c.first = false;
    let g = Guard::new(c);
    assert_eq!(g.fence_wait(PEER), Duration::ZERO);
}

/// A guard that waits a 1.5 s takeover delay (probe 300 ms, so the probe before the start is
/// sent 400 ms before the delay ends).
fn delayed() -> Guard {
    let mut c = config(false, true, false);
    c.takeover_delay = Duration::from_millis(1500);
    Guard::new(c)
}

/// [`delayed`], its peer declared down at 0 and found silent at 300: in the delay, which
/// ends at 1800. The actions so far are drained.
fn in_delay() -> Guard {
    let mut g = delayed();
    g.on_membership(t(0), &down(Verdict::TakeOver));
    probed(&mut g, 300, false);
    drain(&mut g);
    g
}

/// [`delayed`], its peer reported late at 700 and probed then, the probe found silent at 1000.
fn probed_ahead() -> Guard {
    let mut g = delayed();
    g.on_membership(t(700), &MembershipAction::PeerLate { peer: PEER.into() });
    assert_eq!(drain(&mut g), vec![probe()]);
    probed(&mut g, 1000, false);
    g
}

fn probe() -> GuardAction {
    GuardAction::Probe { peer: PEER.into() }
}

fn probed(g: &mut Guard, at: u64, alive: bool) {
    g.handle(t(at), GuardInput::ProbeResult { peer: PEER.into(), alive, detail: "x".into() });
}

#[test]
fn the_takeover_delay_runs_from_the_silent_probe_with_the_notice_and_a_probe_before_the_start() {
    let mut g = delayed();
    g.on_membership(t(0), &down(Verdict::TakeOver));
    assert_eq!(drain(&mut g), vec![no_takeover(), probe()]);
    assert!(g.taking_over().is_empty(), "no notice before the peer is found silent");
    probed(&mut g, 300, false);
    // Silent: the notice goes out from now on, and the applications wait the delay.
    assert_eq!(drain(&mut g), vec![no_takeover()]);
    assert_eq!(g.status().gates[PEER], Gate::Delay { until: t(1800), overdue: false });
    assert_eq!(g.taking_over(), vec![PEER.to_string()]);
    assert_eq!(g.poll_timeout(), Some(t(1400)));
    g.handle_timeout(t(1400));
    assert_eq!(drain(&mut g), vec![probe()]);
    probed(&mut g, 1700, false);
    assert_eq!(drain(&mut g), vec![]);
    assert_eq!(g.poll_timeout(), Some(t(1800)));
    g.handle_timeout(t(1800));
    assert_eq!(drain(&mut g), vec![takeover()]);
    assert_eq!(g.status().gates[PEER], Gate::Cleared { fenced: false });
    assert_eq!(g.poll_timeout(), None);
}

#[test]
fn a_peer_that_answers_the_probe_before_the_start_is_not_taken_over() {
    let mut g = in_delay();
    g.handle_timeout(t(1400));
    drain(&mut g);
    probed(&mut g, 1700, true);
    assert_eq!(drain(&mut g), vec![]);
    assert_eq!(g.status().gates[PEER], Gate::ProbeAt { at: t(2700) });
    assert!(g.taking_over().is_empty(), "the notice stops");
    assert_eq!(g.status().alarms.len(), 1);
    g.handle_timeout(t(1800));
    assert!(!drain(&mut g).contains(&takeover()));
}

#[test]
fn a_peer_back_or_isolation_during_the_delay_ends_the_takeover() {
    let mut g = in_delay();
    g.on_membership(t(900), &MembershipAction::PeerUp { peer: PEER.into() });
    assert_eq!(drain(&mut g), vec![app(AppInput::PeerUp { peer: PEER.into() })]);
    assert_eq!(g.status().gates[PEER], Gate::Idle);
    assert_eq!(g.poll_timeout(), None);

    let mut g = in_delay();
    g.on_membership(t(900), &MembershipAction::Isolated { reason: "cut".into() });
    assert_eq!(drain(&mut g), vec![app(AppInput::Isolated)]);
    assert_eq!(g.status().gates[PEER], Gate::StandBy);
    g.handle_timeout(t(1800));
    assert_eq!(drain(&mut g), vec![]);
}

#[test]
fn the_start_waits_for_the_probe_before_it_when_that_probe_is_late() {
    let mut g = delayed();
    g.on_membership(t(0), &down(Verdict::TakeOver));
    drain(&mut g);
    probed(&mut g, 300, false);
    g.handle_timeout(t(1400));
    assert_eq!(drain(&mut g), vec![no_takeover(), probe()]);
    // The delay ends with the probe still out: no start until it answers.
    g.handle_timeout(t(1800));
    assert_eq!(drain(&mut g), vec![]);
    assert_eq!(g.status().gates[PEER], Gate::Delay { until: t(2100), overdue: true });
    probed(&mut g, 1850, false);
    assert_eq!(drain(&mut g), vec![takeover()]);
}

#[test]
fn a_probe_ahead_is_forgotten_when_this_node_is_isolated() {
    let mut g = probed_ahead();
    assert_eq!(drain(&mut g), vec![]);
    // Cut off itself: what it found proves nothing once it is connected again.
    g.on_membership(t(1100), &MembershipAction::Isolated { reason: "cut".into() });
    drain(&mut g);
    g.on_membership(t(1500), &MembershipAction::Reconnected);
    g.on_membership(t(1500), &down(Verdict::TakeOver));
    let actions = drain(&mut g);
    assert!(actions.contains(&probe()), "{actions:?}");
    assert!(!actions.contains(&takeover()), "{actions:?}");
    assert_eq!(g.status().gates[PEER], Gate::Probing);
}

#[test]
fn a_silent_probe_ahead_lets_the_takeover_go_on_at_the_verdict() {
    let mut g = probed_ahead();
    g.on_membership(t(1000), &down(Verdict::TakeOver));
    assert_eq!(drain(&mut g), vec![no_takeover(), no_takeover()]);
    assert_eq!(g.status().gates[PEER], Gate::Delay { until: t(2500), overdue: false });
    assert_eq!(g.taking_over(), vec![PEER.to_string()]);
}
