//! The commands, one module per family.

pub mod build;
pub mod demo;
pub mod install;
pub mod status;
