//! A deterministic simulator for the decision core (issue 5, docs/safety.md).
//!
//! Two nodes run the real engine of cl-core ([`cl_core::Node`]: membership, the takeover guard
//! and the applications machine, wired together as in cldaemon); everything
//! around them is simulated on one virtual clock from a seed: heartbeat links (cut both ways or
//! one way, lossy, delayed, reordered, duplicated), the public network the peer-alive probe
//! uses, each node's path to the outside (known connection and arbitrator), the arbitrator,
//! fence devices (succeeding, failing, slow), application starts and stops (slow, failing),
//! monitors failing, nodes crashing, freezing, being powered off and back on.
//!
//! After every event the checker looks at which node *holds* each application (from the
//! moment its start begins until its stop has released everything):
//! - **S1**: with fencing or an arbitrator, never two holders;
//! - **S1'**: without them, two holders only in the documented case: the nodes cannot reach
//!   each other at all (no heartbeat, no ARP) while both reach the outside;
//! - **S2**: a node never starts an application while the other holder is isolated or has
//!   given up for want of the lease (it must have stopped first);
//! - **S3** (with `--replicated`, crate::data): no start promotes a copy whose DRBD verdict
//!   forbids it (stale, resynchronising, split brain);
//! - **L1**: once every fault is healed and the applications are asked to run, each runs on
//!   exactly one node within [`L1_BOUND`].
//!
//! A failing seed's trace is readable and replayable: `cargo run -p cl-sim -- --seed N`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use cl_core::apps::{AppPolicy, Failback};
use cl_core::arbiter::{ArbOp, Arbiter};
use cl_core::guard::{GuardConfig, Sabotage};
use cl_core::membership::{KnownPace, MembershipConfig};
use cl_core::node::{Node as Engine, NodeConfig, NodeInput};
use cl_core::timing::{HeartbeatGrid, SafetyTiming};
use cl_core::Time;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use nemesis::Fault;

mod checker;
mod data;
mod nemesis;
mod shell;

/// Time allowed, after the last fault heals and the applications are asked to run, for every
/// application to run on exactly one node.
pub const L1_BOUND: Duration = Duration::from_secs(15);

const NAMES: [&str; 2] = ["node1", "node2"];
const LINKS: [&str; 2] = ["public", "private"];
/// Each node's address on the public network (what the peer-alive probe looks for).
const PUBLIC: [&str; 2] = ["10.0.0.1", "10.0.0.2"];
const APPS: [&str; 2] = ["web", "db"];
/// The default heartbeat profile: interval and timeout.
const DEFAULT_PROFILE: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(1));
/// The fast heartbeat profile: interval and timeout.
const FAST_PROFILE: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(100));
/// How long a fence device that is not slow takes to power a node off, at most (the shell's
/// fence model: 50 to 1500 ms; a slow device, 2 to 6 s, is a fault).
const FENCE_POWEROFF: Duration = Duration::from_millis(1500);

/// Which split-brain protection the simulated cluster has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Known connections and the peer-alive probe only.
    None,
    /// A fence device for each node.
    Fencing,
    /// An arbitrator granting leases.
    Arbitrator,
    /// Both.
    Both,
}

impl Protection {
    /// Every kind, for sweeping.
    pub const ALL: [Protection; 4] =
        [Protection::None, Protection::Fencing, Protection::Arbitrator, Protection::Both];

    fn fencing(self) -> bool {
        matches!(self, Protection::Fencing | Protection::Both)
    }

    fn arbitrator(self) -> bool {
        matches!(self, Protection::Arbitrator | Protection::Both)
    }
}

impl std::str::FromStr for Protection {
    type Err = String;
    fn from_str(s: &str) -> Result<Protection, String> {
        match s {
            "none" => Ok(Protection::None),
            "fencing" => Ok(Protection::Fencing),
            "arbitrator" => Ok(Protection::Arbitrator),
            "both" => Ok(Protection::Both),
            other => Err(format!("unknown protection `{other}` (none, fencing, arbitrator, both)")),
        }
    }
}

/// How one run is set up.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The protection configured.
    pub protection: Protection,
    /// Known connections configured.
    pub known_connections: bool,
    /// How long faults are injected.
    pub fault_phase: Duration,
    /// A deliberately broken rule, to show the checker can fail.
    pub sabotage: Sabotage,
    /// Keep the whole trace (for printing), not just its tail.
    pub full_trace: bool,
    /// The fast heartbeat profile (20 ms / 100 ms) instead of the default (200 ms / 1 s): its
    /// shorter stop margin, lease and takeover delay under the same faults.
    pub fast_profile: bool,
    /// Which faults the fault phase brings.
    pub faults: Faults,
    /// `web` keeps replicated data, whose verdicts the nemesis changes (crate::data).
    pub replicated: bool,
    /// Known connections pinged slowly while every peer is heard in time, as cldaemon
    /// configures it (cl_core::membership::KnownPace); off: once per interval always.
    pub slow_pings: bool,
}

