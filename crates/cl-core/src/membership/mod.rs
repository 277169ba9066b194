//! Membership: who is alive, over which links, and whether this node is isolated.
//!
//! The rules (ARCHITECTURE.md §3, made precise):
//! - a peer is **up** while at least one heartbeat link has been heard within `timeout`; one
//!   silent link is a warning ([`Action::LinkDown`]), never a failover;
//! - a peer goes **down** when every link has been silent for `timeout`. Then this node looks
//!   at the known connections: a reply *fresher* than `ping_freshness` means the outside world
//!   is reachable and the verdict is [`Verdict::TakeOver`]; no fresh reply means this node may
//!   be the one cut off. It then waits for a reply until its newest one is `timeout` old
//!   (undecided: it takes nothing over) and, without one, declares itself
//!   [`LocalState::Isolated`]: it must stop its own applications and take nothing over;
//! - without known connections configured the verdict is always `TakeOver` (documented, and
//!   warned about by clbuild): partition detection is then impossible;
//! - a connected node whose peers are all down becomes isolated when every known connection
//!   falls silent too;
//! - an isolated node that reaches the outside again judges its silent peers anew, exactly as
//!   at the first silence (the takeover guard then probes, fences or asks the arbitrator
//!   before anything is taken over).
//!
//! Freshness matters: a reply received before the cut would otherwise vouch for a node that
//! has just lost its network, so `ping_freshness` must be shorter than `timeout`.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Time;

/// What membership needs to know about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipConfig {
    /// This node.
    pub local: String,
    /// The other nodes.
    pub peers: Vec<String>,
    /// Names of the heartbeat networks.
    pub links: Vec<String>,
    /// Time between heartbeats.
    pub interval: Duration,
    /// Silence on all links for this long means a peer is down.
    pub timeout: Duration,
    /// Addresses outside the cluster that answer ping.
    pub known_connections: Vec<IpAddr>,
    /// A reply this recent vouches that this node reaches the outside when a peer falls
    /// silent (the verdict). A known connection counts as reachable (status, events, a node
    /// alone) while it replied within a heartbeat `timeout`: clnetd pings once per interval,
    /// so one lost ping must not count as losing the outside.
    pub ping_freshness: Duration,
    /// When set, a peer silent on every link for all but this much of the timeout is reported
    /// late ([`Action::PeerLate`]), once until a heartbeat sent after that arrives, so that the
    /// guard can probe it ahead of the verdict (the node engine sets it: crate::node).
    pub late_warning: Option<Duration>,
    /// While every peer is heard in time, the known connections need pinging only this often
    /// (None: once per heartbeat interval, always); see [`KnownPace`].
    pub slow_pings: Option<Duration>,
}

impl MembershipConfig {
    /// Freshness that fits a heartbeat timeout: half of it.
    pub fn default_freshness(timeout: Duration) -> Duration {
        timeout / 2
    }

    /// How often known connections are pinged while every peer is heard in time: twice per
    /// heartbeat timeout, or a little more often (below) (crate::membership::KnownPace). None (always fast) for a profile
    /// where that leaves less than the jitter allowance between a slow period and the
    /// interval: the switch back to fast (a timer in cldaemon, a file, a signal, clnetd's
    /// wake-up) must never cost a verdict its reply. At the fast profile (20 ms / 100 ms) it
    /// would leave 30 ms, and the slow pace would save little beside fifty heartbeats a second.
    ///
    /// Not slower than that either: at the turn to fast the newest reply may be almost a slow
    /// period old, and if the turn's ping is lost the verdict waits until that reply is a
    /// timeout old (`undecided_until`), which must outlast the next fast reply, read two
    /// intervals after the turn: `slow + 2 * interval + JITTER_ALLOWANCE <= timeout`, exactly
    /// met by half a timeout at the default profile, and shorter where the interval is longer
    /// (250 ms / 1 s: 400 ms). (Stop 22 tried one ping per timeout; a review found that a single
    /// lost ping then made a survivor count itself isolated, and this bound.)
    pub fn default_slow_pings(interval: Duration, timeout: Duration) -> Option<Duration> {
        let jitter = crate::timing::JITTER_ALLOWANCE;
        let half = timeout / 2;
        let slow = half.min(timeout.saturating_sub(interval * 2 + jitter));
        (half.saturating_sub(interval) >= jitter && slow > interval).then_some(slow)
    }
}

