//! The lease, held ahead of time (docs/safety.md): when to ask the arbitrator, what its
//! answers mean, and what losing the lease stops.

use super::*;

impl Guard {
    pub(super) fn step_lease(&mut self) {
        if self.lease.is_none() {
            return;
        }
        let now = self.now;
        let needed = self.needs_lease();
        let sabotaged = self.config.sabotage == Sabotage::KeepRunningAfterLease;
        let mut request: Option<ArbOp> = None;
        let mut lost: Option<String> = None;
        let mut gained = false;
        if let Some(lease) = self.lease.as_mut() {
            // A request without an answer in time counts as refused.
            if let Some(o) = &lease.outstanding {
                if now >= o.sent + lease.timing.answer_timeout {
                    lease.outstanding = None;
                    if lease.held_until.is_none() {
                        lease.view = LeaseView::NoAnswer;
                        lost = Some(format!(
                            "the arbitrator did not answer within {} ms",
                            lease.timing.answer_timeout.as_millis()
                        ));
                    }
                    lease.next_at = Some(now);
                }
            }
            // The stop deadline: everything must be stopped before the lease could run out at
            // the arbitrator, whether or not the peer is up (docs/safety.md).
            if let Some(until) = lease.held_until {
                if now >= until - lease.timing.stop_margin {
                    lease.held_until = None;
                    lease.view = LeaseView::NoAnswer;
                    if needed && !sabotaged {
                        lost = Some(format!(
                            "the arbitrator's lease could not be renewed and expires in {} ms",
                            until.since(now).as_millis()
                        ));
                    } else {
                        lease.view = LeaseView::NotNeeded;
                    }
                }
            }
            if needed {
                if lease.outstanding.is_none() && lease.next_at.is_none_or(|t| now >= t) {
                    request = Some(if lease.held_until.is_some() {
                        ArbOp::Renew
                    } else {
                        ArbOp::Acquire
                    });
                }
                if lease.held_until.is_some() {
                    gained = true;
                }
            } else if lease.held_until.is_none() {
                lease.outstanding = None;
                lease.next_at = None;
                lease.view = LeaseView::NotNeeded;
            }
            // Not needed but still held: it is left to run out, never released, so that no
            // start raced with a release (an application started just before is still covered
            // and renews it).
        }
        if let Some(op) = request {
            self.next_id += 1;
            let id = self.next_id;
            if let Some(lease) = self.lease.as_mut() {
                lease.outstanding = Some(Outstanding { id, sent: now });
                lease.next_at = None;
                if lease.held_until.is_none()
                    && lease.view != LeaseView::NoAnswer
                    && !matches!(lease.view, LeaseView::Denied { .. })
                {
                    lease.view = LeaseView::Asking;
                }
            }
            self.actions.push_back(GuardAction::Lease { id, op });
        }
        self.sync_apps_lease();
        if let Some(reason) = lost {
            self.lose_lease(reason);
        } else if gained && self.stopped_for_lease {
            self.end_lease_stop();
            self.event(Level::Warn, "this node holds the arbitrator's lease again".into());
            self.sync_apps();
        }
        if gained {
            let waiting: Vec<String> = self
                .gates
                .iter()
                .filter(|(_, g)| **g == Gate::Lease)
                .map(|(p, _)| p.clone())
                .collect();
            // Back from a lost lease, the gates start over: the applications machine forgot
            // the cleared verdicts when it was told to stop everything.
            for peer in waiting {
                self.after_lease(&peer);
            }
        } else if self.stopped_for_lease && !self.peer_needs_lease() && !self.local_active {
            // Nothing runs here and no peer is to be taken over: the applications machine may
            // place applications again (it starts them only once the lease is held).
            self.end_lease_stop();
        }
    }

    /// Tell the applications machine whether this node holds the lease (it starts nothing
    /// without it).
    pub(super) fn sync_apps_lease(&mut self) {
        let Some(lease) = self.lease.as_ref() else { return };
        let held = lease.held_until.is_some();
        if held != self.apps_lease {
            self.apps_lease = held;
            if !held && self.config.sabotage == Sabotage::KeepRunningAfterLease {
                // The broken rule: the lease is announced as gone, the applications run on.
                self.apps(AppInput::LeaseLostKeepRunning);
            } else {
                self.apps(AppInput::Lease { held });
            }
        }
    }

    /// The lease no longer keeps this node's applications stopped.
    pub(super) fn end_lease_stop(&mut self) {
        self.stopped_for_lease = false;
        self.alarms.remove("lease");
    }

    pub(super) fn lease_reply(
        &mut self,
        id: u64,
        granted: bool,
        holder: Option<String>,
        remaining: Option<Duration>,
    ) {
        let now = self.now;
        let mut refused: Option<String> = None;
        let Some(lease) = self.lease.as_mut() else { return };
        let Some(o) = lease.outstanding.clone() else { return };
        if o.id != id {
            return; // an answer to a request given up on
        }
        lease.outstanding = None;
        if granted {
            let until = lease.timing.held_until(o.sent);
            lease.held_until = Some(until);
            lease.view = LeaseView::Held { until };
            lease.next_at = Some(o.sent + lease.timing.renew_after);
        } else {
            lease.held_until = None;
            lease.view = LeaseView::Denied { holder: holder.clone() };
            // The holder may die: ask again as soon as its lease could have run out.
            let wait = remaining
                .map(|r| r + Duration::from_millis(10))
                .unwrap_or(lease.timing.lease / 4)
                .min(lease.timing.lease / 4);
            lease.next_at = Some(now + wait);
            if let Some(r) = remaining {
                self.time_early_probes(r);
            }
            refused = Some(match holder {
                Some(h) => format!("the arbitrator's lease is held by {h}"),
                None => "the arbitrator refused the lease".to_string(),
            });
        }
        if let Some(reason) = refused {
            self.lose_lease(reason);
        }
    }

