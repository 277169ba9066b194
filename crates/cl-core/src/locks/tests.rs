//! The lock table's rules, two tables talking directly.

use super::*;

const LEASE: Duration = Duration::from_secs(15);

fn at(secs: u64) -> Time {
    Time::from_millis(secs * 1000)
}

/// node1's and node2's tables, started at 0.
fn pair() -> (LockTable, LockTable) {
    (LockTable::new("node1", "node2", LEASE, at(0)), LockTable::new("node2", "node1", LEASE, at(0)))
}

fn hold(name: &str, token: u64, owner: &str) -> PeerHold {
    PeerHold { name: name.into(), token, owner: owner.into(), since: 1000 + token, alone: false }
}

fn holder(owner: &str, token: u64) -> Holder {
    Holder { by: owner.into(), since: 1000 + token }
}

/// The whole exchange for a request on `asker`, the peer answering at once.
fn acquire(
    asker: &mut LockTable,
    peer: &mut LockTable,
    name: &str,
    token: u64,
    owner: &str,
    now: Time,
) -> Decision {
    match asker.begin_acquire(name, token, owner, 1000 + token, now) {
        Begin::Busy(h) => Decision::Busy(h),
        Begin::AskPeer => {
            let answer = match peer.peer_reserve(&hold(name, token, owner), now) {
                Ok(()) => PeerAnswer::Reserved,
                Err(h) => PeerAnswer::Refused(h),
            };
            asker.finish_acquire(name, token, answer, false, now)
        }
    }
}

#[test]
fn a_lock_is_granted_with_the_peers_agreement_and_refused_to_the_other_node() {
    let (mut n1, mut n2) = pair();
    assert_eq!(acquire(&mut n1, &mut n2, "x", 1, "a", at(1)), Decision::Granted { alone: false });
    assert_eq!(n2.holder("x", at(1)), Some(holder("a", 1)), "reserved on node2");
    // node2's own client is refused locally, without asking.
    assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(2)), Begin::Busy(holder("a", 1)));
    // A second client on node1 too.
    assert_eq!(n1.begin_acquire("x", 3, "c", 1003, at(2)), Begin::Busy(holder("a", 1)));
    // Another name is independent.
    assert_eq!(acquire(&mut n2, &mut n1, "y", 4, "d", at(2)), Decision::Granted { alone: false });
    // Released on node1 and node2 is told: node2 may take it.
    assert!(n1.release_local("x", 1));
    assert!(!n1.release_local("x", 1), "released once");
    n2.peer_release("x", 1, at(3));
    assert_eq!(acquire(&mut n2, &mut n1, "x", 5, "e", at(3)), Decision::Granted { alone: false });
    assert_eq!(n1.holder("x", at(3)), Some(holder("e", 5)));
}

#[test]
fn the_peer_refuses_what_it_holds() {
    let (mut n1, mut n2) = pair();
    assert_eq!(acquire(&mut n1, &mut n2, "x", 1, "a", at(1)), Decision::Granted { alone: false });
    // node1's reservation on node2 is lost (node2's cllockd restarted): node1 still refuses.
    let mut n2 = LockTable::new("node2", "node1", LEASE, at(2));
    assert_eq!(acquire(&mut n2, &mut n1, "x", 2, "b", at(2)), Decision::Busy(holder("a", 1)));
    assert_eq!(n2.holder("x", at(2)), None, "the refused request is gone");
    // node1's next renewal teaches the new node2.
    let (conflicts, lost) = n2.peer_renew(&n1.renewals(), at(3));
    assert!(conflicts.is_empty() && lost.is_empty());
    assert_eq!(n2.holder("x", at(3)), Some(holder("a", 1)));
}

#[test]
fn simultaneous_requests_are_decided_by_the_tie_break() {
    let (mut n1, mut n2) = pair();
    // Both mark pending, then both Reserves cross.
    assert_eq!(n1.begin_acquire("x", 1, "a", 1001, at(1)), Begin::AskPeer);
    assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(1)), Begin::AskPeer);
    let at_n2 = n2.peer_reserve(&hold("x", 1, "a"), at(1));
    let at_n1 = n1.peer_reserve(&hold("x", 2, "b"), at(1));
    assert_eq!(at_n2, Ok(()), "node1 sorts first: node2 gives way");
    assert_eq!(at_n1, Err(holder("a", 1)), "node1 keeps its request");
    assert_eq!(
        n1.finish_acquire("x", 1, PeerAnswer::Reserved, false, at(1)),
        Decision::Granted { alone: false }
    );
    let refused = PeerAnswer::Refused(holder("a", 1));
    assert_eq!(n2.finish_acquire("x", 2, refused, false, at(1)), Decision::Busy(holder("a", 1)));
    assert_eq!(n2.holder("x", at(1)), Some(holder("a", 1)), "node2 keeps the reservation");
}

