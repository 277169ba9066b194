//! Two application machines wired together by gossip, with a shell that finishes starts and
//! stops at once (or fails them on request). After every delivered message: never active on
//! both nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::storage::NotPromotable;

fn policy(name: &str, autostart: bool, failback: Failback) -> AppPolicy {
    AppPolicy {
        name: name.into(),
        nodes: vec!["node1".into(), "node2".into()],
        autostart,
        failback,
        restarts: 2,
        window: Duration::from_secs(600),
        replicated: false,
    }
}

struct Pair {
    nodes: [Apps; 2],
    now: Time,
    /// Links between the two nodes carry announcements.
    connected: bool,
    /// A crashed node runs nothing, whatever its last state says.
    dead: [bool; 2],
    fail_start: BTreeSet<(usize, String)>,
    fail_stop: BTreeSet<(usize, String)>,
    log: Vec<String>,
}

const NAMES: [&str; 2] = ["node1", "node2"];

impl Pair {
    fn new(policies: Vec<AppPolicy>) -> Pair {
        Pair {
            nodes: [
                Apps::new("node1", &["node2".into()], policies.clone(), 1),
                Apps::new("node2", &["node1".into()], policies, 1),
            ],
            now: Time::ZERO,
            connected: true,
            dead: [false; 2],
            fail_start: BTreeSet::new(),
            fail_stop: BTreeSet::new(),
            log: Vec::new(),
        }
    }

    /// Both nodes see each other up and exchange announcements.
    fn meet(&mut self) {
        self.input(0, AppInput::PeerUp { peer: "node2".into() });
        self.input(1, AppInput::PeerUp { peer: "node1".into() });
    }

    fn input(&mut self, node: usize, input: AppInput) {
        self.now = self.now + Duration::from_millis(10);
        self.nodes[node].handle(self.now, input);
        self.settle();
    }

    /// Run the shells and the gossip until nothing moves.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for (i, name) in NAMES.iter().enumerate() {
                while let Some(action) = self.nodes[i].poll_action() {
                    moved = true;
                    self.log.push(format!("{name}: {action:?}"));
                    let now = self.now;
                    match action {
                        AppAction::Start { app } => {
                            let ok = !self.fail_start.contains(&(i, app.clone()));
                            self.nodes[i].handle(
                                now,
                                AppInput::StartFinished {
                                    app,
                                    ok,
                                    reason: "script exited 1".into(),
                                },
                            );
                        }
                        AppAction::Stop { app, .. } => {
                            let ok = !self.fail_stop.contains(&(i, app.clone()));
                            self.nodes[i].handle(
                                now,
                                AppInput::StopFinished { app, ok, reason: "device busy".into() },
                            );
                        }
                        AppAction::Announce => {
                            if self.connected {
                                let announcement = self.nodes[i].announcement();
                                self.deliver(1 - i, announcement);
                            }
                        }
                    }
                    self.check_single_owner();
                }
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence: {:#?}", self.log);
    }

    /// Let time pass on one node.
    fn tick(&mut self, node: usize, to: Time) {
        self.now = to;
        self.nodes[node].handle_timeout(to);
        self.settle();
    }

    fn check_single_owner(&self) {
        for app in self.nodes[0].policies.keys() {
            let a = !self.dead[0] && self.nodes[0].state(app).is_some_and(|s| s.may_be_active());
            let b = !self.dead[1] && self.nodes[1].state(app).is_some_and(|s| s.may_be_active());
            assert!(!(a && b), "{app} active on both nodes\n{}", self.log.join("\n"));
        }
    }

    /// Hand node `to` an announcement of the other node, as the wire would.
    fn deliver(&mut self, to: usize, announcement: Announcement) {
        let peer = NAMES[1 - to].to_string();
        self.nodes[to].handle(self.now, AppInput::Peer { peer, announcement });
    }

    /// Run the shells and the gossip until nothing moves, then check the states of `app`.
    fn settles_to(&mut self, app: &str, expected: (AppState, AppState)) {
        self.settle();
        assert_eq!(self.states(app), expected, "{}", self.log.join("\n"));
    }

    fn states(&self, app: &str) -> (AppState, AppState) {
        (self.nodes[0].state(app).expect("app"), self.nodes[1].state(app).expect("app"))
    }
}

fn formed_pair(policies: Vec<AppPolicy>) -> Pair {
    let mut pair = Pair::new(policies);
    pair.meet();
    pair.input(0, AppInput::Formed { start_autostart: true });
    pair.input(1, AppInput::Formed { start_autostart: true });
    pair
}

