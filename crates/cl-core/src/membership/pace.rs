//! How often clnetd pings the known connections.
//!
//! A reply matters at a verdict: when a peer falls silent, one fresher than `ping_freshness`
//! says this node still reaches the outside. While every peer is heard in time nothing is
//! judged, so pinging once per heartbeat interval then is work that does not need doing
//! (issue 12: the idle footprint). With [`MembershipConfig::slow_pings`] set, the pace is
//! [`KnownPace::Slow`] while this node is connected, every peer is up and heard within
//! [`watch_after`](Membership::watch_after), and every known connection answers; otherwise
//! it is [`KnownPace::Fast`], kept for at least a heartbeat timeout.
//!
//! Why the verdict is as well informed as before: the pace turns fast when a peer has been
//! silent (as this node knows it: clhbd's relay lags, which only makes the turn earlier) for
//! `timeout - freshness / 2`. clnetd pings at once and reads the reply one interval later, so
//! at the verdict, `freshness / 2` later, that reply is in and `freshness / 2` old: fresh
//! (while `freshness / 2 >= interval`; `MembershipConfig::default_slow_pings` keeps the slow
//! pace for profiles with a jitter allowance to spare, not the fast profile). A lost one is
//! followed by another each interval, as before. A node whose last peer leaves (clhalt: no
//! verdict, so no fast spell before it) counts itself cut off only after a timeout of fast
//! pings without a reply. A node that is itself cut off has no reply
//! from after the cut at all, so it counts itself isolated no later than before: its newest
//! reply is only older (crate::timing's argument is unchanged). Slow pings make one thing
//! slower: a known connection counts as unreachable (status, alarm) after a timeout plus two
//! slow periods without a reply, so that one lost slow ping is not an alarm.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Action, LocalState, Membership, PeerState};
use crate::time::Time;

/// How often the known connections are pinged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnownPace {
    /// Every [`super::MembershipConfig::slow_pings`]: every peer is heard in time.
    Slow,
    /// Every heartbeat interval: a verdict may be near, or something is already wrong.
    Fast,
}

impl Membership {
    /// How long a peer may be silent on every link before the pings turn fast again.
    pub(super) fn watch_after(&self) -> Duration {
        self.config.timeout.saturating_sub(self.config.ping_freshness / 2)
    }

    /// How long a known connection counts as reachable after its newest reply at `now`: a
    /// timeout; at the slow pace, and for two intervals after turning fast (the first fast
    /// reply is on its way), two slow periods more (a reply is read one period after its
    /// ping, so with one ping lost the newest is two periods old when the next arrives). A
    /// node that is not connected (undecided, isolated) shows what it judged by: a timeout.
    pub(super) fn reachable_window(&self, now: Time) -> Duration {
        let timeout = self.config.timeout;
        let Some(slow) = self.config.slow_pings else { return timeout };
        let settling = now < self.fast_since + self.config.interval * 2;
        let lenient = self.pace == KnownPace::Slow || settling;
        if self.local_state == LocalState::Connected && lenient {
            timeout + slow * 2
        } else {
            timeout
        }
    }

    /// Whether nothing is about to be judged: connected, every peer up and heard in time,
    /// every known connection answering.
    fn calm(&self, now: Time) -> bool {
        let watch_after = self.watch_after();
        self.local_state == LocalState::Connected
            && !self.peers.is_empty()
            && self.peers.values().all(|p| {
                p.state == PeerState::Up && p.newest().is_some_and(|t| now.since(t) < watch_after)
            })
            && self.known.values().all(|(_, reachable)| *reachable)
    }

    fn wanted_pace(&self, now: Time) -> KnownPace {
        if self.config.slow_pings.is_none() || self.config.known_connections.is_empty() {
            return KnownPace::Fast;
        }
        let settled = self.pace == KnownPace::Slow || now >= self.fast_since + self.config.timeout;
        if settled && self.calm(now) {
            KnownPace::Slow
        } else {
            KnownPace::Fast
        }
    }

    /// Change the pace if the situation asks for it, and say so.
    pub(super) fn update_pace(&mut self, now: Time) {
        let wanted = self.wanted_pace(now);
        if wanted == self.pace {
            return;
        }
        self.pace = wanted;
        if wanted == KnownPace::Fast {
            self.fast_since = now;
        }
        self.actions.push_back(Action::PingPace { pace: wanted });
    }

    /// When the pace must turn fast with no input: a peer reaching `watch_after` while slow;
    /// or when the reachable window narrows, two intervals after turning fast. (Back to slow
    /// needs a heartbeat or a reply, which are inputs.)
    pub(super) fn pace_deadline(&self) -> Option<Time> {
        if self.pace != KnownPace::Slow {
            let settled = self.fast_since + self.config.interval * 2;
            return (self.config.slow_pings.is_some() && settled > self.now).then_some(settled);
        }
        let watch_after = self.watch_after();
        self.peers.values().filter_map(|p| p.newest()).map(|t| t + watch_after).min()
    }

    /// The pace the known connections are pinged at now.
    pub fn known_pace(&self) -> KnownPace {
        self.pace
    }
}
