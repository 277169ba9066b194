//! The lease arbitrator's decisions (what `clarbd` on a third host answers).
//!
//! One lease per cluster. A node that wants to take over applications from a peer it cannot
//! see must first hold the lease; while the peer holds it (and renews it), the node is denied.
//! So when the two nodes lose each other but both reach the arbitrator, exactly one of them
//! gets to take over.
//!
//! Rules ([`Arbiter::request`]):
//!
//! - `Acquire` and `Renew` are granted when nobody holds the lease, when the holder's lease has
//!   expired, or when the requester is the holder; the lease then runs until `now + lease`.
//!   Otherwise they are denied, naming the holder and its remaining time.
//! - `Release` by the holder clears the lease at once; by anyone else it is denied.
//! - `Query` changes nothing: granted means "you hold it".
//! - Only the cluster's nodes are answered ([`Rejected`] otherwise).
//! - A lease lasts `[granted, granted + lease)`: at `granted + lease` exactly it is expired.
//!
//! **Restart quiet period.** The arbiter keeps no state on disk. A restarted clarbd does not
//! know who held the lease, and a holder may still rely on it for up to one lease; so for one
//! lease after [`Arbiter::new`] every `Acquire`/`Renew` is denied (no holder, `remaining` = the
//! rest of the quiet period). After that any lease granted before the restart has expired.
//!
//! The holder's side must count its lease from when it *sent* the request, not from when the
//! reply arrived: the arbiter's expiry is then never earlier than the holder believes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Time;

/// What a node asks of the arbiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArbOp {
    /// Take the lease (or extend it, if already held).
    Acquire,
    /// Extend a held lease (taken again if it lapsed and nobody else took it).
    Renew,
    /// Give the lease up.
    Release,
    /// Who holds the lease, and for how long; changes nothing.
    Query,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Acquire/Renew: the requester holds the lease now. Release: it was released. Query: the
    /// requester holds it.
    pub granted: bool,
    /// Who holds the lease after this request (`None`: nobody).
    pub holder: Option<String>,
    /// The configured lease length, in milliseconds.
    pub lease_ms: u64,
    /// How long the holder's lease still runs (for a grant: the whole lease); in the restart
    /// quiet period, with no holder, how long the quiet period still lasts. Milliseconds.
    pub remaining_ms: u64,
}

/// What happened, for the arbitrator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArbEvent {
    /// `node` was granted the lease (newly, or `renewed` while it held it).
    Granted {
        /// The new holder.
        node: String,
        /// It already held the lease.
        renewed: bool,
        /// The lease had been held by this node, and expired, before this grant.
        took_over_from: Option<String>,
    },
    /// `node` was denied the lease because `holder` has it (or, with `holder` `None`, because
    /// the arbiter is in its restart quiet period).
    Denied {
        /// The requester.
        node: String,
        /// The current holder.
        holder: Option<String>,
        /// The holder's remaining time (or the rest of the quiet period).
        remaining: Duration,
    },
    /// `node` released the lease.
    Released {
        /// The former holder.
        node: String,
    },
    /// `node` asked to release a lease it does not hold.
    ReleaseDenied {
        /// The requester.
        node: String,
        /// The actual holder.
        holder: Option<String>,
    },
    /// `node` asked who holds the lease.
    Queried {
        /// The requester.
        node: String,
    },
    /// `node`'s lease ran out without renewal.
    Expired {
        /// The former holder.
        node: String,
    },
}