#[test]
fn autostart_runs_on_the_preferred_node_only() {
    let pair = formed_pair(vec![
        policy("web", true, Failback::Manual),
        policy("db", false, Failback::Manual),
    ]);
    assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped));
    assert_eq!(pair.states("db"), (AppState::Stopped, AppState::Stopped));
}

#[test]
fn noapps_starts_nothing() {
    let mut pair = Pair::new(vec![policy("web", true, Failback::Manual)]);
    pair.meet();
    pair.input(0, AppInput::Formed { start_autostart: false });
    pair.input(1, AppInput::Formed { start_autostart: false });
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Stopped));
}

#[test]
fn nothing_starts_while_the_peer_is_unknown() {
    let mut pair = Pair::new(vec![policy("web", true, Failback::Manual)]);
    pair.connected = false;
    pair.input(1, AppInput::Formed { start_autostart: true });
    assert_eq!(pair.nodes[1].state("web"), Some(AppState::Stopped));
}

#[test]
fn a_peer_down_with_take_over_has_its_applications_started_here() {
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    // node1 crashes.
    pair.dead[0] = true;
    pair.connected = false;
    // The guard says so once the takeover delay is over: the start follows at once.
    pair.input(1, AppInput::PeerDown { peer: "node1".into(), take_over: true });
    assert_eq!(pair.nodes[1].state("web"), Some(AppState::Running));
    assert_eq!(pair.nodes[1].poll_timeout(), None);
}

#[test]
fn a_peer_down_without_take_over_keeps_its_applications_where_they_were() {
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    pair.connected = false;
    pair.input(1, AppInput::PeerDown { peer: "node1".into(), take_over: false });
    assert_eq!(pair.nodes[1].state("web"), Some(AppState::Stopped));
}

#[test]
fn an_isolated_node_stops_everything_and_starts_nothing() {
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    pair.connected = false;
    pair.input(0, AppInput::PeerDown { peer: "node2".into(), take_over: false });
    pair.input(0, AppInput::Isolated);
    assert_eq!(pair.nodes[0].state("web"), Some(AppState::Stopped));
    pair.input(
        0,
        AppInput::Admin(AdminOp::Start { app: "web".into(), node: Some("node1".into()) }),
    );
    assert_eq!(pair.nodes[0].state("web"), Some(AppState::Stopped));
}

#[test]
fn monitor_failures_restart_locally_then_fail_over() {
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    for round in 1..=2 {
        pair.input(
            0,
            AppInput::MonitorFailed { app: "web".into(), reason: "port 80 refused".into() },
        );
        assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped), "restart {round}");
        assert_eq!(pair.nodes[0].failures("web"), round);
    }
    pair.input(0, AppInput::MonitorFailed { app: "web".into(), reason: "port 80 refused".into() });
    assert_eq!(pair.states("web"), (AppState::Failed, AppState::Running));
    let (_, reason) = pair.nodes[0].last_failure("web").expect("reason");
    assert!(reason.contains("port 80 refused"), "{reason}");
}

#[test]
fn a_failed_start_moves_the_application_to_the_other_node() {
    let mut pair = Pair::new(vec![policy("web", true, Failback::Manual)]);
    pair.fail_start.insert((0, "web".into()));
    pair.meet();
    pair.input(0, AppInput::Formed { start_autostart: true });
    assert_eq!(pair.states("web"), (AppState::Failed, AppState::Running));
}

#[test]
fn failing_everywhere_ends_failed_with_the_reason() {
    let mut pair = Pair::new(vec![policy("web", true, Failback::Manual)]);
    pair.fail_start.insert((0, "web".into()));
    pair.fail_start.insert((1, "web".into()));
    pair.meet();
    pair.input(0, AppInput::Formed { start_autostart: true });
    assert_eq!(pair.states("web"), (AppState::Failed, AppState::Failed));
    assert!(pair.nodes[1].last_failure("web").is_some_and(|(_, r)| r.contains("script exited 1")));
}

#[test]
fn a_stop_that_fails_blocks_every_other_node() {
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    pair.fail_stop.insert((0, "web".into()));
    pair.input(
        0,
        AppInput::Admin(AdminOp::Switch { app: "web".into(), node: Some("node2".into()) }),
    );
    assert_eq!(pair.states("web"), (AppState::Stuck, AppState::Stopped));
    // Even when node1 then disappears with a take-over verdict, node2 must not start it.
    pair.connected = false;
    pair.input(1, AppInput::PeerDown { peer: "node1".into(), take_over: true });
    assert_eq!(pair.nodes[1].state("web"), Some(AppState::Stopped));
}

