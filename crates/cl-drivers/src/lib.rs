//! Resource drivers for linuxha: the real-world side of the decision core's actions
//! (ARCHITECTURE.md §1, §4). Each driver talks to the kernel directly (netlink, raw sockets)
//! rather than shelling out, so that errors are typed and timings are ours; DRBD and LVM are
//! driven through their own tools (drbdadm, drbdsetup, lvm), bounded by deadlines, with errors
//! that name the command line and its stderr.

#![warn(missing_docs)]

pub mod blockdev;
pub mod drbd;
pub mod fence;
pub mod fs;
pub mod lsb;
pub mod lvm;
pub mod monitor;
pub mod ocf;
pub mod script;
pub mod tool;
pub mod vip;
