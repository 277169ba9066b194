//! Lab cleanup in the bad cases: a panicking test body, a test process killed with SIGKILL,
//! and a name clash that must not touch the other lab.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cl_lab::{Lab, LabError, LabSpec};
use common::{ping_ok, wait_timeout, Footprint};

/// Environment variable that turns the ignored helper test into a lab-holding child process.
const HELPER_ENV: &str = "CL_LAB_T11_HELPER";

#[test]
fn t11_panic_in_test_body_cleans_up() -> Result<()> {
    if common::skip("t11_panic_in_test_body_cleans_up") {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let mut lab = Lab::up(LabSpec::default()).expect("lab up");
        // Leave faults, a frozen node and a running process for the drop to undo.
        let sleeper = lab.exec("node1", &["sleep", "1000"]).expect("exec").spawn().expect("spawn");
        lab.cut("node2", None).expect("cut");
        lab.freeze("node1").expect("freeze");
        tx.send((Footprint::of(&lab), sleeper)).expect("send");
        panic!("deliberate panic with lab {} up", lab.name());
    });
    ensure!(result.is_err(), "closure should have panicked");
    let (footprint, mut sleeper) = rx.recv().context("no footprint")?;
    ensure!(
        wait_timeout(&mut sleeper, Duration::from_secs(30)).is_some(),
        "process survived the drop"
    );
    footprint.assert_gone();
    Ok(())
}

/// Not a test by itself: run as a child process by `t11_sigkilled_owner_is_reaped`, it builds a
/// lab, reports its name and waits to be killed.
#[test]
#[ignore = "helper process for t11_sigkilled_owner_is_reaped"]
fn t11_helper_hold_lab() -> Result<()> {
    if std::env::var_os(HELPER_ENV).is_none() {
        return Ok(());
    }
    let lab = Lab::up(LabSpec::default())?;
    println!("LAB {}", lab.name());
    std::thread::sleep(Duration::from_secs(600));
    drop(lab);
    Ok(())
}

#[test]
fn t11_sigkilled_owner_is_reaped() -> Result<()> {
    if common::skip("t11_sigkilled_owner_is_reaped") {
        return Ok(());
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "t11_helper_hold_lab", "--ignored", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test NAME ... " before the test's own output, on the same line.
            if let Some((_, name)) = line.split_once("LAB ") {
                let _ = tx.send(name.to_owned());
            }
        }
    });
    let name = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(name) => name,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("helper did not report a lab: {e}");
        }
    };
    let footprint = Footprint::of(&Lab::load(&name)?);
    ensure!(Lab::list()?.iter().any(|l| l.name == name && !l.stale), "live lab listed as stale");
    child.kill()?;
    child.wait()?;
    // The lab outlives its owner until the next `Lab::up` (here or in another test) reaps it.
    let lab = Lab::up(LabSpec { nodes: 1, networks: 1, name: None })?;
    footprint.assert_gone_allow_zombies();
    lab.down()?;
    Ok(())
}

#[test]
fn t11_name_clash_leaves_other_lab_alone() -> Result<()> {
    if common::skip("t11_name_clash_leaves_other_lab_alone") {
        return Ok(());
    }
    let lab = Lab::up(LabSpec { nodes: 2, networks: 1, name: None })?;
    let footprint = Footprint::of(&lab);
    let again = Lab::up(LabSpec { nodes: 2, networks: 1, name: Some(lab.name().to_owned()) });
    match again {
        Err(e) if matches!(e.downcast_ref::<LabError>(), Some(LabError::Exists(_))) => {}
        Err(e) => bail!("expected Exists, got {e:#}"),
        Ok(_) => bail!("second lab with the same name came up"),
    }
    ensure!(ping_ok(&lab, "node1", lab.addr("node2", 0)?), "first lab broken by the clash");
    ensure!(Lab::up(LabSpec { nodes: 0, networks: 1, name: None }).is_err());
    ensure!(Lab::up(LabSpec { nodes: 1, networks: 3, name: None }).is_err());
    ensure!(Lab::up(LabSpec { nodes: 1, networks: 1, name: Some("Bad/Name".into()) }).is_err());
    drop(lab);
    footprint.assert_gone();
    Ok(())
}
