//! [`Sender`] and [`Receiver`]: the codec plus sequence numbers, replay windows and counters,
//! so that a daemon shell only moves bytes.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::codec::{decode, encode, DecodeError, EncodeError, Header, Kind};
use crate::key::ClusterKey;
use crate::replay::{ReplayError, ReplayWindow};

/// Seals outgoing frames for one daemon run on one node, numbering them.
///
/// Use one `Sender` per daemon run and channel; a new run needs a new, higher epoch, never used
/// before on this node (cl-daemon's `epoch` module takes them from a persisted counter, not the
/// clock), or peers will refuse its frames as replays.
#[derive(Debug, Clone)]
pub struct Sender {
    key: ClusterKey,
    cluster: String,
    node: String,
    epoch: u64,
    next_seq: u64,
}

impl Sender {
    /// A sender for `node` in `cluster` whose first frame will carry `epoch` and seq 0.
    pub fn new(
        key: ClusterKey,
        cluster: impl Into<String>,
        node: impl Into<String>,
        epoch: u64,
    ) -> Self {
        Sender { key, cluster: cluster.into(), node: node.into(), epoch, next_seq: 0 }
    }

    /// Encode `body` as the next frame on channel `kind`. The sequence number advances only when
    /// a frame is produced, so an encode error leaves no gap.
    pub fn seal<M: Serialize + ?Sized>(
        &mut self,
        kind: Kind,
        body: &M,
    ) -> Result<Vec<u8>, EncodeError> {
        self.seal_echoing(kind, body, 0)
    }

    /// As [`Self::seal`], echoing `echo`: a challenge the receiver issued in its current run (see
    /// [`crate::fresh`]), so it can tell this frame from one recorded before it restarted.
    pub fn seal_echoing<M: Serialize + ?Sized>(
        &mut self,
        kind: Kind,
        body: &M,
        echo: u64,
    ) -> Result<Vec<u8>, EncodeError> {
        let header = Header {
            kind,
            cluster: self.cluster.clone(),
            sender: self.node.clone(),
            epoch: self.epoch,
            seq: self.next_seq,
            echo,
        };
        let frame = encode(&self.key, &header, body)?;
        // 2^64 frames will not be sent in one run; saturating only avoids an overflow panic.
        self.next_seq = self.next_seq.saturating_add(1);
        Ok(frame)
    }

    /// Seal the following frames with `key` (a new cluster key), keeping the epoch and seq: the
    /// run goes on, so receivers' windows stay valid.
    pub fn rekey(&mut self, key: ClusterKey) {
        self.key = key;
    }

    /// The epoch every frame of this sender carries.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The seq the next sealed frame will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// How many frames a [`Receiver`] accepted, and how many it dropped for each reason.
///
/// Shown by `clstat --verbose`; a rising `bad_mac` usually means the key files differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counters {
    /// Authentic, fresh frames handed to the caller.
    pub accepted: u64,
    /// Larger than the frame limit.
    pub oversized: u64,
    /// Shorter than their layout.
    pub truncated: u64,
    /// Not starting with the linuxha magic.
    pub bad_magic: u64,
    /// Another protocol version.
    pub bad_version: u64,
    /// Failed authentication.
    pub bad_mac: u64,
    /// Authentic but for another cluster.
    pub wrong_cluster: u64,
    /// Trailing bytes, or authentic but unparsable contents.
    pub garbled: u64,
    /// Authentic but already seen, too old, or from an older epoch.
    pub replayed: u64,
    /// Authentic and new to the window, but echoing no challenge of this receiver's run: recorded
    /// before the receiver restarted (a replay), or sent before the sender heard the receiver's
    /// new run (a few at each restart).
    #[serde(default)]
    pub unfresh: u64,
}

