//! The cluster lock table: one node's view of every named lock, and the rules that decide who
//! gets one (cllockd, `cl_daemon::lockd`, is its IO shell and documents the protocol).
//!
//! A lock is granted only when both nodes agree: the asking node marks the name *pending* and
//! asks the peer to *reserve* it; the peer refuses if it holds the name or has a pending request
//! of its own that wins the tie-break (the node whose name sorts first). Reservations last one
//! lease unless renewed. A node grants alone only when the peer said `Bye`, or when cldaemon
//! counts the peer down and it has been silent for a whole lease
//! ([`LockTable::may_decide_alone`]). When renewals show two holders (after a partition or a
//! freeze), the grant made alone wins; between equals, the node whose name sorts first.
//!
//! Time is an input ([`Time`]): nothing here reads a clock or touches a socket.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Time;

#[cfg(test)]
mod tests;

/// The shortest lease.
pub const MIN_LEASE: Duration = Duration::from_secs(15);

/// The lease of a cluster's reservations: three times the heartbeat timeout plus the take-over
/// delay, and at least [`MIN_LEASE`]. It must exceed that sum so that, by the time a dead node's
/// locks are free, the survivor's membership has declared it down and taken its applications
/// over, and a node that is merely isolated has stopped its applications.
pub fn lease(heartbeat_timeout: Duration, takeover_delay: Duration) -> Duration {
    ((heartbeat_timeout + takeover_delay) * 3).max(MIN_LEASE)
}

/// One lock held on the sending node, as announced to the peer (carried in cllockd's frames,
/// `cl_wire::lock::PeerLockRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHold {
    /// Lock name.
    pub name: String,
    /// The grant's token: unique per grant, chosen by the holding node.
    pub token: u64,
    /// The holder's description.
    pub owner: String,
    /// Granted at (seconds since 1970, UTC).
    pub since: u64,
    /// Granted without the peer's agreement (the peer counted as down); such a grant wins a
    /// conflict with one the peer agreed to before it went silent.
    #[serde(default)]
    pub alone: bool,
}

/// A renewed hold that the receiving node also holds, and keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Lock name.
    pub name: String,
    /// The renewing node's token, which lost.
    pub token: u64,
    /// Who holds it on the answering node.
    pub by: String,
    /// Since when.
    pub since: u64,
}

/// Who holds (or is about to hold) a lock, as shown to whoever finds it taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's description (`clswitchapp on node1 (pid 42)`).
    pub by: String,
    /// Since when (seconds since 1970).
    pub since: u64,
}

/// One name's state on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Granted to a local client.
    Held { token: u64, owner: String, since: u64, alone: bool },
    /// A local client asked; the peer's answer is awaited.
    Pending { token: u64, owner: String, since: u64 },
    /// Reserved for the peer's holder (or its pending request) until `expires`.
    Reserved { token: u64, owner: String, since: u64, expires: Time },
}

impl Entry {
    fn holder(&self) -> Holder {
        let (Entry::Held { owner, since, .. }
        | Entry::Pending { owner, since, .. }
        | Entry::Reserved { owner, since, .. }) = self;
        Holder { by: owner.clone(), since: *since }
    }
}

/// What a local request needs after [`LockTable::begin_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Held, pending or reserved: not now.
    Busy(Holder),
    /// Now pending here: ask the peer to reserve it.
    AskPeer,
}

/// What the peer said to a `Reserve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAnswer {
    /// Reserved for this node's request.
    Reserved,
    /// Held (or pending and winning) on the peer.
    Refused(Holder),
    /// No answer.
    Unreachable,
}

/// The end of a local request, from [`LockTable::finish_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The client holds the lock; `alone` when granted without the peer.
    Granted {
        /// Granted without the peer's agreement.
        alone: bool,
    },
    /// Someone else holds it.
    Busy(Holder),
    /// The peer reserved the name for a request that no longer stands here: release that
    /// reservation. The holder here, if any, is what the client is told.
    ReleasePeer(Option<Holder>),
    /// The peer did not answer and may not be counted out: nothing can be granted safely.
    Unavailable,
}

/// A local hold that lost to one on the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// Lock name.
    pub name: String,
    /// The local grant's token.
    pub token: u64,
    /// The winning holder on the peer.
    pub by: String,
    /// Since when.
    pub since: u64,
}

