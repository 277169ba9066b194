//! The simulated shell around each node's engine: its actions become simulated IO (probes,
//! fences, lease requests, starts and stops, announcements on the wire), and their results come
//! back as `NodeInput`s, as cldaemon's would.

use std::time::Duration;

use cl_core::arbiter::ArbOp;
use cl_core::membership::{Action, KnownPace, LocalState, MembershipConfig};
use cl_core::node::{NodeAction, NodeInput, ProbeAnswer, ProbeSeen};
use rand::Rng;

use super::{other, Ev, Faults, Power, Protection, Sim, FENCE_POWEROFF, LINKS, NAMES, PUBLIC};

impl Sim {
    /// A piece of shell work finished on its node (replayed later if the node is frozen).
    pub(crate) fn shell_done(&mut self, ev: Ev) {
        let (n, epoch) = match &ev {
            Ev::StartDone { n, epoch, .. }
            | Ev::StopDone { n, epoch, .. }
            | Ev::ProbeDone { n, epoch, .. }
            | Ev::FenceReport { n, epoch, .. }
            | Ev::FenceStatusDone { n, epoch, .. } => (*n, *epoch),
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
            Ev::StartDone { app, ok, id, .. } => {
                if self.nodes[n].starting.get(&app).map(|(s, _)| *s) != Some(id) {
                    return; // aborted by an urgent stop: it reports nothing
                }
                self.nodes[n].starting.remove(&app);
                if ok {
                    self.check_promotion(n, &app);
                }
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
            Ev::FenceReport { peer, ok, .. } => {
                NodeInput::FenceResult { peer: NAMES[peer].into(), ok, detail: "simulated".into() }
            }
            Ev::FenceStatusDone { peer, .. } => {
                // The device answers with the power state as it is now; a failing device
                // answers nothing useful.
                let off = !self.fence_failing && self.nodes[peer].power == Power::Off;
                self.log(format!(
                    "{}: fence device of {} reports it {}",
                    NAMES[n],
                    NAMES[peer],
                    if off { "off" } else { "on (or nothing)" }
                ));
                NodeInput::FenceStatusResult {
                    peer: NAMES[peer].into(),
                    off,
                    detail: "simulated".into(),
                }
            }
            Ev::LeaseReply { id, granted, holder, lease, remaining, .. } => {
                NodeInput::LeaseReply { id, granted, holder, lease, remaining }
            }
            _ => return,
        };
        self.feed(n, input);
    }

    /// Node `n`'s fence of `peer` ends. The device got its command when the fence started, so
    /// it powers the peer off even if `n` was powered off (or froze) meanwhile: two nodes that
    /// fence each other both end up off. Only the report back to `n` dies with `n`.
    pub(crate) fn fence_done(&mut self, n: usize, peer: usize, epoch: u64, slow: bool) {
        let ok = !self.fence_failing;
        if ok && self.nodes[peer].power == Power::On {
            self.power_off(peer, "fenced");
            self.fenced[peer] += 1;
            self.fenced_by[peer] = Some((n, slow));
            if self.nodes[n].power == Power::Off {
                if let Some((_, slow_too)) = self.fenced_by[n].filter(|(by, _)| *by == peer) {
                    self.log(format!(
                        "{} and {} powered each other off{}",
                        NAMES[n],
                        NAMES[peer],
                        if slow || slow_too { " (a slow fence device)" } else { "" }
                    ));
                    if !slow && !slow_too {
                        self.mutual_fences += 1;
                    }
                }
            }
        }
        self.log(format!(
            "{}: fence of {} {}",
            NAMES[n],
            NAMES[peer],
            if ok { "succeeded" } else { "FAILED" }
        ));
        self.shell_done(Ev::FenceReport { n, peer, ok, epoch });
    }

    /// Hand node `n`'s engine one fact, then carry out what it asks.
    pub(crate) fn feed(&mut self, n: usize, input: NodeInput) {
        let now = self.now;
        if let Some(engine) = self.nodes[n].engine.as_mut() {
            engine.handle(now, input);
        }
        self.drain(n);
    }

    /// A heartbeat from the other node reaches `to` on `link` (with its notice, if `notice`).
    pub(crate) fn beat(&mut self, to: usize, link: usize, notice: bool) {
        if self.runs(to) {
            let input = NodeInput::Heartbeat {
                from: NAMES[other(to)].into(),
                link: LINKS[link].into(),
                at: self.now,
                taking_over: notice,
            };
            self.feed(to, input);
        }
    }

    pub(crate) fn arbitrate(&mut self, from: usize, id: u64, op: ArbOp, epoch: u64) {
        if !self.arbitrator.up || !self.net.reaches_arbitrator(from) {
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
    pub(crate) fn send(&mut self, ev: Ev) {
        if self.rng.random_range(0..100) < self.net.loss {
            return;
        }
        let copies = if self.rng.random_range(0..100) < self.net.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.net_delay();
            self.at(delay, ev.clone());
        }
    }

    pub(crate) fn announce(&mut self, n: usize) {
        let Some(engine) = self.nodes[n].engine.as_ref() else { return };
        let ann = Box::new(engine.announcement());
        self.nodes[n].undelivered = Some(ann.seq);
        if !self.net.connected() {
            return;
        }
        self.send(Ev::Announce { to: other(n), ann });
    }

    /// Carry out every action of node `n`'s engine, in order, as simulated IO.
    pub(crate) fn drain(&mut self, n: usize) {
        loop {
            let Some(engine) = self.nodes[n].engine.as_mut() else { return };
            let Some(action) = engine.poll_action() else { break };
            match action {
                NodeAction::Membership(change) => {
                    self.log(format!("{}: membership {change:?}", NAMES[n]));
                    if let Action::PingPace { pace } = change {
                        self.set_ping_pace(n, pace);
                    }
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
                        Duration::from_millis(
                            self.rng.random_range(50..FENCE_POWEROFF.as_millis() as u64),
                        )
                    };
                    let epoch = self.nodes[n].epoch;
                    let slow = self.fence_slow;
                    self.at(d, Ev::FenceDone { n, peer, epoch, slow });
                }
                NodeAction::FenceStatus { peer } => {
                    // A fixed delay: no random draw, so the other schedules replay alike.
                    let peer = if peer == NAMES[0] { 0 } else { 1 };
                    let epoch = self.nodes[n].epoch;
                    self.at(Duration::from_millis(30), Ev::FenceStatusDone { n, peer, epoch });
                }
                NodeAction::Lease { id, op } => {
                    if self.net.reaches_arbitrator(n) {
                        let d = self.net_delay();
                        let epoch = self.nodes[n].epoch;
                        self.at(d, Ev::LeaseRequest { from: n, id, op, epoch });
                    }
                }
                NodeAction::Event { level, text } => {
                    self.log(format!("{}: {level:?}: {text}", NAMES[n]));
                }
                NodeAction::Start { app } => self.start(n, app),
                NodeAction::Stop { app, reason, urgent } => {
                    self.log(format!("{}: stops {app}: {reason}", NAMES[n]));
                    // The shell ends every stop within the stop margin (hard kill).
                    let max = self.timing.stop_margin.as_millis() as u64 - 50;
                    let mut d = Duration::from_millis(self.rng.random_range(5..max));
                    // A start in flight: an urgent stop aborts it, any other waits for it.
                    if let Some((_, due)) = self.nodes[n].starting.get(&app).copied() {
                        if urgent {
                            self.nodes[n].starting.remove(&app);
                        } else {
                            d += due.since(self.now);
                        }
                    }
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
        // Starts fail now and then among the random faults only (the fixed scenarios keep
        // their placement); the random draw stays where it was so old seeds replay alike.
        let ok = self.tail_started
            || self.rng.random_range(0..100) >= 3
            || self.options.faults != Faults::Random;
        let epoch = self.nodes[n].epoch;
        let id = self.nodes[n].next_start;
        self.nodes[n].next_start += 1;
        self.nodes[n].starting.insert(app.clone(), (id, self.now + d));
        self.at(d, Ev::StartDone { n, app, ok, epoch, id });
    }

    /// Node `n`'s clnetd is told a pace: a new clock, which ticks at once (clnetd's timerfd).
    pub(crate) fn set_ping_pace(&mut self, n: usize, pace: KnownPace) {
        if self.nodes[n].ping_pace == pace {
            return;
        }
        self.nodes[n].ping_pace = pace;
        self.nodes[n].ping_clock += 1;
        let clock = self.nodes[n].ping_clock;
        self.at(Duration::ZERO, Ev::PingTick { n, clock });
    }

    /// How often node `n`'s clnetd pings now.
    pub(crate) fn ping_period(&self, n: usize) -> Duration {
        match self.nodes[n].ping_pace {
            KnownPace::Slow => {
                MembershipConfig::default_slow_pings(self.timing.interval, self.timing.timeout)
                    .unwrap_or(self.timing.interval)
            }
            KnownPace::Fast => self.timing.interval,
        }
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
}