impl Counters {
    /// Frames dropped for any reason.
    pub fn dropped(&self) -> u64 {
        [
            self.oversized,
            self.truncated,
            self.bad_magic,
            self.bad_version,
            self.bad_mac,
            self.wrong_cluster,
            self.garbled,
            self.replayed,
            self.unfresh,
        ]
        .iter()
        .fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    fn count(&mut self, dropped: &ReceiveError) {
        let counter = match dropped {
            ReceiveError::Decode(DecodeError::Oversized) => &mut self.oversized,
            ReceiveError::Decode(DecodeError::Truncated) => &mut self.truncated,
            ReceiveError::Decode(DecodeError::BadMagic) => &mut self.bad_magic,
            ReceiveError::Decode(DecodeError::UnsupportedVersion(_)) => &mut self.bad_version,
            ReceiveError::Decode(DecodeError::BadMac) => &mut self.bad_mac,
            ReceiveError::Decode(DecodeError::WrongCluster) => &mut self.wrong_cluster,
            ReceiveError::Decode(DecodeError::Garbled(_)) => &mut self.garbled,
            ReceiveError::Replay(_) => &mut self.replayed,
            ReceiveError::Unfresh { .. } => &mut self.unfresh,
        };
        *counter = counter.saturating_add(1);
    }
}

/// Why a [`Receiver`] dropped a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReceiveError {
    /// Not an authentic, well-formed frame for this cluster.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Authentic, but already accepted once or out of date.
    #[error("replayed frame: {0}")]
    Replay(#[from] ReplayError),
    /// Authentic and new to the window, but its echo is no challenge of this receiver's run.
    #[error("frame from {sender} (epoch {epoch}) echoes {echo}, no challenge of this run: recorded before this daemon started, or sent before {sender} heard it")]
    Unfresh {
        /// The sending node.
        sender: String,
        /// The sender's epoch: the run to echo back to it.
        epoch: u64,
        /// What the frame echoed.
        echo: u64,
    },
}

/// Authenticates incoming frames, refuses replays, and counts every drop.
///
/// One replay window is kept per (sender, kind): separate daemons on a node each have their own
/// epoch and seq, so sharing a window between channels would refuse one of them. A window is only
/// created for an authentic frame, so only key holders can add entries. The caller still decides
/// whether `header.sender` and `header.kind` are what this socket expects, and must drop frames
/// that carry its own node name (a reflected frame of its own is authentic too).
#[derive(Debug, Clone)]
pub struct Receiver {
    key: ClusterKey,
    cluster: String,
    windows: HashMap<(String, Kind), ReplayWindow>,
    counters: Counters,
}

impl Receiver {
    /// A receiver for frames of `cluster` under `key`.
    pub fn new(key: ClusterKey, cluster: impl Into<String>) -> Self {
        Receiver {
            key,
            cluster: cluster.into(),
            windows: HashMap::new(),
            counters: Counters::default(),
        }
    }

    /// The header and body of an authentic, fresh frame; `None` (counted) for anything else.
    pub fn receive<M: DeserializeOwned>(&mut self, bytes: &[u8]) -> Option<(Header, M)> {
        self.try_receive(bytes).ok()
    }

    /// As [`Self::receive`], but says why a frame was dropped, for a rate-limited warning that
    /// names the peer address. The drop is counted either way.
    pub fn try_receive<M: DeserializeOwned>(
        &mut self,
        bytes: &[u8],
    ) -> Result<(Header, M), ReceiveError> {
        self.try_receive_fresh(bytes, |_| true)
    }

    /// As [`Self::try_receive`], and the frame must also echo a challenge of this run
    /// (`is_challenge(header.echo)`), or it is refused as [`ReceiveError::Unfresh`]. The window
    /// still moves for an unfresh frame: it is authentic and new, and the sender's epoch it
    /// carries is what the caller echoes back (see [`crate::fresh`]).
    pub fn try_receive_fresh<M: DeserializeOwned>(
        &mut self,
        bytes: &[u8],
        is_challenge: impl Fn(u64) -> bool,
    ) -> Result<(Header, M), ReceiveError> {
        let result = self.check(bytes).and_then(|(header, body)| {
            if is_challenge(header.echo) {
                Ok((header, body))
            } else {
                Err(ReceiveError::Unfresh {
                    sender: header.sender,
                    epoch: header.epoch,
                    echo: header.echo,
                })
            }
        });
        match &result {
            Ok(_) => self.counters.accepted = self.counters.accepted.saturating_add(1),
            Err(dropped) => self.counters.count(dropped),
        }
        result
    }

    fn check<M: DeserializeOwned>(&mut self, bytes: &[u8]) -> Result<(Header, M), ReceiveError> {
        let (header, body) = decode(&self.key, &self.cluster, bytes)?;
        // Only now, with the MAC verified, may the frame move the window (see crate::replay).
        let window = self.windows.entry((header.sender.clone(), header.kind)).or_default();
        window.accept(header.epoch, header.seq)?;
        Ok((header, body))
    }

