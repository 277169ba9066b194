//! The peer-alive probe's verdict: the shell reports what each probed address did, the core
//! decides whether the peer counts as alive.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What one probed address did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSeen {
    /// The address probed (the peer's own, or an application address it could hold).
    pub address: IpAddr,
    /// What came back.
    pub answer: ProbeAnswer,
}

/// The outcome of probing one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum ProbeAnswer {
    /// Something answered (ARP reply or ND advertisement).
    Answered {
        /// Who answered (its MAC address).
        by: String,
    },
    /// Nothing answered within the probe time.
    Silent,
    /// The address could not be probed from this node (its interface down, say).
    Error {
        /// Why.
        reason: String,
    },
}

/// Whether the peer is alive, and what to say about it. An address that answered proves it
/// alive; when nothing could be probed at all (every local interface down) nothing is known,
/// so the peer counts as alive rather than as gone.
pub fn verdict(seen: &[ProbeSeen]) -> (bool, String) {
    let answered: Vec<String> = seen
        .iter()
        .filter_map(|s| match &s.answer {
            ProbeAnswer::Answered { by } => Some(format!("{} answered from {by}", s.address)),
            _ => None,
        })
        .collect();
    let probed: Vec<String> = seen
        .iter()
        .filter(|s| s.answer == ProbeAnswer::Silent)
        .map(|s| s.address.to_string())
        .collect();
    let alive = !answered.is_empty() || probed.is_empty();
    let detail = if !answered.is_empty() {
        answered.join(", ")
    } else if probed.is_empty() {
        "no address could be probed from this node".to_string()
    } else {
        format!("probed {}", probed.join(", "))
    };
    (alive, detail)
}
