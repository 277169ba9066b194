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
//! - **L1**: once every fault is healed and the applications are asked to run, each runs on
//!   exactly one node within [`L1_BOUND`].
//!
//! A failing seed's trace is readable and replayable: `cargo run -p cl-sim -- --seed N`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use cl_core::apps::{AdminOp, AppPolicy, AppState, Failback};
use cl_core::arbiter::{ArbOp, Arbiter};
use cl_core::guard::{GuardConfig, Sabotage};
use cl_core::membership::{LocalState, MembershipConfig};
use cl_core::node::{Node as Engine, NodeAction, NodeConfig, NodeInput, ProbeAnswer, ProbeSeen};
use cl_core::timing::{SafetyTiming, JITTER_ALLOWANCE};
use cl_core::Time;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Time allowed, after the last fault heals and the applications are asked to run, for every
/// application to run on exactly one node.
pub const L1_BOUND: Duration = Duration::from_secs(15);

const NAMES: [&str; 2] = ["node1", "node2"];
const LINKS: [&str; 2] = ["public", "private"];
/// Each node's address on the public network (what the peer-alive probe looks for).
const PUBLIC: [&str; 2] = ["10.0.0.1", "10.0.0.2"];
const APPS: [&str; 2] = ["web", "db"];
const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_secs(1);

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
}