#[test]
fn a_reservation_for_a_request_that_lost_meanwhile_is_given_back() {
    let (mut n1, mut n2) = pair();
    // node2 asks; node1's Reserve reaches node2 first and wins; then node1 (whose own
    // request was abandoned) is free and reserves for node2 after all.
    assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(1)), Begin::AskPeer);
    assert_eq!(n2.peer_reserve(&hold("x", 1, "a"), at(1)), Ok(()));
    assert_eq!(n1.peer_reserve(&hold("x", 2, "b"), at(1)), Ok(()));
    assert_eq!(
        n2.finish_acquire("x", 2, PeerAnswer::Reserved, false, at(1)),
        Decision::ReleasePeer(Some(holder("a", 1)))
    );
    n1.peer_release("x", 2, at(1));
    assert_eq!(n1.holder("x", at(1)), None);
}

#[test]
fn reservations_expire_without_renewal() {
    let (mut n1, mut n2) = pair();
    assert_eq!(acquire(&mut n1, &mut n2, "x", 1, "a", at(1)), Decision::Granted { alone: false });
    // Renewed at 10: lasts until 25.
    n2.peer_renew(&n1.renewals(), at(10));
    assert_eq!(n2.holder("x", at(24)), Some(holder("a", 1)));
    assert_eq!(n2.holder("x", at(25)), None, "expired a lease after the last renewal");
}

#[test]
fn a_silent_peer_is_counted_out_only_when_down_and_silent_for_a_lease() {
    let (mut n1, mut n2) = pair();
    assert_eq!(acquire(&mut n1, &mut n2, "x", 1, "a", at(1)), Decision::Granted { alone: false });
    n2.heard_peer(at(1));
    // node1 dies. While the reservation lasts, node2 refuses at once.
    assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(5)), Begin::Busy(holder("a", 1)));
    // Another name: node1 does not answer, and is not (yet) down: nothing granted.
    assert_eq!(n2.begin_acquire("y", 3, "b", 1003, at(5)), Begin::AskPeer);
    assert_eq!(
        n2.finish_acquire("y", 3, PeerAnswer::Unreachable, false, at(5)),
        Decision::Unavailable
    );
    // Down, but not silent for a lease yet.
    assert_eq!(n2.begin_acquire("y", 4, "b", 1004, at(6)), Begin::AskPeer);
    assert_eq!(
        n2.finish_acquire("y", 4, PeerAnswer::Unreachable, true, at(6)),
        Decision::Unavailable
    );
    // Silent for a lease but not down in cldaemon's view (a partition): still nothing.
    assert_eq!(n2.begin_acquire("x", 5, "b", 1005, at(16)), Begin::AskPeer);
    assert_eq!(
        n2.finish_acquire("x", 5, PeerAnswer::Unreachable, false, at(16)),
        Decision::Unavailable
    );
    // Down and silent for a lease: granted alone.
    assert_eq!(n2.begin_acquire("x", 6, "b", 1006, at(16)), Begin::AskPeer);
    assert_eq!(
        n2.finish_acquire("x", 6, PeerAnswer::Unreachable, true, at(16)),
        Decision::Granted { alone: true }
    );
}

#[test]
fn a_restarted_cllockd_waits_a_lease_before_deciding_alone() {
    let mut n2 = LockTable::new("node2", "node1", LEASE, at(100));
    assert!(!n2.may_decide_alone(true, at(110)));
    assert_eq!(n2.silence_left(at(110)), Duration::from_secs(5));
    assert!(n2.may_decide_alone(true, at(115)));
    n2.heard_peer(at(112));
    assert!(!n2.may_decide_alone(true, at(115)), "heard since");
    assert!(n2.may_decide_alone(true, at(127)));
}

