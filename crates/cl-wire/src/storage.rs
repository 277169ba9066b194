//! Replicated-storage work one node asks of another (DRBD's fence-peer handler,
//! `clbuildapp --vgbuild`, `clsplitbrain`), and the answers. The same operations run on the
//! local node without the wire: one executor serves both (cl-daemon `storageops`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use cl_config::drbd::DrbdResource;
use cl_core::storage::{OutdateReply, VolumeState};
use serde::{Deserialize, Serialize};

/// Replicated storage work on the receiving node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StorageOp {
    /// Mark your copy of `resource` Outdated: the sender is Primary without a connection to
    /// you and goes on writing (DRBD's fence-peer handler). Refused while you are Primary.
    Outdate {
        /// The DRBD resource.
        resource: String,
    },
    /// Look, change nothing: the node, DRBD, the volume group and each volume.
    Inspect {
        /// The application's volume group, if it has one.
        vg: Option<String>,
        /// The volumes.
        volumes: Vec<VolumeProbe>,
    },
    /// `lvcreate`: a new logical volume of (at least) this size.
    CreateLv {
        /// Volume group.
        vg: String,
        /// Logical volume.
        lv: String,
        /// Size, bytes (LVM rounds up to extents).
        size_bytes: u64,
    },
    /// `lvextend`: grow a logical volume to (at least) this size; never shrinks.
    ExtendLv {
        /// Volume group.
        vg: String,
        /// Logical volume.
        lv: String,
        /// New size, bytes.
        size_bytes: u64,
    },
    /// `wipefs -a`: erase the signatures on a device whose data the administrator discards
    /// (`--force --source <the other node>`). Refused on a mounted device.
    Wipe {
        /// The device.
        device: PathBuf,
    },
    /// Render the resource file with this node's handler program and write it atomically
    /// (nothing when it is the same).
    WriteResource {
        /// The resource.
        spec: DrbdResource,
    },
    /// `drbdadm create-md`; refused when the device already holds DRBD metadata.
    CreateMetadata {
        /// The resource.
        resource: String,
        /// The administrator confirmed overwriting what the device holds (`--force`, after
        /// the plan said what is erased or kept): drbdmeta's own question is answered yes.
        #[serde(default)]
        confirmed: bool,
    },
    /// `drbdadm up` (or `adjust` when it is up).
    Up {
        /// The resource.
        resource: String,
    },
    /// `drbdadm secondary`.
    Secondary {
        /// The resource.
        resource: String,
    },
    /// `drbdadm primary --force`: only for the source of an initial synchronisation.
    PrimaryForce {
        /// The resource.
        resource: String,
    },
    /// `mkfs.<fstype>` on a DRBD device just created (initial build, sync source, Primary).
    Mkfs {
        /// The DRBD device.
        device: PathBuf,
        /// Filesystem type.
        fstype: String,
    },
    /// `drbdadm disconnect`.
    Disconnect {
        /// The resource.
        resource: String,
    },
    /// `drbdadm connect`.
    Connect {
        /// The resource.
        resource: String,
    },
    /// `drbdadm connect --discard-my-data`: this copy gives way to the peer's (split brain).
    DiscardMyData {
        /// The resource.
        resource: String,
    },
    /// DRBD's state of every resource that is up here (`drbdsetup events2 --now`).
    State,
}

impl StorageOp {
    /// What the operation is, for messages: `create-md webdata-www`.
    pub fn describe(&self) -> String {
        match self {
            StorageOp::Outdate { resource } => format!("outdate {resource}"),
            StorageOp::Inspect { .. } => "inspect the storage".into(),
            StorageOp::CreateLv { vg, lv, .. } => format!("lvcreate {vg}/{lv}"),
            StorageOp::ExtendLv { vg, lv, .. } => format!("lvextend {vg}/{lv}"),
            StorageOp::Wipe { device } => format!("wipefs {}", device.display()),
            StorageOp::WriteResource { spec } => {
                format!("write the resource file of {}", spec.name)
            }
            StorageOp::CreateMetadata { resource, .. } => format!("create-md {resource}"),
            StorageOp::Up { resource } => format!("up {resource}"),
            StorageOp::Secondary { resource } => format!("secondary {resource}"),
            StorageOp::PrimaryForce { resource } => format!("primary --force {resource}"),
            StorageOp::Mkfs { device, fstype } => format!("mkfs.{fstype} {}", device.display()),
            StorageOp::Disconnect { resource } => format!("disconnect {resource}"),
            StorageOp::Connect { resource } => format!("connect {resource}"),
            StorageOp::DiscardMyData { resource } => {
                format!("connect --discard-my-data {resource}")
            }
            StorageOp::State => "read DRBD's state".into(),
        }
    }
}

/// One volume to inspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeProbe {
    /// The device under DRBD (`/dev/<vg>/<lv>` or the disk).
    pub device: PathBuf,
    /// The logical volume, when it is one.
    pub lv: Option<LvName>,
    /// The resource it becomes (its file is compared with what is on the node).
    pub spec: DrbdResource,
}

/// A logical volume's names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvName {
    /// Volume group.
    pub vg: String,
    /// Logical volume.
    pub lv: String,
}

