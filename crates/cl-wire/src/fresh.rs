//! Freshness across restarts: the echo field, challenges and the TCP hello.
//!
//! A [`crate::ReplayWindow`] lives in memory, so a receiver that restarts forgets which frames it
//! has seen, and a frame recorded before could be accepted again. Epochs alone cannot help: the
//! receiver also forgets the newest epoch. So every frame carries an `echo`: a value the
//! *receiver* issued during its current run, which the sender copies back. A frame recorded
//! before the receiver restarted echoes a value of an earlier run and is refused as
//! [`crate::ReceiveError::Unfresh`], whatever its epoch and seq. No clock is involved.
//!
//! What is echoed, per channel (docs/cluster.md, "Replay protection"):
//! - Heartbeats (UDP, both ways all the time): the newest epoch the sender has accepted from the
//!   receiver's node. The receiver keeps the epochs it issued in this run in [`Challenges`];
//!   each node keeps what to echo to each peer in an [`EchoBook`]. After a restart a node counts a
//!   peer's heartbeats again once the peer has heard one of its new ones: one interval.
//! - Requests over TCP (cldaemon and cllockd between nodes): each connection starts with a
//!   [`Hello`] from each side carrying a fresh random nonce; the request echoes the server's
//!   nonce and the reply echoes the client's. A recorded request or reply belongs to another
//!   connection and is refused.
//! - Arbitrator requests (UDP): the request echoes clarbd's epoch (learned from its replies; a
//!   client that does not know it yet is told it in a refusal and asks again), and the reply
//!   echoes the client's epoch; with the request's seq in the reply, each answer fits one
//!   request of one client run only.
//!
//! Epochs still order a sender's runs, so they must never be reused and never go backwards:
//! cl-daemon takes them from a persisted, fsynced counter, not from the wall clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The first frame of each side of a TCP exchange: a nonce the other side must echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Random, fresh for this connection; never 0.
    pub nonce: u64,
}

/// The challenges a receiver issued during its current run; a frame echoing one is fresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenges {
    issued: Vec<u64>,
}

impl Challenges {
    /// How many of the newest challenges are remembered; older ones are forgotten (their
    /// senders echo a newer one within an interval).
    pub const KEPT: usize = 8;

    /// No challenge yet: nothing is fresh.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remember `challenge` (0 is never a challenge: it is the echo of "nothing known yet").
    pub fn issue(&mut self, challenge: u64) {
        if challenge == 0 || self.issued.contains(&challenge) {
            return;
        }
        if self.issued.len() >= Self::KEPT {
            self.issued.remove(0);
        }
        self.issued.push(challenge);
    }

    /// Whether `echo` is a challenge of this run.
    pub fn contains(&self, echo: u64) -> bool {
        echo != 0 && self.issued.contains(&echo)
    }
}

/// What to echo to each peer: the newest epoch accepted from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoBook {
    newest: BTreeMap<String, u64>,
}

impl EchoBook {
    /// Nothing heard yet: every echo is 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Note that an authentic frame of `epoch` was accepted from `peer`. Only a newer epoch
    /// counts (the replay window has refused older ones already). Whether the book changed.
    pub fn learn(&mut self, peer: &str, epoch: u64) -> bool {
        match self.newest.get_mut(peer) {
            Some(known) if *known >= epoch => false,
            Some(known) => {
                *known = epoch;
                true
            }
            None => {
                self.newest.insert(peer.to_string(), epoch);
                true
            }
        }
    }

    /// What to echo in a frame to `peer`; 0 while nothing was heard from it.
    pub fn echo_for(&self, peer: &str) -> u64 {
        self.newest.get(peer).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterKey, Kind, ReceiveError, Receiver, Sender};

    fn key() -> ClusterKey {
        ClusterKey::from_bytes(&[0x42; 32]).expect("valid key")
    }

    #[test]
    fn challenges_forget_the_oldest_and_never_accept_zero() {
        let mut challenges = Challenges::new();
        assert!(!challenges.contains(0));
        challenges.issue(0);
        assert!(!challenges.contains(0));
        for c in 1..=10 {
            challenges.issue(c);
        }
        assert!(!challenges.contains(1) && !challenges.contains(2));
        assert!((3..=10).all(|c| challenges.contains(c)));
    }

    #[test]
    fn the_echo_book_only_moves_forward() {
        let mut book = EchoBook::new();
        assert_eq!(book.echo_for("node2"), 0);
        assert!(book.learn("node2", 10));
        assert!(!book.learn("node2", 10));
        assert!(!book.learn("node2", 9));
        assert!(book.learn("node2", 11));
        assert_eq!(book.echo_for("node2"), 11);
    }

    /// The attack of issue 13: heartbeats recorded earlier, replayed after the receiver
    /// restarted (its window empty), must not count; the sender's live frames do once it echoes
    /// the receiver's new run.
    #[test]
    fn frames_recorded_before_a_receiver_restart_are_unfresh() {
        let mut node1 = Sender::new(key(), "alpha", "node1", 500);
        // Receiver run 1 on node2 issued challenge 70 (its sender's epoch).
        let recorded: Vec<Vec<u8>> = (0..5)
            .map(|_| node1.seal_echoing(Kind::Heartbeat, &1u8, 70).expect("sealed"))
            .collect();
        // node2 restarts: empty window, new challenge 71.
        let mut run2 = Receiver::new(key(), "alpha");
        let mut challenges = Challenges::new();
        challenges.issue(71);
        for frame in &recorded {
            let got = run2.try_receive_fresh::<u8>(frame, |e| challenges.contains(e));
            assert!(
                matches!(got, Err(ReceiveError::Unfresh { epoch: 500, echo: 70, .. })),
                "{got:?}"
            );
        }
        // Replaying them again: now plain replays.
        assert!(matches!(
            run2.try_receive_fresh::<u8>(&recorded[0], |e| challenges.contains(e)),
            Err(ReceiveError::Replay(_))
        ));
        // node1 has heard node2's new run and echoes 71: accepted.
        let live = node1.seal_echoing(Kind::Heartbeat, &1u8, 71).expect("sealed");
        assert!(run2.try_receive_fresh::<u8>(&live, |e| challenges.contains(e)).is_ok());
        assert_eq!(run2.counters().unfresh, 5);
        assert_eq!(run2.counters().replayed, 1);
        assert_eq!(run2.counters().accepted, 1);
    }

    /// A reply recorded on one connection is refused on another: it echoes the other nonce.
    #[test]
    fn a_reply_from_another_connection_is_unfresh() {
        let mut server = Sender::new(key(), "alpha", "node2", 9);
        let old_reply = server.seal_echoing(Kind::NodeManager, &"ok", 1111).expect("sealed");
        let mut client = Receiver::new(key(), "alpha");
        let got = client.try_receive_fresh::<String>(&old_reply, |e| e == 2222);
        assert!(matches!(got, Err(ReceiveError::Unfresh { .. })), "{got:?}");
    }
}
