//! The decision core of linuxha: pure state machines, no IO (ARCHITECTURE.md §2).
//!
//! Daemons feed facts in (`handle(now, input)`, `handle_timeout(now)`) and take requests out
//! (`poll_action()`), asking `poll_timeout()` when to call again — the quinn-proto shape. Time
//! is an input ([`Time`]), so the same code runs under the daemons' clock, in unit tests with a
//! fake clock, and in a deterministic simulator. Nothing here opens a socket, reads a clock,
//! spawns a thread or touches a file.
//!
//! One node's decisions come from [`Node`] (`node`): it owns the membership, the takeover guard
//! and the applications machine and routes between them, so a shell (cldaemon, the simulator,
//! a test) only turns [`NodeAction`]s into IO and reports what it saw as [`NodeInput`]s. The
//! machines stay public for their own tests and for the status they show.

pub mod apps;
pub mod arbiter;
pub mod dad;
pub mod guard;
pub mod locks;
pub mod membership;
pub mod node;
pub mod notice;
pub mod relay;
pub mod storage;
pub mod time;
pub mod timing;

pub use membership::{Action, Input, LocalState, Membership, MembershipConfig, PeerState, Verdict};
pub use node::{Node, NodeAction, NodeConfig, NodeInput};
pub use time::Time;
