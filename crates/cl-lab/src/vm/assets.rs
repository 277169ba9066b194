//! The guests' kernel and initramfs, built once and cached.
//!
//! The kernel is Debian's stock `linux-image-amd64` (it ships drbd.ko = DRBD 8.4 and dm-mod);
//! the initramfs holds busybox, the kernel modules a lab node needs, drbd-utils, LVM, e2fsprogs,
//! the glibc libraries of the host-built `linuxha` binary and [`INIT`]. Packages come through apt
//! (`apt-get download` + `dpkg-deb -x`: nothing but qemu, busybox-static and cpio is installed on
//! the host). The cache directory is keyed by the kernel package version and a hash of the init
//! script, the package versions and the list of host files copied in, so any change rebuilds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::sys;

/// The guest's `/init`.
pub(crate) const INIT: &str = include_str!("init.sh");

/// Default cache directory; `LINUXHA_VMLAB_CACHE` overrides it.
pub const DEFAULT_CACHE: &str = "/var/cache/linuxha-vmlab";

/// Host packages the VM lab runs with (installed when missing).
const HOST_PACKAGES: [(&str, &str); 3] =
    [("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static"), ("cpio", "cpio")];

/// Packages downloaded (never installed) and unpacked into the initramfs.
const GUEST_PACKAGES: [&str; 6] =
    ["drbd-utils", "lvm2", "dmsetup", "libdevmapper1.02.1", "libdevmapper-event1.02.1", "libaio1"];

/// Host programs copied into the guest, with their libraries (`ldd`), as (host path, guest path).
const HOST_FILES: [(&str, &str); 9] = [
    ("/sbin/blkid", "/sbin/blkid"),
    ("/sbin/wipefs", "/sbin/wipefs"),
    ("/sbin/mke2fs", "/sbin/mke2fs"),
    ("/sbin/mke2fs", "/sbin/mkfs.ext4"),
    ("/sbin/e2fsck", "/sbin/e2fsck"),
    ("/sbin/e2fsck", "/sbin/fsck.ext4"),
    ("/sbin/tune2fs", "/sbin/tune2fs"),
    ("/sbin/resize2fs", "/sbin/resize2fs"),
    ("/bin/dd", "/usr/bin/gdd"),
];

/// Files taken from the unpacked packages, as (path in the extraction, guest path).
const PACKAGE_FILES: [(&str, &str); 7] = [
    ("sbin/drbdadm", "/sbin/drbdadm"),
    ("sbin/drbdsetup", "/sbin/drbdsetup"),
    ("sbin/drbdmeta", "/sbin/drbdmeta"),
    ("lib/drbd/drbdadm-84", "/lib/drbd/drbdadm-84"),
    ("lib/drbd/drbdsetup-84", "/lib/drbd/drbdsetup-84"),
    ("sbin/lvm", "/sbin/lvm"),
    ("sbin/dmsetup", "/sbin/dmsetup"),
];

/// Names `lvm` answers to, linked to it in the guest.
const LVM_NAMES: [&str; 24] = [
    "pvcreate",
    "pvremove",
    "pvs",
    "pvscan",
    "pvdisplay",
    "pvresize",
    "vgcreate",
    "vgremove",
    "vgs",
    "vgscan",
    "vgdisplay",
    "vgchange",
    "vgextend",
    "vgreduce",
    "lvcreate",
    "lvremove",
    "lvs",
    "lvscan",
    "lvdisplay",
    "lvchange",
    "lvextend",
    "lvresize",
    "lvreduce",
    "lvrename",
];

/// Program names the `linuxha` binary answers to, linked to `/mnt/host/linuxha` in the guest
/// (the `linuxha` crate checks this list against its own).
pub const GUEST_COMMANDS: [&str; 19] = [
    "linuxha",
    "clbuild",
    "clbuildapp",
    "clform",
    "clhalt",
    "clstat",
    "clstartapp",
    "clhaltapp",
    "clswitchapp",
    "clsplitbrain",
    "cllock",
    "cldaemon",
    "cllockd",
    "clnetd",
    "clhbd",
    "clhbd2",
    "clarbd",
    "fence_linuxha_lab",
    "fence_linuxha_vm",
];