/// Facts the daemons report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// An authenticated heartbeat from `from` arrived on `link` at `at` (clhbd relays only
    /// the newest of several: [`crate::relay`]).
    Heartbeat {
        /// Sender.
        from: String,
        /// Heartbeat network it came over.
        link: String,
        /// When it arrived (not later than the time it is handled).
        at: Time,
    },
    /// A known connection answered a ping at `at`.
    KnownConnectionReply {
        /// Which one.
        target: IpAddr,
        /// When the answer arrived.
        at: Time,
    },
    /// A peer announced that it leaves the cluster (clhalt): down, by plan, not by failure.
    PeerLeft {
        /// The peer.
        peer: String,
    },
}

/// What the core asks the daemons to do, or tells them happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Send a heartbeat on every link now.
    SendHeartbeats,
    /// A peer is alive (first heard, or back after being down).
    PeerUp {
        /// The peer.
        peer: String,
    },
    /// A peer is gone on every link; what to do about it.
    PeerDown {
        /// The peer.
        peer: String,
        /// Take over its applications, or not.
        verdict: Verdict,
        /// Why, for the log.
        reason: String,
        /// When the peer was last heard on any link, for the fence race's phase
        /// ([`crate::timing::FenceRace::wait`]): given when the verdict comes a heartbeat
        /// timeout after that frame, or later while this node waited to learn whether it is
        /// isolated. None: never heard, it left (clhalt), or the verdict came when this node
        /// reached a known connection again.
        silent_since: Option<Time>,
    },
    /// One link to a peer fell silent while another still works: a warning only.
    LinkDown {
        /// The peer.
        peer: String,
        /// The silent link.
        link: String,
    },
    /// A peer has been silent on every link for all but [`MembershipConfig::late_warning`] of
    /// the timeout: it may be about to be declared down.
    PeerLate {
        /// The peer.
        peer: String,
    },
    /// A silent link carries heartbeats again.
    LinkUp {
        /// The peer.
        peer: String,
        /// The link.
        link: String,
    },
    /// This node is cut off: stop every local application, take nothing over.
    Isolated {
        /// Why, for the log.
        reason: String,
    },
    /// This node reaches the outside or its peers again.
    Reconnected,
    /// A known connection stopped answering (a warning while peers are up).
    KnownConnectionLost {
        /// Which one.
        target: IpAddr,
    },
    /// A known connection answers again.
    KnownConnectionBack {
        /// Which one.
        target: IpAddr,
    },
    /// Ping the known connections at this pace from now on (a change to `Fast` pings at once).
    PingPace {
        /// The pace.
        pace: KnownPace,
    },
}

/// The decision about a peer that went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// This node is connected: take over the peer's applications.
    TakeOver,
    /// This node is isolated (or cannot tell yet): take nothing over.
    StandBy,
}

/// A peer as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Not heard since this node started, and `timeout` has not passed yet.
    Unknown,
    /// Heard on at least one link within `timeout`.
    Up,
    /// Silent on every link for `timeout`.
    Down,
}

/// This node's own standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalState {
    /// Peers or the outside world are reachable.
    Connected,
    /// A peer went silent and no known connection has answered recently: waiting briefly for one.
    Undecided,
    /// Nothing reachable: local applications must stop.
    Isolated,
}

/// A snapshot for clstat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This node.
    pub local: String,
    /// Its standing.
    pub local_state: LocalState,
    /// Every peer.
    pub peers: Vec<PeerStatus>,
    /// Every known connection.
    pub known_connections: Vec<KnownStatus>,
}

