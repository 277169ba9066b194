//! What every daemon of a node needs to know: its files, the built cluster configuration, who
//! it is, the key, and where the node-local sockets are.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use cl_config::clconf::KeySource;
use cl_config::{Built, ClusterConfig};
use cl_paths::secure::{self, Trust};
use cl_paths::Paths;
use cl_wire::{ClusterKey, Daemon};
use sha2::{Digest, Sha256};

/// A node's view of its cluster, loaded from the built configuration.
#[derive(Clone)]
pub struct Context {
    /// The node's file layout.
    pub paths: Paths,
    /// The built cluster configuration.
    pub built: Built<ClusterConfig>,
    /// This node's name.
    pub local: String,
    /// The shared key.
    pub key: ClusterKey,
    /// Short checksum of the configuration source, compared between nodes.
    pub checksum: String,
}

impl Context {
    /// Load the built configuration under `paths` and find this node in it.
    pub fn load(paths: Paths) -> Result<Context> {
        crate::epoch::init(&paths);
        let file = paths.built_clconf();
        let bytes = match secure::read_regular(&file, secure::BUILT_CAP) {
            Err(cl_paths::FileError::Missing { .. }) => {
                bail!("no built cluster configuration at {} (run clbuild first)", file.display())
            }
            other => other?,
        };
        secure::check_strict(&file, paths.root(), Trust::Secret)?;
        let built: Built<ClusterConfig> = serde_json::from_slice(&bytes)
            .with_context(|| format!("the built configuration {} is damaged", file.display()))?;
        let local = cl_paths::local_node_name().context("cannot tell this node's name")?;
        if built.config.node(&local).is_none() {
            bail!(
                "this node (`{local}`) is not in cluster `{}`; set LINUXHA_NODE",
                built.config.name
            );
        }
        let key = match &built.config.key {
            KeySource::Inline(hex) => {
                ClusterKey::from_hex(hex).map_err(|e| anyhow!("cluster key: {e}"))?
            }
            KeySource::File(path) => {
                let (resolved, bytes) =
                    secure::read_configured(&paths, path, secure::KEY_CAP, Trust::Secret)
                        .context("cannot read the cluster key")?;
                ClusterKey::from_hex(&String::from_utf8_lossy(&bytes))
                    .map_err(|e| anyhow!("cluster key {}: {e}", resolved.display()))?
            }
        };
        let checksum = checksum(&built.source);
        Ok(Context { paths, built, local, key, checksum })
    }

    /// The cluster configuration.
    pub fn cluster(&self) -> &ClusterConfig {
        &self.built.config
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.built.config.name
    }

    /// The other nodes' names.
    pub fn peers(&self) -> Vec<String> {
        self.cluster()
            .nodes
            .iter()
            .filter(|n| n.name != self.local)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Where `daemon` logs.
    pub fn log_file(&self, daemon: Daemon) -> PathBuf {
        self.paths.log_dir().join(format!("{}.log", daemon.name()))
    }

    /// The pid file of `daemon`.
    pub fn pid_file(&self, daemon: Daemon) -> PathBuf {
        self.paths.run_dir().join(format!("{}.pid", daemon.process_name(self.name())))
    }

    /// The admin socket of cldaemon (root only).
    pub fn admin_socket(&self) -> PathBuf {
        admin_socket(&self.paths, self.name())
    }

    /// The datagram socket where cldaemon receives its daemons' events.
    pub fn event_socket(&self) -> PathBuf {
        self.paths.run_dir().join(format!("{}.events", self.name()))
    }

    /// Present while the cluster is formed on this node; survives a cldaemon restart.
    pub fn formed_marker(&self) -> PathBuf {
        self.paths.run_dir().join(format!("{}.formed", self.name()))
    }

    /// This node's addresses on every network, paired with the network name.
    pub fn local_addresses(&self) -> Vec<(String, IpAddr)> {
        self.cluster()
            .node(&self.local)
            .map(|n| n.networks.iter().map(|net| (net.name.clone(), net.address)).collect())
            .unwrap_or_default()
    }

    /// Every address of `node` where its cldaemon listens, in network order.
    pub fn manager_addresses(&self, node: &str) -> Vec<SocketAddr> {
        let port = self.cluster().ports.cldaemon;
        self.cluster()
            .node(node)
            .map(|n| n.networks.iter().map(|net| SocketAddr::new(net.address, port)).collect())
            .unwrap_or_default()
    }
}

/// The admin socket of cluster `name` under `paths`.
pub fn admin_socket(paths: &Paths, name: &str) -> PathBuf {
    paths.run_dir().join(format!("{}.sock", Daemon::Cldaemon.process_name(name)))
}

/// Short SHA-256 of a configuration source, shown to operators when two nodes disagree.
pub fn checksum(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    hex::encode(&digest[..8])
}
