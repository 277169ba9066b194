//! The kernel modules of the guest's initramfs: the closure of [`MODULES`] under the
//! `depends=` field of each module's .modinfo, copied from the unpacked kernel package, plus
//! `busybox depmod` so `modprobe` works in the guest.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::assets::install;
use crate::sys;

/// Kernel modules loaded in the guest (their dependencies are added).
pub(super) const MODULES: [&str; 18] = [
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio-rng",
    "9pnet_virtio",
    "9p",
    "ext4",
    "crc32c_generic",
    "crc32c-intel",
    "drbd",
    "dm-mod",
    "dm-snapshot",
    "dm-mirror",
    "dm-zero",
    "softdog",
    "loop",
    "af_packet",
];

/// Copies the closure of [`MODULES`] under their dependencies into the rootfs and runs depmod.
pub(super) fn install_closure(kpkg: &Path, rootfs: &Path, release: &str) -> Result<()> {
    let base = kpkg.join("lib/modules").join(release);
    let mut all: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut stack = vec![base.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) =
                p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko"))
            {
                all.insert(name.replace('-', "_"), p.clone());
            }
        }
    }
    let builtin = fs::read_to_string(base.join("modules.builtin")).unwrap_or_default();
    let is_builtin = |m: &str| {
        builtin.lines().any(|l| {
            l.rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".ko"))
                .map(|f| f.replace('-', "_"))
                .as_deref()
                == Some(m)
        })
    };
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = MODULES.iter().map(|m| m.replace('-', "_")).collect();
    while let Some(m) = todo.pop() {
        if chosen.contains(&m) || is_builtin(&m) {
            continue;
        }
        let Some(path) = all.get(&m) else { bail!("kernel {release} has no module {m}") };
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        todo.extend(module_depends(&bytes).into_iter().map(|d| d.replace('-', "_")));
        chosen.insert(m);
    }
    for m in &chosen {
        let src = &all[m];
        let rel = src.strip_prefix(kpkg).context("module outside the kernel package")?;
        install(rootfs, src, &Path::new("/").join(rel))?;
    }
    for f in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        if base.join(f).exists() {
            install(rootfs, &base.join(f), &Path::new("/lib/modules").join(release).join(f))?;
        }
    }
    sys::run(
        "busybox",
        [std::ffi::OsStr::new("depmod"), "-b".as_ref(), rootfs.as_os_str(), release.as_ref()],
    )?;
    Ok(())
}

/// The `depends=` list of a module's .modinfo section.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(pos) = ko[i..].windows(key.len()).position(|w| w == key) {
        let start = i + pos;
        let at_field = start == 0 || ko[start - 1] == 0;
        let value_start = start + key.len();
        let end =
            ko[value_start..].iter().position(|b| *b == 0).map_or(ko.len(), |e| value_start + e);
        if at_field {
            found.extend(
                String::from_utf8_lossy(&ko[value_start..end])
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        i = end.max(start + 1);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_depends_are_found() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=lru_cache,libcrc32c\0vermagic=6.1\0";
        assert_eq!(module_depends(ko), ["lru_cache", "libcrc32c"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"xdepends=foo\0").is_empty());
    }
}
