//! The takeover guard's status (cl-core `guard::GuardStatus`) as the typed summary that
//! `clstat --json` and the metrics carry ([`GuardSummary`]): the gates without their times on
//! the manager's clock, the lease with what is left of it.

use cl_core::guard::{Gate, GuardStatus, LeaseView};
use cl_core::Time;
use cl_wire::msg::{GuardSummary, LeaseState, LeaseSummary, PeerTakeover, TakeoverStage};

/// The guard's status, typed, for `clstat --json` and the metrics.
pub fn summary(status: &GuardStatus, local: &str, now: Time) -> GuardSummary {
    let peers = status
        .gates
        .iter()
        .map(|(peer, gate)| {
            let (stage, fence_attempts) = match gate {
                Gate::Idle => (TakeoverStage::Idle, 0),
                Gate::StandBy => (TakeoverStage::StandBy, 0),
                Gate::Lease => (TakeoverStage::Lease, 0),
                Gate::FenceAt { attempts, .. } => (TakeoverStage::FenceWait, *attempts),
                Gate::Fencing { attempts } => (TakeoverStage::Fencing, *attempts),
                Gate::Probing => (TakeoverStage::Probing, 0),
                Gate::ProbeAt { .. } => (TakeoverStage::PeerAnswers, 0),
                Gate::Settle { .. } => (TakeoverStage::Settle, 0),
                Gate::Delay { .. } => (TakeoverStage::Delay, 0),
                Gate::Cleared { .. } => (TakeoverStage::Cleared, 0),
            };
            PeerTakeover { peer: peer.clone(), stage, fence_attempts }
        })
        .collect();
    let lease = status.lease.as_ref().map(|view| match view {
        LeaseView::NotNeeded => {
            LeaseSummary { state: LeaseState::NotNeeded, holder: None, remaining_ms: None }
        }
        LeaseView::Asking => {
            LeaseSummary { state: LeaseState::Asking, holder: None, remaining_ms: None }
        }
        LeaseView::Held { until } => LeaseSummary {
            state: LeaseState::Held,
            holder: Some(local.to_string()),
            remaining_ms: Some(until.since(now).as_millis() as u64),
        },
        LeaseView::Denied { holder } => {
            LeaseSummary { state: LeaseState::Denied, holder: holder.clone(), remaining_ms: None }
        }
        LeaseView::NoAnswer => {
            LeaseSummary { state: LeaseState::NoAnswer, holder: None, remaining_ms: None }
        }
    });
    GuardSummary { peers, lease }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    #[test]
    fn gates_keep_their_attempts_and_a_held_lease_names_this_node() {
        let now = Time::ZERO + Duration::from_secs(10);
        let gates = BTreeMap::from([
            ("node1".to_string(), Gate::FenceAt { at: now, attempts: 2 }),
            ("node3".to_string(), Gate::Cleared { fenced: true }),
        ]);
        let lease = Some(LeaseView::Held { until: now + Duration::from_millis(1500) });
        let status = GuardStatus { gates, lease, alarms: vec![] };
        let typed = summary(&status, "node2", now);
        assert_eq!(
            typed.peers,
            vec![
                PeerTakeover {
                    peer: "node1".into(),
                    stage: TakeoverStage::FenceWait,
                    fence_attempts: 2
                },
                PeerTakeover {
                    peer: "node3".into(),
                    stage: TakeoverStage::Cleared,
                    fence_attempts: 0
                },
            ]
        );
        assert_eq!(
            typed.lease,
            Some(LeaseSummary {
                state: LeaseState::Held,
                holder: Some("node2".into()),
                remaining_ms: Some(1500)
            })
        );
        let denied = GuardStatus {
            gates: BTreeMap::new(),
            lease: Some(LeaseView::Denied { holder: Some("node1".into()) }),
            alarms: vec![],
        };
        let lease = summary(&denied, "node2", now).lease.expect("a lease");
        assert_eq!((lease.state, lease.holder.as_deref()), (LeaseState::Denied, Some("node1")));
    }
}
