//! `linuxha lab …` through the CLI module: a persistent lab driven by separate commands.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Result};
use cl_lab::cli::{run, LabArgs, UsageError};
use cl_lab::{Fault, Lab, Owner};
use clap::Parser;
use common::{link_show, ping_ok, wait_timeout, Footprint};

/// Stand-in for the `linuxha lab` part of the real binary.
#[derive(Parser, Debug)]
struct Top {
    #[command(flatten)]
    lab: LabArgs,
}

/// Parses and runs one command line (without the leading `linuxha lab`).
fn lab_cmd(args: &[&str]) -> Result<()> {
    let top = Top::try_parse_from(std::iter::once("lab").chain(args.iter().copied()))?;
    run(top.lab)
}

/// Environment variable that turns the ignored helper test into an `exec` runner.
const HELPER_ENV: &str = "CL_LAB_T12_EXEC";

/// Not a test by itself: run as a child by `t12_cli_persistent_lab` to check that `exec`
/// passes the exit code through (it ends the process).
#[test]
#[ignore = "helper process for t12_cli_persistent_lab"]
fn t12_helper_exec() -> Result<()> {
    let Some(lab) = std::env::var_os(HELPER_ENV) else { return Ok(()) };
    let lab = lab.to_string_lossy().into_owned();
    lab_cmd(&["exec", &lab, "node2", "--", "sh", "-c", "test \"$LINUXHA_NODE\" = node2 && exit 7"])
}

#[test]
fn t12_cli_persistent_lab() -> Result<()> {
    if common::skip("t12_cli_persistent_lab") {
        return Ok(());
    }
    let name = format!("lhc{:x}", std::process::id());
    lab_cmd(&["up", "--name", &name, "--nodes", "2", "--networks", "2"])?;
    let footprint = Footprint::of(&Lab::load(&name)?);
    let result = drive(&name);
    // Take it down whatever happened: this lab is persistent and nobody else would.
    let down = lab_cmd(&["down", &name]);
    result?;
    down?;
    footprint.assert_gone_allow_zombies();
    ensure!(Lab::load(&name).is_err(), "lab still loadable after down");
    // Nothing is left of it: a second `down` says so as the caller's mistake (exit 2).
    let again = lab_cmd(&["down", &name]);
    ensure!(
        is_usage_error(&again)
            && again.as_ref().is_err_and(|e| format!("{e:#}").contains("no lab named")),
        "second down: {again:?}"
    );
    Ok(())
}

/// The commands between `up` and `down`.
fn drive(name: &str) -> Result<()> {
    let lab = Lab::load(name)?;
    ensure!(lab.hosts().len() == 3);
    ensure!(Lab::list()?
        .iter()
        .any(|l| l.name == name && l.owner == Owner::Persistent && !l.stale));
    ensure!(ping_ok(&lab, "node1", lab.addr("node2", 1)?));
    lab_cmd(&["exec", name, "node1", "--", "true"])?;

    let status = Command::new(std::env::current_exe()?)
        .args(["--exact", "t12_helper_exec", "--ignored", "--test-threads=1"])
        .env(HELPER_ENV, name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    ensure!(status.code() == Some(7), "exec exit code not passed through: {status}");

    lab_cmd(&["cut", name, "node1", "--net", "0", "--oneway", "to-node"])?;
    lab_cmd(&["loss", name, "node2", "30"])?;
    let faults = Lab::load(name)?.faults().to_vec();
    ensure!(faults.len() == 3, "faults: {faults:?}");
    ensure!(faults
        .iter()
        .any(|f| matches!(f, Fault::OneWay { host, net: 0, .. } if host == "node1")));
    lab_cmd(&["heal", name, "node2"])?;
    ensure!(Lab::load(name)?.faults().len() == 1);
    lab_cmd(&["cut", name, "node1"])?;
    ensure!(!ping_ok(&lab, "node2", lab.addr("node1", 1)?), "cut via CLI did not isolate");
    lab_cmd(&["heal", name])?;
    ensure!(Lab::load(name)?.faults().is_empty());
    ensure!(ping_ok(&lab, "node2", lab.addr("node1", 1)?), "heal via CLI did not restore");

    lab_cmd(&["link", name, "node1", "1", "down"])?;
    ensure!(link_show(lab.netns("node1")?, "eth1").contains("NO-CARRIER"));
    lab_cmd(&["link", name, "node1", "1", "up"])?;
    ensure!(!link_show(lab.netns("node1")?, "eth1").contains("NO-CARRIER"));

    lab_cmd(&["freeze", name, "node2"])?;
    ensure!(Lab::load(name)?.is_frozen("node2")?);
    lab_cmd(&["thaw", name, "node2"])?;
    ensure!(!Lab::load(name)?.is_frozen("node2")?);
    let mut sleeper = lab.exec("node2", &["sleep", "1000"])?.spawn()?;
    lab_cmd(&["kill", name, "node2"])?;
    ensure!(
        wait_timeout(&mut sleeper, Duration::from_secs(30)).is_some(),
        "kill via CLI missed a process"
    );
    lab_cmd(&["list"])?;
    ensure!(is_usage_error(&lab_cmd(&["cut", name, "node7"])));
    ensure!(is_usage_error(&lab_cmd(&["link", name, "ext", "1", "down"])));
    ensure!(lab_cmd(&["up", "--nodes", "99"]).is_err(), "--nodes 99 accepted");
    Ok(())
}

/// Whether a command failed as the caller's mistake (`linuxha lab` exits 2 for those).
fn is_usage_error(result: &Result<()>) -> bool {
    result.as_ref().err().is_some_and(|e| e.downcast_ref::<UsageError>().is_some())
}