#[test]
fn switch_moves_it_and_never_runs_it_twice() {
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    pair.input(1, AppInput::Admin(AdminOp::Switch { app: "web".into(), node: None }));
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Running));
    pair.input(
        0,
        AppInput::Admin(AdminOp::Switch { app: "web".into(), node: Some("node1".into()) }),
    );
    assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped));
}

#[test]
fn haltapp_stops_it_everywhere_and_startapp_clears_a_failure() {
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    pair.input(1, AppInput::Admin(AdminOp::Stop { app: "web".into() }));
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Stopped));
    pair.fail_start.insert((0, "web".into()));
    pair.fail_start.insert((1, "web".into()));
    pair.input(0, AppInput::Admin(AdminOp::Start { app: "web".into(), node: None }));
    assert_eq!(pair.states("web"), (AppState::Failed, AppState::Failed));
    pair.fail_start.clear();
    pair.input(
        0,
        AppInput::Admin(AdminOp::Start { app: "web".into(), node: Some("node1".into()) }),
    );
    assert_eq!(pair.nodes[0].state("web"), Some(AppState::Running));
}

#[test]
fn failback_auto_returns_to_the_preferred_node_manual_stays() {
    for (failback, expected) in [
        (Failback::Auto, (AppState::Running, AppState::Stopped)),
        (Failback::Manual, (AppState::Stopped, AppState::Running)),
    ] {
        let mut pair = formed_pair(vec![policy("web", true, failback)]);
        pair.dead[0] = true;
        pair.connected = false;
        pair.input(1, AppInput::PeerDown { peer: "node1".into(), take_over: true });
        // node1 comes back (restarted: nothing runs there any more).
        pair.nodes[0] =
            Apps::new("node1", &["node2".into()], vec![policy("web", true, failback)], 2);
        pair.dead[0] = false;
        pair.connected = true;
        pair.meet();
        pair.input(0, AppInput::Formed { start_autostart: true });
        assert_eq!(pair.states("web"), expected, "{failback:?}");
    }
}

#[test]
fn a_taken_over_application_does_not_return_to_a_chosen_node_by_itself() {
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    pair.input(
        0,
        AppInput::Admin(AdminOp::Switch { app: "web".into(), node: Some("node2".into()) }),
    );
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Running));
    // node2 is cut off: it stops its copy (isolated); node1 takes over after the delay.
    pair.connected = false;
    pair.input(1, AppInput::Isolated);
    pair.input(0, AppInput::PeerDown { peer: "node2".into(), take_over: true });
    assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped));
    // The network heals: with manual failback it stays on node1.
    pair.connected = true;
    pair.input(1, AppInput::Reconnected);
    pair.meet();
    assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped));
}

#[test]
fn a_late_announcement_from_before_a_start_is_ignored() {
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    // node2 said "stopped" long ago; that message arrives only now, after "running".
    let mut stale = pair.nodes[1].announcement();
    stale.seq = 0;
    stale.states.insert("web".into(), AppState::Stopped);
    pair.input(
        1,
        AppInput::Admin(AdminOp::Switch { app: "web".into(), node: Some("node2".into()) }),
    );
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Running));
    pair.input(0, AppInput::Peer { peer: "node2".into(), announcement: stale });
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Running));
}

#[test]
fn a_start_aimed_at_a_node_where_it_failed_clears_that_failure_there() {
    let mut pair = Pair::new(vec![policy("web", true, Failback::Manual)]);
    pair.fail_start.insert((0, "web".into()));
    pair.meet();
    pair.input(0, AppInput::Formed { start_autostart: true });
    assert_eq!(pair.states("web"), (AppState::Failed, AppState::Running));
    pair.fail_start.clear();
    // Asked on node2, for node1.
    pair.input(
        1,
        AppInput::Admin(AdminOp::Switch { app: "web".into(), node: Some("node1".into()) }),
    );
    assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped));
}

fn replicated(name: &str) -> AppPolicy {
    AppPolicy { replicated: true, ..policy(name, true, Failback::Manual) }
}

fn data(app: &str, blocked: Option<NotPromotable>) -> AppInput {
    AppInput::Data { app: app.into(), blocked }
}

