//! `clstat`: what this node knows about the cluster.
//!
//! Until the daemons run, this is the built configuration plus whether the node manager is
//! up; the membership issue replaces the body with the daemon's published snapshot.

use std::fs;
use std::path::Path;

use cl_paths::Paths;
use serde_json::json;

use crate::cli::ClstatArgs;
use crate::fail::{Failure, Outcome};
use crate::site;

/// Run clstat.
pub fn clstat(paths: &Paths, args: &ClstatArgs) -> Outcome<()> {
    let cluster = site::built_cluster("clstat", paths)?;
    let apps = site::built_apps("clstat", paths, None)?;
    let pid_file = paths.run_dir().join(format!("cldaemon-{}.pid", cluster.config.name));
    let daemon_pid = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
    let state = if daemon_pid.is_some() { "UP" } else { "DOWN" };
    if args.json {
        let value = json!({
            "cluster": cluster.config.name,
            "state": state.to_lowercase(),
            "config_version": cluster.version,
            "nodes": cluster.config.nodes.iter().map(|n| json!({"name": n.name, "state": "unknown"})).collect::<Vec<_>>(),
            "applications": apps.iter().map(|a| json!({
                "name": a.config.name,
                "state": "stopped",
                "node": null,
                "config_version": a.version,
                "vips": a.config.vips.iter().map(|v| format!("{}/{}", v.address, v.prefix)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| Failure::runtime(format!("clstat: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    println!(
        "Cluster: {}  State: {}  (configuration version {})",
        cluster.config.name, state, cluster.version
    );
    if daemon_pid.is_none() {
        println!("  cldaemon is not running on this node; run clform to form the cluster");
    }
    println!();
    println!("{:<16} {:<10}", "Node", "State");
    for node in &cluster.config.nodes {
        println!("{:<16} {:<10}", node.name, "unknown");
    }
    println!();
    if apps.is_empty() {
        println!("No applications built (clbuildapp --build --application NAME).");
    } else {
        println!("{:<16} {:<10} {:<10} VIPs", "Application", "State", "Node");
        for app in &apps {
            let vips: Vec<String> =
                app.config.vips.iter().map(|v| format!("{}/{}", v.address, v.prefix)).collect();
            println!("{:<16} {:<10} {:<10} {}", app.config.name, "stopped", "-", vips.join(" "));
        }
    }
    if args.verbose {
        println!();
        println!(
            "Built on {} at {} (epoch seconds); heartbeat {:?}/{:?}",
            cluster.built_on,
            cluster.built_at,
            cluster.config.heartbeat.interval,
            cluster.config.heartbeat.timeout
        );
    }
    Ok(())
}
