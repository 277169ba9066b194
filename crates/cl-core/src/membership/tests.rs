//! Engine tests: scripted inputs on a fake clock, exact actions out.

use std::net::IpAddr;
use std::time::Duration;

use super::*;

const INTERVAL: u64 = 200;
const TIMEOUT: u64 = 1000;

fn router() -> IpAddr {
    "10.10.0.1".parse().expect("literal")
}

fn config(known: bool) -> MembershipConfig {
    MembershipConfig {
        local: "node2".into(),
        peers: vec!["node1".into()],
        links: vec!["public".into(), "private".into()],
        interval: Duration::from_millis(INTERVAL),
        timeout: Duration::from_millis(TIMEOUT),
        known_connections: if known { vec![router()] } else { vec![] },
        ping_freshness: Duration::from_millis(TIMEOUT / 2),
        late_warning: None,
        slow_pings: None,
    }
}

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

/// Drain actions, leaving out the periodic heartbeat requests.
fn drain(m: &mut Membership) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).filter(|a| *a != Action::SendHeartbeats).collect()
}

/// Run the node from `from` to `to` in 10 ms steps; the peer beats on `links` and the router
/// answers when `router_up`.
fn run(m: &mut Membership, from: u64, to: u64, links: &[&str], router_up: bool) -> Vec<Action> {
    let mut out = Vec::new();
    let mut now = from;
    while now < to {
        if now % INTERVAL == 0 {
            for link in links {
                m.handle(
                    t(now),
                    Input::Heartbeat { from: "node1".into(), link: (*link).into(), at: t(now) },
                );
            }
            if router_up {
                m.handle(t(now), Input::KnownConnectionReply { target: router(), at: t(now) });
            }
        }
        m.handle_timeout(t(now));
        out.extend(drain(m));
        now += 10;
    }
    out
}

fn peer_down(verdict: Verdict) -> impl Fn(&Action) -> bool {
    move |a| matches!(a, Action::PeerDown { verdict: v, .. } if *v == verdict)
}

#[test]
fn heartbeats_are_requested_every_interval() {
    let mut m = Membership::new(config(true), t(0));
    let mut sends = 0;
    for ms in (0..1000).step_by(10) {
        m.handle_timeout(t(ms));
        sends +=
            std::iter::from_fn(|| m.poll_action()).filter(|a| *a == Action::SendHeartbeats).count();
    }
    assert_eq!(sends, 5);
    assert_eq!(m.poll_timeout(), Some(t(1000)).min(m.poll_timeout()));
}

#[test]
fn peer_comes_up_on_its_first_heartbeat() {
    let mut m = Membership::new(config(true), t(0));
    let actions = run(&mut m, 0, 500, &["public", "private"], true);
    assert_eq!(actions, vec![Action::PeerUp { peer: "node1".into() }]);
    assert_eq!(m.peer_state("node1"), Some(PeerState::Up));
}

#[test]
fn one_silent_link_is_a_warning_never_a_failover() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 1000, &["public", "private"], true);
    let actions = run(&mut m, 1000, 5000, &["public"], true);
    assert_eq!(actions, vec![Action::LinkDown { peer: "node1".into(), link: "private".into() }]);
    assert_eq!(m.peer_state("node1"), Some(PeerState::Up));
    let actions = run(&mut m, 5000, 6000, &["public", "private"], true);
    assert_eq!(actions, vec![Action::LinkUp { peer: "node1".into(), link: "private".into() }]);
}

#[test]
fn peer_silent_on_all_links_while_the_router_answers_means_take_over() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    let actions = run(&mut m, 2000, 4000, &[], true);
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(peer_down(Verdict::TakeOver)(&actions[0]), "{actions:?}");
    assert_eq!(m.local_state(), LocalState::Connected);
}

