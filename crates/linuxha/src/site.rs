//! The local node's files as the commands use them: reading configurations, the built
//! artefacts, and answering the config checks' questions about paths under the root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cl_config::{AppConfig, Built, ClusterConfig, Loaded};
use cl_paths::secure::{self, Trust};
use cl_paths::Paths;

use crate::fail::{Failure, Outcome};

pub use cl_daemon::sync::RootedHost;

/// A file problem as a command's failure: configuration (exit 2) or IO (exit 1).
pub fn file_failure(command: &str, e: cl_paths::FileError) -> Failure {
    if e.is_config() {
        Failure::config(format!("{command}: {e}"))
    } else {
        Failure::runtime(format!("{command}: {e}"))
    }
}

/// Read a configuration source (`clconf.xml`, `appconf.xml`): a regular file of at most
/// [`secure::XML_CAP`] bytes that only root may change, in directories only root may change.
pub fn read_file(command: &str, paths: &Paths, path: &Path) -> Outcome<Vec<u8>> {
    let bytes =
        secure::read_regular(path, secure::XML_CAP).map_err(|e| file_failure(command, e))?;
    secure::check_strict(path, paths.root(), Trust::Config)
        .map_err(|e| file_failure(command, e))?;
    Ok(bytes)
}

/// Print every diagnostic to stderr and fail (exit 2) when there are errors.
pub fn report<T>(command: &str, file: &Path, loaded: Loaded<T>) -> Outcome<T> {
    for diagnostic in &loaded.diagnostics {
        eprintln!("{diagnostic}");
    }
    let errors = loaded.errors().count();
    match loaded.config {
        Some(config) if errors == 0 => Ok(config),
        _ => Err(Failure::config(format!(
            "{command}: {} in {}; nothing was changed",
            plural(errors.max(1), "error"),
            file.display()
        ))),
    }
}

/// `1 error`, `3 errors`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Read a built artefact, if there is one.
pub fn read_built<T: serde::de::DeserializeOwned>(
    command: &str,
    path: &Path,
) -> Outcome<Option<Built<T>>> {
    match secure::read_regular_if_exists(path, secure::BUILT_CAP) {
        Ok(None) => Ok(None),
        Err(e) => Err(file_failure(command, e)),
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Failure::runtime(format!(
                "{command}: the built configuration {} is damaged ({e}); rebuild it or restore {}",
                path.display(),
                cl_paths::previous_path(path).display()
            ))
        }),
    }
}

/// The built cluster configuration, required.
pub fn built_cluster(command: &str, paths: &Paths) -> Outcome<Built<ClusterConfig>> {
    read_built(command, &paths.built_clconf())?.ok_or_else(|| {
        Failure::runtime(format!(
            "{command}: there is no built cluster configuration under {}; run clbuild first",
            paths.etc().display()
        ))
    })
}

/// Every built application except `skip`.
pub fn built_apps(
    command: &str,
    paths: &Paths,
    skip: Option<&str>,
) -> Outcome<Vec<Built<AppConfig>>> {
    let mut apps = Vec::new();
    let Ok(entries) = fs::read_dir(paths.built_dir()) else { return Ok(apps) };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    for path in names {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(app) = name.strip_prefix("app-").and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if Some(app) == skip {
            continue;
        }
        if let Some(built) = read_built::<AppConfig>(command, &path)? {
            apps.push(built);
        }
    }
    Ok(apps)
}

/// Seconds since the epoch, for build stamps.
pub fn now_epoch_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The local node's name, or a clear failure.
pub fn local_node(command: &str) -> Outcome<String> {
    cl_paths::local_node_name().map_err(|e| {
        Failure::runtime(format!("{command}: cannot tell this node's name ({e}); set LINUXHA_NODE"))
    })
}

/// Install `built` at `path` as JSON, keeping the previous one; private to root (0600),
/// because it may hold the cluster key.
pub fn install_built<T: serde::Serialize>(
    command: &str,
    path: &Path,
    built: &Built<T>,
) -> Outcome<()> {
    let json = serde_json::to_vec_pretty(built).map_err(|e| {
        Failure::runtime(format!("{command}: cannot encode the built configuration: {e}"))
    })?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)
            .and_then(|_| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
            .map_err(|e| {
                Failure::runtime(format!("{command}: cannot create {}: {e}", dir.display()))
            })?;
    }
    cl_paths::replace_keeping_previous(path, &json)
        .and_then(|_| fs::set_permissions(path, fs::Permissions::from_mode(0o600)))
        .map_err(|e| Failure::runtime(format!("{command}: cannot write {}: {e}", path.display())))
}
