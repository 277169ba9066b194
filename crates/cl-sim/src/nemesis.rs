//! The nemesis: random faults during the fault phase (network cuts, loss, crashes, freezes, a
//! failing fence or arbitrator, administrators), then a healed tail.

use std::time::Duration;

use cl_core::apps::AdminOp;
use cl_core::node::NodeInput;
use cl_core::timing::JITTER_ALLOWANCE;
use cl_core::Time;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Ev, Faults, Net, Power, Sim, APPS, L1_BOUND, NAMES};

/// One change the nemesis makes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fault {
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
    /// A node's path to the arbitrator lost, its known connection still answering.
    ArbitratorCut {
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
    /// DRBD's verdict on node `n`'s copy of the replicated application changes (crate::data).
    Data {
        n: usize,
        blocked: Option<cl_core::storage::NotPromotable>,
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

impl Sim {
    /// The nemesis: random faults during the fault phase, then a healed tail.
    pub(crate) fn schedule_faults(&mut self, seed: u64) {
        if let Faults::SymmetricPartition { everything_on_second } = self.options.faults {
            self.schedule_symmetric_partition(everything_on_second);
            return;
        }
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
            self.schedule_fault(t, fault);
            t += Duration::from_millis(self.rng.random_range(200..5000));
        }
        if arbitrator {
            self.schedule_arbitrator_cuts(seed);
        }
        if self.options.replicated {
            self.schedule_data_faults(seed);
        }
        self.schedule_tail();
    }

    /// Queue `fault` at `at` after the start of the run (in queueing order among equal times).
    pub(crate) fn schedule_fault(&mut self, at: Duration, fault: Fault) {
        self.seq += 1;
        self.queue.insert((Time::ZERO + at, self.seq), Ev::Fault(fault));
    }

    /// The healed tail after the fault phase, and the liveness check at its end.
    fn schedule_tail(&mut self) {
        let end = self.options.fault_phase;
        self.schedule_fault(end, Fault::Tail);
        self.schedule_fault(end + L1_BOUND, Fault::CheckLiveness);
    }

    /// [`Faults::SymmetricPartition`]: the seed only varies the timing (heartbeat phases,
    /// delivery, fence and start durations).
    fn schedule_symmetric_partition(&mut self, everything_on_second: bool) {
        // Heartbeats delayed by up to the whole jitter the race unit counts on.
        let max_ms = self.timing.fence_race_jitter().as_millis() as u64;
        self.schedule_fault(Duration::from_secs(1), Fault::Delay { max_ms });
        if everything_on_second {
            // web prefers node1: the administrator switches it to node2.
            self.schedule_fault(Duration::from_secs(2), Fault::Admin { n: 0, op: 2, app: 0 });
        }
        self.schedule_fault(Duration::from_secs(5), Fault::Partition);
        self.schedule_tail();
    }

    /// Cuts of one node's path to the arbitrator, from a stream of their own, so the other
    /// faults of a seed stay what they were before this fault existed (the regression seeds).
    /// Combined with a partition this is the schedule that tells a holder that stops at its
    /// lease deadline from one that does not (the sabotage check).
    fn schedule_arbitrator_cuts(&mut self, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA5B1_7C07_0000_0000);
        let mut t = Duration::from_millis(rng.random_range(3000..8000));
        while t < self.options.fault_phase {
            let n = rng.random_range(0..2);
            self.schedule_fault(t, Fault::ArbitratorCut { n });
            t += Duration::from_millis(rng.random_range(2000..10000));
        }
    }

    fn any_frozen(&self) -> bool {
        self.nodes.iter().any(|n| n.frozen)
    }

    pub(crate) fn fault(&mut self, fault: Fault) {
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
            Fault::ArbitratorCut { n } => self.net.arbitrator_path[n] = false,
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
            Fault::Data { n, blocked } => self.data_fault(n, blocked),
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
                self.holders_at_tail = APPS
                    .iter()
                    .map(|app| {
                        let holders = self.nodes.iter().filter(|n| n.held.contains(*app)).count();
                        (app.to_string(), holders)
                    })
                    .collect();
                self.net = Net::healed();
                self.arbitrator.up = true;
                self.fence_failing = false;
                self.fence_slow = false;
                for n in 0..2 {
                    self.nodes[n].stop_fails = false;
                    self.thaw(n);
                    // Both copies current again (after clsplitbrain, a resync).
                    if self.options.replicated {
                        self.data_fault(n, None);
                    }
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
                // A fence device carries out what it was sent even if the sender died since:
                // a slow one (up to 6 s) sent just before the tail lands after the first
                // power-on, so the administrator looks again once it must have.
                self.at(Duration::from_secs(7), Ev::Fault(Fault::PowerOnAll));
                self.at(Duration::from_secs(8), Ev::Fault(Fault::AskAll));
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

    pub(crate) fn thaw(&mut self, n: usize) {
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
