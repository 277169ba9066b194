//! Running storage operations on the application's two nodes: this one directly (cl-daemon's
//! executor), the other through the local cldaemon, which relays to the peer's
//! (`AdminRequest::Storage`): the cluster key stays with the daemons, and the peer's cldaemon
//! runs the same executor.

use std::time::Duration;

use cl_daemon::storageops::Executor;
use cl_paths::Paths;
use cl_wire::msg::{AdminRequest, AdminResponse};
use cl_wire::storage::{StorageOp, StorageReply};

use crate::fail::{Failure, Outcome};

/// The two nodes of an application, seen from this one.
pub struct Nodes<'a> {
    /// The command, for messages.
    pub command: &'static str,
    paths: &'a Paths,
    /// This node.
    pub local: String,
    /// The other node.
    pub peer: String,
    exec: Executor,
}

impl<'a> Nodes<'a> {
    /// This node and `peer`.
    pub fn new(command: &'static str, paths: &'a Paths, local: String, peer: String) -> Nodes<'a> {
        Nodes { command, paths, local, peer, exec: Executor::system(paths) }
    }

    /// Runs `op` on `node`; a node that cannot be asked is the failure.
    pub fn run(&self, node: &str, op: StorageOp) -> Outcome<StorageReply> {
        if node == self.local {
            return Ok(self.exec.execute(op));
        }
        let timeout = time_limit(&op);
        let request =
            AdminRequest::Storage { node: node.to_string(), op, timeout_secs: timeout.as_secs() };
        let command = self.command;
        let answer = crate::cmd::cluster::ask(
            command,
            self.paths,
            &request,
            timeout + Duration::from_secs(5),
        )?;
        match answer {
            None => Err(Failure::runtime(format!(
                "{command}: cldaemon is not running on this node: it passes the work for {node} to {node}'s cldaemon; start it on both nodes (cldaemon, or the linuxha-cldaemon unit); nothing was changed by this step"
            ))),
            Some(AdminResponse::Storage(reply)) => Ok(reply),
            Some(AdminResponse::Failed { message, .. }) => {
                Err(Failure::runtime(format!("{command}: {message}")))
            }
            Some(_) => Err(Failure::runtime(format!("{command}: unexpected answer from cldaemon"))),
        }
    }

    /// Runs `op` on `node` and wants it done: its one line, or the failure naming the node.
    pub fn must(&self, node: &str, op: StorageOp) -> Outcome<String> {
        match self.run(node, op)? {
            StorageReply::Done { detail } => Ok(detail),
            StorageReply::Failed { error } => {
                Err(Failure::runtime(format!("{}: {node}: {error}", self.command)))
            }
            _ => Err(Failure::runtime(format!("{}: {node}: unexpected answer", self.command))),
        }
    }

    /// DRBD's state of the resources that are up on `node`.
    pub fn state(
        &self,
        node: &str,
    ) -> Outcome<std::collections::BTreeMap<String, cl_core::storage::VolumeState>> {
        match self.run(node, StorageOp::State)? {
            StorageReply::State { volumes } => Ok(volumes),
            StorageReply::Failed { error } => {
                Err(Failure::runtime(format!("{}: {node}: {error}", self.command)))
            }
            _ => Err(Failure::runtime(format!("{}: {node}: unexpected answer", self.command))),
        }
    }
}

/// How long an operation may take on the other node.
fn time_limit(op: &StorageOp) -> Duration {
    Duration::from_secs(match op {
        StorageOp::Mkfs { .. } => 1800,
        StorageOp::Inspect { .. } | StorageOp::CreateLv { .. } | StorageOp::ExtendLv { .. } => 180,
        StorageOp::Wipe { .. } | StorageOp::CreateMetadata { .. } => 180,
        _ => 90,
    })
}