#[test]
fn the_peer_is_declared_down_within_the_timeout_plus_one_step() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    // Last heartbeat at 1800 ms: down exactly when 1000 ms of silence have passed.
    assert!(run(&mut m, 2000, 2800, &[], true).is_empty());
    let actions = run(&mut m, 2800, 2810, &[], true);
    assert!(actions.iter().any(peer_down(Verdict::TakeOver)), "{actions:?}");
}

/// When the verdicts in `actions` say the peer was last heard.
fn silent_since(actions: &[Action]) -> Vec<Option<Time>> {
    let since = |a: &Action| match a {
        Action::PeerDown { silent_since, .. } => Some(*silent_since),
        _ => None,
    };
    actions.iter().filter_map(since).collect()
}

#[test]
fn a_verdict_says_when_the_peer_was_last_heard_on_any_link() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 1000, &["public", "private"], true);
    run(&mut m, 1000, 2000, &["public"], true);
    let actions = run(&mut m, 2000, 2810, &[], true);
    assert_eq!(silent_since(&actions), vec![Some(t(1800))], "{actions:?}");
    // Held back while undecided, the verdict still names that frame.
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    run(&mut m, 2000, 2010, &[], true);
    run(&mut m, 2010, 2810, &[], false);
    m.handle(t(2900), Input::KnownConnectionReply { target: router(), at: t(2900) });
    assert_eq!(silent_since(&drain(&mut m)), vec![Some(t(1800))]);
    // Judged anew on reaching the outside again, long after: no frame to count from.
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    run(&mut m, 2000, 5000, &[], false);
    let actions = run(&mut m, 5000, 8000, &[], true);
    assert_eq!(silent_since(&actions), vec![None], "{actions:?}");
}

#[test]
fn silence_everywhere_means_isolated_and_nothing_is_taken_over() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    let actions = run(&mut m, 2000, 5000, &[], false);
    assert!(actions.iter().any(peer_down(Verdict::StandBy)), "{actions:?}");
    assert!(!actions.iter().any(peer_down(Verdict::TakeOver)), "{actions:?}");
    assert!(actions.iter().any(|a| matches!(a, Action::Isolated { .. })), "{actions:?}");
    assert!(actions.contains(&Action::KnownConnectionLost { target: router() }));
    assert_eq!(m.local_state(), LocalState::Isolated);
}

#[test]
fn a_reply_from_before_the_cut_does_not_vouch_for_this_node() {
    // The router's last reply came at the same moment as the peer's last heartbeat: by the
    // time the peer is declared down it is stale, so this node must not take over.
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    let actions = run(&mut m, 2000, 2810, &[], false);
    assert!(!actions.iter().any(peer_down(Verdict::TakeOver)), "{actions:?}");
}

#[test]
fn undecided_becomes_take_over_when_a_late_reply_arrives() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    // The peer's last beat at 1800, the router's last reply at 2000: at 2800 that reply is
    // stale but not yet a timeout old, so the node waits for a newer one until 3000.
    run(&mut m, 2000, 2010, &[], true);
    run(&mut m, 2010, 2810, &[], false);
    assert_eq!(m.local_state(), LocalState::Undecided);
    m.handle(t(2900), Input::KnownConnectionReply { target: router(), at: t(2900) });
    let actions = drain(&mut m);
    assert!(actions.iter().any(peer_down(Verdict::TakeOver)), "{actions:?}");
    assert_eq!(m.local_state(), LocalState::Connected);
}

#[test]
fn an_isolated_node_that_reaches_the_router_again_judges_its_peer_anew() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    run(&mut m, 2000, 5000, &[], false);
    let actions = run(&mut m, 5000, 8000, &[], true);
    assert!(actions.contains(&Action::Reconnected), "{actions:?}");
    assert!(actions.iter().any(peer_down(Verdict::TakeOver)), "{actions:?}");
    assert_eq!(m.local_state(), LocalState::Connected);
}

