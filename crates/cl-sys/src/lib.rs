//! Thin Linux wrappers for the linuxha daemons: raw ICMP echo, realtime scheduling and memory
//! locking, logging set-up, process plumbing (daemonize, named children, pid files) and UDP
//! sockets bound to a device, a periodic timerfd clock, and dropping mapped start-up pages.
//!
//! Everything here is Linux-only and deliberately small: policy lives in the daemons and the
//! decision core; this crate only makes the system calls and turns their failures into errors.

pub mod clock;
pub mod icmp;
pub mod logging;
pub mod process;
pub mod ratelimit;
pub mod realtime;
pub mod rlimit;
pub mod ticker;
pub mod trim;
pub mod udp;