#[derive(Debug, Clone)]
enum Ev {
    Wake(usize),
    BeatTick(usize),
    PingTick(usize),
    GossipTick(usize),
    Beat {
        to: usize,
        link: usize,
    },
    /// A heartbeat carrying cldaemon's "I am taking over your applications" (modelled as a
    /// second copy of the beat, lost or delayed on its own).
    TakingOver {
        to: usize,
        link: usize,
    },
    Announce {
        to: usize,
        ann: Box<cl_core::apps::Announcement>,
    },
    KnownReply(usize),
    StartDone {
        n: usize,
        app: String,
        ok: bool,
        epoch: u64,
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
    FenceDone {
        n: usize,
        peer: usize,
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

/// One change the nemesis makes.
#[derive(Debug, Clone, PartialEq)]
enum Fault {
    /// Cut heartbeats on both links both ways, and the public network's ARP.
    Partition,
    /// Heartbeats lost on both links both ways, ARP still answered.
    HeartbeatsOnly,
    /// Heartbeats from `from` to the other node lost on both links.
    OneWay {
        from: usize,
    },
    /// One link silent both ways.
    LinkDown {
        link: usize,
    },
    /// A node cut from everything.
    Isolate {
        n: usize,
    },
    /// A node's path to the outside lost.
    OutsideCut {
        n: usize,
    },
    Loss {
        percent: u32,
    },
    Delay {
        max_ms: u64,
    },
    Duplicate {
        percent: u32,
    },
    HealNet,
    Crash {
        n: usize,
    },
    PowerOn {
        n: usize,
    },
    Freeze {
        n: usize,
    },
    Thaw {
        n: usize,
    },
    ArbitratorDown,
    ArbitratorUp,
    FenceFailing {
        on: bool,
    },
    FenceSlow {
        on: bool,
    },
    StopFailing {
        n: usize,
        on: bool,
    },
    MonitorFails {
        n: usize,
        app: usize,
    },
    Admin {
        n: usize,
        op: u8,
        app: usize,
    },
    /// Start of the healed tail: everything repaired.
    Tail,
    /// The administrator powers on what a late fence turned off.
    PowerOnAll,
    /// The administrator asks for every application (clstartapp), as after any repair.
    AskAll,
    /// The L1 check.
    CheckLiveness,
}

#[derive(Debug, Clone, Default)]
struct Net {
    /// Heartbeats deliverable on link l from node i: `beat[l][i]`.
    beat: [[bool; 2]; 2],
    /// The public network answers ARP between the nodes.
    arp: bool,
    /// Node i reaches the outside (known connection, arbitrator).
    outside: [bool; 2],
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
            loss: 0,
            delay_max_ms: 2,
            duplicate: 0,
        }
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
    timing: SafetyTiming,
    trace: Vec<String>,
    violations: Vec<Violation>,
    documented: u32,
    in_documented_episode: BTreeSet<String>,
    /// The nodes went mutually blind while both reached the outside, and still are blind.
    blind_while_outside: bool,
    events: u64,
    tail_started: bool,
}

fn other(n: usize) -> usize {
    1 - n
}

fn policies() -> Vec<AppPolicy> {
    vec![
        AppPolicy {
            name: APPS[0].into(),
            nodes: vec![NAMES[0].into(), NAMES[1].into()],
            autostart: true,
            failback: Failback::Manual,
            restarts: 1,
            window: Duration::from_secs(60),
            replicated: false,
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
        let mut timing = SafetyTiming::new(INTERVAL, TIMEOUT);
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
            timing,
            trace: Vec::new(),
            violations: Vec::new(),
            documented: 0,
            in_documented_episode: BTreeSet::new(),
            blind_while_outside: false,
            events: 0,
            tail_started: false,
        };
        for n in 0..2 {
            sim.boot(n, true);
            let jitter = sim.rng.random_range(0..INTERVAL.as_millis() as u64);
            sim.at(Duration::from_millis(jitter), Ev::BeatTick(n));
            sim.at(Duration::from_millis(jitter + 7), Ev::PingTick(n));
            sim.at(Duration::from_millis(jitter + 500), Ev::GossipTick(n));
        }
        sim.schedule_faults();
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
        let membership = MembershipConfig {
            local: local.clone(),
            peers: vec![peer.clone()],
            links: LINKS.iter().map(|l| l.to_string()).collect(),
            interval: INTERVAL,
            timeout: TIMEOUT,
            known_connections: if self.options.known_connections {
                vec!["10.10.0.1".parse().expect("literal address")]
            } else {
                vec![]
            },
            ping_freshness: self.timing.freshness,
        };
        let guard = GuardConfig {
            local: local.clone(),
            peers: [(peer.clone(), self.options.protection.fencing())].into_iter().collect(),
            // The node running applications fences at once; see Guard's fencing rule.
            fence_delay: TIMEOUT * 2,
            first: n == 0,
            fence_retry: Duration::from_secs(1),
            probe: true,
            probe_retry: Duration::from_secs(1),
            settle: TIMEOUT,
            lease: self.timing.lease,
            sabotage: self.options.sabotage,
        };
        let config = NodeConfig {
            membership,
            guard,
            apps: policies(),
            takeover_delay: self.timing.takeover_delay(),
            epoch,
        };
        let mut engine = Engine::new(config, self.now);
        engine.handle(self.now, NodeInput::Formed { start_autostart: autostart });
        self.nodes[n].engine = Some(engine);
        self.nodes[n].notice.clear();
        self.log(format!("{}: boots (epoch {epoch})", NAMES[n]));
        self.drain(n);
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
                self.at(INTERVAL, Ev::BeatTick(n));
                // clhbd2 beats on its own: a frozen or powered-off node does not.
                if !self.runs(n) {
                    return;
                }
                let notice = self.nodes[n].notice.iter().any(|p| p == NAMES[other(n)]);
                for link in 0..2 {
                    if self.net.beat[link][n] {
                        self.send(Ev::Beat { to: other(n), link });
                        if notice {
                            self.send(Ev::TakingOver { to: other(n), link });
                        }
                    }
                }
            }
            Ev::PingTick(n) => {
                self.at(INTERVAL, Ev::PingTick(n));
                if self.runs(n) && self.net.outside[n] {
                    let rtt = Duration::from_millis(self.rng.random_range(1..5));
                    self.at(rtt, Ev::KnownReply(n));
                }
            }
            Ev::GossipTick(n) => {
                self.at(Duration::from_secs(1), Ev::GossipTick(n));
                if self.runs(n) {
                    self.announce(n);
                }
            }
            Ev::Beat { to, link } => self.beat(to, link, false),
            Ev::TakingOver { to, link } => self.beat(to, link, true),
            Ev::Announce { to, ann } => {
                if self.runs(to) {
                    let peer = NAMES[other(to)].to_string();
                    self.feed(to, NodeInput::PeerAnnouncement { peer, announcement: *ann });
                }
            }
            Ev::KnownReply(n) => {
                if self.runs(n) && self.net.outside[n] {
                    let target = "10.10.0.1".parse().expect("literal address");
                    self.feed(n, NodeInput::KnownConnectionReply { target });
                }
            }
            ev @ (Ev::StartDone { .. }
            | Ev::StopDone { .. }
            | Ev::ProbeDone { .. }
            | Ev::FenceDone { .. }
            | Ev::LeaseReply { .. }) => self.shell_done(ev),
            Ev::LeaseRequest { from, id, op, epoch } => self.arbitrate(from, id, op, epoch),
            Ev::Fault(fault) => self.fault(fault),
        }
    }

