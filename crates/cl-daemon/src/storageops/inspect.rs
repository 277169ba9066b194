//! `StorageOp::Inspect`: what this node has for an application's replicated volumes. Looks
//! only; a question that cannot be answered is reported, never guessed.

use std::collections::BTreeMap;

use cl_core::storage::VolumeState;
use cl_drivers::drbd::conf;
use cl_drivers::lvm::{LvmError, Probe};
use cl_wire::storage::{
    DrbdConf, Holds, NodeInspection, ResourceFile, VgReport, VolumeProbe, VolumeReport,
};

use super::Executor;

impl Executor {
    /// Looks at the node, DRBD, the volume group `vg` and each volume.
    pub(super) fn inspect(&self, vg: Option<&str>, volumes: &[VolumeProbe]) -> NodeInspection {
        let mut errors = Vec::new();
        let node = cl_paths::local_node_name().unwrap_or_default();
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let drbd_kernel = cl_drivers::drbd::drbd_version();
        let drbd_utils = self.drbd.utils_version().ok();
        let drbd_conf = self.drbd_conf();
        let vg = vg.and_then(|name| match self.lvm.vg_info(name) {
            Ok(info) => Some(VgReport {
                name: name.to_string(),
                exists: info.is_some(),
                free_bytes: info.map_or(0, |i| i.free),
                extent_bytes: info.map_or(0, |i| i.extent_size),
            }),
            Err(e) => {
                errors.push(format!("cannot ask LVM about volume group {name}: {e}"));
                None
            }
        });
        let states: BTreeMap<String, VolumeState> = match (&drbd_kernel, &drbd_utils) {
            (Some(_), Some(_)) => self.drbd.snapshot().unwrap_or_else(|e| {
                errors.push(format!("cannot read DRBD's state: {e}"));
                BTreeMap::new()
            }),
            _ => BTreeMap::new(),
        };
        // LVM could not be asked about the group: not about its volumes either (once is enough).
        let lvm_failed = vg.is_none() && !errors.is_empty();
        let volumes = volumes
            .iter()
            .map(|probe| {
                let mut report = self.volume(probe, lvm_failed, &mut errors);
                report.state = states.get(&probe.spec.name).cloned();
                report
            })
            .collect();
        NodeInspection { node, hostname, drbd_kernel, drbd_utils, drbd_conf, vg, volumes, errors }
    }

    fn drbd_conf(&self) -> DrbdConf {
        let path = self.paths.resolve(std::path::Path::new("/etc/drbd.conf"));
        match std::fs::read_to_string(&path) {
            Ok(text) if conf::drbd_conf_includes_drbd_d(&text) => DrbdConf::Includes,
            _ => DrbdConf::Missing { fix: conf::missing_include_error(&path) },
        }
    }

    fn volume(
        &self,
        probe: &VolumeProbe,
        lvm_failed: bool,
        errors: &mut Vec<String>,
    ) -> VolumeReport {
        let resource = probe.spec.name.clone();
        let device = &probe.device;
        let file = match (
            self.render(&probe.spec),
            std::fs::read_to_string(self.resource_file(&resource)),
        ) {
            (_, Err(_)) => ResourceFile::Missing,
            (Ok(text), Ok(old)) if text == old => ResourceFile::Same,
            _ => ResourceFile::Differs,
        };
        let mut report =
            VolumeReport { resource, size_bytes: None, holds: Holds::Empty, file, state: None };
        let size = match &probe.lv {
            Some(_) if lvm_failed => {
                report.holds = Holds::Unknown;
                return report;
            }
            Some(lv) => match self.lvm.lv_size_bytes(&lv.vg, &lv.lv) {
                Ok(size) => size,
                Err(LvmError::NoSuchVg { .. }) => None,
                Err(e) => {
                    errors.push(format!("cannot ask LVM about {}/{}: {e}", lv.vg, lv.lv));
                    report.holds = Holds::Unknown;
                    return report;
                }
            },
            None => cl_drivers::blockdev::device_size(device).ok(),
        };
        report.size_bytes = size;
        if size.is_none() {
            return report;
        }
        // DRBD knows its metadata best, once a resource file names the device.
        if file != ResourceFile::Missing && self.drbd.has_metadata(&report.resource) == Ok(true) {
            report.holds = Holds::DrbdMetadata;
            return report;
        }
        report.holds = match self.lvm.device_holds_data(device, None) {
            Ok(Probe::Empty) => Holds::Empty,
            Ok(Probe::DrbdMetadata) => Holds::DrbdMetadata,
            Ok(Probe::Filesystem(fstype)) => Holds::Filesystem { fstype },
            Ok(Probe::Other(what)) => Holds::Other { what },
            Err(e) => {
                errors.push(format!("cannot tell what {} holds: {e}", device.display()));
                Holds::Unknown
            }
        };
        report
    }
}