/// One node's view of every named lock.
#[derive(Debug, Clone)]
pub struct LockTable {
    local: String,
    peer: String,
    lease: Duration,
    started: Time,
    peer_heard: Option<Time>,
    peer_gone: bool,
    locks: BTreeMap<String, Entry>,
    /// Tokens the peer released or abandoned, until a lease has passed.
    released: BTreeMap<u64, Time>,
}

impl LockTable {
    /// The table of `local`, whose only peer is `peer`, starting at `now`.
    pub fn new(local: &str, peer: &str, lease: Duration, now: Time) -> LockTable {
        LockTable {
            local: local.to_string(),
            peer: peer.to_string(),
            lease,
            started: now,
            peer_heard: None,
            peer_gone: false,
            locks: BTreeMap::new(),
            released: BTreeMap::new(),
        }
    }

    /// The lease of reservations.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often holds are renewed with the peer: five times per lease.
    pub fn renew_interval(&self) -> Duration {
        self.lease / 5
    }

    /// Whoever holds, is about to hold, or has a reservation for `name`.
    pub fn holder(&mut self, name: &str, now: Time) -> Option<Holder> {
        self.prune(now);
        self.locks.get(name).map(Entry::holder)
    }

    /// How many locks are held by local clients.
    pub fn held_here(&self) -> usize {
        self.locks.values().filter(|e| matches!(e, Entry::Held { .. })).count()
    }

    fn prune(&mut self, now: Time) {
        self.locks.retain(|_, e| !matches!(e, Entry::Reserved { expires, .. } if *expires <= now));
        self.released.retain(|_, until| *until > now);
    }

    /// A local client asks for `name` with a fresh `token`.
    pub fn begin_acquire(
        &mut self,
        name: &str,
        token: u64,
        owner: &str,
        since: u64,
        now: Time,
    ) -> Begin {
        self.prune(now);
        if let Some(entry) = self.locks.get(name) {
            return Begin::Busy(entry.holder());
        }
        let owner = owner.to_string();
        self.locks.insert(name.to_string(), Entry::Pending { token, owner, since });
        Begin::AskPeer
    }

    /// The peer answered (or did not) the `Reserve` for request `token`. `peer_down`: cldaemon
    /// says the peer is down and this node connected (asked only when the peer is unreachable).
    pub fn finish_acquire(
        &mut self,
        name: &str,
        token: u64,
        answer: PeerAnswer,
        peer_down: bool,
        now: Time,
    ) -> Decision {
        self.prune(now);
        let ours =
            matches!(self.locks.get(name), Some(Entry::Pending { token: t, .. }) if *t == token);
        let current = self.locks.get(name).map(Entry::holder);
        if !ours {
            // The peer's request won the tie-break (or its hold was renewed) meanwhile.
            return match answer {
                PeerAnswer::Reserved => Decision::ReleasePeer(current),
                PeerAnswer::Refused(holder) => Decision::Busy(holder),
                PeerAnswer::Unreachable => current.map_or(Decision::Unavailable, Decision::Busy),
            };
        }
        let alone = match answer {
            PeerAnswer::Reserved => false,
            PeerAnswer::Refused(holder) => {
                self.locks.remove(name);
                return Decision::Busy(holder);
            }
            PeerAnswer::Unreachable if self.may_decide_alone(peer_down, now) => true,
            PeerAnswer::Unreachable => {
                self.locks.remove(name);
                return Decision::Unavailable;
            }
        };
        if let Some(Entry::Pending { token, owner, since }) = self.locks.remove(name) {
            self.locks.insert(name.to_string(), Entry::Held { token, owner, since, alone });
        }
        Decision::Granted { alone }
    }

    /// Whether a lock may be granted without the peer (see the module documentation).
    pub fn may_decide_alone(&self, peer_down: bool, now: Time) -> bool {
        if self.peer_gone {
            return true;
        }
        let last = self.peer_heard.map_or(self.started, |heard| heard.max(self.started));
        peer_down && now.since(last) >= self.lease
    }

    /// How long until the peer has been silent for a whole lease (zero once it has).
    pub fn silence_left(&self, now: Time) -> Duration {
        let last = self.peer_heard.map_or(self.started, |heard| heard.max(self.started));
        self.lease.saturating_sub(now.since(last))
    }