    /// A piece of shell work finished on its node (replayed later if the node is frozen).
    fn shell_done(&mut self, ev: Ev) {
        let (n, epoch) = match &ev {
            Ev::StartDone { n, epoch, .. }
            | Ev::StopDone { n, epoch, .. }
            | Ev::ProbeDone { n, epoch, .. }
            | Ev::FenceDone { n, epoch, .. } => (*n, *epoch),
            Ev::LeaseReply { to, epoch, .. } => (*to, *epoch),
            _ => return,
        };
        if self.nodes[n].power == Power::Off || self.nodes[n].epoch != epoch {
            return; // the work died with the node
        }
        if self.nodes[n].frozen {
            self.nodes[n].deferred.push(ev);
            return;
        }
        let input = match ev {
            Ev::StartDone { app, ok, .. } => {
                if !ok {
                    // The shell releases what a failed start acquired before reporting.
                    self.nodes[n].held.remove(&app);
                }
                self.log(format!(
                    "{}: start of {app} {}",
                    NAMES[n],
                    if ok { "done" } else { "failed" }
                ));
                let reason = if ok { String::new() } else { "start script failed".into() };
                NodeInput::StartFinished { app, ok, reason }
            }
            Ev::StopDone { app, ok, .. } => {
                if ok {
                    self.nodes[n].held.remove(&app);
                }
                self.log(format!(
                    "{}: stop of {app} {}",
                    NAMES[n],
                    if ok { "done" } else { "FAILED (stuck)" }
                ));
                let reason = if ok { String::new() } else { "unmount failed".into() };
                NodeInput::StopFinished { app, ok, reason }
            }
            Ev::ProbeDone { peer, .. } => {
                // A node whose kernel runs answers ARP, frozen or not, if the network carries it.
                let alive = self.nodes[peer].power == Power::On && self.net.arp;
                self.log(format!(
                    "{}: probe of {}: {}",
                    NAMES[n],
                    NAMES[peer],
                    if alive { "answers" } else { "silent" }
                ));
                let answer = if alive {
                    ProbeAnswer::Answered { by: "simulated".into() }
                } else {
                    ProbeAnswer::Silent
                };
                let address = PUBLIC[peer].parse().expect("literal address");
                NodeInput::ProbeResult {
                    peer: NAMES[peer].into(),
                    seen: vec![ProbeSeen { address, answer }],
                }
            }
            Ev::FenceDone { peer, .. } => {
                let ok = !self.fence_failing;
                if ok {
                    self.power_off(peer, "fenced");
                }
                self.log(format!(
                    "{}: fence of {} {}",
                    NAMES[n],
                    NAMES[peer],
                    if ok { "succeeded" } else { "FAILED" }
                ));
                NodeInput::FenceResult { peer: NAMES[peer].into(), ok, detail: "simulated".into() }
            }
            Ev::LeaseReply { id, granted, holder, lease, remaining, .. } => {
                NodeInput::LeaseReply { id, granted, holder, lease, remaining }
            }
            _ => return,
        };
        self.feed(n, input);
    }

    /// Hand node `n`'s engine one fact, then carry out what it asks.
    fn feed(&mut self, n: usize, input: NodeInput) {
        let now = self.now;
        if let Some(engine) = self.nodes[n].engine.as_mut() {
            engine.handle(now, input);
        }
        self.drain(n);
    }

    /// A heartbeat from the other node reaches `to` on `link` (with its notice, if `notice`).
    fn beat(&mut self, to: usize, link: usize, notice: bool) {
        if self.runs(to) {
            let input = NodeInput::Heartbeat {
                from: NAMES[other(to)].into(),
                link: LINKS[link].into(),
                taking_over: notice,
            };
            self.feed(to, input);
        }
    }

