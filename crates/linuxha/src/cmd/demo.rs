//! `linuxha demo`: a two-node cluster in network namespaces, built and shown, then removed.

use crate::cli::DemoArgs;
use crate::fail::{Failure, Outcome};

/// Run the demonstration.
pub fn run(_args: &DemoArgs) -> Outcome<()> {
    Err(Failure::runtime("demo: not wired yet"))
}