/// One peer in a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Name.
    pub name: String,
    /// State.
    pub state: PeerState,
    /// Links, with whether each is heard and how long ago, in milliseconds.
    pub links: Vec<LinkStatus>,
}

/// One link in a [`PeerStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Network name.
    pub name: String,
    /// Heard within the timeout.
    pub up: bool,
    /// Milliseconds since the last heartbeat on it, if ever.
    pub last_heard_ms: Option<u64>,
}

/// One known connection in a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownStatus {
    /// Address.
    pub target: IpAddr,
    /// Replied within the freshness window.
    pub reachable: bool,
}

#[derive(Debug)]
struct Peer {
    state: PeerState,
    links: BTreeMap<String, Link>,
    /// When [`Action::PeerLate`] was reported for the current silence: only a heartbeat sent
    /// after that ends it (a held one, relayed late, does not).
    told_late: Option<Time>,
}

impl Peer {
    /// When the newest heartbeat on any link arrived.
    fn newest(&self) -> Option<Time> {
        self.links.values().filter_map(|l| l.last).max()
    }
}

impl Membership {
    /// The verdict on `peer` one timeout after its last frame (or later, held back while
    /// undecided), with when that frame came.
    fn peer_down(&self, peer: String, verdict: Verdict, reason: String) -> Action {
        let silent_since = self.peers.get(&peer).and_then(Peer::newest);
        Action::PeerDown { peer, verdict, reason, silent_since }
    }
}

/// One heartbeat link to a peer.
#[derive(Debug, Default)]
struct Link {
    /// When last heard.
    last: Option<Time>,
    /// Heard within the timeout.
    up: bool,
    /// Reported silent while the peer stayed up; only then is its return news.
    warned: bool,
}

/// The membership state machine of one node.
///
/// Call order: `handle`/`handle_timeout` with the current time, then drain `poll_action`, then
/// sleep until `poll_timeout` (or the next input).
#[derive(Debug)]
pub struct Membership {
    config: MembershipConfig,
    started: Time,
    peers: BTreeMap<String, Peer>,
    known: BTreeMap<IpAddr, (Option<Time>, bool)>,
    local_state: LocalState,
    undecided_until: Option<Time>,
    /// Peers that went down while undecided, to be judged when the wait ends.
    pending_verdicts: Vec<String>,
    next_heartbeat: Time,
    /// How often the known connections are pinged now, and since when fast.
    pace: KnownPace,
    fast_since: Time,
    /// The time of the last input or timeout handled.
    now: Time,
    actions: VecDeque<Action>,
}

impl Membership {
    /// A node that starts at `now`, having heard nobody yet.
    pub fn new(config: MembershipConfig, now: Time) -> Membership {
        let peers = config
            .peers
            .iter()
            .map(|p| {
                let links = config.links.iter().map(|l| (l.clone(), Link::default())).collect();
                (p.clone(), Peer { state: PeerState::Unknown, links, told_late: None })
            })
            .collect();
        // Known connections start as reachable-unknown (not fresh): the first ping round decides.
        let known = config.known_connections.iter().map(|k| (*k, (None, true))).collect();
        let mut membership = Membership {
            config,
            started: now,
            peers,
            known,
            local_state: LocalState::Connected,
            undecided_until: None,
            pending_verdicts: Vec::new(),
            next_heartbeat: now,
            pace: KnownPace::Fast,
            fast_since: now,
            now,
            actions: VecDeque::new(),
        };
        membership.handle_timeout(now);
        membership
    }

