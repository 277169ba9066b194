//! This node's standing with the outside: the known connections' replies, whether they count
//! as reachable, the verdict on a silent peer (take over, or wait for a reply, or stand by),
//! and isolation, alone or at a verdict.

use std::time::Duration;

use super::{Action, LocalState, Membership, PeerState, Verdict};
use crate::time::Time;

impl Membership {
    /// With every peer down, this node's standing follows the known connections alone: losing
    /// them all makes it isolated (it must not keep, let alone take over, anything), and
    /// reaching them again makes it judge its silent peers anew, as a connected node would.
    pub(super) fn check_alone(&mut self, now: Time) {
        if self.config.known_connections.is_empty()
            || self.peers.values().any(|p| p.state != PeerState::Down)
        {
            return;
        }
        // Losing the outside takes a heartbeat timeout without any reply (a lost ping or two is
        // not losing it); reaching it again takes one fresh reply. A node alone that is cut
        // off so decides within `timeout` of the cut, which a peer that comes back and takes
        // over waits out with its takeover delay (crate::timing). Pinged slowly until a moment
        // ago (the last peer left with clhalt, no verdict before), it counts a timeout of fast
        // pings too: its newest reply may be old for want of pings, not of the outside.
        match self.local_state {
            LocalState::Connected if self.alone_and_unanswered(now) => {
                self.local_state = LocalState::Isolated;
                self.actions.push_back(Action::Isolated {
                    reason: format!(
                        "every peer is down and none of {} known connections answers",
                        self.config.known_connections.len()
                    ),
                });
            }
            LocalState::Isolated if self.fresh_reply(now) => {
                self.local_state = LocalState::Connected;
                self.actions.push_back(Action::Reconnected);
                let peers: Vec<String> = self.peers.keys().cloned().collect();
                for peer in peers {
                    // No last frame: this verdict does not come a timeout after it (the fence
                    // race's phase would mean nothing).
                    self.actions.push_back(Action::PeerDown {
                        peer,
                        verdict: Verdict::TakeOver,
                        reason: "still silent on every link, and this node reaches a known connection again".into(),
                        silent_since: None,
                    });
                }
            }
            _ => {}
        }
    }

    /// No reply for a timeout, pinged fast for at least that long.
    fn alone_and_unanswered(&self, now: Time) -> bool {
        !self.reply_within(now, self.config.timeout) && now >= self.fast_since + self.config.timeout
    }

    /// When a node alone would count itself isolated, failing a reply.
    pub(super) fn alone_deadline(&self) -> Option<Time> {
        if self.config.known_connections.is_empty()
            || self.local_state != LocalState::Connected
            || self.peers.values().any(|p| p.state != PeerState::Down)
        {
            return None;
        }
        let newest = self.newest_reply();
        let since = newest.unwrap_or(self.started).max(self.fast_since);
        Some(since + self.config.timeout)
    }

    /// The newest reply of any known connection.
    fn newest_reply(&self) -> Option<Time> {
        self.known.values().filter_map(|(last, _)| *last).max()
    }

    fn fresh_reply(&self, now: Time) -> bool {
        self.reply_within(now, self.config.ping_freshness)
    }

    fn reply_within(&self, now: Time, window: Duration) -> bool {
        self.known.values().any(|(last, _)| last.is_some_and(|t| now.since(t) < window))
    }

    pub(super) fn expire_known_connections(&mut self, now: Time) {
        let window = self.reachable_window(now);
        let started = self.started;
        for (target, (last, reachable)) in self.known.iter_mut() {
            let fresh = match last {
                Some(t) => now.since(*t) < window,
                // Before the first reply, give the pinger one window to get going.
                None => now.since(started) < window,
            };
            if fresh != *reachable {
                *reachable = fresh;
                self.actions.push_back(if fresh {
                    Action::KnownConnectionBack { target: *target }
                } else {
                    Action::KnownConnectionLost { target: *target }
                });
            }
        }
    }

    pub(super) fn judge(&mut self, now: Time, peer: String) {
        let silent_for = self.config.timeout.as_millis();
        if self.config.known_connections.is_empty() {
            let reason = format!("silent on every link for {silent_for} ms; no known connections configured, so isolation cannot be ruled out");
            let down = self.peer_down(peer, Verdict::TakeOver, reason);
            self.actions.push_back(down);
        } else if self.fresh_reply(now) {
            let reason = format!(
                "silent on every link for {silent_for} ms while a known connection answers"
            );
            let down = self.peer_down(peer, Verdict::TakeOver, reason);
            self.actions.push_back(down);
        } else {
            if self.local_state == LocalState::Connected {
                self.local_state = LocalState::Undecided;
                self.undecided_until = Some(self.undecided_until(now));
            }
            self.pending_verdicts.push(peer);
        }
    }

    /// How long a node whose peers fell silent and whose known connections have no fresh reply
    /// waits for one before it counts itself isolated: until its newest reply is a whole
    /// heartbeat `timeout` old (at once if it already is). A node cut off at some instant has no
    /// reply from after it, and declares its peer down at most `timeout` (plus jitter) after
    /// its peer declared it down, which is when the cut came at the latest; so it decides by
    /// then too, and its decision adds nothing to the survivor's takeover delay
    /// (crate::timing). A connected node with a stale reply (lost pings) keeps the rest of
    /// that time to get a new one.
    fn undecided_until(&self, now: Time) -> Time {
        let newest = self.newest_reply();
        now.max(newest.unwrap_or(self.started) + self.config.timeout)
    }

    /// The wait is over: every verdict held back during it comes out as `verdict`.
    fn release_pending_verdicts(&mut self, verdict: Verdict, reason: &str) {
        self.undecided_until = None;
        for peer in std::mem::take(&mut self.pending_verdicts) {
            let down = self.peer_down(peer, verdict, reason.into());
            self.actions.push_back(down);
        }
    }

    pub(super) fn settle_undecided(&mut self, now: Time) {
        if self.local_state != LocalState::Undecided {
            return;
        }
        if self.fresh_reply(now) {
            self.local_state = LocalState::Connected;
            self.release_pending_verdicts(
                Verdict::TakeOver,
                "silent on every link; a known connection answered after a short wait",
            );
            return;
        }
        if self.undecided_until.is_some_and(|t| now >= t) {
            self.local_state = LocalState::Isolated;
            self.release_pending_verdicts(
                Verdict::StandBy,
                "silent on every link, and so is every known connection: this node is the one cut off",
            );
            self.actions.push_back(Action::Isolated {
                reason: format!(
                    "no heartbeat from any peer and no reply from any of {} known connections",
                    self.config.known_connections.len()
                ),
            });
        }
    }

    pub(super) fn set_connected(&mut self) {
        let was_isolated = self.local_state == LocalState::Isolated;
        self.local_state = LocalState::Connected;
        self.undecided_until = None;
        if was_isolated {
            self.actions.push_back(Action::Reconnected);
        }
    }
}