    fn arbitrate(&mut self, from: usize, id: u64, op: ArbOp, epoch: u64) {
        if !self.arbitrator.up || !self.net.outside[from] {
            return;
        }
        let now = self.now;
        let Ok((grant, _)) = self.arbitrator.arbiter.request(now, NAMES[from], op) else {
            return;
        };
        if op == ArbOp::Release {
            return;
        }
        let verdict = if grant.granted { "granted" } else { "denied" };
        self.log(format!("arbitrator: {op:?} from {} -> {verdict}", NAMES[from]));
        let delay = self.net_delay();
        self.at(
            delay,
            Ev::LeaseReply {
                to: from,
                id,
                granted: grant.granted,
                holder: grant.holder,
                lease: Duration::from_millis(grant.lease_ms),
                remaining: Duration::from_millis(grant.remaining_ms),
                epoch,
            },
        );
    }

    fn net_delay(&mut self) -> Duration {
        let max = self.net.delay_max_ms.max(1);
        Duration::from_millis(self.rng.random_range(0..=max))
    }

    /// Put a node-to-node message on the wire, subject to loss, delay and duplication.
    fn send(&mut self, ev: Ev) {
        if self.rng.random_range(0..100) < self.net.loss {
            return;
        }
        let copies = if self.rng.random_range(0..100) < self.net.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.net_delay();
            self.at(delay, ev.clone());
        }
    }

    fn announce(&mut self, n: usize) {
        if !self.net.connected() {
            return;
        }
        let Some(engine) = self.nodes[n].engine.as_ref() else { return };
        let ann = Box::new(engine.announcement());
        self.send(Ev::Announce { to: other(n), ann });
    }

    /// Carry out every action of node `n`'s engine, in order, as simulated IO.
    fn drain(&mut self, n: usize) {
        loop {
            let Some(engine) = self.nodes[n].engine.as_mut() else { return };
            let Some(action) = engine.poll_action() else { break };
            match action {
                NodeAction::Membership(change) => {
                    self.log(format!("{}: membership {change:?}", NAMES[n]));
                }
                NodeAction::Probe { peer } => {
                    let peer = if peer == NAMES[0] { 0 } else { 1 };
                    let d = Duration::from_millis(self.rng.random_range(50..300));
                    let epoch = self.nodes[n].epoch;
                    self.at(d, Ev::ProbeDone { n, peer, epoch });
                }
                NodeAction::Fence { peer } => {
                    let peer = if peer == NAMES[0] { 0 } else { 1 };
                    let d = if self.fence_slow {
                        Duration::from_millis(self.rng.random_range(2000..6000))
                    } else {
                        Duration::from_millis(self.rng.random_range(50..1500))
                    };
                    let epoch = self.nodes[n].epoch;
                    self.at(d, Ev::FenceDone { n, peer, epoch });
                }
                NodeAction::Lease { id, op } => {
                    if self.net.outside[n] {
                        let d = self.net_delay();
                        let epoch = self.nodes[n].epoch;
                        self.at(d, Ev::LeaseRequest { from: n, id, op, epoch });
                    }
                }
                NodeAction::Event { level, text } => {
                    self.log(format!("{}: {level:?}: {text}", NAMES[n]));
                }
                NodeAction::Start { app } => self.start(n, app),
                NodeAction::Stop { app, reason, .. } => {
                    self.log(format!("{}: stops {app}: {reason}", NAMES[n]));
                    // The shell ends every stop within the stop margin (hard kill).
                    let max = self.timing.stop_margin.as_millis() as u64 - 50;
                    let d = Duration::from_millis(self.rng.random_range(5..max));
                    let ok = !self.nodes[n].stop_fails;
                    let epoch = self.nodes[n].epoch;
                    self.at(d, Ev::StopDone { n, app, ok, epoch });
                }
                NodeAction::Announce => self.announce(n),
                // Addresses are not simulated: a healed partition needs no re-announcement.
                NodeAction::Reannounce { .. } => {}
                // Monitors fail by the nemesis's hand (Fault::MonitorFails), not by watching.
                NodeAction::Monitor { .. } => {}
                NodeAction::TakingOverNotice { peers } => self.nodes[n].notice = peers,
                // Notifiers are the administrator's programs: nothing to simulate.
                NodeAction::Notify(_) => {}
            }
        }
        self.schedule_wake(n);
    }

    fn start(&mut self, n: usize, app: String) {
        let peer = other(n);
        // S2: the other holder must not be one that has given up.
        let documented = self.options.protection == Protection::None && self.blind_while_outside;
        if self.nodes[peer].held.contains(&app) && !documented {
            if let Some(engine) = self.nodes[peer].engine.as_ref() {
                if engine.local_state() == LocalState::Isolated || engine.stopped_for_lease() {
                    self.violate(
                        "S2",
                        format!(
                            "{} starts {app} while {} still holds it after giving up",
                            NAMES[n], NAMES[peer]
                        ),
                    );
                }
            }
        }
        self.log(format!("{}: starts {app}", NAMES[n]));
        self.nodes[n].held.insert(app.clone());
        let d = Duration::from_millis(self.rng.random_range(10..400));
        let ok = self.tail_started || self.rng.random_range(0..100) >= 3;
        let epoch = self.nodes[n].epoch;
        self.at(d, Ev::StartDone { n, app, ok, epoch });
    }

    fn schedule_wake(&mut self, n: usize) {
        let Some(engine) = self.nodes[n].engine.as_ref() else { return };
        let Some(mut next) = engine.poll_timeout() else { return };
        if next < self.now {
            next = self.now;
        }
        if self.nodes[n].next_wake.is_some_and(|w| w <= next && w >= self.now) {
            return;
        }
        self.nodes[n].next_wake = Some(next);
        self.seq += 1;
        self.queue.insert((next, self.seq), Ev::Wake(n));
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

    fn violate(&mut self, rule: &'static str, what: String) {
        if self.violations.iter().any(|v| v.rule == rule) {
            return;
        }
        self.log(format!("VIOLATION {rule}: {what}"));
        self.violations.push(Violation { rule, at: self.now, what });
    }

    fn check_safety(&mut self) {
        let outside = !self.options.known_connections || self.net.outside.iter().all(|o| *o);
        // A blind spell lasts, for the nodes, until each has heard the other again: decisions
        // taken during it may still be carried out just after the network heals.
        let reunited = (0..2).all(|n| {
            self.nodes[n].engine.as_ref().is_some_and(|engine| {
                engine.peer_state(NAMES[other(n)]) == Some(cl_core::PeerState::Up)
            })
        });
        if !self.net.mutually_blind() && reunited {
            self.blind_while_outside = false;
        } else if self.net.mutually_blind() && outside {
            self.blind_while_outside = true;
        }
        for app in APPS {
            let both = self.nodes.iter().all(|node| node.held.contains(app));
            if !both {
                self.in_documented_episode.remove(app);
                continue;
            }
            if self.in_documented_episode.contains(app) {
                continue;
            }
            let protected = self.options.protection != Protection::None;
            if !protected && self.blind_while_outside {
                self.documented += 1;
                self.in_documented_episode.insert(app.to_string());
                self.log(format!(
                    "documented case: {app} held by both nodes while they cannot see each other"
                ));
                continue;
            }
            let rule = if protected { "S1" } else { "S1'" };
            self.violate(rule, format!("{app} is held by both nodes"));
        }
    }

    fn check_liveness(&mut self) {
        for app in APPS {
            // A stop that failed leaves the application to the administrator (or to fencing):
            // no node may start it, by design.
            let stuck = self.nodes.iter().any(|node| {
                node.engine
                    .as_ref()
                    .is_some_and(|engine| engine.apps().state(app) == Some(AppState::Stuck))
            });
            if stuck {
                continue;
            }
            let running: Vec<usize> = (0..2)
                .filter(|n| {
                    self.nodes[*n].held.contains(app)
                        && self.nodes[*n].engine.as_ref().is_some_and(|engine| {
                            engine.apps().state(app) == Some(AppState::Running)
                        })
                })
                .collect();
            if running.len() != 1 {
                let states: Vec<String> = (0..2)
                    .map(|n| {
                        let state = self.nodes[n]
                            .engine
                            .as_ref()
                            .and_then(|engine| engine.apps().state(app));
                        format!("{}={state:?}", NAMES[n])
                    })
                    .collect();
                self.violate(
                    "L1",
                    format!(
                        "{app} runs on {} nodes {} after the faults healed ({})",
                        running.len(),
                        ms(Time::ZERO + L1_BOUND),
                        states.join(", ")
                    ),
                );
            }
        }
    }

    /// The nemesis: random faults during the fault phase, then a healed tail.
    fn schedule_faults(&mut self) {
        let fencing = self.options.protection.fencing();
        let arbitrator = self.options.protection.arbitrator();
        let mut t = Duration::from_secs(3);
        let end = self.options.fault_phase;
        while t < end {
            let n = self.rng.random_range(0..2);
            let fault = match self.rng.random_range(0..22) {
                0 | 1 => Fault::Partition,
                2 => Fault::HeartbeatsOnly,
                3 => Fault::OneWay { from: n },
                4 => Fault::LinkDown { link: self.rng.random_range(0..2) },
                5 | 6 => Fault::Isolate { n },
                7 => Fault::OutsideCut { n },
                8 => Fault::Loss { percent: self.rng.random_range(5..60) },
                9 => Fault::Delay {
                    max_ms: self.rng.random_range(5..=JITTER_ALLOWANCE.as_millis() as u64),
                },
                10 => Fault::Duplicate { percent: self.rng.random_range(5..50) },
                11..=13 => Fault::HealNet,
                14 => Fault::Crash { n },
                15 => Fault::PowerOn { n },
                16 => Fault::Freeze { n },
                17 => Fault::Thaw { n },
                18 if arbitrator => {
                    if self.rng.random_bool(0.5) {
                        Fault::ArbitratorDown
                    } else {
                        Fault::ArbitratorUp
                    }
                }
                19 if fencing => match self.rng.random_range(0..3) {
                    0 => Fault::FenceFailing { on: self.rng.random_bool(0.5) },
                    1 => Fault::FenceSlow { on: self.rng.random_bool(0.5) },
                    _ => Fault::StopFailing { n, on: self.rng.random_bool(0.5) },
                },
                20 => Fault::MonitorFails { n, app: self.rng.random_range(0..2) },
                _ => Fault::Admin {
                    n,
                    op: self.rng.random_range(0..3),
                    app: self.rng.random_range(0..2),
                },
            };
            self.seq += 1;
            self.queue.insert((Time::ZERO + t, self.seq), Ev::Fault(fault));
            t += Duration::from_millis(self.rng.random_range(200..5000));
        }
        self.seq += 1;
        self.queue.insert((Time::ZERO + end, self.seq), Ev::Fault(Fault::Tail));
        self.seq += 1;
        self.queue.insert((Time::ZERO + end + L1_BOUND, self.seq), Ev::Fault(Fault::CheckLiveness));
    }

    fn any_frozen(&self) -> bool {
        self.nodes.iter().any(|n| n.frozen)
    }

    fn fault(&mut self, fault: Fault) {
        // Without fencing, a frozen node is told from a dead one only by ARP: a freeze while
        // the public network is cut (or the reverse) is the case that needs fencing
        // (docs/safety.md), so the nemesis does not combine them there.
        let fencing = self.options.protection.fencing();
        let cuts_arp =
            matches!(fault, Fault::Partition | Fault::Isolate { .. } | Fault::LinkDown { link: 0 });
        if !fencing
            && ((cuts_arp && self.any_frozen())
                || (matches!(fault, Fault::Freeze { .. }) && !self.net.arp))
        {
            return;
        }
        if self.tail_started
            && !matches!(fault, Fault::CheckLiveness | Fault::AskAll | Fault::PowerOnAll)
        {
            return;
        }
        self.log(format!("nemesis: {fault:?}"));
        match fault {
            Fault::Partition => {
                self.net.beat = [[false; 2]; 2];
                self.net.arp = false;
            }
            Fault::HeartbeatsOnly => self.net.beat = [[false; 2]; 2],
            Fault::OneWay { from } => {
                for link in 0..2 {
                    self.net.beat[link][from] = false;
                }
            }
            Fault::LinkDown { link } => {
                self.net.beat[link] = [false; 2];
                if link == 0 {
                    self.net.arp = false;
                }
            }
            Fault::Isolate { n } => {
                self.net.beat = [[false; 2]; 2];
                self.net.arp = false;
                self.net.outside[n] = false;
            }
            Fault::OutsideCut { n } => self.net.outside[n] = false,
            Fault::Loss { percent } => self.net.loss = percent,
            Fault::Delay { max_ms } => self.net.delay_max_ms = max_ms,
            Fault::Duplicate { percent } => self.net.duplicate = percent,
            Fault::HealNet => self.net = Net::healed(),
            Fault::Crash { n } => {
                if self.nodes[n].power == Power::On {
                    self.power_off(n, "crashed");
                }
            }
            Fault::PowerOn { n } => {
                if self.nodes[n].power == Power::Off {
                    self.nodes[n].power = Power::On;
                    // The administrator runs clform on the rebooted node.
                    self.boot(n, true);
                }
            }
            Fault::Freeze { n } => {
                if self.nodes[n].power == Power::On {
                    self.nodes[n].frozen = true;
                }
            }
            Fault::Thaw { n } => self.thaw(n),
            Fault::ArbitratorDown => self.arbitrator.up = false,
            Fault::ArbitratorUp => self.arbitrator.up = true,
            Fault::FenceFailing { on } => self.fence_failing = on,
            Fault::FenceSlow { on } => self.fence_slow = on,
            Fault::StopFailing { n, on } => self.nodes[n].stop_fails = on,
            Fault::MonitorFails { n, app } => {
                if self.runs(n) {
                    let input = NodeInput::MonitorFailed {
                        app: APPS[app].into(),
                        reason: "simulated".into(),
                    };
                    self.feed(n, input);
                }
            }
            Fault::Admin { n, op, app } => {
                if self.runs(n) {
                    let app = APPS[app].to_string();
                    let op = match op {
                        0 => AdminOp::Start { app, node: None },
                        1 => AdminOp::Stop { app },
                        _ => AdminOp::Switch { app, node: None },
                    };
                    self.feed(n, NodeInput::Admin(op));
                }
            }
            Fault::Tail => {
                self.net = Net::healed();
                self.arbitrator.up = true;
                self.fence_failing = false;
                self.fence_slow = false;
                for n in 0..2 {
                    self.nodes[n].stop_fails = false;
                    self.thaw(n);
                }
                for n in 0..2 {
                    if self.nodes[n].power == Power::Off {
                        self.nodes[n].power = Power::On;
                        self.boot(n, true);
                    }
                }
                self.tail_started = true;
                // Give the nodes time to see each other, then ask for every application.
                self.at(Duration::from_secs(3), Ev::Fault(Fault::PowerOnAll));
                self.at(Duration::from_secs(6), Ev::Fault(Fault::AskAll));
            }
            Fault::PowerOnAll => {
                for n in 0..2 {
                    if self.nodes[n].power == Power::Off {
                        self.nodes[n].power = Power::On;
                        self.boot(n, true);
                    }
                }
            }
            Fault::AskAll => {
                let now = self.now;
                for n in 0..2 {
                    if let Some(engine) = self.nodes[n].engine.as_mut() {
                        for app in APPS {
                            let op = AdminOp::Start { app: app.into(), node: None };
                            engine.handle(now, NodeInput::Admin(op));
                        }
                    }
                    self.drain(n);
                }
            }
            Fault::CheckLiveness => self.check_liveness(),
        }
    }

    fn thaw(&mut self, n: usize) {
        if !self.nodes[n].frozen {
            return;
        }
        self.nodes[n].frozen = false;
        self.log(format!("{}: thawed", NAMES[n]));
        let deferred = std::mem::take(&mut self.nodes[n].deferred);
        for ev in deferred {
            self.at(Duration::ZERO, ev);
        }
        self.at(Duration::ZERO, Ev::Wake(n));
    }
}

/// Run one schedule.
pub fn run(seed: u64, options: Options) -> Outcome {
    let mut outcome = Sim::new(seed, options).run();
    outcome.seed = seed;
    outcome
}
