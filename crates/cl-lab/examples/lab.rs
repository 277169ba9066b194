//! `cargo run -p cl-lab --example lab -- <command>`: the `linuxha lab` commands without the
//! `linuxha` binary, for trying the lab while the main binary is being built.

use clap::Parser;

/// Command line: the same arguments as `linuxha lab`.
#[derive(Parser, Debug)]
#[command(name = "lab")]
struct Top {
    #[command(flatten)]
    lab: cl_lab::cli::LabArgs,
}

fn main() -> anyhow::Result<()> {
    cl_lab::cli::run(Top::parse().lab)
}