/// LVM without udev: LVM makes the /dev/<vg>/<lv> nodes itself.
const LVM_CONF: &str = "\
devices { obtain_device_list_from_udev = 0 }
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
global { use_lvmpolld = 0 }
backup { backup = 1 archive = 0 }
";

/// DRBD's top-level configuration: resources go in /etc/drbd.d (on the system disk).
const DRBD_CONF: &str = "global { usage-count no; }\ninclude \"drbd.d/*.res\";\n";

/// A built kernel and initramfs.
#[derive(Clone, Debug)]
pub struct Assets {
    /// The cache directory of this build.
    pub dir: PathBuf,
    /// The kernel image (`vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs (`initrd.gz`).
    pub initrd: PathBuf,
    /// The kernel release, e.g. `6.1.0-57-amd64`.
    pub kernel_release: String,
    /// Whether this call built them (false: taken from the cache).
    pub built: bool,
}

/// The cache root: `LINUXHA_VMLAB_CACHE` or [`DEFAULT_CACHE`].
pub fn cache_root() -> PathBuf {
    std::env::var_os("LINUXHA_VMLAB_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// Installs the host packages the VM lab needs when a tool is missing (apt-get, as root).
pub fn ensure_host_tools() -> Result<()> {
    let missing: BTreeSet<&str> =
        HOST_PACKAGES.iter().filter(|(tool, _)| !on_path(tool)).map(|(_, pkg)| *pkg).collect();
    let busybox_static =
        Path::new("/bin/busybox").exists() && !is_dynamic(Path::new("/bin/busybox"));
    let mut missing: Vec<&str> = missing.into_iter().collect();
    if !busybox_static && !missing.contains(&"busybox-static") {
        missing.push("busybox-static");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("cl-lab vm: installing {}", missing.join(" "));
    let install = |update: bool| -> Result<()> {
        if update {
            sys::run("apt-get", ["update", "-qq"])?;
        }
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        let mut cmd = Command::new("apt-get");
        cmd.args(&args).env("DEBIAN_FRONTEND", "noninteractive");
        let out = cmd.output().context("running apt-get install")?;
        if !out.status.success() {
            bail!(
                "apt-get install {}: {}",
                missing.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    install(false).or_else(|_| install(true))
}

/// Whether `tool` is an executable file in a PATH directory.
fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(tool).is_file())
}

/// Whether `ldd` names libraries for `file` (a static binary has none).
fn is_dynamic(file: &Path) -> bool {
    Command::new("ldd")
        .arg(file)
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("=>"))
        .unwrap_or(false)
}

/// The kernel package `linux-image-amd64` depends on, and the candidate version of it and of
/// every guest package, as apt sees them now.
fn package_versions() -> Result<(String, BTreeMap<String, String>)> {
    let deps = sys::run("apt-cache", ["depends", "linux-image-amd64"])?;
    let kernel = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| {
            p.starts_with("linux-image-") && p.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
        })
        .map(str::to_owned)
        .context("apt-cache depends linux-image-amd64 names no linux-image-<version> package")?;
    let mut names = vec![kernel.clone()];
    names.extend(GUEST_PACKAGES.iter().map(|s| s.to_string()));
    let policy = sys::run("apt-cache", std::iter::once("policy".to_owned()).chain(names.clone()))?;
    let mut versions = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in policy.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            current = Some(line.trim_end_matches(':').to_owned());
        } else if let (Some(pkg), Some(v)) = (&current, line.trim().strip_prefix("Candidate: ")) {
            if v != "(none)" {
                versions.insert(pkg.clone(), v.to_owned());
            }
        }
    }
    for n in &names {
        if !versions.contains_key(n) {
            bail!("apt has no candidate version of {n} (run apt-get update?)");
        }
    }
    Ok((kernel, versions))
}