#[test]
fn replicated_data_must_be_reported_promotable_before_a_start() {
    let mut pair = formed_pair(vec![replicated("web")]);
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Stopped), "not reported yet");
    pair.input(1, data("web", None));
    // node1 is preferred, but only node2's copy may be promoted.
    pair.input(0, data("web", Some(NotPromotable::Outdated)));
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Running));
    assert_eq!(pair.nodes[0].peer_data_blocked("web"), vec![]);
    pair.input(0, data("web", Some(NotPromotable::Inconsistent { resyncing: true })));
    assert_eq!(
        pair.nodes[1].peer_data_blocked("web"),
        vec![("node1".to_string(), NotPromotable::Inconsistent { resyncing: true })]
    );
    // Resync done: manual failback keeps it where it runs.
    pair.input(0, data("web", None));
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Running));
}

#[test]
fn a_survivor_with_stale_data_does_not_take_over() {
    let mut pair = formed_pair(vec![replicated("web")]);
    pair.input(0, data("web", None));
    pair.input(1, data("web", Some(NotPromotable::Outdated)));
    assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped));
    pair.dead[0] = true;
    pair.connected = false;
    pair.input(1, AppInput::PeerDown { peer: "node1".into(), take_over: true });
    let due = pair.nodes[1].poll_timeout().expect("a take-over is pending");
    pair.tick(1, due);
    assert_eq!(pair.nodes[1].state("web"), Some(AppState::Stopped));
    assert_eq!(pair.nodes[1].data_blocked("web"), Some(&NotPromotable::Outdated));
    // A copy that comes back alone after a restart is only Consistent: still no start.
    pair.input(1, data("web", Some(NotPromotable::MaybeStale)));
    assert_eq!(pair.nodes[1].state("web"), Some(AppState::Stopped));
}

#[test]
fn a_lost_disk_with_the_move_policy_moves_the_application() {
    let mut pair = formed_pair(vec![replicated("web")]);
    pair.input(0, data("web", None));
    pair.input(1, data("web", None));
    assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped));
    pair.input(0, AppInput::DataLost { app: "web".into(), reason: "local disk failed".into() });
    assert_eq!(pair.states("web"), (AppState::Failed, AppState::Running));
}

#[test]
fn unreplicated_applications_ignore_data_reports() {
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    pair.input(0, data("web", Some(NotPromotable::Outdated)));
    assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped));
}

#[test]
fn the_preferred_node_gets_a_replicated_application_even_if_its_data_reports_last() {
    let mut pair = formed_pair(vec![replicated("web")]);
    pair.input(1, data("web", None));
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Stopped), "node1 still coming up");
    pair.input(0, data("web", None));
    assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped));
}

#[test]
fn a_preferred_node_whose_data_never_comes_up_is_passed_over_after_the_grace() {
    let mut pair = formed_pair(vec![replicated("web")]);
    pair.input(1, data("web", None));
    // Each node counts the grace from when it saw node1 come up; node2 starts once node1 too
    // places it there.
    while let Some(due) = pair.nodes.iter().filter_map(|n| n.poll_timeout()).min() {
        pair.tick(0, due);
        pair.tick(1, due);
    }
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Running));
}

#[test]
fn copies_that_become_promotable_at_once_start_the_application_on_one_node() {
    // A split brain resolved (t70, ci25): both copies turn promotable within a few ms, each
    // node still holding the other's "split brain". Each would place the application on
    // itself; the placement handshake makes them wait for each other's view.
    let mut pair = formed_pair(vec![replicated("web")]);
    pair.input(0, data("web", Some(NotPromotable::SplitBrain)));
    pair.input(1, data("web", Some(NotPromotable::SplitBrain)));
    assert_eq!(pair.states("web"), (AppState::Stopped, AppState::Stopped));
    // Both verdicts change before either hears the other's: the announcements cross.
    for node in 0..2 {
        pair.nodes[node].handle(pair.now, data("web", None));
    }
    let crossing = [pair.nodes[0].announcement(), pair.nodes[1].announcement()];
    for node in 0..2 {
        while let Some(action) = pair.nodes[node].poll_action() {
            assert_eq!(action, AppAction::Announce, "nothing starts before the other's view");
        }
    }
    for (from, announcement) in crossing.into_iter().enumerate() {
        pair.deliver(1 - from, announcement);
    }
    pair.settles_to("web", (AppState::Running, AppState::Stopped));
}