/// The answer to a [`StorageOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "storage", rename_all = "snake_case")]
pub enum StorageReply {
    /// The answer to [`StorageOp::Outdate`].
    Outdate {
        /// What became of the receiver's copy. (Not `reply`: that is [`crate::msg::PeerReply`]'s
        /// tag, and a field of the same name made the answer unreadable.)
        outcome: OutdateReply,
        /// DRBD's words, for the log.
        detail: String,
    },
    /// The answer to [`StorageOp::Inspect`].
    Inspected(Box<NodeInspection>),
    /// The answer to [`StorageOp::State`]: each resource that is up, by name.
    State {
        /// The states.
        volumes: BTreeMap<String, VolumeState>,
    },
    /// Done.
    Done {
        /// What was done, one line.
        detail: String,
    },
    /// Not done.
    Failed {
        /// Why, one sentence (the command line and its stderr).
        error: String,
    },
}

/// What one node found (answer to [`StorageOp::Inspect`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInspection {
    /// The node name linuxha uses there (`LINUXHA_NODE` or the host name).
    pub node: String,
    /// `uname -n`: DRBD matches it against the resource file's `on <host>` sections.
    pub hostname: String,
    /// The DRBD kernel module's version; `None` when it is not loaded.
    pub drbd_kernel: Option<String>,
    /// drbd-utils' version; `None` when `drbdadm` is not installed.
    pub drbd_utils: Option<String>,
    /// Whether `/etc/drbd.conf` includes the resource files linuxha writes.
    pub drbd_conf: DrbdConf,
    /// The volume group, when one was asked about.
    pub vg: Option<VgReport>,
    /// Each volume, in the order asked.
    pub volumes: Vec<VolumeReport>,
    /// Questions the node could not answer (a tool that failed), one sentence each.
    pub errors: Vec<String>,
}

/// `/etc/drbd.conf` on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "drbd_conf", rename_all = "snake_case")]
pub enum DrbdConf {
    /// It includes `drbd.d/*.res`.
    Includes,
    /// It does not (or is missing): the message says what to add.
    Missing {
        /// The message with the fix.
        fix: String,
    },
}

/// A volume group on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VgReport {
    /// Its name.
    pub name: String,
    /// Whether it exists.
    pub exists: bool,
    /// Unallocated space, bytes.
    pub free_bytes: u64,
    /// Extent size, bytes (0 when unknown).
    pub extent_bytes: u64,
}

/// One volume on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeReport {
    /// The DRBD resource.
    pub resource: String,
    /// Size of the device under DRBD, bytes; `None` when it does not exist.
    pub size_bytes: Option<u64>,
    /// What it holds.
    pub holds: Holds,
    /// The resource file on the node.
    pub file: ResourceFile,
    /// DRBD's state of the resource, when it is up.
    pub state: Option<VolumeState>,
}

/// What a device holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "holds", rename_all = "snake_case")]
pub enum Holds {
    /// Nothing (or the device does not exist).
    Empty,
    /// DRBD metadata: the volume was built.
    DrbdMetadata,
    /// A filesystem, without DRBD metadata.
    Filesystem {
        /// Its type.
        fstype: String,
    },
    /// Some other signature.
    Other {
        /// What blkid named.
        what: String,
    },
    /// The probe failed (in [`NodeInspection::errors`]).
    Unknown,
}

impl Holds {
    /// Data that is not DRBD's: a filesystem or another signature.
    pub fn is_foreign_data(&self) -> bool {
        matches!(self, Holds::Filesystem { .. } | Holds::Other { .. })
    }

    /// For messages: `an ext4 filesystem`, `DRBD metadata`, `nothing`.
    pub fn describe(&self) -> String {
        match self {
            Holds::Empty => "nothing".into(),
            Holds::DrbdMetadata => "DRBD metadata".into(),
            Holds::Filesystem { fstype } => {
                let article =
                    if fstype.starts_with(['a', 'e', 'i', 'o', 'u', 'x']) { "an" } else { "a" };
                format!("{article} {fstype} filesystem")
            }
            Holds::Other { what } => format!("data ({what})"),
            Holds::Unknown => "something it could not tell".into(),
        }
    }
}

/// A resource file compared with what it should say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceFile {
    /// Not there.
    Missing,
    /// As it should be.
    Same,
    /// There, but different.
    Differs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_replies_round_trip_as_json() {
        let ops = [
            StorageOp::CreateLv { vg: "vg".into(), lv: "www".into(), size_bytes: 256 << 20 },
            StorageOp::Mkfs { device: "/dev/drbd0".into(), fstype: "ext4".into() },
            StorageOp::DiscardMyData { resource: "web-www".into() },
            StorageOp::State,
        ];
        for op in ops {
            let text = serde_json::to_string(&op).expect("json");
            assert_eq!(serde_json::from_str::<StorageOp>(&text).expect("back"), op, "{text}");
        }
        let reply = StorageReply::Failed { error: "no".into() };
        let text = serde_json::to_string(&reply).expect("json");
        assert_eq!(serde_json::from_str::<StorageReply>(&text).expect("back"), reply);
        assert_eq!(Holds::Filesystem { fstype: "ext4".into() }.describe(), "an ext4 filesystem");
        assert_eq!(Holds::Filesystem { fstype: "xfs".into() }.describe(), "an xfs filesystem");
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;
    use crate::msg::PeerReply;

    #[test]
    fn an_outdate_reply_round_trips_as_a_peer_reply() {
        let reply = PeerReply::Storage(StorageReply::Outdate {
            outcome: OutdateReply::Outdated,
            detail: "copy of r: Outdated".into(),
        });
        let json = serde_json::to_string(&reply).expect("encode");
        let back: PeerReply = serde_json::from_str(&json).expect(&json);
        assert_eq!(back, reply);
    }
}