#[test]
fn a_node_alone_that_loses_every_known_connection_is_isolated() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    let actions = run(&mut m, 2000, 4000, &[], true);
    assert!(actions.iter().any(peer_down(Verdict::TakeOver)), "{actions:?}");
    let actions = run(&mut m, 4000, 5000, &[], false);
    assert!(actions.iter().any(|a| matches!(a, Action::Isolated { .. })), "{actions:?}");
    assert_eq!(m.local_state(), LocalState::Isolated);
}

#[test]
fn heartbeats_returning_end_isolation() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    run(&mut m, 2000, 5000, &[], false);
    let actions = run(&mut m, 5000, 6000, &["public", "private"], true);
    assert!(actions.contains(&Action::PeerUp { peer: "node1".into() }), "{actions:?}");
    assert!(actions.contains(&Action::Reconnected), "{actions:?}");
    assert_eq!(m.local_state(), LocalState::Connected);
}

#[test]
fn without_known_connections_a_silent_peer_is_taken_over() {
    let mut m = Membership::new(config(false), t(0));
    run(&mut m, 0, 2000, &["public", "private"], false);
    let actions = run(&mut m, 2000, 4000, &[], false);
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(peer_down(Verdict::TakeOver)(&actions[0]));
    let Action::PeerDown { reason, .. } = &actions[0] else { unreachable!() };
    assert!(reason.contains("no known connections configured"), "{reason}");
}

#[test]
fn a_peer_never_heard_is_judged_like_a_silent_one() {
    // Connected: a lone node may run the applications (the VIP probe guards the rest).
    let mut m = Membership::new(config(true), t(0));
    let actions = run(&mut m, 0, 1500, &[], true);
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(peer_down(Verdict::TakeOver)(&actions[0]), "{actions:?}");
    assert_eq!(m.peer_state("node1"), Some(PeerState::Down));
    // Cut off from the start: isolated, nothing taken over.
    let mut m = Membership::new(config(true), t(0));
    let actions = run(&mut m, 0, 3000, &[], false);
    assert!(actions.iter().any(peer_down(Verdict::StandBy)), "{actions:?}");
    assert_eq!(m.local_state(), LocalState::Isolated);
}

#[test]
fn heartbeats_from_strangers_and_unknown_links_are_ignored() {
    let mut m = Membership::new(config(true), t(0));
    m.handle(t(0), Input::Heartbeat { from: "mallory".into(), link: "public".into(), at: t(0) });
    m.handle(t(0), Input::Heartbeat { from: "node1".into(), link: "wifi".into(), at: t(0) });
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.peer_state("node1"), Some(PeerState::Unknown));
}

#[test]
fn poll_timeout_never_lets_a_deadline_pass_unnoticed() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    // With no more inputs, waking only at poll_timeout must still find the peer down on time.
    let mut now = t(2000);
    let (mut down_at, mut isolated_at) = (None, None);
    for _ in 0..100 {
        m.handle_timeout(now);
        drain(&mut m);
        if down_at.is_none() && m.peer_state("node1") == Some(PeerState::Down) {
            down_at = Some(now);
        }
        if m.local_state() == LocalState::Isolated {
            isolated_at = Some(now);
            break;
        }
        now = m.poll_timeout().expect("always a deadline");
    }
    // Last heartbeat and reply at 1800 ms: down at 1800 + timeout, and isolated at once, the
    // reply being a whole timeout old by then.
    assert_eq!(down_at, Some(t(2800)));
    assert_eq!(isolated_at, Some(t(2800)));
}

#[test]
fn an_isolated_node_decides_by_the_time_its_newest_reply_is_a_timeout_old() {
    let formed = || {
        let mut m = Membership::new(config(true), t(0));
        run(&mut m, 0, 2000, &["public", "private"], true);
        m
    };
    // Heartbeats stop at 1800, replies go on until 2400, then nothing: down at 2800 with a
    // reply 400 ms old (fresh: take over), or, with the last reply at 2200...
    let (mut m, mut m2) = (formed(), formed());
    run(&mut m, 2000, 2410, &[], true);
    let actions = run(&mut m, 2410, 2810, &[], false);
    assert!(actions.iter().any(peer_down(Verdict::TakeOver)), "{actions:?}");
    // ... 600 ms old: stale, undecided until 3200, then isolated.
    run(&mut m2, 2000, 2210, &[], true);
    run(&mut m2, 2210, 3190, &[], false);
    assert_eq!(m2.local_state(), LocalState::Undecided);
    run(&mut m2, 3190, 3210, &[], false);
    assert_eq!(m2.local_state(), LocalState::Isolated);
}

