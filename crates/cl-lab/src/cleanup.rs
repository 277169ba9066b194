//! Removing a lab, whole or what is left of it, and reaping labs whose owner died.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::Result;

use crate::state::{all_states, read_state, validate_name, LabState};
use crate::{lab_dir, nft, state_file, sys, vm, Lab, LabError, SETTLE_TIMEOUT};

/// Whether `suffix` is a host part of a lab resource name (`ext`, `node<digits>`).
fn is_host_suffix(suffix: &str) -> bool {
    suffix == "ext"
        || suffix
            .strip_prefix("node")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The lab's namespaces that exist now: from the state, plus any `ip netns list` entry whose
/// name is exactly `<lab>-sw|ext|node<N>` (exact, so lab `a` never matches lab `a-b`).
fn lab_namespaces(name: &str, state: Option<&LabState>) -> Vec<String> {
    let mut found: BTreeSet<String> = BTreeSet::new();
    let existing = sys::netns_list().unwrap_or_default();
    for ns in &existing {
        if let Some(suffix) = ns.strip_prefix(name).and_then(|s| s.strip_prefix('-')) {
            if suffix == "sw" || is_host_suffix(suffix) {
                found.insert(ns.clone());
            }
        }
    }
    if let Some(st) = state {
        for ns in std::iter::once(&st.switch_netns).chain(st.hosts.iter().map(|h| &h.netns)) {
            if existing.contains(ns) {
                found.insert(ns.clone());
            }
        }
    }
    found.into_iter().collect()
}

/// The lab's cgroups that exist now, found the same way as [`lab_namespaces`].
fn lab_cgroups(name: &str, state: Option<&LabState>) -> Vec<PathBuf> {
    let mut found: BTreeSet<PathBuf> = BTreeSet::new();
    let prefix = format!("linuxha-lab-{name}-");
    if let Ok(base) = sys::cgroup_base() {
        if let Ok(entries) = fs::read_dir(&base) {
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(fname) = file_name.to_str() else { continue };
                let Some(suffix) = fname.strip_prefix(&prefix) else { continue };
                let host = suffix.strip_suffix("-holder").unwrap_or(suffix);
                if is_host_suffix(host) {
                    found.insert(entry.path());
                }
            }
        }
    }
    if let Some(st) = state {
        for h in &st.hosts {
            for cg in [&h.cgroup, &h.holder_cgroup] {
                if cg.exists() {
                    found.insert(cg.clone());
                }
            }
        }
    }
    found.into_iter().collect()
}

/// Removes every trace of lab `name`, best effort: each step runs even if an earlier one
/// failed, and the failures are returned. Only processes inside the lab's own cgroups and
/// namespaces (and our own holder children) are killed, never a pid merely read from a file.
fn teardown(name: &str, state: Option<&LabState>, holders: &mut Vec<Child>) -> Vec<String> {
    // VM nodes first: their qemu processes hold the taps in the switch namespace.
    let mut errors =
        vm::teardown_guests(&state.map(|s| s.dir.clone()).unwrap_or_else(|| lab_dir(name)));
    let cgroups = lab_cgroups(name, state);
    let namespaces = lab_namespaces(name, state);

    // Thaw first: a frozen process cannot run its way out of anything, and v1-style stuck
    // freezes would keep the cgroup populated.
    for cg in &cgroups {
        let _ = sys::cg_write(cg, "cgroup.freeze", "0");
        if sys::cg_write(cg, "cgroup.kill", "1").is_err() {
            // Kernels before 5.14 have no cgroup.kill: kill the members one by one.
            for pid in sys::cg_pids(cg).unwrap_or_default() {
                if let Err(e) = sys::kill_pid(pid) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
    }
    // Processes that entered a lab namespace some other way (`ip netns exec`) are ours too.
    for ns in &namespaces {
        for pid in sys::netns_pids(ns).unwrap_or_default() {
            if let Err(e) = sys::kill_pid(pid) {
                errors.push(format!("{e:#}"));
            }
        }
    }
    for child in holders.iter_mut() {
        let _ = child.kill();
    }
    for mut child in holders.drain(..) {
        let pid = child.id();
        if !sys::wait_until(SETTLE_TIMEOUT, || !matches!(child.try_wait(), Ok(None))) {
            errors.push(format!("holder {pid} did not exit"));
        }
    }
    for cg in &cgroups {
        let empty =
            sys::wait_until(SETTLE_TIMEOUT, || sys::cg_event(cg, "populated") != Some(true));
        if !empty {
            errors.push(format!("{} still has processes", cg.display()));
        }
        // rmdir can race with the last exit being accounted; retry briefly.
        let mut last = None;
        // Daemons under test make cgroups of their own inside a node's (one per application):
        // remove those first, deepest first.
        let removed = sys::wait_until(Duration::from_secs(5), || match remove_cgroup_tree(cg) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                last = Some(e);
                false
            }
        });
        if !removed {
            errors.push(format!(
                "rmdir {}: {}",
                cg.display(),
                last.map(|e| e.to_string()).unwrap_or_default()
            ));
        }
    }
    let switch = format!("{name}-sw");
    if namespaces.contains(&switch) {
        let path = sys::netns_path(&switch);
        let net = format!("--net={}", path.display());
        if let Err(e) = sys::run_with_stdin(
            "nsenter",
            [net.as_str(), "nft", "-f", "-"],
            Some(&nft::render_delete()),
        ) {
            errors.push(format!("{e:#}"));
        }
    }
    for ns in &namespaces {
        if let Err(e) = sys::ip(&["netns", "del", ns]) {
            errors.push(format!("{e:#}"));
        }
    }
    let dir = state.map(|s| s.dir.clone()).unwrap_or_else(|| lab_dir(name));
    for mount in sys::mounts_under(&dir) {
        if let Err(e) = sys::run("umount", [OsStr::new("-l"), mount.as_os_str()]) {
            errors.push(format!("{e:#}"));
        }
    }
    if dir.exists() {
        let left = sys::mounts_under(&dir);
        if left.is_empty() {
            if let Err(e) = fs::remove_dir_all(&dir) {
                errors.push(format!("removing {}: {e}", dir.display()));
            }
        } else {
            // Never recurse into a mounted filesystem: that would delete data outside the lab.
            errors.push(format!("not removing {}: still mounted: {left:?}", dir.display()));
        }
    }
    match fs::remove_file(state_file(name)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(format!("removing {}: {e}", state_file(name).display())),
    }
    errors
}