    /// Without the lease this node may not run anything.
    pub(super) fn lose_lease(&mut self, reason: String) {
        if !self.peer_needs_lease() && !self.local_active {
            return; // it only wanted to start something: it waits
        }
        for gate in self.gates.values_mut() {
            if !matches!(gate, Gate::Idle | Gate::StandBy) {
                *gate = Gate::Lease;
            }
        }
        if !self.stopped_for_lease {
            self.stopped_for_lease = true;
            self.alarm(
                "lease".into(),
                format!("{reason}: this node does not hold the lease, so it stops its applications and takes nothing over"),
            );
        }
    }

    pub(super) fn after_lease(&mut self, peer: &str) {
        let fenced = self.config.peers.get(peer).copied().unwrap_or(false);
        if fenced {
            self.early_probes.remove(peer);
            let delay = self.fence_wait(peer);
            if delay.is_zero() {
                self.fence(peer, 1);
            } else {
                let at = self.now + delay;
                self.event(
                    Level::Info,
                    format!("fencing node {peer} in {} ms unless its fence device reports it off: {peer} is favoured in the fence race, so if it is alive it fences this node first", delay.as_millis()),
                );
                self.set_gate(peer, Gate::FenceAt { at, attempts: 0 });
                // A peer that is powered off (crashed, lost its power) is not racing: ask its
                // fence device, and fence at once if it reports the peer off (the fence then
                // confirms it). A peer reported on, or a query that fails, waits the race out.
                self.actions.push_back(GuardAction::FenceStatus { peer: peer.to_string() });
                // Probe meanwhile, ending as the fence begins: the start after a successful
                // fence then finds the peer's addresses freshly silent (dad.rs) and does not
                // probe them again. The result decides nothing here: the fence does.
                if self.config.probe && delay >= self.config.probe_time {
                    let due = EarlyProbe::Due { at: at - self.config.probe_time };
                    self.early_probes.insert(peer.to_string(), due);
                }
            }
        } else if self.config.probe {
            match self.early_probes.remove(peer) {
                // Probed while the lease was awaited (the grant proves the former holder has
                // released everything since) or as the peer fell silent: nobody answered.
                Some(EarlyProbe::Silent { began }) if self.silence_fresh_at(began, self.now) => {
                    let when = if self.lease.is_some() {
                        "while this node waited for the lease"
                    } else {
                        "as it fell silent"
                    };
                    self.event(
                        Level::Info,
                        format!("node {peer} did not answer on the public network {when}"),
                    );
                    self.clear(peer, false);
                }
                // Still running: its result decides, as a probe begun now would.
                Some(EarlyProbe::Running { began }) => {
                    self.early_probes.insert(peer.to_string(), EarlyProbe::Running { began });
                    self.set_gate(peer, Gate::Probing);
                }
                Some(EarlyProbe::Silent { .. } | EarlyProbe::Answered | EarlyProbe::Due { .. })
                | None => self.probe(peer),
            }
        } else {
            self.clear(peer, false);
        }
    }

    /// With an arbitrator, probe a silent unfenced peer while the lease is awaited: the grant
    /// comes when the holder's lease runs out, and the probe need not wait for it. It is sent
    /// once the arbitrator had time to answer the request (one answer timeout); a denial moves
    /// it to end when the holder's lease runs out ([`Guard::time_early_probes`]).
    pub(super) fn probe_early(&mut self, peer: &str) {
        let fenced = self.config.peers.get(peer).copied().unwrap_or(false);
        if fenced || !self.config.probe || self.isolated {
            return;
        }
        let answer_timeout =
            self.lease.as_ref().map(|l| l.timing.answer_timeout).unwrap_or_default();
        self.early_probes
            .insert(peer.to_string(), EarlyProbe::Due { at: self.now + answer_timeout });
    }

    /// A denial says the holder's lease runs `remaining` longer: probes not sent yet are timed
    /// to end then, so that what they find is fresh when the grant comes (dad.rs counts silence
    /// for one heartbeat timeout) and the start after it need not probe again. So are probes
    /// already done whose silence would be stale by then, and those the peer answered (it may
    /// have been releasing its addresses): otherwise the grant would wait for a probe of its
    /// own.
    pub(super) fn time_early_probes(&mut self, remaining: Duration) {
        let grant = self.now + remaining;
        let at = self.now + remaining.saturating_sub(self.config.probe_time);
        let stale: Vec<String> = self
            .early_probes
            .iter()
            .filter(|(_, probe)| match probe {
                EarlyProbe::Due { .. } | EarlyProbe::Answered => true,
                EarlyProbe::Silent { began } => !self.silence_fresh_at(*began, grant),
                EarlyProbe::Running { .. } => false,
            })
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in stale {
            self.early_probes.insert(peer, EarlyProbe::Due { at });
        }
    }

    /// Whether the silence a probe begun at `began` found still counts at `at`: for one
    /// heartbeat timeout (`settle`) from its last frame, as the start's probe counts it
    /// (dad.rs).
    pub(super) fn silence_fresh_at(&self, began: Time, at: Time) -> bool {
        at.since(self.config.probe_plan().last_frame(began)) <= self.config.settle
    }

    /// Send the early probe of `peer` now.
    pub(super) fn send_early_probe(&mut self, peer: &str) {
        self.early_probes.insert(peer.to_string(), EarlyProbe::Running { began: self.now });
        self.actions.push_back(GuardAction::Probe { peer: peer.to_string() });
    }
}