    /// Feed one fact observed at `now`.
    pub fn handle(&mut self, now: Time, input: Input) {
        match input {
            Input::Heartbeat { from, link, at } => self.heard(now, at.min(now), &from, &link),
            Input::KnownConnectionReply { target, at } => {
                if let Some(entry) = self.known.get_mut(&target) {
                    let at = at.min(now);
                    entry.0 = Some(entry.0.map_or(at, |last| last.max(at)));
                }
            }
            Input::PeerLeft { peer } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.state != PeerState::Down {
                        p.state = PeerState::Down;
                        for link in p.links.values_mut() {
                            link.up = false;
                            link.warned = false;
                        }
                        self.pending_verdicts.retain(|x| *x != peer);
                        // It stopped its applications before leaving, so they may run here.
                        self.actions.push_back(Action::PeerDown {
                            peer,
                            verdict: Verdict::TakeOver,
                            reason: "it left the cluster (clhalt)".into(),
                            silent_since: None,
                        });
                    }
                }
            }
        }
        self.handle_timeout(now);
    }

    fn heard(&mut self, now: Time, at: Time, from: &str, link: &str) {
        // A relayed frame a whole timeout old proves nothing about now.
        if now.since(at) >= self.config.timeout {
            return;
        }
        let Some(peer) = self.peers.get_mut(from) else { return };
        let Some(entry) = peer.links.get_mut(link) else { return };
        entry.last = Some(entry.last.map_or(at, |last| last.max(at)));
        entry.up = true;
        if peer.told_late.is_some_and(|told| at > told) {
            peer.told_late = None;
        }
        if entry.warned {
            entry.warned = false;
            self.actions
                .push_back(Action::LinkUp { peer: from.to_string(), link: link.to_string() });
        }
        if peer.state != PeerState::Up {
            peer.state = PeerState::Up;
            // Links that are already silent are reported now that the peer counts as up.
            self.actions.push_back(Action::PeerUp { peer: from.to_string() });
            self.pending_verdicts.retain(|p| p != from);
            if self.local_state != LocalState::Connected {
                self.set_connected();
            }
        }
    }

    /// Let time pass to `now`: send heartbeats, expire links and peers, settle isolation.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        if now >= self.next_heartbeat {
            self.actions.push_back(Action::SendHeartbeats);
            // Skip missed slots after a stall rather than bursting.
            let mut next = self.next_heartbeat + self.config.interval;
            if next <= now {
                next = now + self.config.interval;
            }
            self.next_heartbeat = next;
        }
        self.expire_known_connections(now);
        self.report_late(now);
        self.expire_links(now);
        self.settle_undecided(now);
        // The pace first: a node left alone this instant pings fast from now on.
        self.update_pace(now);
        self.check_alone(now);
        // Again: what this node now judges itself (isolated, say) is what clstat shows.
        self.expire_known_connections(now);
    }

    /// Report a peer that is up but has been silent for all but `late_warning` of the timeout.
    fn report_late(&mut self, now: Time) {
        let Some(after) = self.late_after() else { return };
        for (name, peer) in self.peers.iter_mut() {
            let late = peer.newest().is_some_and(|t| now.since(t) >= after);
            if peer.state == PeerState::Up && late && peer.told_late.is_none() {
                peer.told_late = Some(now);
                self.actions.push_back(Action::PeerLate { peer: name.clone() });
            }
        }
    }

    /// How long a peer must be silent on every link to count as late, when that is reported.
    fn late_after(&self) -> Option<Duration> {
        self.config.late_warning.map(|warning| self.config.timeout.saturating_sub(warning))
    }

    fn expire_links(&mut self, now: Time) {
        let timeout = self.config.timeout;
        let mut went_down = Vec::new();
        for (name, peer) in self.peers.iter_mut() {
            let expired: Vec<String> = peer
                .links
                .iter()
                .filter(|(_, l)| l.up && l.last.is_none_or(|t| now.since(t) >= timeout))
                .map(|(name, _)| name.clone())
                .collect();
            for link in &expired {
                if let Some(entry) = peer.links.get_mut(link) {
                    entry.up = false;
                }
            }
            // Only a link lost while another still works is worth its own warning; losing the
            // last one is the peer going down.
            let any_up = peer.links.values().any(|l| l.up);
            if peer.state == PeerState::Up && any_up {
                for link in expired {
                    if let Some(entry) = peer.links.get_mut(&link) {
                        entry.warned = true;
                    }
                    self.actions.push_back(Action::LinkDown { peer: name.clone(), link });
                }
            }
            match peer.state {
                PeerState::Up if !any_up => {
                    peer.state = PeerState::Down;
                    went_down.push(name.clone());
                }
                PeerState::Unknown if now.since(self.started) >= timeout => {
                    // Never heard since this node started (powered off, or not booted yet):
                    // judged like a peer that fell silent, so a lone node can run the
                    // applications once it knows it is connected. The VIP probe still guards
                    // against a peer that is alive but unreachable over the heartbeat links.
                    peer.state = PeerState::Down;
                    went_down.push(name.clone());
                }
                _ => {}
            }
        }
        for peer in went_down {
            self.judge(now, peer);
        }
    }

    /// The next request for the daemons, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` must be called next, at the latest.
    pub fn poll_timeout(&self) -> Option<Time> {
        Some(self.judge_timeout().map_or(self.next_heartbeat, |t| t.min(self.next_heartbeat)))
    }

    /// [`poll_timeout`](Self::poll_timeout) for a shell that sends its heartbeats on its own
    /// clock and ignores [`Action::SendHeartbeats`] (cldaemon: clhbd2 beats): only the
    /// deadlines at which something is judged (a link or peer silent, a known connection
    /// stale, isolation settled), so an idle node is not woken every heartbeat interval.
    pub fn poll_judge_timeout(&self) -> Option<Time> {
        self.judge_timeout()
    }

    fn judge_timeout(&self) -> Option<Time> {
        let mut next: Option<Time> = None;
        let mut consider = |t: Time| {
            if next.is_none_or(|n| t < n) {
                next = Some(t);
            }
        };
        for peer in self.peers.values() {
            for link in peer.links.values() {
                if let (Some(t), true) = (link.last, link.up) {
                    consider(t + self.config.timeout);
                }
            }
            if peer.state == PeerState::Unknown {
                consider(self.started + self.config.timeout);
            }
            if let (Some(after), Some(newest), PeerState::Up, false) =
                (self.late_after(), peer.newest(), peer.state, peer.told_late.is_some())
            {
                consider(newest + after);
            }
        }
        let window = self.reachable_window(self.now);
        for (last, reachable) in self.known.values() {
            match (last, reachable) {
                (Some(t), true) => consider(*t + window),
                (None, true) => consider(self.started + window),
                _ => {}
            }
        }
        if let Some(t) = self.pace_deadline() {
            consider(t);
        }
        if let Some(t) = self.alone_deadline() {
            consider(t);
        }
        if let Some(t) = self.undecided_until {
            consider(t);
        }
        next
    }

    /// This node's standing.
    pub fn local_state(&self) -> LocalState {
        self.local_state
    }

    /// A peer's state.
    pub fn peer_state(&self, peer: &str) -> Option<PeerState> {
        self.peers.get(peer).map(|p| p.state)
    }

    /// A snapshot for status displays.
    pub fn status(&self, now: Time) -> Status {
        Status {
            local: self.config.local.clone(),
            local_state: self.local_state,
            peers: self
                .peers
                .iter()
                .map(|(name, peer)| PeerStatus {
                    name: name.clone(),
                    state: peer.state,
                    links: peer
                        .links
                        .iter()
                        .map(|(name, link)| LinkStatus {
                            name: name.clone(),
                            up: link.up,
                            last_heard_ms: link.last.map(|t| now.since(t).as_millis() as u64),
                        })
                        .collect(),
                })
                .collect(),
            known_connections: self
                .known
                .iter()
                .map(|(target, (_, reachable))| KnownStatus {
                    target: *target,
                    reachable: *reachable,
                })
                .collect(),
        }
    }
}

mod outside;
mod pace;
#[cfg(test)]
mod tests;

pub use self::pace::KnownPace;
