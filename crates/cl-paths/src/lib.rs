//! Where linuxha keeps its files on a node, and which node this is.
//!
//! Every path lives under a root (default `/`) so that several nodes can run on one machine
//! (the lab gives each node its own root). The root comes from `--root DIR`, else the
//! `LINUXHA_ROOT` environment variable, else `/`. The local node is `LINUXHA_NODE`, else the
//! host name. This crate also owns the one way we write files: temp file, fsync, rename.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

pub mod secure;

pub use secure::FileError;

/// Environment variable that moves the root, as `--root` does.
pub const ROOT_ENV: &str = "LINUXHA_ROOT";
/// Environment variable that names the local node instead of the host name.
pub const NODE_ENV: &str = "LINUXHA_NODE";
/// The product version written to `etc/cluster/VERSION`.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The file layout of one node, all under one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// Layout under an explicit root.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Paths { root: root.into() }
    }

    /// Layout under `explicit`, else `LINUXHA_ROOT`, else `/`.
    pub fn from_env(explicit: Option<&Path>) -> Self {
        match explicit {
            Some(root) => Paths::new(root),
            None => match std::env::var_os(ROOT_ENV) {
                Some(root) if !root.is_empty() => Paths::new(root),
                _ => Paths::new("/"),
            },
        }
    }

    /// The root every other path is under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `etc/cluster`: the configuration directory.
    pub fn etc(&self) -> PathBuf {
        self.root.join("etc/cluster")
    }

    /// `etc/cluster/clconf.xml`: the cluster configuration source.
    pub fn clconf(&self) -> PathBuf {
        self.etc().join("clconf.xml")
    }

    /// `etc/cluster/VERSION`: the installed product version.
    pub fn version_file(&self) -> PathBuf {
        self.etc().join("VERSION")
    }

    /// `etc/cluster/<app>`: the directory of one application.
    pub fn app_dir(&self, app: &str) -> PathBuf {
        self.etc().join(app)
    }

    /// `etc/cluster/<app>/appconf.xml`: one application's configuration source.
    pub fn appconf(&self, app: &str) -> PathBuf {
        self.app_dir(app).join("appconf.xml")
    }

    /// `etc/cluster/.built`: the built (validated, versioned) configurations.
    pub fn built_dir(&self) -> PathBuf {
        self.etc().join(".built")
    }

    /// The built cluster configuration.
    pub fn built_clconf(&self) -> PathBuf {
        self.built_dir().join("clconf.json")
    }

    /// The built configuration of one application.
    pub fn built_app(&self, app: &str) -> PathBuf {
        self.built_dir().join(format!("app-{app}.json"))
    }

    /// `var/log/cluster`: daemon and application logs.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("var/log/cluster")
    }

    /// `var/lib/cluster`: state that must survive a reboot (the frame epoch counter).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("var/lib/cluster")
    }

    /// `var/lib/cluster/epoch`: the highest frame epoch this node has handed out.
    pub fn epoch_file(&self) -> PathBuf {
        self.state_dir().join("epoch")
    }

    /// `run/cluster`: sockets and pid files of the running daemons.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run/cluster")
    }

    /// Resolve a path written in a configuration file (absolute, as on a real node) under the
    /// root, so that `/etc/cluster/apache/start` names the node's own copy in the lab.
    pub fn resolve(&self, configured: &Path) -> PathBuf {
        match configured.strip_prefix("/") {
            Ok(relative) => self.root.join(relative),
            Err(_) => self.root.join(configured),
        }
    }
}