#[test]
fn judging_deadlines_alone_find_every_change_on_time_and_skip_the_beats() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    // A shell that beats on its own clock is not woken every interval: the next deadline is
    // the peer's timeout and the known connection's (both at 1800 + 1000), not the next beat.
    assert_eq!(m.poll_judge_timeout(), Some(t(2800)));
    assert!(m.poll_timeout() < m.poll_judge_timeout());
    // Waking only at those deadlines finds the peer down and the node isolated exactly when
    // waking at every deadline does (poll_timeout_never_lets_a_deadline_pass_unnoticed).
    let mut now = t(2000);
    let (mut down_at, mut isolated_at, mut wakes) = (None, None, 0);
    for _ in 0..100 {
        m.handle_timeout(now);
        drain(&mut m);
        wakes += 1;
        if down_at.is_none() && m.peer_state("node1") == Some(PeerState::Down) {
            down_at = Some(now);
        }
        if m.local_state() == LocalState::Isolated {
            isolated_at = Some(now);
            break;
        }
        now = m.poll_judge_timeout().expect("a deadline while something can change");
    }
    assert_eq!(down_at, Some(t(2800)));
    assert_eq!(isolated_at, Some(t(2800)));
    assert!(wakes <= 4, "woken {wakes} times between 2000 and 2800 ms");
}

#[test]
fn status_shows_links_and_known_connections() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public"], true);
    let status = m.status(t(2000));
    assert_eq!(status.local_state, LocalState::Connected);
    let peer = &status.peers[0];
    assert_eq!(peer.state, PeerState::Up);
    let private = peer.links.iter().find(|l| l.name == "private").expect("link");
    assert!(!private.up && private.last_heard_ms.is_none());
    assert!(status.known_connections[0].reachable);
}

#[test]
fn a_peer_returning_on_all_links_is_one_peer_up_not_link_noise() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    run(&mut m, 2000, 4000, &[], true);
    let actions = run(&mut m, 4000, 5000, &["public", "private"], true);
    assert_eq!(actions, vec![Action::PeerUp { peer: "node1".into() }]);
}

#[test]
fn a_peer_that_leaves_is_down_by_plan_and_its_links_raise_no_warnings() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    m.handle(t(2000), Input::PeerLeft { peer: "node1".into() });
    let actions = drain(&mut m);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let Action::PeerDown { verdict, reason, .. } = &actions[0] else { panic!("{actions:?}") };
    assert_eq!(*verdict, Verdict::TakeOver);
    assert!(reason.contains("left the cluster"), "{reason}");
    assert!(run(&mut m, 2000, 4000, &[], true).is_empty());
    let actions = run(&mut m, 4000, 5000, &["public", "private"], true);
    assert_eq!(actions, vec![Action::PeerUp { peer: "node1".into() }]);
}

