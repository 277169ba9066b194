//! Linuxha configuration: `clconf.xml` (the cluster) and `appconf.xml` (each application).
//!
//! Two stages, as in ripgrep: the XML is parsed with positions (roxmltree, DTDs and entity
//! expansion off) and walked strictly, then resolved into plain validated types. Every problem
//! is collected — never only the first — as `file:line:column: error|warning: message`.
//! The crate does no IO of its own: the caller passes bytes in, and answers questions about the
//! node's files through [`Host`], so the same checks run in tests, in `clbuild` and on a peer
//! that receives a built configuration.

pub mod agent;
pub mod appconf;
pub mod built;
pub mod clconf;
pub mod diag;
pub mod drbd;
pub mod migrate;
pub mod notify;
pub mod replication;
pub mod resources;
pub mod value;
pub mod xml;

use std::path::Path;

pub use appconf::{load_app, AppConfig};
pub use built::Built;
pub use clconf::{load_cluster, ClusterConfig};
pub use diag::{Diagnostic, Severity, SourceAt};
pub use replication::Replication;

/// What a path in a configuration is on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Nothing there.
    Missing,
    /// A directory.
    Directory,
    /// A file without execute permission.
    NotExecutable,
    /// An executable file.
    Executable,
}

/// The node's filesystem as the checks see it.
pub trait Host {
    /// What `path` (as written in the configuration) is on this node.
    fn file_kind(&self, path: &Path) -> FileKind;

    /// Why `path` (as written in the configuration) must not be trusted on this node: it
    /// leads out of the root, or someone other than root may change it (or, for a `secret`,
    /// read it). The sentence names the path and the fix. The default trusts everything.
    fn untrusted(&self, path: &Path, secret: bool) -> Option<String> {
        let _ = (path, secret);
        None
    }

    /// The meta-data of the OCF agent `ocf:<provider>:<agent>` on this node. The default
    /// checks nothing: a host that cannot run agents (a test, a peer) accepts any agent.
    fn ocf_agent(&self, provider: &str, agent: &str) -> AgentLookup {
        let _ = (provider, agent);
        AgentLookup::Unchecked
    }

    /// Run the agent's `validate-all` for `resource` (only asked when its meta-data lists
    /// the action); `Err` is the reason it gave. The default accepts everything.
    fn validate_resource(&self, resource: &resources::Resource) -> Result<(), String> {
        let _ = resource;
        Ok(())
    }
}

/// What a [`Host`] found for an OCF agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentLookup {
    /// The agent exists and described itself.
    Found(agent::AgentMeta),
    /// The agent does not exist or could not describe itself, and why.
    Missing(String),
    /// Not looked at on this host.
    Unchecked,
}

/// The outcome of loading a file: the config when there were no errors, and every diagnostic.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The validated configuration, only when no error was found.
    pub config: Option<T>,
    /// Errors and warnings in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl<T> Loaded<T> {
    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Warning)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }
}
