//! The replay window: each authentic frame is accepted at most once.
//!
//! Per sender, the window remembers the newest epoch, the highest sequence number in it, and a
//! 64-bit bitmap of which of the 64 sequence numbers up to that one have been seen (the sliding
//! window of RFC 4303 §3.4.3). Frames may arrive out of order within the window (UDP on two
//! heartbeat networks does that); anything older, already seen, or from an older epoch is refused.
//!
//! Only feed it frames whose MAC has been verified. The window moves forward on every accepted
//! frame, so if unauthenticated frames could reach it, a forger could send seq = u64::MAX (or a
//! huge epoch) and make every genuine frame after it look stale: a denial of service with no key.

use serde::Serialize;
use thiserror::Error;

/// Which (epoch, seq) pairs one sender has already used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayWindow {
    current: Option<Position>,
}

/// The newest epoch, its highest seq, and which of the seqs just below were seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct Position {
    epoch: u64,
    highest: u64,
    /// Bit `i` set: `highest - i` was seen. Bit 0 (`highest` itself) is always set.
    seen: u64,
}

/// Why an authentic frame was refused as a replay.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// From an earlier run of the sender than the newest one seen.
    #[error("epoch {epoch} is older than the sender's current epoch {current}: a frame from before it restarted")]
    StaleEpoch {
        /// Epoch in the frame.
        epoch: u64,
        /// Newest epoch seen from this sender.
        current: u64,
    },
    /// Too far behind the newest frame to tell whether it was seen.
    #[error("sequence {seq} is {} or more behind the newest, {highest}", ReplayWindow::WIDTH)]
    TooOld {
        /// Sequence number in the frame.
        seq: u64,
        /// Highest sequence number seen in this epoch.
        highest: u64,
    },
    /// Already accepted once: a duplicate or a replay.
    #[error("sequence {seq} was already received")]
    Replayed {
        /// Sequence number in the frame.
        seq: u64,
    },
}

impl ReplayWindow {
    /// How many sequence numbers, up to the highest, are remembered.
    pub const WIDTH: u64 = 64;

    /// An empty window: the first authentic frame is accepted whatever its epoch and seq.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accept `(epoch, seq)` once, or say why not. Call only for frames whose MAC was verified.
    ///
    /// A higher epoch than seen so far starts a fresh window: the sender restarted (epochs come
    /// from its start time, so they grow) and counts seq from 0 again.
    pub fn accept(&mut self, epoch: u64, seq: u64) -> Result<(), ReplayError> {
        let fresh = Position { epoch, highest: seq, seen: 1 };
        let Some(pos) = self.current.as_mut() else {
            self.current = Some(fresh);
            return Ok(());
        };
        if epoch < pos.epoch {
            return Err(ReplayError::StaleEpoch { epoch, current: pos.epoch });
        }
        if epoch > pos.epoch {
            *pos = fresh;
            return Ok(());
        }
        if seq > pos.highest {
            let ahead = seq - pos.highest;
            pos.seen = if ahead >= Self::WIDTH { 1 } else { (pos.seen << ahead) | 1 };
            pos.highest = seq;
            return Ok(());
        }
        let behind = pos.highest - seq;
        if behind >= Self::WIDTH {
            return Err(ReplayError::TooOld { seq, highest: pos.highest });
        }
        let bit = 1u64 << behind;
        if pos.seen & bit != 0 {
            return Err(ReplayError::Replayed { seq });
        }
        pos.seen |= bit;
        Ok(())
    }

    /// The newest epoch accepted, if any frame was.
    pub fn epoch(&self) -> Option<u64> {
        self.current.map(|pos| pos.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_frame_is_accepted_whatever_it_carries() {
        let mut window = ReplayWindow::new();
        assert_eq!(window.accept(u64::MAX, u64::MAX), Ok(()));
        assert_eq!(window.epoch(), Some(u64::MAX));
    }

    #[test]
    fn in_order_frames_are_accepted_and_duplicates_refused() {
        let mut window = ReplayWindow::new();
        for seq in 0..200 {
            assert_eq!(window.accept(5, seq), Ok(()));
            assert_eq!(window.accept(5, seq), Err(ReplayError::Replayed { seq }));
        }
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once_each() {
        let mut window = ReplayWindow::new();
        window.accept(1, 100).expect("fresh seq");
        // Every seq in the 64 up to the highest arrives late, in reverse, then again.
        for seq in (37..100).rev() {
            assert_eq!(window.accept(1, seq), Ok(()), "seq {seq}");
        }
        for seq in 37..=100 {
            assert_eq!(window.accept(1, seq), Err(ReplayError::Replayed { seq }));
        }
        assert_eq!(window.accept(1, 36), Err(ReplayError::TooOld { seq: 36, highest: 100 }));
    }

    #[test]
    fn a_gap_keeps_the_missing_seqs_acceptable() {
        let mut window = ReplayWindow::new();
        window.accept(1, 0).expect("fresh seq");
        window.accept(1, 10).expect("fresh seq");
        window.accept(1, 5).expect("fresh seq");
        assert_eq!(window.accept(1, 0), Err(ReplayError::Replayed { seq: 0 }));
        assert_eq!(window.accept(1, 5), Err(ReplayError::Replayed { seq: 5 }));
        for seq in [1, 2, 3, 4, 6, 7, 8, 9] {
            assert_eq!(window.accept(1, seq), Ok(()));
        }
    }

    #[test]
    fn a_jump_of_the_window_width_or_more_forgets_everything_older() {
        let mut window = ReplayWindow::new();
        window.accept(1, 0).expect("fresh seq");
        window.accept(1, 64).expect("fresh seq");
        assert_eq!(window.accept(1, 0), Err(ReplayError::TooOld { seq: 0, highest: 64 }));
        assert_eq!(window.accept(1, 1), Ok(()));
        window.accept(1, 1000).expect("fresh seq");
        assert_eq!(window.accept(1, 1000 - 63), Ok(()));
        assert_eq!(
            window.accept(1, 1000 - 64),
            Err(ReplayError::TooOld { seq: 936, highest: 1000 })
        );
    }

    #[test]
    fn a_restarted_sender_starts_a_fresh_window() {
        let mut window = ReplayWindow::new();
        for seq in 0..500 {
            window.accept(1_000, seq).expect("fresh seq");
        }
        assert_eq!(window.accept(2_000, 0), Ok(()));
        assert_eq!(window.accept(2_000, 1), Ok(()));
        assert_eq!(window.accept(2_000, 0), Err(ReplayError::Replayed { seq: 0 }));
        assert_eq!(window.epoch(), Some(2_000));
    }

    #[test]
    fn an_older_epoch_is_refused_even_with_a_new_seq() {
        let mut window = ReplayWindow::new();
        window.accept(2_000, 3).expect("fresh seq");
        assert_eq!(
            window.accept(1_999, 4),
            Err(ReplayError::StaleEpoch { epoch: 1_999, current: 2_000 })
        );
        // The refusal moved nothing.
        assert_eq!(window.accept(2_000, 4), Ok(()));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut window = ReplayWindow::new();
        window.accept(0, 0).expect("fresh seq");
        window.accept(0, u64::MAX).expect("fresh seq");
        assert_eq!(window.accept(0, u64::MAX - 63), Ok(()));
        assert!(matches!(window.accept(0, 0), Err(ReplayError::TooOld { .. })));
    }
}
