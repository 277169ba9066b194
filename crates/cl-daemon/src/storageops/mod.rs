//! The replicated-storage operations of `clbuildapp --vgbuild` and `clsplitbrain`, run on this
//! node: by the command itself for the local node, by cldaemon for a peer that asked
//! (`PeerRequest::Storage`). One executor for both, so both nodes do the same thing the same
//! way. Blocking: every operation is one or a few bounded tool runs (cl-drivers).

mod inspect;

use std::path::{Path, PathBuf};

use cl_config::drbd::DrbdResource;
use cl_drivers::drbd::{conf, Drbd};
use cl_drivers::lvm::{Lvm, Probe};
use cl_drivers::tool::Tools;
use cl_paths::Paths;
use cl_wire::storage::{StorageOp, StorageReply};

/// Where linuxha is installed for DRBD's handlers, when it is.
const INSTALLED: &str = "/usr/sbin/linuxha";

/// The tools, and the root the node's files live under.
pub struct Executor {
    paths: Paths,
    drbd: Drbd,
    lvm: Lvm,
    tools: Tools,
}

impl Executor {
    /// The system's tools, for the node whose files are under `paths`.
    pub fn system(paths: &Paths) -> Executor {
        Executor {
            paths: paths.clone(),
            drbd: Drbd::system(),
            lvm: Lvm::system(),
            // mkfs of a large volume takes a while.
            tools: Tools::system(std::time::Duration::from_secs(1800)),
        }
    }

    /// Runs `op` here (blocking).
    pub fn execute(&self, op: StorageOp) -> StorageReply {
        let what = op.describe();
        match self.run(op) {
            Ok(reply) => reply,
            Err(error) => StorageReply::Failed { error: format!("{what}: {error}") },
        }
    }

    fn run(&self, op: StorageOp) -> Result<StorageReply, String> {
        let done = |detail: String| Ok(StorageReply::Done { detail });
        let e = |e: &dyn std::fmt::Display| e.to_string();
        match op {
            StorageOp::Outdate { resource } => {
                let result = self.drbd.outdate(&resource);
                let reply = cl_drivers::drbd::outdate_answer(&result);
                let detail = match result {
                    Ok(r) => format!("copy of {resource}: {r:?}"),
                    Err(err) => err.to_string(),
                };
                Ok(StorageReply::Outdate { outcome: reply, detail })
            }
            StorageOp::Inspect { vg, volumes } => {
                Ok(StorageReply::Inspected(Box::new(self.inspect(vg.as_deref(), &volumes))))
            }
            StorageOp::CreateLv { vg, lv, size_bytes } => {
                let made = self.lvm.lv_create(&vg, &lv, size_bytes).map_err(|x| e(&x))?;
                done(format!("created {vg}/{lv} ({made} bytes)"))
            }
            StorageOp::ExtendLv { vg, lv, size_bytes } => {
                let made = cl_drivers::blockdev::lv_extend(&self.lvm, &vg, &lv, size_bytes)
                    .map_err(|x| e(&x))?;
                done(format!("{vg}/{lv} is {made} bytes"))
            }
            StorageOp::Wipe { device } => {
                if is_mounted(&device) {
                    return Err(format!("{} is mounted: not erasing it", device.display()));
                }
                cl_drivers::blockdev::wipe_signatures(&self.tools, &device).map_err(|x| e(&x))?;
                done(format!("erased the signatures on {}", device.display()))
            }
            StorageOp::WriteResource { spec } => self.write_resource(&spec),
            StorageOp::CreateMetadata { resource, confirmed } => {
                let made = if confirmed {
                    self.drbd.create_md_confirmed(&resource)
                } else {
                    self.drbd.create_md(&resource)
                };
                made.map_err(|x| e(&x))?;
                done(format!("created DRBD metadata for {resource}"))
            }
            StorageOp::Up { resource } => {
                let outcome = self.drbd.up(&resource).map_err(|x| e(&x))?;
                done(format!("{resource}: {outcome:?}"))
            }
            StorageOp::Secondary { resource } => {
                self.drbd.secondary(&resource).map_err(|x| e(&x))?;
                done(format!("{resource} is Secondary"))
            }
            StorageOp::PrimaryForce { resource } => {
                self.drbd.primary_force(&resource).map_err(|x| e(&x))?;
                done(format!("{resource} is Primary (forced): the initial sync starts"))
            }
            StorageOp::Mkfs { device, fstype } => {
                // Only on a device that holds nothing: a DRBD device just built.
                match self.lvm.device_holds_data(&device, None).map_err(|x| e(&x))? {
                    Probe::Empty => {}
                    other => {
                        return Err(format!(
                            "{} already holds {other:?}: not making a filesystem on it",
                            device.display()
                        ))
                    }
                }
                cl_drivers::blockdev::mkfs(&self.tools, &device, &fstype).map_err(|x| e(&x))?;
                done(format!("made {fstype} on {}", device.display()))
            }
            StorageOp::Disconnect { resource } => {
                self.drbd.disconnect(&resource).map_err(|x| e(&x))?;
                done(format!("{resource} is disconnected"))
            }
            StorageOp::Connect { resource } => {
                self.drbd.connect(&resource).map_err(|x| e(&x))?;
                done(format!("{resource} is connecting"))
            }
            StorageOp::DiscardMyData { resource } => {
                self.drbd.connect_discard_my_data(&resource).map_err(|x| e(&x))?;
                done(format!("{resource} is connecting, discarding this node's changes"))
            }
            StorageOp::State => {
                let volumes = self.drbd.snapshot().map_err(|x| e(&x))?;
                Ok(StorageReply::State { volumes })
            }
        }
    }