/// Removes labs whose owning process has died (a test killed with SIGKILL), best effort.
pub(crate) fn reap_stale() {
    for st in all_states() {
        if !st.owner.is_alive() {
            let errors = teardown(&st.name, Some(&st), &mut Vec::new());
            if !errors.is_empty() {
                eprintln!("cl-lab: reaping stale lab {}: {}", st.name, errors.join("; "));
            }
        }
    }
}

impl Lab {
    /// Removes the lab and everything it made; every step is attempted, failures are reported
    /// together as [`LabError::Cleanup`]. Safe to call on a partly built or half-removed lab.
    pub fn down(mut self) -> Result<()> {
        self.teardown()
    }

    /// Whether anything of lab `name` is left to remove: its state file, its directory, a
    /// namespace or a cgroup (found by their exact lab names, as [`Lab::down_by_name`] does).
    pub fn exists_by_name(name: &str) -> Result<bool> {
        validate_name(name)?;
        Ok(state_file(name).exists()
            || lab_dir(name).exists()
            || !lab_namespaces(name, None).is_empty()
            || !lab_cgroups(name, None).is_empty())
    }

    /// Removes whatever is left of lab `name` even without a usable state file (for
    /// `linuxha lab down` after a crash), finding resources by their exact lab names.
    pub fn down_by_name(name: &str) -> Result<()> {
        validate_name(name)?;
        let state = read_state(&state_file(name)).ok();
        let errors = teardown(name, state.as_ref(), &mut Vec::new());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LabError::Cleanup { lab: name.into(), errors }.into())
        }
    }

    /// Shared body of [`Lab::down`] and `Drop`.
    pub(crate) fn teardown(&mut self) -> Result<()> {
        self.torn_down = true;
        let errors = teardown(&self.state.name, Some(&self.state), &mut self.holders);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LabError::Cleanup { lab: self.state.name.clone(), errors }.into())
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.cleanup_on_drop && !self.torn_down {
            if let Err(e) = self.teardown() {
                eprintln!("cl-lab: {e:#}");
            }
        }
    }
}

/// rmdir a cgroup and every cgroup below it, deepest first (cgroup directories cannot be
/// removed recursively in one call).
fn remove_cgroup_tree(cg: &Path) -> std::io::Result<()> {
    if let Ok(entries) = fs::read_dir(cg) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&entry.path())?;
            }
        }
    }
    fs::remove_dir(cg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_suffixes_are_exact() {
        assert!(is_host_suffix("ext"));
        assert!(is_host_suffix("node12"));
        assert!(!is_host_suffix("node"));
        assert!(!is_host_suffix("node1-sw"));
        assert!(!is_host_suffix("extra"));
    }
}