impl Paths {
    /// [`Paths::resolve`], refusing a path that leads out of the root: `..` components and
    /// symlinks (in the existing part of the path) are followed as the kernel would, and the
    /// result must lie under the root. The part that does not exist yet is taken as written
    /// (`..` there is refused, and so is a dangling symlink). Under the root `/` every path is
    /// inside.
    pub fn confine(&self, configured: &Path) -> Result<PathBuf, FileError> {
        let joined = self.resolve(configured);
        let root = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let outside = |resolved: PathBuf| FileError::OutsideRoot {
            configured: configured.to_path_buf(),
            resolved,
            root: root.clone(),
        };
        let components: Vec<Component<'_>> = joined.components().collect();
        // The longest prefix that exists, with its symlinks and `..` resolved.
        let mut split = components.len();
        let mut resolved = loop {
            let prefix: PathBuf = components[..split].iter().collect();
            if split == 0 {
                break PathBuf::from("/");
            }
            match fs::canonicalize(&prefix) {
                Ok(real) => break real,
                Err(_) => split -= 1,
            }
        };
        for component in &components[split..] {
            match component {
                Component::Normal(name) => {
                    resolved.push(name);
                    if fs::symlink_metadata(&resolved).is_ok() {
                        // It exists but could not be resolved: a dangling or looping symlink.
                        return Err(outside(resolved));
                    }
                }
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    resolved.push(component);
                    return Err(outside(resolved));
                }
            }
        }
        if resolved.starts_with(&root) {
            Ok(resolved)
        } else {
            Err(outside(resolved))
        }
    }

    /// [`Paths::confine`] for a program about to run: its directory must lie under the root,
    /// but the program itself may be a symlink to one elsewhere, as installed command links
    /// are (`/usr/sbin/fence_linuxha_lab` → the linuxha binary). What it leads to is still
    /// checked for ownership and mode ([`crate::secure::check_strict`] follows the link).
    pub fn confine_program(&self, configured: &Path) -> Result<PathBuf, FileError> {
        match (configured.parent(), configured.file_name()) {
            (Some(dir), Some(name)) => Ok(self.confine(dir)?.join(name)),
            _ => self.confine(configured),
        }
    }
}

/// The name of the local node: `LINUXHA_NODE`, else the host name.
pub fn local_node_name() -> io::Result<String> {
    if let Some(name) = std::env::var_os(NODE_ENV) {
        let name = name.to_string_lossy().trim().to_string();
        if !name.is_empty() {
            return Ok(name);
        }
    }
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(raw.trim().to_string())
}

/// Write `contents` to `path` so that readers see the old file or the new one, never a part:
/// a temp file in the same directory, fsync, rename over, fsync the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomic_inner(path, contents, None)
}

/// [`write_atomic`], the new file getting permission bits `mode` from the start (no moment with
/// the default mode), e.g. those of the file it replaces.
pub fn write_atomic_with_mode(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_inner(path, contents, Some(mode))
}

fn write_atomic_inner(path: &Path, contents: &[u8], mode: Option<u32>) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        let mut file = options.open(&tmp)?;
        if let Some(mode) = mode {
            // The umask may have taken bits away from the mode the file was created with.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Keep the current `path` as `<path>.prev` (a hard copy, so a crash leaves one of them
/// intact), then atomically write the new contents.
pub fn replace_keeping_previous(path: &Path, contents: &[u8]) -> io::Result<()> {
    if path.exists() {
        let previous = fs::read(path)?;
        write_atomic(&previous_path(path), &previous)?;
    }
    write_atomic(path, contents)
}

/// Where [`replace_keeping_previous`] keeps the previous version of `path`.
pub fn previous_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".prev");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_absolute_paths_land_under_the_root() {
        let paths = Paths::new("/tmp/node1");
        assert_eq!(
            paths.resolve(Path::new("/etc/cluster/apache/start")),
            PathBuf::from("/tmp/node1/etc/cluster/apache/start")
        );
        assert_eq!(
            paths.appconf("apache"),
            PathBuf::from("/tmp/node1/etc/cluster/apache/appconf.xml")
        );
    }

    #[test]
    fn atomic_replace_keeps_the_previous_version() {
        let dir = std::env::temp_dir().join(format!("cl-paths-test-{}", std::process::id()));
        let file = dir.join("x.json");
        write_atomic(&file, b"one").expect("first write");
        replace_keeping_previous(&file, b"two").expect("second write");
        assert_eq!(fs::read(&file).expect("read"), b"two");
        assert_eq!(fs::read(previous_path(&file)).expect("read prev"), b"one");
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "temp files left behind");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