    /// The resource file's path under this node's root.
    fn resource_file(&self, name: &str) -> PathBuf {
        self.paths.resolve(&conf::resource_file_path(name))
    }

    /// The text this node's file of `spec` must hold.
    fn render(&self, spec: &DrbdResource) -> Result<String, String> {
        conf::render(&driver_spec(spec, handler_program())).map_err(|e| e.to_string())
    }

    fn write_resource(&self, spec: &DrbdResource) -> Result<StorageReply, String> {
        let text = self.render(spec)?;
        let path = self.resource_file(&spec.name);
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            return Ok(StorageReply::Done { detail: format!("{} is unchanged", path.display()) });
        }
        cl_paths::write_atomic(&path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(StorageReply::Done { detail: format!("wrote {}", path.display()) })
    }
}

/// The program DRBD's handlers run: the installed linuxha, else this one.
pub fn handler_program() -> PathBuf {
    let installed = Path::new(INSTALLED);
    if installed.exists() {
        return installed.to_path_buf();
    }
    std::env::current_exe().unwrap_or_else(|_| installed.to_path_buf())
}

/// The driver's resource specification of `spec`, with this node's handler program.
pub fn driver_spec(spec: &DrbdResource, handler: PathBuf) -> conf::ResourceSpec {
    conf::ResourceSpec { resource: spec.clone(), handler }
}

/// Whether `device` is mounted (by its canonical path).
fn is_mounted(device: &Path) -> bool {
    let canonical = std::fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| l.split_whitespace().next() == Some(&*canonical.to_string_lossy()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cl_config::replication::{AfterSplitBrain, Fencing};

    fn spec() -> DrbdResource {
        DrbdResource {
            name: "webdata-www".into(),
            minor: 0,
            nodes: vec![
                cl_config::drbd::DrbdNode {
                    hostname: "node1".into(),
                    backing_disk: "/dev/webdatavg/www".into(),
                    address: "10.0.0.1".parse().expect("ip"),
                    port: 7788,
                },
                cl_config::drbd::DrbdNode {
                    hostname: "node2".into(),
                    backing_disk: "/dev/webdatavg/www".into(),
                    address: "10.0.0.2".parse().expect("ip"),
                    port: 7788,
                },
            ],
            fencing: Fencing::ResourceAndStonith,
            after_sb: AfterSplitBrain::Disconnect,
            resync_rate_kib: 100 << 10,
            ping_int: std::time::Duration::from_secs(2),
            ping_timeout: std::time::Duration::from_millis(500),
            connect_int: std::time::Duration::from_secs(2),
            timeout: std::time::Duration::from_millis(1500),
        }
    }

    #[test]
    fn the_resource_file_is_written_once_under_the_root() {
        let root = tempfile::tempdir().expect("root");
        let exec = Executor::system(&Paths::new(root.path()));
        let reply = exec.execute(StorageOp::WriteResource { spec: spec() });
        let path = root.path().join("etc/drbd.d/linuxha-webdata-www.res");
        assert!(
            matches!(&reply, StorageReply::Done { detail } if detail.starts_with("wrote")),
            "{reply:?}"
        );
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(text.contains("protocol C;") && text.contains("on node2 {"), "{text}");
        assert!(text.contains("drbd-handler fence-peer"), "{text}");
        let again = exec.execute(StorageOp::WriteResource { spec: spec() });
        assert!(
            matches!(&again, StorageReply::Done { detail } if detail.ends_with("unchanged")),
            "{again:?}"
        );
    }
}
