//! The decision core of linuxha: pure state machines, no IO (ARCHITECTURE.md §2).
//!
//! Daemons feed facts in (`handle(now, input)`, `handle_timeout(now)`) and take requests out
//! (`poll_action()`), asking `poll_timeout()` when to call again — the quinn-proto shape. Time
//! is an input ([`Time`]), so the same code runs under the daemons' clock, in unit tests with a
//! fake clock, and in a deterministic simulator. Nothing here opens a socket, reads a clock,
//! spawns a thread or touches a file.

pub mod apps;
pub mod arbiter;
pub mod dad;
pub mod guard;
pub mod membership;
pub mod node;
pub mod storage;
pub mod time;
pub mod timing;

pub use membership::{Action, Input, LocalState, Membership, MembershipConfig, PeerState, Verdict};
pub use node::{Node, NodeAction, NodeConfig, NodeInput};
pub use time::Time;