#[test]
fn replies_and_heartbeats_relayed_by_the_relay_keep_a_live_peer_and_connection() {
    // clnetd pings twice per interval and clhbd hears a frame per link per interval; both
    // relay only as crate::relay says, each observation reaching the core up to 5 ms late.
    // Two lost replies or frames in a row must change nothing.
    let freshness = Duration::from_millis(TIMEOUT / 2);
    let mut replies = crate::relay::Relay::new(freshness);
    let mut frames = crate::relay::Relay::new(Duration::from_millis(TIMEOUT));
    let mut m = Membership::new(config(true), t(0));
    let mut actions = Vec::new();
    let mut relayed = 0;
    let mut now = 0;
    let lost = |n: u64| n % 5 == 3 || n % 5 == 4;
    while now < 4000 {
        if now % (INTERVAL / 2) == 0 && !lost(now / (INTERVAL / 2)) {
            replies.observe(router(), t(now), false);
        }
        if now % INTERVAL == 0 && !lost(now / INTERVAL) {
            for link in ["public", "private"] {
                frames.observe(link, t(now), false);
            }
        }
        let deliver = |m: &mut Membership,
                       frames: &mut crate::relay::Relay<&str>,
                       replies: &mut crate::relay::Relay<IpAddr>| {
            let mut n = 0;
            if frames.due().is_some_and(|d| d <= t(now)) {
                for (link, at) in frames.take() {
                    m.handle(
                        t(now + 5),
                        Input::Heartbeat { from: "node1".into(), link: link.into(), at },
                    );
                    n += 1;
                }
            }
            if replies.due().is_some_and(|d| d <= t(now)) {
                for (target, at) in replies.take() {
                    m.handle(t(now + 5), Input::KnownConnectionReply { target, at });
                    n += 1;
                }
            }
            n
        };
        relayed += deliver(&mut m, &mut frames, &mut replies);
        m.handle_timeout(t(now + 5));
        actions.extend(drain(&mut m));
        now += 5;
    }
    assert_eq!(actions, vec![Action::PeerUp { peer: "node1".into() }]);
    assert!(relayed < 4000 / 200 * 2 + 4000 / 100, "relayed {relayed}");
}

#[test]
fn a_relayed_heartbeat_counts_from_when_it_arrived_not_from_when_it_was_relayed() {
    let mut m = Membership::new(config(true), t(0));
    run(&mut m, 0, 210, &["public", "private"], true);
    // clhbd relays, at 900, frames that arrived at 600: the links are silent from 1600, not 1900.
    for link in ["public", "private"] {
        m.handle(t(900), Input::Heartbeat { from: "node1".into(), link: link.into(), at: t(600) });
    }
    m.handle(t(1595), Input::KnownConnectionReply { target: router(), at: t(1590) });
    m.handle_timeout(t(1599));
    assert!(!drain(&mut m).iter().any(peer_down(Verdict::TakeOver)), "silent for 999 ms only");
    m.handle_timeout(t(1600));
    assert!(drain(&mut m).iter().any(peer_down(Verdict::TakeOver)), "silent for a timeout");
    // A frame that arrived a whole timeout before it is handled does not bring the peer back.
    m.handle(t(1700), Input::Heartbeat { from: "node1".into(), link: "public".into(), at: t(700) });
    assert!(!drain(&mut m).iter().any(|a| matches!(a, Action::PeerUp { .. })));
    // An older relay never moves a link's last frame back.
    m.handle(
        t(1710),
        Input::Heartbeat { from: "node1".into(), link: "public".into(), at: t(1705) },
    );
    m.handle(
        t(1712),
        Input::Heartbeat { from: "node1".into(), link: "public".into(), at: t(1000) },
    );
    assert!(drain(&mut m).iter().any(|a| matches!(a, Action::PeerUp { .. })));
    m.handle_timeout(t(2704));
    assert!(!drain(&mut m).iter().any(|a| matches!(a, Action::PeerDown { .. })));
}

