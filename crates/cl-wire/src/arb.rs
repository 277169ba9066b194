//! Lease arbitrator messages: between the nodes' cldaemon (`cl_daemon::arbclient`) and
//! `clarbd` on a third host, one UDP datagram each way, inside authenticated frames of kind
//! [`crate::Kind::Arbitrator`] sealed with the cluster key.
//!
//! A node's frame carries its own node name as the frame's sender and an [`ArbRequest`]; clarbd
//! answers with a frame whose sender is [`ARBITRATOR_SENDER`] and an [`ArbReply`] carrying the
//! request's `seq`. Replays are refused by the frames' replay windows (per sender and epoch), so
//! a recorded request or reply cannot be played back. What the answers mean is decided in
//! `cl_core::arbiter`.

use serde::{Deserialize, Serialize};

/// The frame sender name clarbd uses for its replies.
pub const ARBITRATOR_SENDER: &str = "clarbd";

/// What a node asks of the arbitrator: the core's own vocabulary, carried as it is.
pub use cl_core::arbiter::ArbOp;

/// A node's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArbRequest {
    /// The requesting node; must equal the frame's sender.
    pub node: String,
    /// What it asks.
    pub op: ArbOp,
    /// Chosen by the client, echoed in the reply so the client can match it.
    pub seq: u64,
}

/// clarbd's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArbReply {
    /// The request's `seq`.
    pub seq: u64,
    /// Acquire/Renew: the requester holds the lease now; Release: released; Query: the
    /// requester holds it.
    pub granted: bool,
    /// Who holds the lease now (`None`: nobody).
    pub holder: Option<String>,
    /// The lease length, in milliseconds.
    pub lease_ms: u64,
    /// How long the holder's lease still runs at the arbitrator, in milliseconds (with no
    /// holder and `granted` false: how long the arbitrator's restart quiet period still lasts).
    pub remaining_ms: u64,
    /// Why the request was refused outright (not a cluster node, sender mismatch), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The request did not echo this arbitrator run's epoch (clarbd restarted, or the client
    /// has not heard it yet): nothing was done; ask again echoing this reply's epoch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterKey, Kind, Receiver, Sender};

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_bytes(&[byte; 32]).expect("valid key")
    }

    #[test]
    fn a_request_and_its_reply_round_trip_through_authenticated_frames() {
        let mut node = Sender::new(key(7), "cluster1", "node1", 1);
        let mut arb_rx = Receiver::new(key(7), "cluster1");
        let request = ArbRequest { node: "node1".into(), op: ArbOp::Acquire, seq: 42 };
        let frame = node.seal(Kind::Arbitrator, &request).expect("sealed");
        let (header, got): (_, ArbRequest) = arb_rx.receive(&frame).expect("accepted");
        assert_eq!(header.kind, Kind::Arbitrator);
        assert_eq!(header.sender, "node1");
        assert_eq!(got, request);
        // The same datagram again is a replay.
        assert!(arb_rx.receive::<ArbRequest>(&frame).is_none());

        let mut arb = Sender::new(key(7), "cluster1", ARBITRATOR_SENDER, 9);
        let mut node_rx = Receiver::new(key(7), "cluster1");
        let reply = ArbReply {
            seq: 42,
            granted: false,
            holder: Some("node2".into()),
            lease_ms: 4000,
            remaining_ms: 1234,
            error: None,
            stale: false,
        };
        let frame = arb.seal(Kind::Arbitrator, &reply).expect("sealed");
        let (header, got): (_, ArbReply) = node_rx.receive(&frame).expect("accepted");
        assert_eq!(header.sender, ARBITRATOR_SENDER);
        assert_eq!(got, reply);
    }

    #[test]
    fn a_frame_sealed_with_another_key_is_refused() {
        let mut node = Sender::new(key(8), "cluster1", "node1", 1);
        let mut arb_rx = Receiver::new(key(7), "cluster1");
        let frame = node
            .seal(Kind::Arbitrator, &ArbRequest { node: "node1".into(), op: ArbOp::Query, seq: 1 })
            .expect("sealed");
        assert!(arb_rx.receive::<ArbRequest>(&frame).is_none());
        assert_eq!(arb_rx.counters().bad_mac, 1);
    }

    #[test]
    fn the_body_is_plain_json() {
        let text =
            serde_json::to_string(&ArbRequest { node: "node1".into(), op: ArbOp::Renew, seq: 3 })
                .expect("json");
        assert_eq!(text, r#"{"node":"node1","op":"renew","seq":3}"#);
    }
}
