//! Replicated data (`Options::replicated`): `web` keeps its data on both nodes, and each node's
//! shell reports DRBD's verdict on its copy as cldaemon's storage watcher does. The nemesis
//! makes copies turn stale and promotable again, one node at a time or both within a few
//! milliseconds (a resolved split brain: the case CI found, t70 in ci25), from a random stream
//! of its own so the other faults of a seed stay what they were.
//!
//! Checked: **S3**, no start completes (promotes) on a copy whose verdict forbids it; with S1,
//! both nodes turning promotable at once never starts the application on both.

use std::time::Duration;

use cl_core::node::NodeInput;
use cl_core::storage::NotPromotable;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::nemesis::Fault;
use super::{Ev, Sim, APPS, NAMES};

/// The replicated application.
pub(crate) const REPLICATED: &str = APPS[0];

impl Sim {
    /// Verdict changes during the fault phase, from their own stream.
    pub(crate) fn schedule_data_faults(&mut self, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xD47A_0000_5EED_0000);
        let mut t = Duration::from_millis(rng.random_range(2000..5000));
        while t < self.options.fault_phase {
            let n = rng.random_range(0..2);
            match rng.random_range(0..5) {
                0 => self
                    .schedule_fault(t, Fault::Data { n, blocked: Some(NotPromotable::Outdated) }),
                1 => {
                    let resyncing = Some(NotPromotable::Inconsistent { resyncing: true });
                    self.schedule_fault(t, Fault::Data { n, blocked: resyncing });
                }
                2 => self.schedule_fault(t, Fault::Data { n, blocked: None }),
                3 => {
                    for n in 0..2 {
                        let split = Some(NotPromotable::SplitBrain);
                        self.schedule_fault(t, Fault::Data { n, blocked: split });
                    }
                }
                _ => {
                    // Both copies promotable again within a few milliseconds of each other.
                    let gap = Duration::from_millis(rng.random_range(0..30));
                    self.schedule_fault(t, Fault::Data { n, blocked: None });
                    self.schedule_fault(t + gap, Fault::Data { n: 1 - n, blocked: None });
                }
            }
            t += Duration::from_millis(rng.random_range(300..6000));
        }
    }

    /// DRBD changes the verdict on node `n`'s copy. A copy in use (Primary: the application
    /// held and not merely starting) is not outdated under it; any other may turn stale.
    pub(crate) fn data_fault(&mut self, n: usize, blocked: Option<NotPromotable>) {
        let in_use = self.nodes[n].held.contains(REPLICATED)
            && !self.nodes[n].starting.contains_key(REPLICATED);
        if blocked.is_some() && in_use {
            return;
        }
        self.at(Duration::ZERO, Ev::Data { n, blocked });
    }

    /// The verdict reaches node `n`'s shell (later, if it is frozen).
    pub(crate) fn data_seen(&mut self, n: usize, blocked: Option<NotPromotable>) {
        if self.nodes[n].frozen {
            self.nodes[n].deferred.push(Ev::Data { n, blocked });
            return;
        }
        self.data[n] = blocked;
        self.feed_data(n);
    }

    /// Tell node `n`'s engine the verdict its shell last saw.
    pub(crate) fn feed_data(&mut self, n: usize) {
        if !self.options.replicated || !self.runs(n) {
            return;
        }
        let blocked = self.data[n].clone();
        self.feed(n, NodeInput::Data { app: REPLICATED.into(), blocked });
    }

    /// S3: a start that completes here promotes this node's copy.
    pub(crate) fn check_promotion(&mut self, n: usize, app: &str) {
        if !self.options.replicated || app != REPLICATED {
            return;
        }
        if let Some(why) = self.data[n].clone().filter(|w| *w != NotPromotable::NotUp) {
            self.violate("S3", format!("{} promoted its copy of {app}: {why}", NAMES[n]));
        }
    }
}