#[test]
fn a_late_peer_is_reported_once_per_silence_before_it_is_declared_down() {
    let mut c = config(true);
    c.late_warning = Some(Duration::from_millis(280));
    let mut m = Membership::new(c, t(0));
    run(&mut m, 0, 2000, &["public", "private"], true);
    let late = |a: &Action| matches!(a, Action::PeerLate { peer } if peer == "node1");
    // Heard last at 1800: late at 1800 + 720, down at 1800 + 1000.
    let actions = run(&mut m, 2000, 2520, &[], true);
    assert!(!actions.iter().any(late), "{actions:?}");
    let actions = run(&mut m, 2520, 2600, &[], true);
    assert_eq!(actions.iter().filter(|a| late(a)).count(), 1, "{actions:?}");
    // Heard again (2600, 2800): a new silence is reported again.
    let actions = run(&mut m, 2600, 3000, &["public"], true);
    assert!(!actions.iter().any(peer_down(Verdict::TakeOver)), "{actions:?}");
    let actions = run(&mut m, 3000, 4100, &[], true);
    assert_eq!(actions.iter().filter(|a| late(a)).count(), 1, "{actions:?}");
    assert!(actions.iter().any(peer_down(Verdict::TakeOver)), "{actions:?}");
}

fn pace(a: &Action) -> Option<KnownPace> {
    match a {
        Action::PingPace { pace } => Some(*pace),
        _ => None,
    }
}

fn slow_config() -> MembershipConfig {
    MembershipConfig { slow_pings: Some(Duration::from_millis(TIMEOUT / 2)), ..config(true) }
}

/// Run the node from `from` to `to` in 10 ms steps as clnetd would feed it: the peer beats on
/// both links every interval; replies follow the pace (fast: every interval, read an interval
/// later; slow: every 500 ms, read 500 ms later), except the one read at `lost`. Every action
/// on the way, with when it came.
fn run_paced(m: &mut Membership, from: u64, to: u64, lost: Option<u64>) -> Vec<(u64, Action)> {
    let mut out = Vec::new();
    let mut now = from;
    while now < to {
        if now % INTERVAL == 0 {
            for link in ["public", "private"] {
                let at = t(now);
                m.handle(at, Input::Heartbeat { from: "node1".into(), link: link.into(), at });
            }
        }
        let reply_at = match m.known_pace() {
            KnownPace::Fast if now % INTERVAL == 0 && now >= INTERVAL => Some(now - INTERVAL),
            KnownPace::Slow if now % 500 == 0 => Some(now - 500),
            _ => None,
        };
        if let Some(at) = reply_at.filter(|_| Some(now) != lost) {
            m.handle(t(now), Input::KnownConnectionReply { target: router(), at: t(at) });
        }
        m.handle_timeout(t(now));
        out.extend(drain(m).into_iter().map(|a| (now, a)));
        now += 10;
    }
    out
}

#[test]
fn pings_turn_slow_while_every_peer_is_heard_and_fast_before_a_verdict() {
    let mut m = Membership::new(slow_config(), t(0));
    // Fast for at least a timeout after the start, then slow while the peer beats.
    let actions = run(&mut m, 0, 3000, &["public", "private"], true);
    let paces: Vec<KnownPace> = actions.iter().filter_map(pace).collect();
    assert_eq!(paces, vec![KnownPace::Slow], "{actions:?}");
    assert_eq!(m.known_pace(), KnownPace::Slow);
    // Heard last at 2800: fast at 2800 + 750 (all but a quarter of the timeout), before any
    // verdict; clnetd pings at once, its reply counts from then.
    let actions = run(&mut m, 3000, 3550, &[], false);
    assert_eq!(actions.iter().filter_map(pace).count(), 0, "{actions:?}");
    assert!(m.poll_timeout().is_some_and(|t_| t_ <= t(3550)));
    m.handle_timeout(t(3550));
    assert_eq!(drain(&mut m).iter().filter_map(pace).collect::<Vec<_>>(), vec![KnownPace::Fast]);
    // That reply, read a tick later, makes the verdict a take-over at once.
    m.handle(t(3750), Input::KnownConnectionReply { target: router(), at: t(3550) });
    drain(&mut m);
    m.handle_timeout(t(3800));
    let verdict = drain(&mut m);
    assert!(verdict.iter().any(peer_down(Verdict::TakeOver)), "{verdict:?}");
}