/// FNV-1a, 64 bits: a stable hash for the cache key (std's hasher may change between releases).
fn fnv1a(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Libraries `ldd` resolves for `file`, with `LD_LIBRARY_PATH` = `extra` dirs first.
fn ldd(file: &Path, extra: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut cmd = Command::new("ldd");
    cmd.arg(file);
    if !extra.is_empty() {
        cmd.env("LD_LIBRARY_PATH", std::env::join_paths(extra).context("library path")?);
    }
    let out = cmd.output().with_context(|| format!("running ldd {}", file.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!("ldd {}: {}", file.display(), line.trim());
        }
        let path = line.split("=>").nth(1).unwrap_or(line).trim();
        if let Some(p) = path.split_whitespace().next().filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Builds the assets unless a cached build with the same key exists. `binary` is the
/// host-built `linuxha` whose libraries the guest needs.
pub fn ensure(binary: &Path) -> Result<Assets> {
    ensure_host_tools()?;
    let (kernel_pkg, versions) = package_versions()?;
    let host_libs: Vec<PathBuf> = std::iter::once(binary.to_path_buf())
        .chain(HOST_FILES.iter().map(|(h, _)| PathBuf::from(h)))
        .map(|f| ldd(&f, &[]))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut key = fnv1a(INIT.as_bytes(), 0xcbf2_9ce4_8422_2325);
    for part in [
        LVM_CONF,
        DRBD_CONF,
        &super::modules::MODULES.join(","),
        &GUEST_COMMANDS.join(","),
        &LVM_NAMES.join(","),
    ] {
        key = fnv1a(part.as_bytes(), key);
    }
    for (p, v) in &versions {
        key = fnv1a(format!("{p}={v};").as_bytes(), key);
    }
    for (h, g) in HOST_FILES.iter().chain(PACKAGE_FILES.iter()) {
        key = fnv1a(format!("{h}>{g};").as_bytes(), key);
    }
    for lib in &host_libs {
        key = fnv1a(lib.as_os_str().as_encoded_bytes(), key);
    }
    let kernel_version = versions.get(&kernel_pkg).cloned().unwrap_or_default();
    let root = cache_root();
    let dir = root.join(format!("{kernel_version}-{key:016x}"));
    let assets = |built: bool| -> Result<Assets> {
        let release = fs::read_to_string(dir.join("kernel-release"))
            .with_context(|| format!("reading {}", dir.join("kernel-release").display()))?;
        Ok(Assets {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.gz"),
            kernel_release: release.trim().to_owned(),
            dir: dir.clone(),
            built,
        })
    };
    if dir.join("initrd.gz").exists() {
        return assets(false);
    }
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _lock = sys::FileLock::acquire(&root.join(".lock"))?;
    if dir.join("initrd.gz").exists() {
        return assets(false);
    }
    let start = Instant::now();
    let tmp = root.join(format!(".build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let result = build(&root, &tmp, &kernel_pkg, &versions, binary);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e.context(format!("building the VM lab assets in {}", tmp.display())));
    }
    fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    eprintln!(
        "cl-lab vm: assets built in {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        dir.display()
    );
    assets(true)
}

/// apt's file name for a package version (`:` of an epoch becomes `%3a`).
fn deb_prefix(pkg: &str, version: &str) -> String {
    format!("{pkg}_{}_", version.replace(':', "%3a"))
}

/// Downloads the packages missing from `<root>/debs` and returns the .deb of each.
fn download(root: &Path, packages: &BTreeMap<String, String>) -> Result<BTreeMap<String, PathBuf>> {
    let debs = root.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    // apt downloads as the unprivileged _apt user: let it write here.
    fs::set_permissions(&debs, fs::Permissions::from_mode(0o777))
        .with_context(|| format!("chmod {}", debs.display()))?;
    let find = || -> BTreeMap<String, PathBuf> {
        let names: Vec<String> = fs::read_dir(&debs)
            .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        packages
            .iter()
            .filter_map(|(p, v)| {
                let prefix = deb_prefix(p, v);
                names
                    .iter()
                    .find(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                    .map(|n| (p.clone(), debs.join(n)))
            })
            .collect()
    };
    let have = find();
    let wanted: Vec<String> = packages
        .iter()
        .filter(|(p, _)| !have.contains_key(*p))
        .map(|(p, v)| format!("{p}={v}"))
        .collect();
    if !wanted.is_empty() {
        let out = Command::new("apt-get")
            .args(["download", "-q"])
            .args(&wanted)
            .current_dir(&debs)
            .output()
            .context("running apt-get download")?;
        if !out.status.success() {
            bail!(
                "apt-get download {}: {}",
                wanted.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let found = find();
    for p in packages.keys() {
        if !found.contains_key(p) {
            bail!("apt-get download left no .deb of {p} in {}", debs.display());
        }
    }
    Ok(found)
}

/// Copies `from` (following links) to `rootfs` + `to`, creating directories.
pub(super) fn install(rootfs: &Path, from: &Path, to: &Path) -> Result<()> {
    let dest = rootfs.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(from, &dest)
        .with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
    Ok(())
}

/// Writes a text file into the rootfs.
fn write(rootfs: &Path, to: &str, text: &str, mode: u32) -> Result<()> {
    let dest = rootfs.join(to.trim_start_matches('/'));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dest.display()))
}

/// The build steps, into `tmp`.
fn build(
    root: &Path,
    tmp: &Path,
    kernel_pkg: &str,
    versions: &BTreeMap<String, String>,
    binary: &Path,
) -> Result<()> {
    let debs = download(root, versions)?;
    let kpkg = tmp.join("kpkg");
    let x = tmp.join("x");
    let rootfs = tmp.join("rootfs");
    for (pkg, deb) in &debs {
        let into = if pkg == kernel_pkg { &kpkg } else { &x };
        fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
        sys::run("dpkg-deb", [std::ffi::OsStr::new("-x"), deb.as_os_str(), into.as_os_str()])?;
    }
    let release = fs::read_dir(kpkg.join("lib/modules"))
        .context("kernel package has no lib/modules")?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .next()
        .context("kernel package has no module directory")?;
    fs::copy(kpkg.join(format!("boot/vmlinuz-{release}")), tmp.join("vmlinuz"))
        .context("copying the kernel image")?;
    fs::write(tmp.join("kernel-release"), format!("{release}\n"))
        .context("writing kernel-release")?;

    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "lib/drbd",
        "etc/lvm",
        "etc/drbd.d",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "mnt",
        "var/lib/drbd",
    ] {
        fs::create_dir_all(rootfs.join(d)).with_context(|| format!("creating rootfs/{d}"))?;
    }
    install(&rootfs, Path::new("/bin/busybox"), Path::new("/bin/busybox"))?;
    super::modules::install_closure(&kpkg, &rootfs, &release)?;

    // Programs and every library they load: from the extraction when it has them, else the host's.
    let lib_dirs: Vec<PathBuf> =
        ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"].iter().map(|d| x.join(d)).collect();
    let mut libs: BTreeSet<PathBuf> = BTreeSet::new();
    for (from, to) in PACKAGE_FILES {
        let src = x.join(from);
        install(&rootfs, &src, Path::new(to))?;
        libs.extend(ldd(&src, &lib_dirs)?);
    }
    for (from, to) in HOST_FILES {
        install(&rootfs, Path::new(from), Path::new(to))?;
        libs.extend(ldd(Path::new(from), &[])?);
    }
    libs.extend(ldd(binary, &[])?);
    for lib in &libs {
        let guest = match lib.strip_prefix(&x) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => lib.clone(),
        };
        install(&rootfs, lib, &guest)?;
    }
    for name in LVM_NAMES {
        symlink("lvm", rootfs.join("sbin").join(name))
            .with_context(|| format!("linking {name}"))?;
    }
    for name in GUEST_COMMANDS {
        symlink("/mnt/host/linuxha", rootfs.join("usr/sbin").join(name))
            .with_context(|| format!("linking {name}"))?;
    }
    if Path::new("/etc/mke2fs.conf").exists() {
        install(&rootfs, Path::new("/etc/mke2fs.conf"), Path::new("/etc/mke2fs.conf"))?;
    }
    write(&rootfs, "/etc/lvm/lvm.conf", LVM_CONF, 0o644)?;
    write(&rootfs, "/etc/drbd.conf", DRBD_CONF, 0o644)?;
    write(&rootfs, "/etc/passwd", "root:x:0:0:root:/:/bin/sh\n", 0o644)?;
    write(&rootfs, "/etc/group", "root:x:0:\n", 0o644)?;
    write(&rootfs, "/init", INIT, 0o755)?;

    let initrd = tmp.join("initrd.gz");
    let script = format!(
        "cd {} && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 > {}",
        sh_quote(&rootfs.display().to_string()),
        sh_quote(&initrd.display().to_string())
    );
    sys::run("sh", ["-c", &script])?;
    for d in [&kpkg, &x, &rootfs] {
        fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
    }
    Ok(())
}

/// Single-quotes `s` for sh.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_names_encode_epochs() {
        assert_eq!(deb_prefix("dmsetup", "2:1.02.185-2"), "dmsetup_2%3a1.02.185-2_");
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }
}