#[test]
fn a_placement_set_again_is_answered_even_when_announcements_are_reordered() {
    // node1's copy turns promotable, stale, promotable again within a few ms: three
    // announcements, the middle one overtaken and dropped (cldaemon sends each in a task of
    // its own). node2 must still answer the third, or node1 would wait for ever.
    let mut pair = formed_pair(vec![replicated("web")]);
    pair.input(1, data("web", Some(NotPromotable::Outdated)));
    let mut sent = Vec::new();
    for verdict in [None, Some(NotPromotable::MaybeStale), None] {
        pair.nodes[0].handle(pair.now, data("web", verdict));
        sent.push(pair.nodes[0].announcement());
        while pair.nodes[0].poll_action().is_some() {}
    }
    let third = sent.pop().expect("three");
    let first = sent.remove(0);
    for announcement in [first, third] {
        pair.deliver(1, announcement);
        let answered =
            std::iter::from_fn(|| pair.nodes[1].poll_action()).any(|a| a == AppAction::Announce);
        assert!(answered, "node2 answers each new placement of node1");
        let announcement = pair.nodes[1].announcement();
        pair.deliver(0, announcement);
    }
    pair.settles_to("web", (AppState::Running, AppState::Stopped));
}

#[test]
fn a_start_whose_data_turns_stale_is_cut_short_and_placed_elsewhere() {
    let mut pair = formed_pair(vec![replicated("web")]);
    pair.input(1, data("web", None));
    // node1's start is under way (the shell has not reported it) when DRBD marks its copy
    // Outdated: it must not promote it.
    pair.nodes[0].handle(pair.now, data("web", None));
    // The announcements go (node2 consents), but the shell does not finish the start.
    let mut started = false;
    while let Some((from, action)) =
        (0..2).find_map(|i| pair.nodes[i].poll_action().map(|a| (i, a)))
    {
        match action {
            AppAction::Announce => {
                let announcement = pair.nodes[from].announcement();
                pair.deliver(1 - from, announcement);
            }
            AppAction::Start { .. } => started = from == 0,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(started);
    assert_eq!(pair.states("web").0, AppState::Starting);
    pair.nodes[0].handle(pair.now, data("web", Some(NotPromotable::Outdated)));
    let stop = pair.nodes[0].poll_action();
    assert!(
        matches!(&stop, Some(AppAction::Stop { urgent: true, reason, .. }) if reason.contains("Outdated")),
        "{stop:?}"
    );
    pair.input(0, AppInput::StopFinished { app: "web".into(), ok: true, reason: String::new() });
    assert_eq!(
        pair.states("web"),
        (AppState::Stopped, AppState::Running),
        "{}",
        pair.log.join("\n")
    );
}

#[test]
fn the_strictest_restart_budget_counts() {
    let secs = Duration::from_secs;
    assert_eq!(AppPolicy::strictest_budget([(3, secs(60)), (1, secs(30))]), (1, secs(60)));
    assert_eq!(AppPolicy::strictest_budget([]), (3, secs(600)));
}

#[test]
fn a_peer_whose_manager_restarted_without_a_silence_hears_our_state_at_once() {
    // Announcements are repeated only when they do not arrive, so a restarted cldaemon (its
    // heartbeat daemons went on: no PeerDown, no PeerUp on this side) must be answered.
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped));
    pair.nodes[1] =
        Apps::new("node2", &["node1".into()], vec![policy("web", true, Failback::Manual)], 2);
    let before = pair.log.len();
    pair.input(1, AppInput::PeerUp { peer: "node1".into() });
    assert_eq!(
        pair.nodes[1].peer_states.get("node1").and_then(|s| s.get("web")),
        Some(&AppState::Running),
        "{}",
        pair.log.join("\n")
    );
    // Its announcement, our answer, its answer to our first word and one for what it learnt:
    // then quiet (settle panics on a ping-pong).
    let after: Vec<&str> = pair.log[before..].iter().map(|l| l.as_str()).collect();
    assert!(after.len() <= 4, "{after:?}");
    assert!(after.iter().all(|l| l.ends_with("Announce")), "{after:?}");
}

#[test]
fn a_peer_that_announced_an_application_during_the_takeover_delay_keeps_it() {
    // The guard says "down" when node1 falls silent and "take over" when the takeover delay
    // ends. node1, back from a partition, announced web running in between (before it was
    // heard on the heartbeat links again): node2 must not start a second copy (sim seed 2476).
    let mut pair = formed_pair(vec![policy("web", true, Failback::Manual)]);
    assert_eq!(pair.states("web"), (AppState::Running, AppState::Stopped));
    pair.connected = false;
    pair.input(1, AppInput::PeerDown { peer: "node1".into(), take_over: false });
    let announcement = pair.nodes[0].announcement();
    pair.input(1, AppInput::Peer { peer: "node1".into(), announcement });
    pair.input(1, AppInput::PeerDown { peer: "node1".into(), take_over: true });
    assert_eq!(
        pair.states("web"),
        (AppState::Running, AppState::Stopped),
        "{}",
        pair.log.join("\n")
    );
}
