//! Configuration distribution: installing a built configuration another node pushed, and
//! fetching a newer one when joining.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cl_config::{load_app, load_cluster, AppConfig, Built, ClusterConfig, FileKind, Host};
use cl_paths::Paths;
use cl_wire::msg::{ConfigKind, PeerReply};
use tracing::{info, warn};

use crate::context::{checksum, Context};

/// Answers the config checks about files under this node's root.
pub struct RootedHost<'p> {
    /// The node's layout.
    pub paths: &'p Paths,
}

impl Host for RootedHost<'_> {
    fn file_kind(&self, path: &Path) -> FileKind {
        match std::fs::metadata(self.paths.resolve(path)) {
            Err(_) => FileKind::Missing,
            Ok(meta) if meta.is_dir() => FileKind::Directory,
            Ok(meta) if meta.permissions().mode() & 0o111 != 0 => FileKind::Executable,
            Ok(_) => FileKind::NotExecutable,
        }
    }

    fn untrusted(&self, path: &Path, secret: bool) -> Option<String> {
        use cl_paths::secure::{check_strict, Trust};
        let trust = if secret { Trust::Secret } else { Trust::Config };
        // A key is read: it must lie under the root. A program is run: its directory must.
        let confined =
            if secret { self.paths.confine(path) } else { self.paths.confine_program(path) };
        let resolved = match confined {
            Ok(resolved) => resolved,
            Err(e) => return Some(e.to_string()),
        };
        check_strict(&resolved, self.paths.root(), trust).err().map(|e| e.to_string())
    }
}

/// The version and source of the built configuration `kind` on this node, if any.
fn local_version(paths: &Paths, kind: &ConfigKind) -> Option<(u64, String)> {
    let path = built_path(paths, kind);
    let text = std::fs::read_to_string(path).ok()?;
    let value: Built<serde_json::Value> = serde_json::from_str(&text).ok()?;
    Some((value.version, value.source))
}

/// The version of the built configuration `kind` installed on this node now.
pub fn built_version(paths: &Paths, kind: &ConfigKind) -> Option<u64> {
    local_version(paths, kind).map(|(version, _)| version)
}

/// Where the built configuration `kind` lives.
pub fn built_path(paths: &Paths, kind: &ConfigKind) -> std::path::PathBuf {
    match kind {
        ConfigKind::Cluster => paths.built_clconf(),
        ConfigKind::App { name } => paths.built_app(name),
    }
}

/// What [`install`] did with a configuration another node sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// This node had that very configuration already: nothing written.
    AlreadyCurrent {
        /// Its version.
        version: u64,
    },
    /// Written: this node runs an older configuration until it reloads.
    New {
        /// The version installed.
        version: u64,
        /// Its source checksum.
        checksum: String,
    },
}

impl std::fmt::Display for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Installed::AlreadyCurrent { version } => write!(f, "already has version {version}"),
            Installed::New { version, checksum } => {
                write!(f, "installed configuration version {version} (checksum {checksum})")
            }
        }
    }
}

/// Install a configuration pushed by `from`, after checking it here as clbuild would; the
/// answer for `from`, and whether a new configuration was written.
pub fn install_pushed(
    ctx: &Context,
    from: &str,
    kind: &ConfigKind,
    built: &str,
    force: bool,
) -> (PeerReply, Option<Installed>) {
    match install(&ctx.paths, kind, built, force) {
        Ok(installed) => {
            info!(peer = %from, "{installed}");
            (PeerReply::Ok { detail: installed.to_string() }, Some(installed))
        }
        Err(reason) => {
            warn!(peer = %from, "refused a configuration from {from}: {reason}");
            (PeerReply::Refused { reason }, None)
        }
    }
}

/// Check and install a built configuration received from another node.
pub fn install(
    paths: &Paths,
    kind: &ConfigKind,
    built: &str,
    force: bool,
) -> Result<Installed, String> {
    let incoming: Built<serde_json::Value> = serde_json::from_str(built)
        .map_err(|e| format!("the configuration sent is not a built configuration: {e}"))?;
    let incoming_sum = checksum(&incoming.source);
    if let Some((version, source)) = local_version(paths, kind) {
        let local_sum = checksum(&source);
        if version == incoming.version && local_sum == incoming_sum {
            return Ok(Installed::AlreadyCurrent { version });
        }
        if !force {
            if version == incoming.version {
                return Err(format!(
                    "this node has a different configuration at the same version {version} (checksum {local_sum}, sent {incoming_sum}); run `clbuild --force` on the node whose copy should win"
                ));
            }
            if version > incoming.version {
                return Err(format!(
                    "this node has a newer version ({version}) than the one sent ({})",
                    incoming.version
                ));
            }
        }
    }
    // Validate here too: the key file and scripts must exist on this node as well.
    let host = RootedHost { paths };
    let problems: Vec<String> = match kind {
        ConfigKind::Cluster => {
            let loaded = load_cluster("clconf.xml (sent)", incoming.source.as_bytes(), &host);
            loaded.errors().map(|d| d.to_string()).collect()
        }
        ConfigKind::App { name } => {
            let cluster: Option<Built<ClusterConfig>> = std::fs::read(paths.built_clconf())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(cluster) = cluster else {
                return Err("this node has no built cluster configuration".into());
            };
            let loaded = load_app(
                "appconf.xml (sent)",
                incoming.source.as_bytes(),
                name,
                &cluster.config,
                &[],
                &host,
            );
            loaded.errors().map(|d| d.to_string()).collect::<Vec<_>>()
        }
    };
    if let Some(first) = problems.first() {
        return Err(format!(
            "the configuration does not validate on this node ({} problems; first: {first})",
            problems.len()
        ));
    }
    // Re-encode through the typed form so a damaged artefact never lands.
    let text = match kind {
        ConfigKind::Cluster => serde_json::from_str::<Built<ClusterConfig>>(built)
            .and_then(|b| serde_json::to_vec_pretty(&b)),
        ConfigKind::App { .. } => serde_json::from_str::<Built<AppConfig>>(built)
            .and_then(|b| serde_json::to_vec_pretty(&b)),
    }
    .map_err(|e| format!("the configuration sent does not match this version of linuxha: {e}"))?;
    let path = built_path(paths, kind);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    cl_paths::replace_keeping_previous(&path, &text)
        .and_then(|_| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Installed::New { version: incoming.version, checksum: incoming_sum })
}