#[test]
fn a_cut_off_node_at_the_slow_pace_counts_itself_isolated_no_later() {
    let mut m = Membership::new(slow_config(), t(0));
    // Slow pings once the pace allows: one every 500 ms, read a tick later.
    run_paced(&mut m, 0, 3000, None);
    assert_eq!(m.known_pace(), KnownPace::Slow);
    // Cut off from everything at 3000 (last beat 2800, last reply counted from 2500): at the
    // verdict (3800) the newest reply is over a timeout old, so the node is isolated then.
    let actions = run(&mut m, 3000, 3810, &[], false);
    assert!(actions.iter().any(peer_down(Verdict::StandBy)), "{actions:?}");
    assert_eq!(m.local_state(), LocalState::Isolated);
    // And it shows what it judged by: the known connection unreachable (t40, ci27).
    assert!(m.status(t(3810)).known_connections.iter().all(|k| !k.reachable), "{actions:?}");
}

#[test]
fn one_lost_slow_ping_is_not_a_lost_known_connection() {
    let mut m = Membership::new(slow_config(), t(0));
    // The pace turns slow at 1000; the reply read at 3500 (its ping of 3000) is lost.
    let lost: Vec<(u64, Action)> = run_paced(&mut m, 0, 6000, Some(3500))
        .into_iter()
        .filter(|(_, a)| matches!(a, Action::KnownConnectionLost { .. }))
        .collect();
    assert!(lost.is_empty(), "{lost:?}");
}

#[test]
fn a_node_left_alone_by_clhalt_at_the_slow_pace_pings_fast_before_it_counts_itself_cut_off() {
    let mut m = Membership::new(slow_config(), t(0));
    // The reply read at 3500 (its ping of 3000) lost: at 3600 the newest (2500) is over a
    // timeout old for want of pings, not of the outside.
    run_paced(&mut m, 0, 3600, Some(3500));
    assert_eq!(m.known_pace(), KnownPace::Slow);
    m.handle(t(3600), Input::PeerLeft { peer: "node1".into() });
    let left = drain(&mut m);
    assert!(left.iter().any(|a| pace(a) == Some(KnownPace::Fast)), "{left:?}");
    assert!(!left.iter().any(|a| matches!(a, Action::Isolated { .. })), "{left:?}");
    // The first fast reply keeps it connected.
    m.handle(t(3800), Input::KnownConnectionReply { target: router(), at: t(3600) });
    m.handle_timeout(t(4500));
    assert_eq!(m.local_state(), LocalState::Connected, "{:?}", drain(&mut m));
    // Then truly cut off: isolated a timeout after its newest reply (3600).
    let actions = run(&mut m, 4500, 4600, &[], false);
    assert!(!actions.iter().any(|a| matches!(a, Action::Isolated { .. })), "{actions:?}");
    let actions = run(&mut m, 4600, 4610, &[], false);
    assert!(actions.iter().any(|a| matches!(a, Action::Isolated { .. })), "{actions:?}");
}

#[test]
fn the_default_slow_pace_leaves_a_lost_turn_ping_time_for_the_next_fast_reply() {
    let ms = Duration::from_millis;
    for (interval, timeout) in [(200, 1000), (250, 1000), (200, 1500), (300, 2000), (100, 500)] {
        let (interval, timeout) = (ms(interval), ms(timeout));
        if let Some(slow) = MembershipConfig::default_slow_pings(interval, timeout) {
            assert!(
                slow + interval * 2 + crate::timing::JITTER_ALLOWANCE <= timeout,
                "{interval:?}/{timeout:?}: slow {slow:?}"
            );
        }
    }
    assert_eq!(MembershipConfig::default_slow_pings(ms(200), ms(1000)), Some(ms(500)));
    assert_eq!(MembershipConfig::default_slow_pings(ms(250), ms(1000)), Some(ms(400)));
    // The fast profile leaves 30 ms: always fast.
    assert_eq!(MembershipConfig::default_slow_pings(ms(20), ms(100)), None);
}
