//! The commands, one module per family.

pub mod build;
pub mod cluster;
pub mod demo;
pub mod demo_replicated;
pub mod install;
pub mod lock;
pub mod migrate;
pub mod package;
pub mod splitbrain;
pub mod storage;
pub mod vgbuild;