    /// Verify the following frames with `key` (a new cluster key), keeping the windows.
    pub fn rekey(&mut self, key: ClusterKey) {
        self.key = key;
    }

    /// Count a frame [`Self::try_receive`] accepted as unfresh after all: for a caller that
    /// checks the echo itself because it answers unfresh frames (the arbitrator tells a client
    /// its epoch that way).
    pub fn count_unfresh(&mut self) {
        self.counters.accepted = self.counters.accepted.saturating_sub(1);
        self.counters.unfresh = self.counters.unfresh.saturating_add(1);
    }

    /// What has been accepted and dropped so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::codec::MAX_FRAME;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Beat {
        up: bool,
        links: Vec<String>,
    }

    fn beat() -> Beat {
        Beat { up: true, links: vec!["eth0".into(), "eth1".into()] }
    }

    fn key() -> ClusterKey {
        ClusterKey::from_bytes(&[0x5a; 32]).expect("valid key")
    }

    fn node1(epoch: u64) -> Sender {
        Sender::new(key(), "alpha", "node1", epoch)
    }

    fn receiver() -> Receiver {
        Receiver::new(key(), "alpha")
    }

    #[test]
    fn sealed_frames_are_received_in_order_with_their_headers() {
        let mut tx = node1(7);
        let mut rx = receiver();
        for seq in 0..3 {
            let frame = tx.seal(Kind::Heartbeat, &beat()).expect("sealed");
            let (header, body): (Header, Beat) = rx.receive(&frame).expect("accepted");
            assert_eq!(
                header,
                Header {
                    kind: Kind::Heartbeat,
                    cluster: "alpha".into(),
                    sender: "node1".into(),
                    epoch: 7,
                    seq,
                    echo: 0,
                }
            );
            assert_eq!(body, beat());
        }
        assert_eq!(tx.next_seq(), 3);
        assert_eq!(*rx.counters(), Counters { accepted: 3, ..Counters::default() });
    }

    #[test]
    fn a_replayed_frame_is_refused_and_counted() {
        let mut tx = node1(7);
        let mut rx = receiver();
        let frame = tx.seal(Kind::Heartbeat, &beat()).expect("sealed");
        assert!(rx.receive::<Beat>(&frame).is_some());
        assert!(rx.receive::<Beat>(&frame).is_none());
        assert_eq!(
            rx.try_receive::<Beat>(&frame).expect_err("refused"),
            ReceiveError::Replay(ReplayError::Replayed { seq: 0 })
        );
        assert_eq!(*rx.counters(), Counters { accepted: 1, replayed: 2, ..Counters::default() });
    }

    #[test]
    fn reordered_frames_within_the_window_are_accepted_once_each() {
        let mut tx = node1(7);
        let mut rx = receiver();
        let frames: Vec<Vec<u8>> =
            (0..10).map(|_| tx.seal(Kind::Heartbeat, &beat()).expect("sealed")).collect();
        for i in [9, 3, 0, 8, 1, 2, 7, 4, 6, 5] {
            assert!(rx.receive::<Beat>(&frames[i]).is_some(), "frame {i}");
        }
        for frame in &frames {
            assert!(rx.receive::<Beat>(frame).is_none());
        }
        assert_eq!(*rx.counters(), Counters { accepted: 10, replayed: 10, ..Counters::default() });
    }

    #[test]
    fn a_restarted_sender_is_accepted_and_its_old_run_refused() {
        let mut old = node1(1_000);
        let mut rx = receiver();
        let old_frames: Vec<Vec<u8>> =
            (0..5).map(|_| old.seal(Kind::Heartbeat, &beat()).expect("sealed")).collect();
        for frame in &old_frames[..4] {
            assert!(rx.receive::<Beat>(frame).is_some());
        }
        // The daemon restarts: higher epoch, seq from 0 again.
        let mut new = node1(2_000);
        let (header, _) = rx
            .receive::<Beat>(&new.seal(Kind::Heartbeat, &beat()).expect("sealed"))
            .expect("accepted");
        assert_eq!((header.epoch, header.seq), (2_000, 0));
        // A frame of the old run, never seen before, is still refused.
        assert_eq!(
            rx.try_receive::<Beat>(&old_frames[4]).expect_err("refused"),
            ReceiveError::Replay(ReplayError::StaleEpoch { epoch: 1_000, current: 2_000 })
        );
        assert_eq!(rx.counters().replayed, 1);
    }

