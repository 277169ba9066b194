//! Per-host private directories, for software that keeps machine-wide state in fixed places
//! (`/run`, `/dev/shm`, `/var/lib/pacemaker`, …): two copies of it on one machine would share
//! pid files, IPC sockets and state, and the second refuses to start.
//!
//! Each host already has its own mount namespace (its holder's), so an empty tmpfs mounted over
//! such a directory there hides the host's copy from that host only; it goes away with the
//! holder at teardown and never reaches the machine's own mount table.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::Lab;

impl Lab {
    /// Mounts an empty tmpfs (mode 0755) over each absolute directory in `dirs` inside `host`'s
    /// mount namespace; directories that do not exist on the machine are refused.
    pub fn private_dirs(&self, host: &str, dirs: &[&str]) -> Result<()> {
        for dir in dirs {
            if !dir.starts_with('/') || dir.split('/').any(|part| part == "..") {
                bail!("private_dirs on {host}: {dir:?} is not an absolute path without `..`");
            }
            let out = self
                .run(host, &["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", dir])
                .with_context(|| format!("mounting a tmpfs over {dir} on {host}"))?;
            if !out.status.success() {
                bail!(
                    "mount tmpfs over {dir} on {host}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(())
    }

    /// Where `path` (absolute, as `host` sees it) can be read and written from outside the host:
    /// through its holder's root, so a private directory's content is reachable too.
    pub fn host_path(&self, host: &str, path: &Path) -> Result<PathBuf> {
        let holder = self.holder_pid(host)?;
        let relative = path.strip_prefix("/").unwrap_or(path);
        Ok(PathBuf::from(format!("/proc/{holder}/root")).join(relative))
    }
}
