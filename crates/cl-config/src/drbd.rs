//! The DRBD resource a replicated volume becomes on the two nodes: everything its resource file
//! says except the handler program, which each node fills in for itself (where linuxha is
//! installed there). `clbuildapp --vgbuild` sends it to the peer, which renders and writes the
//! file itself.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::appconf::AppConfig;
use crate::clconf::ClusterConfig;
use crate::replication::{AfterSplitBrain, Fencing, ReplicatedVolume};

/// One replicated volume as a DRBD resource (protocol C, internal metadata, one volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrbdResource {
    /// Resource name.
    pub name: String,
    /// Device minor: `/dev/drbd<minor>`.
    pub minor: u32,
    /// The application's two nodes, most preferred first.
    pub nodes: Vec<DrbdNode>,
    /// Fencing policy.
    pub fencing: Fencing,
    /// Split-brain recovery.
    pub after_sb: AfterSplitBrain,
    /// Resync rate, KiB/s.
    pub resync_rate_kib: u64,
    /// DRBD `ping-int`.
    pub ping_int: Duration,
    /// DRBD `ping-timeout`.
    pub ping_timeout: Duration,
    /// DRBD `connect-int`.
    pub connect_int: Duration,
    /// DRBD `timeout`.
    pub timeout: Duration,
}

/// One node of a [`DrbdResource`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrbdNode {
    /// The node name, which must be its host name (`uname -n`): DRBD's `on <host>`.
    pub hostname: String,
    /// The device under DRBD there.
    pub backing_disk: PathBuf,
    /// Its address on the volume's network.
    pub address: IpAddr,
    /// The volume's port.
    pub port: u16,
}

/// The DRBD resource of `volume` of `app`, or why it cannot be made (a node without an address
/// on the volume's network: the build checks prevent it).
pub fn resource_of(
    cluster: &ClusterConfig,
    app: &AppConfig,
    volume: &ReplicatedVolume,
) -> Result<DrbdResource, String> {
    let replication = app
        .replication
        .as_ref()
        .ok_or_else(|| format!("{} has no replicated storage", app.name))?;
    let mut nodes = Vec::new();
    for name in &app.nodes {
        let node = cluster
            .node(name)
            .ok_or_else(|| format!("node {name} is not in the cluster configuration"))?;
        let address = node
            .networks
            .iter()
            .find(|n| n.name == volume.net)
            .map(|n| n.address)
            .ok_or_else(|| format!("node {name} has no address on network {}", volume.net))?;
        nodes.push(DrbdNode {
            hostname: name.clone(),
            backing_disk: volume.backing.device(),
            address,
            port: volume.port,
        });
    }
    Ok(DrbdResource {
        name: volume.resource.clone(),
        minor: volume.minor,
        nodes,
        fencing: replication.fencing,
        after_sb: replication.after_split_brain,
        resync_rate_kib: volume.resync_rate_kib,
        ping_int: replication.ping_int,
        ping_timeout: replication.ping_timeout,
        connect_int: replication.connect_int,
        timeout: replication.timeout,
    })
}