    /// A local client released grant `token`; true when the peer should be told.
    pub fn release_local(&mut self, name: &str, token: u64) -> bool {
        let held =
            matches!(self.locks.get(name), Some(Entry::Held { token: t, .. }) if *t == token);
        if held {
            self.locks.remove(name);
        }
        held
    }

    /// Something authentic came from the peer's cllockd.
    pub fn heard_peer(&mut self, now: Time) {
        self.peer_heard = Some(now);
        self.peer_gone = false;
    }

    /// The peer asks to reserve `hold.name` for its client: Ok when reserved.
    pub fn peer_reserve(&mut self, hold: &PeerHold, now: Time) -> Result<(), Holder> {
        self.prune(now);
        if self.released.contains_key(&hold.token) {
            return Err(Holder {
                by: "nobody (the request was abandoned)".into(),
                since: hold.since,
            });
        }
        match self.locks.get(&hold.name) {
            Some(entry @ Entry::Held { .. }) => return Err(entry.holder()),
            Some(entry @ Entry::Pending { .. }) if self.local < self.peer => {
                return Err(entry.holder())
            }
            _ => {}
        }
        self.reserve(hold, now);
        Ok(())
    }

    fn reserve(&mut self, hold: &PeerHold, now: Time) {
        let entry = Entry::Reserved {
            token: hold.token,
            owner: hold.owner.clone(),
            since: hold.since,
            expires: now + self.lease,
        };
        self.locks.insert(hold.name.clone(), entry);
    }

    /// The peer's grant (or abandoned request) `token` ended.
    pub fn peer_release(&mut self, name: &str, token: u64, now: Time) {
        self.prune(now);
        self.released.insert(token, now + self.lease);
        if matches!(self.locks.get(name), Some(Entry::Reserved { token: t, .. }) if *t == token) {
            self.locks.remove(name);
        }
    }

    /// The peer still holds `holds`: extend their reservations. Returns the holds the peer
    /// lost to local ones (to answer) and the local holds that lost to the peer's.
    pub fn peer_renew(&mut self, holds: &[PeerHold], now: Time) -> (Vec<Conflict>, Vec<Lost>) {
        self.prune(now);
        let mut conflicts = Vec::new();
        let mut lost = Vec::new();
        for hold in holds {
            if self.released.contains_key(&hold.token) {
                continue; // a renewal that crossed its own Release
            }
            if let Some(Entry::Held { token, owner, since, alone }) = self.locks.get(&hold.name) {
                if self.local_wins(*alone, hold.alone) {
                    conflicts.push(Conflict {
                        name: hold.name.clone(),
                        token: hold.token,
                        by: owner.clone(),
                        since: *since,
                    });
                    continue;
                }
                lost.push(Lost {
                    name: hold.name.clone(),
                    token: *token,
                    by: hold.owner.clone(),
                    since: hold.since,
                });
            }
            self.reserve(hold, now);
        }
        (conflicts, lost)
    }

    /// Two holders of one name (after a partition or a freeze): the grant made alone wins, as
    /// the peer had been counted out for it; between equals, the node whose name sorts first.
    fn local_wins(&self, local_alone: bool, peer_alone: bool) -> bool {
        if local_alone != peer_alone {
            local_alone
        } else {
            self.local < self.peer
        }
    }

    /// Every local hold, for a `Renew`.
    pub fn renewals(&self) -> Vec<PeerHold> {
        self.locks
            .iter()
            .filter_map(|(name, entry)| match entry {
                Entry::Held { token, owner, since, alone } => Some(PeerHold {
                    name: name.clone(),
                    token: *token,
                    owner: owner.clone(),
                    since: *since,
                    alone: *alone,
                }),
                _ => None,
            })
            .collect()
    }

    /// The peer answered a `Renew`: the holds in `conflicts` are lost.
    pub fn renewed(&mut self, conflicts: &[Conflict]) -> Vec<Lost> {
        let mut lost = Vec::new();
        for c in conflicts {
            if self.release_local(&c.name, c.token) {
                lost.push(Lost {
                    name: c.name.clone(),
                    token: c.token,
                    by: c.by.clone(),
                    since: c.since,
                });
            }
        }
        lost
    }

    /// The peer's cllockd stopped: it holds and reserves nothing.
    pub fn peer_bye(&mut self, now: Time) {
        self.heard_peer(now);
        self.locks.retain(|_, e| !matches!(e, Entry::Reserved { .. }));
        self.peer_gone = true;
    }
}