/// A request from a name that is not one of the cluster's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The name that asked.
    pub node: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` is not a node of this cluster", self.node)
    }
}

impl std::error::Error for Rejected {}

/// The arbiter of one cluster.
#[derive(Debug, Clone)]
pub struct Arbiter {
    lease: Duration,
    nodes: Vec<String>,
    /// No grant before this (restart quiet period).
    quiet_until: Time,
    holder: Option<Holder>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    node: String,
    expires: Time,
}

impl Arbiter {
    /// An arbiter started at `now` for a cluster of `nodes`, granting leases of `lease`. It
    /// grants nothing until `now + lease` (the restart quiet period).
    pub fn new(now: Time, lease: Duration, nodes: Vec<String>) -> Arbiter {
        Arbiter { lease, nodes, quiet_until: now + lease, holder: None }
    }

    /// An arbiter without the quiet period: for a first start known to follow no earlier run
    /// (tests, and a cluster that never had an arbiter).
    pub fn new_without_quiet_period(lease: Duration, nodes: Vec<String>) -> Arbiter {
        Arbiter { lease, nodes, quiet_until: Time::ZERO, holder: None }
    }

    /// The lease length.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The current holder and when its lease ends, if it has not ended by `now`.
    pub fn holder(&self, now: Time) -> Option<(&str, Time)> {
        self.holder.as_ref().filter(|h| now < h.expires).map(|h| (h.node.as_str(), h.expires))
    }

    /// When [`Self::handle_timeout`] should next be called: the holder's expiry.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.holder.as_ref().map(|h| h.expires)
    }

    /// Forget a lease that has run out by `now`; the event says whose.
    pub fn handle_timeout(&mut self, now: Time) -> Option<ArbEvent> {
        match &self.holder {
            Some(h) if now >= h.expires => {
                let node = h.node.clone();
                self.holder = None;
                Some(ArbEvent::Expired { node })
            }
            _ => None,
        }
    }

    /// Answer `op` from `node` at `now`. The events are what to log, in order (an expiry
    /// noticed on the way comes first).
    pub fn request(
        &mut self,
        now: Time,
        node: &str,
        op: ArbOp,
    ) -> Result<(Grant, Vec<ArbEvent>), Rejected> {
        if !self.nodes.iter().any(|n| n == node) {
            return Err(Rejected { node: node.to_string() });
        }
        let mut events: Vec<ArbEvent> = self.handle_timeout(now).into_iter().collect();
        let expired_from = match events.first() {
            Some(ArbEvent::Expired { node }) => Some(node.clone()),
            _ => None,
        };
        let grant = match op {
            ArbOp::Acquire | ArbOp::Renew => {
                let renewed = self.holder.as_ref().is_some_and(|h| h.node == node);
                if let Some(h) = self.holder.as_ref().filter(|h| h.node != node) {
                    let remaining = h.expires.since(now);
                    events.push(ArbEvent::Denied {
                        node: node.to_string(),
                        holder: Some(h.node.clone()),
                        remaining,
                    });
                    self.answer(false, now)
                } else if now < self.quiet_until {
                    events.push(ArbEvent::Denied {
                        node: node.to_string(),
                        holder: None,
                        remaining: self.quiet_until.since(now),
                    });
                    Grant {
                        granted: false,
                        holder: None,
                        lease_ms: millis(self.lease),
                        remaining_ms: millis(self.quiet_until.since(now)),
                    }
                } else {
                    self.holder =
                        Some(Holder { node: node.to_string(), expires: now + self.lease });
                    events.push(ArbEvent::Granted {
                        node: node.to_string(),
                        renewed,
                        took_over_from: expired_from.filter(|n| n != node),
                    });
                    self.answer(true, now)
                }
            }
            ArbOp::Release => {
                if self.holder.as_ref().is_some_and(|h| h.node == node) {
                    self.holder = None;
                    events.push(ArbEvent::Released { node: node.to_string() });
                    self.answer(true, now)
                } else {
                    events.push(ArbEvent::ReleaseDenied {
                        node: node.to_string(),
                        holder: self.holder.as_ref().map(|h| h.node.clone()),
                    });
                    self.answer(false, now)
                }
            }
            ArbOp::Query => {
                let holds = self.holder.as_ref().is_some_and(|h| h.node == node);
                events.push(ArbEvent::Queried { node: node.to_string() });
                self.answer(holds, now)
            }
        };
        Ok((grant, events))
    }

    fn answer(&self, granted: bool, now: Time) -> Grant {
        Grant {
            granted,
            holder: self.holder.as_ref().map(|h| h.node.clone()),
            lease_ms: millis(self.lease),
            remaining_ms: self.holder.as_ref().map_or(0, |h| millis(h.expires.since(now))),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(4);

    fn arbiter() -> Arbiter {
        Arbiter::new_without_quiet_period(LEASE, vec!["node1".into(), "node2".into()])
    }

    fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    fn ask(a: &mut Arbiter, ms: u64, node: &str, op: ArbOp) -> Grant {
        a.request(t(ms), node, op).expect("known node").0
    }

    #[test]
    fn the_first_requester_gets_the_lease_and_the_other_is_told_who_has_it() {
        let mut a = arbiter();
        let g = ask(&mut a, 1000, "node1", ArbOp::Acquire);
        assert_eq!(
            g,
            Grant {
                granted: true,
                holder: Some("node1".into()),
                lease_ms: 4000,
                remaining_ms: 4000
            }
        );
        let g = ask(&mut a, 1500, "node2", ArbOp::Acquire);
        assert_eq!(
            g,
            Grant {
                granted: false,
                holder: Some("node1".into()),
                lease_ms: 4000,
                remaining_ms: 3500
            }
        );
        assert_eq!(a.holder(t(1500)), Some(("node1", t(5000))));
    }

    #[test]
    fn renewing_extends_the_lease_from_now() {
        let mut a = arbiter();
        ask(&mut a, 0, "node1", ArbOp::Acquire);
        let g = ask(&mut a, 3000, "node1", ArbOp::Renew);
        assert!(g.granted);
        assert_eq!(g.remaining_ms, 4000);
        assert_eq!(a.poll_timeout(), Some(t(7000)));
        // Beyond the first lease but within the renewed one: still denied to node2.
        assert!(!ask(&mut a, 6999, "node2", ArbOp::Acquire).granted);
        assert!(ask(&mut a, 7000, "node2", ArbOp::Acquire).granted);
    }

    #[test]
    fn the_lease_ends_exactly_at_grant_plus_lease() {
        let mut a = arbiter();
        ask(&mut a, 100, "node1", ArbOp::Acquire);
        let g = ask(&mut a, 4099, "node2", ArbOp::Acquire);
        assert!(!g.granted);
        assert_eq!(g.remaining_ms, 1);
        let (g, events) = a.request(t(4100), "node2", ArbOp::Acquire).expect("known");
        assert!(g.granted);
        assert_eq!(g.holder.as_deref(), Some("node2"));
        assert_eq!(
            events,
            vec![
                ArbEvent::Expired { node: "node1".into() },
                ArbEvent::Granted {
                    node: "node2".into(),
                    renewed: false,
                    took_over_from: Some("node1".into())
                },
            ]
        );
        // node1's late renewal is denied now: node2 holds it.
        let g = ask(&mut a, 4200, "node1", ArbOp::Renew);
        assert!(!g.granted);
        assert_eq!(g.holder.as_deref(), Some("node2"));
    }

    #[test]
    fn an_expired_holder_may_take_the_lease_again_if_nobody_else_did() {
        let mut a = arbiter();
        ask(&mut a, 0, "node1", ArbOp::Acquire);
        let (g, events) = a.request(t(10_000), "node1", ArbOp::Renew).expect("known");
        assert!(g.granted);
        assert_eq!(events[0], ArbEvent::Expired { node: "node1".into() });
        assert_eq!(
            events[1],
            ArbEvent::Granted { node: "node1".into(), renewed: false, took_over_from: None }
        );
    }

    #[test]
    fn handle_timeout_reports_the_expiry_once() {
        let mut a = arbiter();
        ask(&mut a, 0, "node1", ArbOp::Acquire);
        assert_eq!(a.handle_timeout(t(3999)), None);
        assert_eq!(a.handle_timeout(t(4000)), Some(ArbEvent::Expired { node: "node1".into() }));
        assert_eq!(a.handle_timeout(t(4001)), None);
        assert_eq!(a.poll_timeout(), None);
        assert_eq!(a.holder(t(4001)), None);
    }

    #[test]
    fn only_the_holder_can_release() {
        let mut a = arbiter();
        ask(&mut a, 0, "node1", ArbOp::Acquire);
        let (g, events) = a.request(t(10), "node2", ArbOp::Release).expect("known");
        assert!(!g.granted);
        assert_eq!(
            events,
            vec![ArbEvent::ReleaseDenied { node: "node2".into(), holder: Some("node1".into()) }]
        );
        let (g, events) = a.request(t(20), "node1", ArbOp::Release).expect("known");
        assert_eq!(g, Grant { granted: true, holder: None, lease_ms: 4000, remaining_ms: 0 });
        assert_eq!(events, vec![ArbEvent::Released { node: "node1".into() }]);
        // Released: node2 gets it at once, long before the old lease would have run out.
        assert!(ask(&mut a, 30, "node2", ArbOp::Acquire).granted);
    }

    #[test]
    fn query_changes_nothing() {
        let mut a = arbiter();
        let g = ask(&mut a, 0, "node2", ArbOp::Query);
        assert_eq!(g, Grant { granted: false, holder: None, lease_ms: 4000, remaining_ms: 0 });
        ask(&mut a, 0, "node1", ArbOp::Acquire);
        let g = ask(&mut a, 1000, "node1", ArbOp::Query);
        assert!(g.granted);
        assert_eq!(g.remaining_ms, 3000);
        let g = ask(&mut a, 1000, "node2", ArbOp::Query);
        assert!(!g.granted);
        assert_eq!(g.holder.as_deref(), Some("node1"));
        assert_eq!(a.poll_timeout(), Some(t(4000)), "a query does not extend the lease");
    }

    #[test]
    fn unknown_nodes_are_rejected_and_change_nothing() {
        let mut a = arbiter();
        ask(&mut a, 0, "node1", ArbOp::Acquire);
        let err = a.request(t(10), "node3", ArbOp::Acquire).expect_err("unknown");
        assert_eq!(err, Rejected { node: "node3".into() });
        assert_eq!(a.holder(t(10)), Some(("node1", t(4000))));
    }

    #[test]
    fn a_restarted_arbiter_grants_nothing_for_one_lease() {
        let mut a = Arbiter::new(t(50_000), LEASE, vec!["node1".into(), "node2".into()]);
        let (g, events) = a.request(t(51_000), "node2", ArbOp::Acquire).expect("known");
        assert_eq!(g, Grant { granted: false, holder: None, lease_ms: 4000, remaining_ms: 3000 });
        assert_eq!(
            events,
            vec![ArbEvent::Denied {
                node: "node2".into(),
                holder: None,
                remaining: Duration::from_secs(3)
            }]
        );
        assert!(!ask(&mut a, 53_999, "node1", ArbOp::Renew).granted);
        assert!(ask(&mut a, 54_000, "node1", ArbOp::Renew).granted);
        assert!(!ask(&mut a, 54_001, "node2", ArbOp::Acquire).granted);
    }
}
