//! The authenticated frame codec that every linuxha daemon uses between nodes.
//!
//! Each frame carries the cluster name, the sending node, the sender's epoch (one per daemon
//! start) and a sequence number, an echo of the receiver's run ([`fresh`]), a serde_json body, and an HMAC-SHA256 tag over all of it made
//! with the cluster key (ARCHITECTURE.md §5, style-anchors.md §8.7). The layout is drawn in
//! [`codec`].
//!
//! This crate is sans-IO: no sockets, no clock, no async. Bytes come in and go out as slices and
//! vectors; epochs are passed in by the caller. The daemon shells own the sockets; `cl-core` and
//! `cl-membership` own what the messages mean (the body types live with them or in a later
//! per-channel module here).
//!
//! ```text
//!   sending node                                       receiving node
//!   ┌──────────────────────────────┐                   ┌──────────────────────────────────────┐
//!   │ Sender::seal(kind, &body)    │  frame (UDP/TCP)  │ Receiver::receive(&bytes)            │
//!   │   header + serde_json body   │ ────────────────► │  decode: size, layout, magic,        │
//!   │   + HMAC-SHA256 tag          │                   │    version, MAC, cluster, body       │
//!   │   seq += 1                   │                   │  ReplayWindow per (sender, kind)     │
//!   └──────────────────────────────┘                   │  Counters: every drop is counted     │
//!                                                      └──────────────────────────────────────┘
//! ```
//!
//! Decoding never panics, whatever the bytes: every way a frame can be wrong is a
//! [`DecodeError`] or a [`ReplayError`], counted in [`Counters`] for `clstat --verbose`.

pub mod arb;
pub mod codec;
pub mod daemon;
pub mod endpoint;
pub mod fresh;
pub mod key;
pub mod lock;
pub mod msg;
pub mod replay;
pub mod status;
pub mod storage;

pub use codec::{
    decode, encode, frame_len, DecodeError, EncodeError, Header, Kind, MAX_FRAME, MIN_FRAME,
};
pub use daemon::Daemon;
pub use endpoint::{Counters, ReceiveError, Receiver, Sender};
pub use fresh::{Challenges, EchoBook, Hello};
pub use key::{ClusterKey, KeyError};
pub use replay::{ReplayError, ReplayWindow};
