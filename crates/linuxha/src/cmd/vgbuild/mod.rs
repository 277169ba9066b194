//! `clbuildapp --vgbuild` for replicated storage: run on one node, it builds the application's
//! DRBD volumes on both. Both nodes are inspected first (changing nothing), the planner
//! ([`plan`]) turns what they found into every problem or the steps, the plan is printed, data
//! that would be overwritten is confirmed, then the steps run and the synchronisation is
//! followed to its end ([`progress`]).

pub mod nodes;
pub mod plan;
pub mod progress;
pub mod sizes;

use std::io::{BufRead, IsTerminal, Write};

use cl_config::drbd::{resource_of, DrbdResource};
use cl_config::replication::Backing;
use cl_config::{AppConfig, ClusterConfig, Replication};
use cl_paths::Paths;
use cl_wire::storage::{LvName, NodeInspection, StorageOp, StorageReply, VolumeProbe};

use crate::cli::ClbuildappArgs;
use crate::fail::{Failure, Outcome};
use nodes::Nodes;

const COMMAND: &str = "clbuildapp";

/// Build the replicated storage of `app` (which has some) on both of its nodes.
pub fn vgbuild(
    paths: &Paths,
    cluster: &ClusterConfig,
    app: &AppConfig,
    replication: &Replication,
    file: &str,
    args: &ClbuildappArgs,
) -> Outcome<()> {
    let (nodes, specs) = prepare(COMMAND, paths, cluster, app, args.source.as_deref())?;
    let found = inspect_both(&nodes, replication, &specs)?;
    let order = preferred_first(app, &nodes);
    let input = plan::Input {
        file,
        app: &app.name,
        replication,
        specs: &specs,
        nodes: [order[0].as_str(), order[1].as_str()],
        found: if order[0] == nodes.local { [&found.0, &found.1] } else { [&found.1, &found.0] },
        force: args.force,
        source: args.source.as_deref(),
    };
    let plan = match plan::plan(&input) {
        Ok(plan) => plan,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            return Err(Failure::config(format!(
                "{COMMAND}: {} with the storage of `{}`; nothing was changed",
                crate::site::plural(problems.len(), "problem"),
                app.name
            )));
        }
    };
    print_plan(&app.name, &input.nodes, &plan);
    if plan.steps.is_empty() {
        return Ok(());
    }
    if !plan.overwrites.is_empty() {
        confirm(COMMAND, args.yes, "data would be overwritten", "Type yes to go on: ")?;
    }
    for step in &plan.steps {
        for node in &step.nodes {
            if args.verbose {
                println!("{COMMAND}: {node}: {}", step.say);
            }
            let detail = nodes.must(node, step.op.clone()).map_err(|f| {
                Failure::runtime(format!(
                    "{}; the steps before it are done, and running clbuildapp --vgbuild again goes on from where it stopped",
                    f.message
                ))
            })?;
            if args.verbose {
                println!("{COMMAND}: {node}: {detail}");
            }
        }
    }
    if plan.follow.is_empty() {
        return Ok(());
    }
    if args.no_wait {
        println!("{COMMAND}: the synchronisation runs on; follow it with clstat");
        return Ok(());
    }
    progress::follow(&nodes, &plan.follow)
}

/// This node, the other node of `app`, the DRBD resource of each volume; `--source` checked.
pub fn prepare<'a>(
    command: &'static str,
    paths: &'a Paths,
    cluster: &ClusterConfig,
    app: &AppConfig,
    source: Option<&str>,
) -> Outcome<(Nodes<'a>, Vec<DrbdResource>)> {
    let me = crate::site::local_node(command)?;
    if !app.nodes.contains(&me) {
        return Err(Failure::config(format!(
            "{command}: this node ({me}) is not one of the nodes of `{}` ({}); run it on one of them",
            app.name,
            app.nodes.join(", ")
        )));
    }
    let Some(peer) = app.nodes.iter().find(|n| **n != me).cloned() else {
        return Err(Failure::config(format!(
            "{command}: `{}` has only one node: replicated storage needs two",
            app.name
        )));
    };
    if let Some(source) = source {
        if !app.nodes.iter().any(|n| n == source) {
            return Err(Failure::config(format!(
                "{command}: --source {source} is not a node of `{}` ({})",
                app.name,
                app.nodes.join(", ")
            )));
        }
    }
    let specs = app
        .replicated_volumes()
        .iter()
        .map(|v| resource_of(cluster, app, v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::config(format!("{command}: {e}")))?;
    Ok((Nodes::new(command, paths, me, peer), specs))
}

/// The application's nodes, preferred first.
fn preferred_first(app: &AppConfig, nodes: &Nodes) -> [String; 2] {
    match app.nodes.first() {
        Some(first) if *first == nodes.peer => [nodes.peer.clone(), nodes.local.clone()],
        _ => [nodes.local.clone(), nodes.peer.clone()],
    }
}

/// Both nodes' inspections: (this node's, the peer's). The peer is asked first: when it
/// cannot be reached, that is the one sentence to say.
fn inspect_both(
    nodes: &Nodes,
    replication: &Replication,
    specs: &[DrbdResource],
) -> Outcome<(NodeInspection, NodeInspection)> {
    let volumes = replication
        .volumes
        .iter()
        .zip(specs)
        .map(|(v, spec)| VolumeProbe {
            device: v.backing.device(),
            lv: match &v.backing {
                Backing::Lv { vg, lv, .. } => Some(LvName { vg: vg.clone(), lv: lv.clone() }),
                Backing::Disk { .. } => None,
            },
            spec: spec.clone(),
        })
        .collect::<Vec<_>>();
    let op = StorageOp::Inspect {
        vg: replication.volume_group.as_ref().map(|g| g.name.clone()),
        volumes,
    };
    let ask = |node: &str| -> Outcome<NodeInspection> {
        match nodes.run(node, op.clone())? {
            StorageReply::Inspected(found) => Ok(*found),
            StorageReply::Failed { error } => {
                Err(Failure::runtime(format!("{}: {node}: {error}", nodes.command)))
            }
            _ => Err(Failure::runtime(format!("{}: {node}: unexpected answer", nodes.command))),
        }
    };
    let peer = ask(&nodes.peer)?;
    let local = ask(&nodes.local)?;
    Ok((local, peer))
}

/// The plan, always printed before anything is done.
fn print_plan(app: &str, nodes: &[&str; 2], plan: &plan::Plan) {
    if plan.steps.is_empty() {
        println!(
            "{COMMAND}: nothing to do: the replicated storage of `{app}` is built on {} and {}",
            nodes[0], nodes[1]
        );
        return;
    }
    println!(
        "{COMMAND}: building the replicated storage of `{app}` on {} and {}:",
        nodes[0], nodes[1]
    );
    for note in &plan.notes {
        println!("  {note}");
    }
    for warning in &plan.overwrites {
        println!("  WARNING: {warning}");
    }
    for (i, step) in plan.steps.iter().enumerate() {
        println!("  {:>2}. {step}", i + 1);
    }
}

/// `--yes`, or "yes" typed on a terminal; anything else changes nothing. `what` says what
/// would happen (`data would be overwritten`), for the refusal when there is no terminal.
pub fn confirm(command: &str, yes: bool, what: &str, prompt: &str) -> Outcome<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::runtime(format!(
            "{command}: {what}; give --yes to confirm when not asked on a terminal; nothing was changed"
        )));
    }
    print!("{prompt}");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(Failure::runtime(format!("{command}: not confirmed; nothing was changed")))
    }
}

#[cfg(test)]
mod tests;