/// The faults of a run's fault phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Faults {
    /// The nemesis's random schedule of the seed.
    Random,
    /// One symmetric partition 5 s in, lasting the whole fault phase: heartbeats and ARP cut
    /// between the nodes, both reaching the outside, fence devices neither slow nor failing,
    /// heartbeats delayed by up to the jitter the fence race counts on
    /// ([`cl_core::timing::SafetyTiming::fence_race_jitter`]).
    /// With `everything_on_second`, node2 runs both applications before the cut (node1 none);
    /// otherwise each node runs its preferred one.
    SymmetricPartition {
        /// Switch node1's application to node2 before the cut.
        everything_on_second: bool,
    },
}

impl Options {
    /// The defaults for one protection.
    pub fn new(protection: Protection) -> Options {
        Options {
            protection,
            known_connections: true,
            fault_phase: Duration::from_secs(40),
            sabotage: Sabotage::None,
            full_trace: false,
            fast_profile: false,
            faults: Faults::Random,
            replicated: false,
            slow_pings: true,
        }
    }
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// S1, S1', S2 or L1.
    pub rule: &'static str,
    /// When.
    pub at: Time,
    /// What.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.rule, ms(self.at), self.what)
    }
}

/// What one run found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Broken invariants (the first of each rule).
    pub violations: Vec<Violation>,
    /// Episodes of two holders in the documented unprotected case.
    pub documented: u32,
    /// Events processed.
    pub events: u64,
    /// How often each node was powered off by the other's fence.
    pub fenced: [u32; 2],
    /// Episodes in which the nodes powered each other off, neither fence device being slow:
    /// the fence race this wait is meant to prevent (both off is an availability problem).
    pub mutual_fences: u32,
    /// For each application, how many nodes held it when the healed tail began.
    pub holders_at_tail: Vec<(String, usize)>,
    /// The trace (its last lines unless `full_trace`).
    pub trace: Vec<String>,
}