#[test]
fn a_peer_that_said_bye_holds_nothing() {
    let (mut n1, mut n2) = pair();
    assert_eq!(acquire(&mut n1, &mut n2, "x", 1, "a", at(1)), Decision::Granted { alone: false });
    n2.peer_bye(at(2));
    assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(2)), Begin::AskPeer);
    assert_eq!(
        n2.finish_acquire("x", 2, PeerAnswer::Unreachable, false, at(2)),
        Decision::Granted { alone: true }
    );
    // Once heard again, the peer counts again.
    n2.heard_peer(at(3));
    assert!(!n2.may_decide_alone(false, at(3)));
}

#[test]
fn late_messages_cannot_revive_a_released_grant() {
    let (mut n1, mut n2) = pair();
    assert_eq!(acquire(&mut n1, &mut n2, "x", 1, "a", at(1)), Decision::Granted { alone: false });
    let stale = n1.renewals();
    assert!(n1.release_local("x", 1));
    n2.peer_release("x", 1, at(2));
    // The renewal sent before the release arrives after it.
    n2.peer_renew(&stale, at(2));
    assert_eq!(n2.holder("x", at(2)), None);
    // A new grant of the same name is untouched by the old token's release.
    assert_eq!(acquire(&mut n1, &mut n2, "x", 3, "c", at(3)), Decision::Granted { alone: false });
    n2.peer_release("x", 1, at(3));
    assert_eq!(n2.holder("x", at(3)), Some(holder("c", 3)));
    // An abandoned request's Release overtaking its Reserve.
    n2.peer_release("y", 9, at(4));
    assert!(n2.peer_reserve(&hold("y", 9, "z"), at(4)).is_err());
    assert_eq!(n2.holder("y", at(4)), None);
}

#[test]
fn after_a_freeze_the_grant_made_alone_wins() {
    let (mut n1, mut n2) = pair();
    assert_eq!(acquire(&mut n1, &mut n2, "x", 1, "a", at(1)), Decision::Granted { alone: false });
    n2.heard_peer(at(1));
    // node1 freezes; node2 counts it out and grants alone.
    assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(20)), Begin::AskPeer);
    assert_eq!(
        n2.finish_acquire("x", 2, PeerAnswer::Unreachable, true, at(20)),
        Decision::Granted { alone: true }
    );
    // node1 thaws and renews: node2 keeps its grant and node1 loses its own.
    let (conflicts, lost) = n2.peer_renew(&n1.renewals(), at(21));
    assert!(lost.is_empty());
    assert_eq!(conflicts.len(), 1);
    let lost = n1.renewed(&conflicts);
    assert_eq!(lost, vec![Lost { name: "x".into(), token: 1, by: "b".into(), since: 1002 }]);
    assert_eq!(n1.held_here(), 0);
    // node2's renewal, the other way round, also makes node1 give way.
    let (mut n1, mut n2) = pair();
    acquire(&mut n1, &mut n2, "x", 1, "a", at(1));
    n2.begin_acquire("x", 2, "b", 1002, at(20));
    n2.finish_acquire("x", 2, PeerAnswer::Unreachable, true, at(20));
    let (conflicts, lost) = n1.peer_renew(&n2.renewals(), at(21));
    assert!(conflicts.is_empty());
    assert_eq!(lost, vec![Lost { name: "x".into(), token: 1, by: "b".into(), since: 1002 }]);
    assert_eq!(n1.holder("x", at(21)), Some(holder("b", 2)), "now reserved for node2");
}

#[test]
fn a_renewal_of_a_hold_replaces_a_losing_pending_request() {
    let (mut n1, mut n2) = pair();
    assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(1)), Begin::AskPeer);
    // node1 holds x (node2 had restarted and forgotten) and renews.
    let (conflicts, lost) = n2.peer_renew(&[hold("x", 1, "a")], at(1));
    assert!(conflicts.is_empty() && lost.is_empty());
    let refused = PeerAnswer::Refused(holder("a", 1));
    assert_eq!(n2.finish_acquire("x", 2, refused, false, at(1)), Decision::Busy(holder("a", 1)));
    assert_eq!(n2.holder("x", at(1)), Some(holder("a", 1)));
    let _ = &mut n1;
}

#[test]
fn the_lease_outlasts_the_takeover_three_times_and_is_never_below_the_minimum() {
    let second = Duration::from_secs(1);
    assert_eq!(lease(second, second), MIN_LEASE);
    assert_eq!(lease(second * 3, second * 4), second * 21);
}
