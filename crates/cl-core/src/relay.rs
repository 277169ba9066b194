//! When a watching daemon (clhbd, clnetd) passes what it observed on to cldaemon.
//!
//! cldaemon's core judges a heartbeat link or a known connection by the time of the newest
//! observation it was told of: silent once a `window` has passed since (the heartbeat timeout,
//! the known connection's freshness). Telling it of every frame woke it ten or more times a
//! second for news it did not need. A [`Relay`] passes an observation on at once when it is
//! news (the first one, one made half a window or more after the last relayed, or one whose
//! content differs from what was relayed), and otherwise holds it; if no frame brings news, the
//! newest held observation goes out three quarters of a window after the last relayed one
//! ([`Relay::due`]). The receiver takes each observation at the time it was *made*, not the
//! time it arrived, so it judges exactly as if it had heard every frame, provided a relay
//! reaches it within the last quarter of the window (250 ms at the default heartbeat timeout;
//! clhbd runs with realtime priority, and cldaemon reads what is waiting before it judges).
//!
//! In steady state (a frame every heartbeat interval, window = the heartbeat timeout) that is
//! one relay per half timeout plus at most one interval, on the arrival of a frame: no timer
//! fires while frames come at least every quarter window.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::time::Time;

/// What a daemon observed and when it last passed it on, per key (a peer's link, a target).
#[derive(Debug, Clone)]
pub struct Relay<K> {
    window: Duration,
    seen: BTreeMap<K, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The newest observation's time.
    newest: Time,
    /// The time of the newest observation relayed, if any was.
    relayed: Option<Time>,
}

impl Seen {
    fn held(&self) -> bool {
        self.relayed.is_none_or(|r| self.newest > r)
    }
}

impl<K: Ord + Clone> Relay<K> {
    /// A relay for a receiver that judges a key silent `window` after its newest observation.
    pub fn new(window: Duration) -> Relay<K> {
        Relay { window, seen: BTreeMap::new() }
    }

    /// How long after the last relayed observation a newer one is news.
    fn hold(&self) -> Duration {
        self.window / 2
    }

    /// How long after the last relayed observation a newer one goes out at the latest.
    fn deadline(&self) -> Duration {
        self.window * 3 / 4
    }

    /// `key` was observed at `at`; `news` says its content differs from what was last relayed
    /// for it. True when the held observations must be relayed now ([`take`](Self::take)).
    pub fn observe(&mut self, key: K, at: Time, news: bool) -> bool {
        let hold = self.hold();
        let seen = self.seen.entry(key).or_insert(Seen { newest: at, relayed: None });
        seen.newest = seen.newest.max(at);
        news || seen.relayed.is_none_or(|r| at >= r + hold)
    }

    /// When the held observations must be relayed at the latest; None while nothing is held.
    pub fn due(&self) -> Option<Time> {
        let deadline = self.deadline();
        self.seen
            .values()
            .filter(|s| s.held())
            .map(|s| s.relayed.map_or(s.newest, |r| r + deadline))
            .min()
    }

    /// Every key's newest observation not relayed yet, now counted as relayed.
    pub fn take(&mut self) -> Vec<(K, Time)> {
        let mut out = Vec::new();
        for (key, seen) in self.seen.iter_mut() {
            if seen.held() {
                seen.relayed = Some(seen.newest);
                out.push((key.clone(), seen.newest));
            }
        }
        out
    }

    /// Judge by a new `window` from now on (what was relayed stays relayed).
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Forget what was relayed (the receiver restarted): the next observation goes out at once.
    pub fn reset(&mut self) {
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    #[test]
    fn a_steady_stream_is_relayed_once_per_half_window_and_never_by_a_timer() {
        // Heartbeats every 200 ms, timeout 1 s.
        let mut relay = Relay::new(Duration::from_millis(1000));
        let mut relayed = Vec::new();
        for beat in 0..20u64 {
            let at = ms(beat * 200);
            if relay.observe("link", at, false) {
                relayed.extend(relay.take().into_iter().map(|(_, t)| t));
            }
            // The next frame always comes before the due time.
            if let Some(due) = relay.due() {
                assert!(due > ms(beat * 200 + 200), "due {due:?} after the frame at {at:?}");
            }
        }
        assert_eq!(relayed, vec![ms(0), ms(600), ms(1200), ms(1800), ms(2400), ms(3000), ms(3600)]);
    }

    #[test]
    fn a_held_observation_goes_out_before_the_receiver_would_judge_it_silent() {
        let mut relay = Relay::new(Duration::from_millis(1000));
        assert!(relay.observe("link", ms(0), false));
        relay.take();
        assert!(!relay.observe("link", ms(200), false));
        assert!(!relay.observe("link", ms(400), false));
        // Then silence: the receiver, told of 0 only, would judge the link silent at 1000;
        // the relay sends 400 at 750, so it judges at 1400 as if it had heard every frame.
        assert_eq!(relay.due(), Some(ms(750)));
        assert_eq!(relay.take(), vec![("link", ms(400))]);
        assert_eq!(relay.due(), None, "nothing held");
    }

    #[test]
    fn news_and_the_first_frame_after_a_silence_go_out_at_once() {
        let mut relay = Relay::new(Duration::from_millis(1000));
        assert!(relay.observe("a", ms(0), false), "the first observation");
        relay.take();
        assert!(relay.observe("a", ms(100), true), "different content");
        relay.take();
        assert!(relay.observe("a", ms(2000), false), "after a silence");
        assert!(relay.observe("b", ms(2010), false), "a key never relayed");
    }

    #[test]
    fn one_relay_carries_every_key_held() {
        let mut relay = Relay::new(Duration::from_millis(1000));
        relay.observe("a", ms(0), false);
        relay.observe("b", ms(5), false);
        relay.take();
        relay.observe("b", ms(205), false);
        assert!(relay.observe("a", ms(600), false));
        assert_eq!(relay.take(), vec![("a", ms(600)), ("b", ms(205))]);
        relay.reset();
        assert!(relay.observe("a", ms(610), false), "a restarted receiver hears at once");
    }
}