fn ms(t: Time) -> String {
    let d = t.since_origin();
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Power {
    On,
    Off,
}

struct Node {
    power: Power,
    frozen: bool,
    /// The node's engine, while it runs.
    engine: Option<Engine>,
    /// Applications whose resources this node holds.
    held: BTreeSet<String>,
    /// Shell completions that arrived while frozen, replayed on thaw.
    deferred: Vec<Ev>,
    epoch: u64,
    stop_fails: bool,
    next_wake: Option<Time>,
    /// The peers its heartbeats say it is taking over (the engine's latest notice).
    notice: Vec<String>,
    /// Starts in flight: their id and when they end. A stop waits for the start (cldaemon's
    /// appctl awaits it), or aborts it when urgent (then it reports nothing).
    starting: BTreeMap<String, (u64, Time)>,
    /// The next start's id.
    next_start: u64,
    /// The sequence number of its newest announcement while the peer has not received it:
    /// cldaemon repeats only an announcement whose exchange failed.
    undelivered: Option<u64>,
    /// How often its clnetd pings, as its engine last said.
    ping_pace: KnownPace,
    /// The number of its clnetd's current ping clock.
    ping_clock: u64,
    /// When its first heartbeat leaves; the rest follow every interval, across reboots (like
    /// clhbd2 on its grid of CLOCK_MONOTONIC): the engine's [`HeartbeatGrid`].
    beat_origin: Time,
}

#[derive(Debug, Clone)]
enum Ev {
    Wake(usize),
    BeatTick(usize),
    /// clnetd's ping tick on node `n`, of its clock number `clock` (a new pace starts a new
    /// clock, which ticks at once; the old one's ticks are void).
    PingTick {
        n: usize,
        clock: u64,
    },
    GossipTick(usize),
    Beat {
        to: usize,
        link: usize,
    },
    /// A heartbeat carrying cldaemon's "I am taking over your applications" (every frame
    /// while the notice is up; until stop 21 the simulator sent it as a second copy of the
    /// beat, lost on its own, so a peer could hear beats without the notice they carry).
    TakingOver {
        to: usize,
        link: usize,
    },
    Announce {
        to: usize,
        ann: Box<cl_core::apps::Announcement>,
    },
    KnownReply(usize, Time),
    /// DRBD's verdict on node `n`'s copy of the replicated application reaches its shell.
    Data {
        n: usize,
        blocked: Option<cl_core::storage::NotPromotable>,
    },
    StartDone {
        n: usize,
        app: String,
        ok: bool,
        epoch: u64,
        /// Which start (an aborted one reports nothing).
        id: u64,
    },
    StopDone {
        n: usize,
        app: String,
        ok: bool,
        epoch: u64,
    },
    ProbeDone {
        n: usize,
        peer: usize,
        epoch: u64,
    },
    /// The fence device of `peer` has powered it off (or failed): it acts whatever became of
    /// node `n`, which sent it the command when the fence started.
    FenceDone {
        n: usize,
        peer: usize,
        epoch: u64,
        /// The device was slow (a fault) when the fence started.
        slow: bool,
    },
    /// The fence device of `peer` answers node `n`'s status query (lost if `n` died).
    FenceStatusDone {
        n: usize,
        peer: usize,
        epoch: u64,
    },
    /// The fence agent on node `n` reports the outcome (lost if `n` died meanwhile).
    FenceReport {
        n: usize,
        peer: usize,
        ok: bool,
        epoch: u64,
    },
    LeaseRequest {
        from: usize,
        id: u64,
        op: ArbOp,
        epoch: u64,
    },
    LeaseReply {
        to: usize,
        id: u64,
        granted: bool,
        holder: Option<String>,
        lease: Duration,
        remaining: Duration,
        epoch: u64,
    },
    Fault(Fault),
}

#[derive(Debug, Clone, Default)]
struct Net {
    /// Heartbeats deliverable on link l from node i: `beat[l][i]`.
    beat: [[bool; 2]; 2],
    /// The public network answers ARP between the nodes.
    arp: bool,
    /// Node i reaches the outside (known connection, arbitrator).
    outside: [bool; 2],
    /// Node i's own path to the arbitrator (a third host elsewhere than the known connection):
    /// cut alone, a holder keeps its known connection but cannot renew its lease.
    arbitrator_path: [bool; 2],
    loss: u32,
    delay_max_ms: u64,
    duplicate: u32,
}

impl Net {
    fn healed() -> Net {
        Net {
            beat: [[true; 2]; 2],
            arp: true,
            outside: [true; 2],
            arbitrator_path: [true; 2],
            loss: 0,
            delay_max_ms: 2,
            duplicate: 0,
        }
    }

    /// Node `n` can talk to the arbitrator (if it is up).
    fn reaches_arbitrator(&self, n: usize) -> bool {
        self.outside[n] && self.arbitrator_path[n]
    }

    /// No heartbeat either way on any link and no ARP: the nodes cannot tell each other alive.
    fn mutually_blind(&self) -> bool {
        !self.arp && self.beat.iter().all(|l| !l[0] && !l[1])
    }

    /// A two-way path for announcements (TCP) exists.
    fn connected(&self) -> bool {
        self.beat.iter().any(|l| l[0] && l[1])
    }
}

/// The arbitrator host: the real decision logic of clarbd, and whether it runs.
struct Arbitrator {
    up: bool,
    arbiter: Arbiter,
}

/// One simulated cluster.
pub struct Sim {
    options: Options,
    rng: ChaCha8Rng,
    now: Time,
    queue: BTreeMap<(Time, u64), Ev>,
    seq: u64,
    nodes: [Node; 2],
    net: Net,
    arbitrator: Arbitrator,
    fence_failing: bool,
    fence_slow: bool,
    /// Who fenced each node, and whether that device was slow, while it stays off.
    fenced_by: [Option<(usize, bool)>; 2],
    fenced: [u32; 2],
    mutual_fences: u32,
    holders_at_tail: Vec<(String, usize)>,
    timing: SafetyTiming,
    trace: Vec<String>,
    violations: Vec<Violation>,
    documented: u32,
    in_documented_episode: BTreeSet<String>,
    /// The nodes went mutually blind while both reached the outside, and still are blind.
    blind_while_outside: bool,
    events: u64,
    tail_started: bool,
    /// The verdict on each node's copy of the replicated application, as its shell last saw.
    data: [Option<cl_core::storage::NotPromotable>; 2],
}

fn other(n: usize) -> usize {
    1 - n
}

fn policies(replicated: bool) -> Vec<AppPolicy> {
    vec![
        AppPolicy {
            name: APPS[0].into(),
            nodes: vec![NAMES[0].into(), NAMES[1].into()],
            autostart: true,
            failback: Failback::Manual,
            restarts: 1,
            window: Duration::from_secs(60),
            replicated,
        },
        AppPolicy {
            name: APPS[1].into(),
            nodes: vec![NAMES[1].into(), NAMES[0].into()],
            autostart: true,
            failback: Failback::Auto,
            restarts: 1,
            window: Duration::from_secs(60),
            replicated: false,
        },
    ]
}

impl Sim {
    /// A healthy cluster that has just been formed, with the faults of `seed` scheduled.
    pub fn new(seed: u64, options: Options) -> Sim {
        let (interval, timeout) = if options.fast_profile { FAST_PROFILE } else { DEFAULT_PROFILE };
        let mut timing = SafetyTiming::new(interval, timeout);
        let lease = timing.lease_floor();
        if options.protection.arbitrator() {
            timing = timing.with_lease(lease);
        }
        let node = || Node {
            power: Power::On,
            frozen: false,
            engine: None,
            held: BTreeSet::new(),
            deferred: Vec::new(),
            epoch: 1,
            stop_fails: false,
            next_wake: None,
            notice: Vec::new(),
            undelivered: None,
            ping_pace: KnownPace::Fast,
            ping_clock: 0,
            beat_origin: Time::ZERO,
            starting: BTreeMap::new(),
            next_start: 0,
        };
        let mut sim = Sim {
            options,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: Time::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            nodes: [node(), node()],
            net: Net::healed(),
            arbitrator: Arbitrator {
                up: true,
                arbiter: Arbiter::new_without_quiet_period(
                    lease,
                    NAMES.iter().map(|n| n.to_string()).collect(),
                ),
            },
            fence_failing: false,
            fence_slow: false,
            fenced_by: [None; 2],
            fenced: [0; 2],
            mutual_fences: 0,
            holders_at_tail: Vec::new(),
            timing,
            trace: Vec::new(),
            violations: Vec::new(),
            documented: 0,
            in_documented_episode: BTreeSet::new(),
            blind_while_outside: false,
            events: 0,
            tail_started: false,
            data: [None, None],
        };
        for n in 0..2 {
            let jitter = sim.rng.random_range(0..interval.as_millis() as u64);
            sim.nodes[n].beat_origin = Time::from_millis(jitter);
            sim.boot(n, true);
            sim.at(Duration::from_millis(jitter), Ev::BeatTick(n));
            sim.at(Duration::from_millis(jitter + 7), Ev::PingTick { n, clock: 0 });
            sim.at(Duration::from_millis(jitter + 500), Ev::GossipTick(n));
        }
        sim.schedule_faults(seed);
        sim
    }

    fn log(&mut self, line: String) {
        self.trace.push(format!("{:>8} {line}", ms(self.now)));
        if !self.options.full_trace && self.trace.len() > 400 {
            self.trace.drain(..200);
        }
    }

    fn at(&mut self, after: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.now + after, self.seq), ev);
    }

    fn boot(&mut self, n: usize, autostart: bool) {
        let local = NAMES[n].to_string();
        let peer = NAMES[other(n)].to_string();
        let epoch = self.nodes[n].epoch;
        self.fenced_by[n] = None;
        self.nodes[n].starting.clear();
        let membership = MembershipConfig {
            local: local.clone(),
            peers: vec![peer.clone()],
            links: LINKS.iter().map(|l| l.to_string()).collect(),
            interval: self.timing.interval,
            timeout: self.timing.timeout,
            known_connections: if self.options.known_connections {
                vec!["10.10.0.1".parse().expect("literal address")]
            } else {
                vec![]
            },
            ping_freshness: self.timing.freshness,
            late_warning: None,
            slow_pings: if self.options.slow_pings {
                MembershipConfig::default_slow_pings(self.timing.interval, self.timing.timeout)
            } else {
                None
            },
        };
        // A new engine starts at the fast pace.
        self.set_ping_pace(n, KnownPace::Fast);
        let peers = [(peer.clone(), self.options.protection.fencing())].into_iter().collect();
        let fence_retry = Some(Duration::from_secs(1));
        let mut guard =
            GuardConfig::new(&local, peers, n == 0, &self.timing, fence_retry, FENCE_POWEROFF);
        guard.sabotage = self.options.sabotage;
        guard.beat_grid = Some(HeartbeatGrid {
            origin: self.nodes[n].beat_origin,
            interval: self.timing.interval,
        });
        let config =
            NodeConfig { membership, guard, apps: policies(self.options.replicated), epoch };
        let mut engine = Engine::new(config, self.now);
        engine.handle(self.now, NodeInput::Formed { start_autostart: autostart });
        self.nodes[n].engine = Some(engine);
        self.nodes[n].notice.clear();
        self.log(format!("{}: boots (epoch {epoch})", NAMES[n]));
        self.drain(n);
        self.feed_data(n);
    }

    /// Run to the end and check.
    pub fn run(mut self) -> Outcome {
        let end = self.options.fault_phase + L1_BOUND + Duration::from_secs(5);
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            if t.since_origin() > end {
                break;
            }
            self.now = t;
            self.events += 1;
            self.event(ev);
            self.check_safety();
        }
        Outcome {
            seed: 0,
            violations: self.violations,
            documented: self.documented,
            events: self.events,
            fenced: self.fenced,
            mutual_fences: self.mutual_fences,
            holders_at_tail: self.holders_at_tail,
            trace: self.trace,
        }
    }

    fn runs(&self, n: usize) -> bool {
        self.nodes[n].power == Power::On && !self.nodes[n].frozen
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Wake(n) => {
                self.nodes[n].next_wake = None;
                if !self.runs(n) {
                    return;
                }
                let now = self.now;
                if let Some(engine) = self.nodes[n].engine.as_mut() {
                    engine.handle_timeout(now);
                }
                self.drain(n);
            }
            Ev::BeatTick(n) => {
                self.at(self.timing.interval, Ev::BeatTick(n));
                // clhbd2 beats on its own: a frozen or powered-off node does not.
                if !self.runs(n) {
                    return;
                }
                let notice = self.nodes[n].notice.iter().any(|p| p == NAMES[other(n)]);
                for link in 0..2 {
                    // Every frame sent while the notice is up carries it (clhbd2 reads the
                    // notice file at each beat): a frame that arrives brings the notice.
                    if self.net.beat[link][n] {
                        let to = other(n);
                        self.send(if notice {
                            Ev::TakingOver { to, link }
                        } else {
                            Ev::Beat { to, link }
                        });
                    }
                }
            }
            Ev::PingTick { n, clock } => {
                if clock != self.nodes[n].ping_clock {
                    return;
                }
                let period = self.ping_period(n);
                self.at(period, Ev::PingTick { n, clock });
                if self.runs(n) && self.net.outside[n] {
                    // clnetd reads replies at its next ping tick (an interval later) and counts
                    // each from its ping's send time.
                    let rtt = Duration::from_millis(self.rng.random_range(1..5));
                    let sent = self.now;
                    self.at(rtt.max(period), Ev::KnownReply(n, sent));
                }
            }
            Ev::GossipTick(n) => {
                self.at(Duration::from_secs(1), Ev::GossipTick(n));
                if self.runs(n) && self.nodes[n].undelivered.is_some() {
                    self.announce(n);
                }
            }
            Ev::Beat { to, link } => self.beat(to, link, false),
            Ev::TakingOver { to, link } => self.beat(to, link, true),
            Ev::Announce { to, ann } => {
                if self.runs(to) {
                    let from = &mut self.nodes[other(to)];
                    if from.undelivered == Some(ann.seq) {
                        from.undelivered = None;
                    }
                    let peer = NAMES[other(to)].to_string();
                    self.feed(to, NodeInput::PeerAnnouncement { peer, announcement: *ann });
                }
            }
            Ev::Data { n, blocked } => self.data_seen(n, blocked),
            Ev::KnownReply(n, at) => {
                if self.runs(n) && self.net.outside[n] {
                    let target = "10.10.0.1".parse().expect("literal address");
                    self.feed(n, NodeInput::KnownConnectionReply { target, at });
                }
            }
            ev @ (Ev::StartDone { .. }
            | Ev::StopDone { .. }
            | Ev::ProbeDone { .. }
            | Ev::FenceReport { .. }
            | Ev::FenceStatusDone { .. }
            | Ev::LeaseReply { .. }) => self.shell_done(ev),
            Ev::FenceDone { n, peer, epoch, slow } => self.fence_done(n, peer, epoch, slow),
            Ev::LeaseRequest { from, id, op, epoch } => self.arbitrate(from, id, op, epoch),
            Ev::Fault(fault) => self.fault(fault),
        }
    }

    fn power_off(&mut self, n: usize, why: &str) {
        let node = &mut self.nodes[n];
        node.power = Power::Off;
        node.frozen = false;
        node.engine = None;
        node.notice.clear();
        node.held.clear();
        node.deferred.clear();
        node.epoch += 1;
        self.log(format!("{}: powered off ({why})", NAMES[n]));
    }
}

/// Run one schedule.
pub fn run(seed: u64, options: Options) -> Outcome {
    let mut outcome = Sim::new(seed, options).run();
    outcome.seed = seed;
    outcome
}