    #[test]
    fn senders_and_channels_have_separate_windows() {
        let mut rx = receiver();
        let mut n1_hb = node1(5);
        let mut n1_lock = node1(9);
        let mut n2_hb = Sender::new(key(), "alpha", "node2", 3);
        for _ in 0..3 {
            assert!(rx
                .receive::<Beat>(&n1_hb.seal(Kind::Heartbeat, &beat()).expect("sealed"))
                .is_some());
            assert!(rx
                .receive::<Beat>(&n1_lock.seal(Kind::Lock, &beat()).expect("sealed"))
                .is_some());
            assert!(rx
                .receive::<Beat>(&n2_hb.seal(Kind::Heartbeat, &beat()).expect("sealed"))
                .is_some());
        }
        assert_eq!(rx.counters().accepted, 9);
    }

    #[test]
    fn forged_frames_do_not_move_the_window() {
        let mut rx = receiver();
        let mut tx = node1(7);
        let first = tx.seal(Kind::Heartbeat, &beat()).expect("sealed");
        assert!(rx.receive::<Beat>(&first).is_some());
        // Same sender and cluster, far-future epoch and seq, but the wrong key.
        let mut forger = Sender::new(
            ClusterKey::from_bytes(&[1; 32]).expect("valid key"),
            "alpha",
            "node1",
            u64::MAX,
        );
        let forged = forger.seal(Kind::Heartbeat, &beat()).expect("sealed");
        assert_eq!(
            rx.try_receive::<Beat>(&forged).expect_err("refused"),
            ReceiveError::Decode(DecodeError::BadMac)
        );
        assert!(rx.receive::<Beat>(&tx.seal(Kind::Heartbeat, &beat()).expect("sealed")).is_some());
        assert_eq!(*rx.counters(), Counters { accepted: 2, bad_mac: 1, ..Counters::default() });
    }

    #[test]
    fn every_kind_of_drop_has_its_counter() {
        let mut rx = receiver();
        let mut tx = node1(7);
        let good = tx.seal(Kind::Heartbeat, &beat()).expect("sealed");
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let mut bad_version = good.clone();
        bad_version[2] = 9;
        let mut bad_mac = good.clone();
        *bad_mac.last_mut().expect("non-empty") ^= 1;
        let other_cluster =
            Sender::new(key(), "beta", "node1", 7).seal(Kind::Heartbeat, &beat()).expect("sealed");
        let mut trailing = good.clone();
        trailing.push(0);
        for bytes in [
            &vec![0u8; MAX_FRAME + 1][..],
            &good[..good.len() - 1],
            &bad_magic,
            &bad_version,
            &bad_mac,
            &other_cluster,
            &trailing,
            &good,
            &good,
        ] {
            let _ = rx.receive::<Beat>(bytes);
        }
        // An authentic frame whose body is not the type the caller expects is garbled too.
        assert!(rx.receive::<u32>(&tx.seal(Kind::Heartbeat, &beat()).expect("sealed")).is_none());
        let expected = Counters {
            accepted: 1,
            oversized: 1,
            truncated: 1,
            bad_magic: 1,
            bad_version: 1,
            bad_mac: 1,
            wrong_cluster: 1,
            garbled: 2,
            replayed: 1,
            unfresh: 0,
        };
        assert_eq!(*rx.counters(), expected);
        assert_eq!(rx.counters().dropped(), 9);
    }

    #[test]
    fn counters_serialize_for_clstat() {
        let counters = Counters { accepted: 4, bad_mac: 2, ..Counters::default() };
        assert_eq!(
            serde_json::to_string(&counters).expect("serialised"),
            r#"{"accepted":4,"oversized":0,"truncated":0,"bad_magic":0,"bad_version":0,"bad_mac":2,"wrong_cluster":0,"garbled":0,"replayed":0,"unfresh":0}"#
        );
    }

    #[test]
    fn an_encode_error_does_not_use_up_a_seq() {
        let mut tx = Sender::new(key(), "alpha", "", 1);
        assert!(matches!(
            tx.seal(Kind::Lock, &1),
            Err(EncodeError::NameLength { field: "sender", len: 0 })
        ));
        assert_eq!(tx.next_seq(), 0);
    }
}
