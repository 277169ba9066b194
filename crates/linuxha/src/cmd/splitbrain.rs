//! `clsplitbrain --application <app> --keep <node>`: resolve a DRBD data split brain (both
//! copies written while apart; DRBD leaves both StandAlone). The node not kept gives its copy
//! up (`secondary`, `disconnect`, `connect --discard-my-data`), the kept node reconnects, and
//! DRBD resynchronises the discarded copy from the kept one.

use std::time::Duration;

use cl_core::storage::{ConnectionState, Role, VolumeState};
use cl_paths::Paths;
use cl_wire::msg::{AdminRequest, AdminResponse};
use cl_wire::storage::StorageOp;

use crate::cli::ClsplitbrainArgs;
use crate::cmd::vgbuild::{self, plan::Follow, progress};
use crate::fail::{Failure, Outcome};
use crate::names::{self, Kind};
use crate::site;

const COMMAND: &str = "clsplitbrain";

/// Whether a volume, as one node sees it, is split: DRBD found a split brain, or the node stands
/// alone (where DRBD leaves both nodes after one; a resource disconnected by hand is
/// reconnected the same way).
pub fn is_split(state: &VolumeState) -> bool {
    state.split_brain || state.connection == ConnectionState::StandAlone
}

/// Run clsplitbrain.
pub fn clsplitbrain(paths: &Paths, args: &ClsplitbrainArgs) -> Outcome<()> {
    names::syntax(COMMAND, Kind::Application, &args.application)?;
    names::syntax(COMMAND, Kind::Node, &args.keep)?;
    let cluster = site::built_cluster(COMMAND, paths)?;
    let app = names::application(COMMAND, paths, &args.application)?;
    let Some(replication) = &app.replication else {
        return Err(Failure::config(format!(
            "{COMMAND}: `{}` has no replicated storage",
            app.name
        )));
    };
    if !app.nodes.contains(&args.keep) {
        return Err(Failure::config(format!(
            "{COMMAND}: --keep {} is not a node of `{}` ({})",
            args.keep,
            app.name,
            app.nodes.join(", ")
        )));
    }
    let (nodes, _) = vgbuild::prepare(COMMAND, paths, &cluster.config, &app, None)?;
    let keep = args.keep.as_str();
    let other = if keep == nodes.local { nodes.peer.clone() } else { nodes.local.clone() };
    if running_on(paths, &app.name).as_deref() == Some(other.as_str()) {
        return Err(refuse_running(&app.name, &other, keep));
    }
    let kept = nodes.state(keep)?;
    let theirs = nodes.state(&other)?;
    let mut split = Vec::new();
    for volume in &replication.volumes {
        let res = &volume.resource;
        let (Some(k), Some(o)) = (kept.get(res), theirs.get(res)) else {
            let down = if kept.contains_key(res) { &other } else { keep };
            return Err(Failure::runtime(format!(
                "{COMMAND}: {res} is not up on {down}: bring it up there (cldaemon does at start; or drbdadm up {res}) and run this again; nothing was changed"
            )));
        };
        if o.role == Role::Primary {
            return Err(refuse_running(&app.name, &other, keep));
        }
        if is_split(k) || is_split(o) {
            split.push((res.clone(), k.clone()));
        }
    }
    if split.is_empty() {
        return Err(Failure::runtime(format!(
            "{COMMAND}: no split brain: every volume of `{}` is connected between {keep} and {other}; nothing was changed",
            app.name
        )));
    }
    println!(
        "{COMMAND}: keeping {keep}'s copy of `{}`; {other}'s changes since the split are DISCARDED:",
        app.name
    );
    for (res, k) in &split {
        let lost = if k.out_of_sync_kib > 0 {
            format!(
                " (at least {} differ, as {keep} last knew)",
                crate::cmd::storage::kib(k.out_of_sync_kib)
            )
        } else {
            String::new()
        };
        println!("  {res}{lost}: {other}: secondary, disconnect, connect --discard-my-data; {keep}: connect");
    }
    vgbuild::confirm(
        COMMAND,
        args.yes,
        "data would be overwritten",
        &format!("Type yes to discard {other}'s changes: "),
    )?;
    let mut follows = Vec::new();
    for (res, k) in &split {
        let steps = [
            StorageOp::Secondary { resource: res.clone() },
            StorageOp::Disconnect { resource: res.clone() },
            StorageOp::DiscardMyData { resource: res.clone() },
        ];
        for op in steps {
            let what = op.describe();
            let detail = nodes.must(&other, op)?;
            if args.verbose {
                println!("{COMMAND}: {other}: {what}: {detail}");
            }
        }
        if k.connection == ConnectionState::StandAlone {
            let detail = nodes.must(keep, StorageOp::Connect { resource: res.clone() })?;
            if args.verbose {
                println!("{COMMAND}: {keep}: connect {res}: {detail}");
            }
        }
        follows.push(Follow { resource: res.clone(), from: keep.to_string(), to: other.clone() });
    }
    if args.no_wait {
        println!("{COMMAND}: the resynchronisation runs on; follow it with clstat");
        return Ok(());
    }
    progress::follow(&nodes, &follows)
}

fn refuse_running(app: &str, other: &str, keep: &str) -> Failure {
    Failure::runtime(format!(
        "{COMMAND}: `{app}` runs on {other}, whose copy would be discarded: stop it (clhaltapp --application {app}) or move it to {keep} (clswitchapp --application {app} --node {keep}) first; nothing was changed"
    ))
}

/// Where the local cldaemon says the application runs, if it says.
fn running_on(paths: &Paths, app: &str) -> Option<String> {
    match crate::cmd::cluster::ask(COMMAND, paths, &AdminRequest::Status, Duration::from_secs(2)) {
        Ok(Some(AdminResponse::Status(status))) => {
            status.applications.iter().find(|a| a.name == app).and_then(|a| a.node.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_or_flagged_volumes_are_split() {
        let connected =
            VolumeState { connection: ConnectionState::Connected, ..VolumeState::default() };
        assert!(!is_split(&connected));
        assert!(is_split(&VolumeState {
            connection: ConnectionState::StandAlone,
            ..connected.clone()
        }));
        assert!(is_split(&VolumeState { split_brain: true, ..connected }));
    }
}
