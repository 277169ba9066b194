//! Replicated storage in `appconf.xml`: Linuxha.net's model of one LVM volume group per
//! application and one DRBD resource (protocol C) per replicated volume, or a plain block
//! device replicated without LVM.
//!
//! ```xml
//! <storage>
//!   <replication net="private" fencing="resource-and-stonith" resync_rate="100M"/>
//!   <vg name="apachevg">
//!     <lv name="data" size="256M" type="ext4" mountpoint="/apache/data"/>
//!   </vg>
//!   <disk device="/dev/vdc" type="ext4" mountpoint="/apache/spool"/>
//! </storage>
//! ```
//!
//! Everything that can be known from the files is checked here, against the cluster and the
//! other built applications: names, sizes, networks, DRBD's limits, and clashes of mount
//! points, devices, minors, ports and resource names. Whether the volume group exists on each
//! node with the same sizes is for `clbuildapp --vgbuild`, which reports at the
//! [`SourceAt`] kept in each volume.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use roxmltree::Node;
use serde::{Deserialize, Serialize};

use crate::appconf::{AppConfig, Filesystem};
use crate::clconf::{ClusterConfig, DAEMON_PORTS};
use crate::diag::{Diagnostic, Diagnostics, SourceAt};
use crate::value::{self, read};
use crate::xml::{self, Element, Spanned};

/// DRBD port of minor 0; a volume's default port is this plus its minor.
pub const FIRST_PORT: u16 = 7788;
/// Lowest port a volume may be given (below are the privileged ports).
pub const MIN_VOLUME_PORT: u16 = 1024;
/// Smallest logical volume: DRBD's internal meta-data needs room.
pub const MIN_VOLUME_SIZE: u64 = 8 << 20;
/// Highest DRBD minor (`/dev/drbdN`) DRBD 8.4 accepts.
pub const MAX_MINOR: u32 = (1 << 20) - 1;
/// Resync rate when none is given: 100 MiB/s.
pub const DEFAULT_RESYNC_RATE_KIB: u64 = 100 << 10;
/// Highest resync rate DRBD 8.4 accepts: 4 GiB/s.
pub const MAX_RESYNC_RATE_KIB: u64 = 4 << 20;
/// Idle time before DRBD sends a keep-alive when none is given.
pub const DEFAULT_PING_INT: Duration = Duration::from_secs(2);
/// Time a keep-alive's answer may take when none is given.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_millis(500);
/// Time between connection attempts when none is given.
pub const DEFAULT_CONNECT_INT: Duration = Duration::from_secs(2);
/// Time an expected answer from the peer may take when none is given; DRBD requires it to be
/// shorter than `ping_int` and `connect_int`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1500);
/// The network replication uses by default, when the cluster has one of this name.
pub const DEFAULT_NET: &str = "private";
/// Longest volume group or logical volume name.
pub const MAX_LVM_NAME: usize = 64;
/// Longest DRBD resource name (drbdadm's limit for a word).
pub const MAX_RESOURCE_NAME: usize = 128;

/// The elements of `<storage>` read here (beside `<filesystem>`).
pub(crate) const STORAGE_ELEMENTS: [&str; 4] = ["replication", "vg", "lv", "disk"];

/// An application's replicated storage, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// What DRBD does when it loses its peer while primary.
    pub fencing: Fencing,
    /// What DRBD does when it finds a split brain on reconnecting.
    pub after_split_brain: AfterSplitBrain,
    /// What happens when the local disk under a volume fails.
    pub on_disk_failure: DiskFailurePolicy,
    /// Idle time before a keep-alive is sent (DRBD `ping-int`, whole seconds).
    pub ping_int: Duration,
    /// Time a keep-alive's answer may take (DRBD `ping-timeout`, tenths of a second).
    pub ping_timeout: Duration,
    /// Time between connection attempts (DRBD `connect-int`, whole seconds).
    pub connect_int: Duration,
    /// Time an expected answer may take before the peer is considered dead (DRBD `timeout`).
    pub timeout: Duration,
    /// The application's volume group, when it has logical volumes.
    pub volume_group: Option<VolumeGroup>,
    /// The replicated volumes, in file order.
    pub volumes: Vec<ReplicatedVolume>,
}

/// The application's LVM volume group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeGroup {
    /// Its name (the same on both nodes).
    pub name: String,
    /// Where `<vg>` is written.
    pub at: SourceAt,
}

/// One replicated volume: a DRBD resource and the filesystem on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedVolume {
    /// DRBD resource name: `<app>-<lv>`, or `<app>-<device's last component>` for a disk.
    pub resource: String,
    /// What holds the data on each node.
    pub backing: Backing,
    /// DRBD minor: the device is `/dev/drbd<minor>`.
    pub minor: u32,
    /// TCP port of the resource, on each node's address on `net`.
    pub port: u16,
    /// The cluster network that carries the replication.
    pub net: String,
    /// Resync rate in KiB/s.
    pub resync_rate_kib: u64,
    /// The filesystem, on `/dev/drbd<minor>`, mounted once the volume is primary.
    pub filesystem: Filesystem,
    /// Where the `<lv>` or `<disk>` is written.
    pub at: SourceAt,
}

/// What holds a replicated volume's data on each node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backing {
    /// A logical volume of the application's volume group.
    Lv {
        /// Volume group.
        vg: String,
        /// Logical volume.
        lv: String,
        /// Size in bytes, the same on both nodes.
        size_bytes: u64,
    },
    /// A plain block device, the same path on both nodes.
    Disk {
        /// The device.
        device: PathBuf,
    },
}

/// DRBD's fencing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fencing {
    /// Outdate the peer's copy through the cluster; I/O goes on meanwhile.
    ResourceOnly,
    /// Freeze I/O until the cluster has outdated the peer's copy or confirmed the peer dead.
    ResourceAndStonith,
}

/// DRBD's automatic split-brain recovery (`after-sb-0pri`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterSplitBrain {
    /// Never discard data automatically: stay disconnected for the administrator.
    Disconnect,
    /// Discard automatically only when one side has no changes.
    DiscardZeroChanges,
}

/// What happens when the local disk under a replicated volume fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskFailurePolicy {
    /// Keep running diskless, on the peer's copy.
    Detach,
    /// Move the application to the peer.
    Move,
}

/// The spellings of an enumerated attribute.
trait Keyword: Sized + Copy + 'static {
    /// Every value, the default first.
    const ALL: &'static [Self];
    /// What the attribute is, for messages.
    const WHAT: &'static str;
    /// The value as written in appconf.xml (and in drbd.conf).
    fn word(self) -> &'static str;
}

impl Fencing {
    /// The value as written in appconf.xml and drbd.conf.
    pub fn keyword(self) -> &'static str {
        match self {
            Fencing::ResourceOnly => "resource-only",
            Fencing::ResourceAndStonith => "resource-and-stonith",
        }
    }
}

impl Keyword for Fencing {
    const ALL: &'static [Self] = &[Fencing::ResourceAndStonith, Fencing::ResourceOnly];
    const WHAT: &'static str = "a fencing policy";
    fn word(self) -> &'static str {
        self.keyword()
    }
}

impl AfterSplitBrain {
    /// The value as written in appconf.xml and drbd.conf (`after-sb-0pri`).
    pub fn keyword(self) -> &'static str {
        match self {
            AfterSplitBrain::Disconnect => "disconnect",
            AfterSplitBrain::DiscardZeroChanges => "discard-zero-changes",
        }
    }
}

impl Keyword for AfterSplitBrain {
    const ALL: &'static [Self] =
        &[AfterSplitBrain::Disconnect, AfterSplitBrain::DiscardZeroChanges];
    const WHAT: &'static str = "a split-brain policy";
    fn word(self) -> &'static str {
        self.keyword()
    }
}

impl DiskFailurePolicy {
    /// The value as written in appconf.xml.
    pub fn keyword(self) -> &'static str {
        match self {
            DiskFailurePolicy::Detach => "detach",
            DiskFailurePolicy::Move => "move",
        }
    }
}

impl Keyword for DiskFailurePolicy {
    const ALL: &'static [Self] = &[DiskFailurePolicy::Detach, DiskFailurePolicy::Move];
    const WHAT: &'static str = "a disk failure policy";
    fn word(self) -> &'static str {
        self.keyword()
    }
}

fn keyword<T: Keyword>(text: &str) -> Result<T, String> {
    if let Some(found) = T::ALL.iter().copied().find(|k| k.word() == text) {
        return Ok(found);
    }
    let words: Vec<&str> = T::ALL.iter().map(|k| k.word()).collect();
    let hint =
        xml::closest(text, &words).map(|k| format!("; did you mean `{k}`?")).unwrap_or_default();
    Err(format!("`{}` is not {}; use {}{hint}", xml::shorten(text), T::WHAT, words.join(" or ")))
}

impl Backing {
    /// The block device under DRBD on each node: `/dev/<vg>/<lv>` or the disk.
    pub fn device(&self) -> PathBuf {
        match self {
            Backing::Lv { vg, lv, .. } => PathBuf::from(format!("/dev/{vg}/{lv}")),
            Backing::Disk { device } => device.clone(),
        }
    }
}

impl ReplicatedVolume {
    /// The DRBD device, `/dev/drbd<minor>` (also `filesystem.device`).
    pub fn device(&self) -> PathBuf {
        drbd_device(self.minor)
    }

    /// The element as written, for messages: `<lv name="data">` or `<disk device="/dev/vdc">`.
    pub fn element(&self) -> String {
        match &self.backing {
            Backing::Lv { lv, .. } => format!("<lv name=\"{lv}\">"),
            Backing::Disk { device } => format!("<disk device=\"{}\">", device.display()),
        }
    }

    /// An error about this volume found after the build (e.g. by `clbuildapp --vgbuild`),
    /// at its element in `file`: `file:line:column: error: <lv name="data">: message`.
    pub fn error(&self, file: &str, message: &str) -> Diagnostic {
        self.at.error(file, format!("{}: {message}", self.element()))
    }
}

impl VolumeGroup {
    /// An error about the volume group found after the build, at `<vg>` in `file`:
    /// `file:line:column: error: <vg name="apachevg">: message`.
    pub fn error(&self, file: &str, message: &str) -> Diagnostic {
        self.at.error(file, format!("<vg name=\"{}\">: {message}", self.name))
    }
}

impl AppConfig {
    /// The replicated volumes (none when the application has no replicated storage).
    pub fn replicated_volumes(&self) -> &[ReplicatedVolume] {
        self.replication.as_ref().map_or(&[], |r| r.volumes.as_slice())
    }

    /// Every filesystem the application mounts: the unreplicated ones, then those on its
    /// replicated volumes.
    pub fn mounted_filesystems(&self) -> impl Iterator<Item = &Filesystem> {
        self.filesystems.iter().chain(self.replicated_volumes().iter().map(|v| &v.filesystem))
    }

    /// Every block device the application uses: its filesystems' devices, and for each
    /// replicated volume its DRBD device and the device under it.
    pub fn block_devices(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.mounted_filesystems()
            .map(|f| f.device.clone())
            .chain(self.replicated_volumes().iter().map(|v| v.backing.device()))
    }
}

/// `/dev/drbd<minor>`.
pub fn drbd_device(minor: u32) -> PathBuf {
    PathBuf::from(format!("/dev/drbd{minor}"))
}

/// The smallest minor that is not `taken`, if any is left.
pub fn allocate_minor(taken: &BTreeSet<u32>) -> Option<u32> {
    (0..=MAX_MINOR).find(|m| !taken.contains(m))
}

/// The default port of a volume with `minor`: `7788 + minor`, or the next port above it that
/// is not `taken`; None when none is left below 65536.
pub fn allocate_port(minor: u32, taken: &BTreeSet<u16>) -> Option<u16> {
    let start = u32::from(FIRST_PORT).checked_add(minor)?;
    let start = u16::try_from(start).ok()?;
    (start..=u16::MAX).find(|p| !taken.contains(p))
}

/// The minor of a DRBD device path (`/dev/drbd3` → 3).
fn minor_of(device: &Path) -> Option<u32> {
    device.to_str()?.strip_prefix("/dev/drbd")?.parse().ok()
}

/// `/dev/mapper/<vg>-<lv>`, the device-mapper name of a logical volume (dashes doubled).
fn mapper_device(vg: &str, lv: &str) -> PathBuf {
    PathBuf::from(format!("/dev/mapper/{}-{}", vg.replace('-', "--"), lv.replace('-', "--")))
}

/// True when `device` is a logical volume of `vg`, by either of its names.
fn in_volume_group(device: &Path, vg: &str) -> bool {
    let Some(path) = device.to_str() else { return false };
    path.strip_prefix(&format!("/dev/{vg}/")).is_some_and(|rest| !rest.is_empty())
        || path
            .strip_prefix(&format!("/dev/mapper/{}-", vg.replace('-', "--")))
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('-'))
}

/// Check a volume group or logical volume name as LVM accepts it (lvm(8), "VALID NAMES").
pub fn lvm_name(text: &str, what: &str) -> Result<String, String> {
    let valid_chars =
        text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '.' | '-'));
    if text.is_empty()
        || text.len() > MAX_LVM_NAME
        || !valid_chars
        || text.starts_with('-')
        || text == "."
        || text == ".."
    {
        return Err(format!(
            "{what} `{}` must be 1 to {MAX_LVM_NAME} letters, digits, `+`, `_`, `.` or `-`, not starting with `-` and not `.` or `..` (LVM's rule)",
            xml::shorten(text)
        ));
    }
    Ok(text.to_string())
}

/// Names LVM reserves for its own logical volumes (lvm(8)).
const RESERVED_LV_PREFIXES: [&str; 2] = ["snapshot", "pvmove"];
const RESERVED_LV_PARTS: [&str; 12] = [
    "_cdata", "_cmeta", "_corig", "_mlog", "_mimage", "_pmspare", "_rimage", "_rmeta", "_tdata",
    "_tmeta", "_vorigin", "_vdata",
];

fn lv_name(text: &str) -> Result<String, String> {
    let name = lvm_name(text, "logical volume name")?;
    if let Some(prefix) = RESERVED_LV_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Err(format!(
            "logical volume name `{name}`: LVM reserves names starting with `{prefix}`"
        ));
    }
    if let Some(part) = RESERVED_LV_PARTS.iter().find(|p| name.contains(*p)) {
        return Err(format!(
            "logical volume name `{name}`: LVM reserves names containing `{part}`"
        ));
    }
    Ok(name)
}

/// Check a composed DRBD resource name: letters, digits, `_`, `.` and `-`.
pub fn resource_name(name: &str) -> Result<(), String> {
    let valid_chars =
        name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() || name.len() > MAX_RESOURCE_NAME || !valid_chars {
        return Err(format!(
            "the DRBD resource name `{}` would not be valid: it must be 1 to {MAX_RESOURCE_NAME} letters, digits, `_`, `.` or `-`",
            xml::shorten(name)
        ));
    }
    Ok(())
}

/// What the application around `<storage>` is, for the checks.
pub(crate) struct Inputs<'c> {
    /// The application's name (its directory).
    pub app: &'c str,
    /// The nodes it may run on.
    pub nodes: &'c [String],
    /// The built cluster.
    pub cluster: &'c ClusterConfig,
    /// The other built applications.
    pub others: &'c [AppConfig],
}

/// Read the replicated storage of `<storage>`: `Some(None)` when there is none, `None` when
/// anything was wrong (and reported).
pub(crate) fn read_replication(
    storage: Node<'_, '_>,
    cx: &Inputs<'_>,
    diags: &mut Diagnostics<'_>,
) -> Option<Option<Replication>> {
    let elements = |name: &'static str| {
        storage.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
    };
    let settings_nodes: Vec<Node<'_, '_>> = elements("replication").collect();
    let vgs: Vec<Node<'_, '_>> = elements("vg").collect();
    let disks: Vec<Node<'_, '_>> = elements("disk").collect();
    let mut ok = true;
    for stray in elements("lv") {
        diags.error(
            stray.range().start,
            "<storage>: <lv> belongs inside <vg name=\"…\">, the volume group that holds it",
        );
        ok = false;
    }
    for extra in settings_nodes.iter().skip(1) {
        diags.error(
            extra.range().start,
            "<replication> appears more than once in <storage>; keep one",
        );
        ok = false;
    }
    let settings = read_settings(settings_nodes.first().copied(), diags);
    ok &= settings.ok;
    if vgs.is_empty() && disks.is_empty() {
        if let Some(first) = settings_nodes.first() {
            diags.warning(
                first.range().start,
                "<replication> has no effect: this application has no replicated volume (<vg> with <lv>, or <disk>)",
            );
        }
        return ok.then_some(None);
    }

    let mut volume_elements: Vec<(Node<'_, '_>, Option<usize>)> = Vec::new();
    let mut volume_group: Option<(VolumeGroup, usize)> = None;
    for (index, vg) in vgs.iter().enumerate() {
        let mut e = Element::new(*vg);
        let name = e.attr("name");
        let lvs = e.children("lv");
        if name.is_none() {
            e.missing_attr("name", "<vg>: missing attribute `name` (the LVM volume group)");
        }
        e.finish(diags);
        if let Some((first, first_at)) = &volume_group {
            let (line, _) = diags.position(*first_at);
            diags.error(
                vg.range().start,
                format!(
                    "<vg>: only one volume group per application (Linuxha.net's model); put these logical volumes in <vg name=\"{}\"> (line {line})",
                    first.name
                ),
            );
            ok = false;
        } else if index > 0 {
            // The first <vg> was unusable: this one is still one too many.
            diags.error(
                vg.range().start,
                "<vg>: only one volume group per application (Linuxha.net's model)",
            );
            ok = false;
        }
        let name = name.and_then(|n| {
            read(diags, "<vg name>", n, |t| lvm_name(t, "volume group name")).map(|v| (v, n.at))
        });
        if lvs.is_empty() {
            let shown = name
                .as_ref()
                .map(|(n, _)| format!("<vg name=\"{n}\">"))
                .unwrap_or_else(|| "<vg>".into());
            diags.error(
                vg.range().start,
                format!("{shown}: no logical volume; add at least one <lv name=\"…\" size=\"…\" type=\"…\" mountpoint=\"…\"/>"),
            );
            ok = false;
        }
        match name {
            Some((name, name_at)) if index == 0 => {
                if !check_volume_group(&name, name_at, storage, cx, diags) {
                    ok = false;
                }
                volume_group = Some((
                    VolumeGroup { name, at: diags.source_at(vg.range().start) },
                    vg.range().start,
                ));
            }
            Some(_) => {}
            None => ok = false,
        }
        volume_elements.extend(lvs.into_iter().map(|lv| (lv, Some(index))));
    }
    volume_elements.extend(disks.into_iter().map(|d| (d, None)));
    volume_elements.sort_by_key(|(node, _)| node.range().start);

    // The application must be able to run on both ends of the replication.
    if cx.nodes.len() < cx.cluster.nodes.len() {
        if let Some((first, _)) = volume_elements.first() {
            diags.error(
                first.range().start,
                format!(
                    "replicated storage needs the application on both nodes, but <global>/<nodes> lists only {}: the copy on the other node could never be used",
                    cx.nodes.join(", ")
                ),
            );
            ok = false;
        }
    }

    let default_net = default_net(&settings, cx);
    // <replication net> is checked where it is written; a derived default where first used.
    let mut default_net_checked: Option<bool> =
        settings.net.as_ref().map(|(net, at)| check_net(net, *at, "<replication net>", cx, diags));
    let mut drafts: Vec<Draft> = Vec::new();
    for (node, vg_index) in volume_elements {
        let vg = match vg_index {
            Some(0) => Some(volume_group.as_ref().map(|(g, _)| g.name.as_str())),
            Some(_) => Some(None),
            None => None,
        };
        let Some(mut draft) = read_volume(node, vg, cx, &settings, diags) else {
            ok = false;
            continue;
        };
        let net_ok = match draft.net_written.take() {
            Some((net, at)) => {
                check_net(&net, at, &format!("<{} net>", draft.tag), cx, diags).then_some(net)
            }
            None => match &default_net {
                Some(net) => {
                    let valid = *default_net_checked.get_or_insert_with(|| {
                        check_net(
                            net,
                            draft.at,
                            &format!("{} (default replication network)", draft.element),
                            cx,
                            diags,
                        )
                    });
                    valid.then(|| net.clone())
                }
                None => None,
            },
        };
        match net_ok {
            Some(net) => {
                draft.net = net;
                drafts.push(draft);
            }
            None => ok = false,
        }
    }

    let mut taken = Taken::from_others(cx, storage, diags);
    ok &= check_and_allocate(&mut drafts, &mut taken, diags);
    if !ok {
        return None;
    }
    let volumes = drafts
        .into_iter()
        .filter_map(|d| {
            let minor = d.minor?.0;
            let device = drbd_device(minor);
            Some(ReplicatedVolume {
                resource: d.resource,
                backing: d.backing,
                minor,
                port: d.port?.0,
                net: d.net,
                resync_rate_kib: d.resync_rate_kib,
                filesystem: Filesystem {
                    device,
                    mountpoint: d.mountpoint,
                    fstype: d.fstype,
                    options: d.options,
                    fsck: d.fsck,
                },
                at: diags.source_at(d.at),
            })
        })
        .collect();
    Some(Some(Replication {
        fencing: settings.fencing,
        after_split_brain: settings.after_split_brain,
        on_disk_failure: settings.on_disk_failure,
        ping_int: settings.ping_int,
        ping_timeout: settings.ping_timeout,
        connect_int: settings.connect_int,
        timeout: settings.timeout,
        volume_group: volume_group.map(|(g, _)| g),
        volumes,
    }))
}

/// `<replication>` as read; broken values are reported and replaced by the defaults, so the
/// volumes are still checked.
struct Settings {
    ok: bool,
    net: Option<(String, usize)>,
    fencing: Fencing,
    after_split_brain: AfterSplitBrain,
    on_disk_failure: DiskFailurePolicy,
    resync_rate_kib: u64,
    ping_int: Duration,
    ping_timeout: Duration,
    connect_int: Duration,
    timeout: Duration,
}

fn read_settings(node: Option<Node<'_, '_>>, diags: &mut Diagnostics<'_>) -> Settings {
    let mut settings = Settings {
        ok: true,
        net: None,
        fencing: Fencing::ResourceAndStonith,
        after_split_brain: AfterSplitBrain::Disconnect,
        on_disk_failure: DiskFailurePolicy::Detach,
        resync_rate_kib: DEFAULT_RESYNC_RATE_KIB,
        ping_int: DEFAULT_PING_INT,
        ping_timeout: DEFAULT_PING_TIMEOUT,
        connect_int: DEFAULT_CONNECT_INT,
        timeout: DEFAULT_TIMEOUT,
    };
    let Some(node) = node else { return settings };
    let mut e = Element::new(node);
    let net = e.attr("net");
    let fencing = e.attr("fencing");
    let after_sb = e.attr("after_sb");
    let on_disk_failure = e.attr("on_disk_failure");
    let resync_rate = e.attr("resync_rate");
    let ping_int = e.attr("ping_int");
    let ping_timeout = e.attr("ping_timeout");
    let connect_int = e.attr("connect_int");
    let timeout = e.attr("timeout");
    e.finish(diags);
    settings.net = net.map(|n| (n.value.to_string(), n.at));
    let mut ok = true;
    let context = |attr: &str| format!("<replication {attr}>");
    if let Ok(Some(v)) = optional(fencing, &context("fencing"), &mut ok, diags, keyword) {
        settings.fencing = v;
    }
    if let Ok(Some(v)) = optional(after_sb, &context("after_sb"), &mut ok, diags, keyword) {
        settings.after_split_brain = v;
    }
    if let Ok(Some(v)) =
        optional(on_disk_failure, &context("on_disk_failure"), &mut ok, diags, keyword)
    {
        settings.on_disk_failure = v;
    }
    if let Ok(Some(v)) = optional(resync_rate, &context("resync_rate"), &mut ok, diags, rate_kib) {
        settings.resync_rate_kib = v;
    }
    if let Ok(Some(v)) = optional(ping_timeout, &context("ping_timeout"), &mut ok, diags, |t| {
        tenths(t, Duration::from_secs(30))
    }) {
        settings.ping_timeout = v;
    }
    let ping_int_value = optional(ping_int, &context("ping_int"), &mut ok, diags, whole_seconds);
    let connect_int_value =
        optional(connect_int, &context("connect_int"), &mut ok, diags, whole_seconds);
    let timeout_value = optional(timeout, &context("timeout"), &mut ok, diags, |t| {
        tenths(t, Duration::from_secs(60))
    });
    if let Ok(Some(v)) = ping_int_value {
        settings.ping_int = v;
    }
    if let Ok(Some(v)) = connect_int_value {
        settings.connect_int = v;
    }
    if let Ok(Some(v)) = timeout_value {
        settings.timeout = v;
    }
    // DRBD's rule (drbd.conf(5)): timeout must be lower than connect-int and ping-int. Only
    // judged when the values involved were readable.
    if timeout_value.is_ok() && ping_int_value.is_ok() && connect_int_value.is_ok() {
        let shown = |d: Duration, given: bool| {
            let d = value::show_duration(d);
            if given {
                d
            } else {
                format!("{d}, the default")
            }
        };
        for (other, other_value, other_given) in [
            ("ping_int", settings.ping_int, ping_int.is_some()),
            ("connect_int", settings.connect_int, connect_int.is_some()),
        ] {
            if settings.timeout >= other_value {
                let at = timeout
                    .map(|t| t.at)
                    .or(if other == "ping_int" { ping_int } else { connect_int }.map(|o| o.at))
                    .unwrap_or(node.range().start);
                diags.error(
                    at,
                    format!(
                        "<replication>: timeout ({}) must be shorter than {other} ({}): DRBD requires timeout to be lower than ping-int and connect-int",
                        shown(settings.timeout, timeout.is_some()),
                        shown(other_value, other_given),
                    ),
                );
                ok = false;
            }
        }
    }
    settings.ok = ok;
    settings
}

/// An optional attribute: `Ok(None)` when absent, `Err` when invalid (reported, `ok` cleared).
fn optional<T>(
    found: Option<Spanned<'_>>,
    context: &str,
    ok: &mut bool,
    diags: &mut Diagnostics<'_>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ()> {
    let Some(found) = found else { return Ok(None) };
    match read(diags, context, found, parse) {
        Some(v) => Ok(Some(v)),
        None => {
            *ok = false;
            Err(())
        }
    }
}

/// A resync rate in bytes per second (`100M`) → KiB/s, within DRBD's limits.
pub fn rate_kib(text: &str) -> Result<u64, String> {
    let bytes = value::bytes(text)?;
    let kib = bytes >> 10;
    if kib == 0 || kib > MAX_RESYNC_RATE_KIB {
        return Err(format!(
            "`{}` is out of range (1K to 4G bytes per second, DRBD's limits)",
            xml::shorten(text)
        ));
    }
    Ok(kib)
}

/// A DRBD interval in whole seconds, 1s to 120s (`ping-int`, `connect-int`).
fn whole_seconds(text: &str) -> Result<Duration, String> {
    let d = value::duration(text)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(120) {
        return Err(format!("`{}` is out of range (1s to 2m, DRBD's limits)", xml::shorten(text)));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "`{}` must be a whole number of seconds (DRBD's unit)",
            xml::shorten(text)
        ));
    }
    Ok(d)
}

/// A DRBD time limit in tenths of a second, 100ms to `max` (`timeout`, `ping-timeout`).
fn tenths(text: &str, max: Duration) -> Result<Duration, String> {
    let d = value::duration(text)?;
    if d < Duration::from_millis(100) || d > max {
        return Err(format!(
            "`{}` is out of range (100ms to {}, DRBD's limits)",
            xml::shorten(text),
            value::show_duration(max)
        ));
    }
    if d.as_micros() % 100_000 != 0 {
        return Err(format!(
            "`{}` must be a multiple of 100ms (DRBD counts tenths of a second)",
            xml::shorten(text)
        ));
    }
    Ok(d)
}

/// The network replication uses when a volume names none: `<replication net>`, else the
/// cluster's `private` network, else the first network of the first node.
fn default_net(settings: &Settings, cx: &Inputs<'_>) -> Option<String> {
    if let Some((net, _)) = &settings.net {
        return Some(net.clone());
    }
    let has = |name: &str| cx.cluster.nodes.iter().any(|n| n.network(name).is_some());
    if has(DEFAULT_NET) {
        return Some(DEFAULT_NET.to_string());
    }
    cx.cluster.nodes.first()?.networks.first().map(|n| n.name.clone())
}

/// Check that network `name` exists and every node of the application has an address on it.
fn check_net(
    name: &str,
    at: usize,
    context: &str,
    cx: &Inputs<'_>,
    diags: &mut Diagnostics<'_>,
) -> bool {
    let mut known: Vec<&str> = cx
        .cluster
        .nodes
        .iter()
        .flat_map(|n| n.networks.iter().map(|net| net.name.as_str()))
        .collect();
    known.sort_unstable();
    known.dedup();
    if !known.contains(&name) {
        diags.error(
            at,
            format!(
                "{context}: there is no network `{}` in clconf.xml{}",
                xml::shorten(name),
                xml::suggest(name, &known)
            ),
        );
        return false;
    }
    let mut ok = true;
    for node in cx.nodes {
        if cx.cluster.node(node).is_some_and(|n| n.network(name).is_none()) {
            diags.error(
                at,
                format!(
                    "{context}: node `{node}` has no address on network `{name}`, so it cannot be a replication endpoint; add the network to node `{node}` in clconf.xml or replicate over another network with net=\"…\""
                ),
            );
            ok = false;
        }
    }
    ok
}

/// The volume group must not belong to another application, nor hold another application's
/// filesystem or an unreplicated filesystem of this one.
fn check_volume_group(
    vg: &str,
    at: usize,
    storage: Node<'_, '_>,
    cx: &Inputs<'_>,
    diags: &mut Diagnostics<'_>,
) -> bool {
    for other in cx.others {
        let owns = other
            .replication
            .as_ref()
            .and_then(|r| r.volume_group.as_ref())
            .is_some_and(|g| g.name == vg);
        if owns {
            diags.error(
                at,
                format!("<vg name>: volume group `{vg}` already belongs to application `{}`; each application needs its own volume group", other.name),
            );
            return false;
        }
        if let Some(fs) = other.filesystems.iter().find(|f| in_volume_group(&f.device, vg)) {
            diags.error(
                at,
                format!(
                    "<vg name>: volume group `{vg}` holds {}, a filesystem of application `{}`; each application needs its own volume group",
                    fs.device.display(),
                    other.name
                ),
            );
            return false;
        }
    }
    let mut ok = true;
    for fs in storage.children().filter(|c| c.is_element() && c.tag_name().name() == "filesystem") {
        let Some(device) = fs.attribute_node("device") else { continue };
        let path = Path::new(device.value().trim());
        if in_volume_group(path, vg) {
            diags.error(
                device.range_value().start,
                format!(
                    "<filesystem device>: {} is in the replicated volume group `{vg}`; declare it as an <lv> of <vg name=\"{vg}\"> so that it is replicated (unreplicated, it would hold different data on each node)",
                    path.display()
                ),
            );
            ok = false;
        }
    }
    ok
}

/// One `<lv>` or `<disk>` as read, before minors and ports are allocated.
struct Draft {
    /// `lv` or `disk`.
    tag: &'static str,
    /// `<lv name="data">`, for messages.
    element: String,
    at: usize,
    backing: Backing,
    /// Other names of the backing device (the device-mapper name of a logical volume).
    aliases: Vec<PathBuf>,
    /// Where a clash of the backing device or the resource name is reported.
    backing_at: usize,
    resource: String,
    minor: Option<(u32, usize)>,
    port: Option<(u16, usize)>,
    /// `net` as written, with its place.
    net_written: Option<(String, usize)>,
    /// The network, once checked.
    net: String,
    resync_rate_kib: u64,
    mountpoint: PathBuf,
    mount_at: usize,
    fstype: String,
    options: String,
    fsck: bool,
}

/// Read one `<lv>` (`vg` is `Some(name)` of its volume group, `Some(None)` when that was
/// unusable) or `<disk>` (`vg` is None).
fn read_volume(
    node: Node<'_, '_>,
    vg: Option<Option<&str>>,
    cx: &Inputs<'_>,
    settings: &Settings,
    diags: &mut Diagnostics<'_>,
) -> Option<Draft> {
    let tag = if vg.is_some() { "lv" } else { "disk" };
    let mut e = Element::new(node);
    let name = if vg.is_some() { e.attr("name") } else { None };
    let size = if vg.is_some() { e.attr("size") } else { None };
    let device = if vg.is_some() { None } else { e.attr("device") };
    let fstype = e.attr("type");
    let mountpoint = e.attr("mountpoint");
    let options = e.attr("options");
    let fsck = e.attr("fsck");
    let port = e.attr("port");
    let minor = e.attr("minor");
    let net = e.attr("net");
    let resync_rate = e.attr("resync_rate");
    let element = match (name, device) {
        (Some(n), _) => format!("<lv name=\"{}\">", xml::shorten(n.value)),
        (_, Some(d)) => format!("<disk device=\"{}\">", xml::shorten(d.value)),
        _ => format!("<{tag}>"),
    };
    if vg.is_some() {
        if name.is_none() {
            e.missing_attr("name", "<lv>: missing attribute `name` (the logical volume)");
        }
        if size.is_none() {
            e.missing_attr(
                "size",
                format!("{element}: missing attribute `size` (e.g. 256M or 10G)"),
            );
        }
    } else if device.is_none() {
        e.missing_attr(
            "device",
            "<disk>: missing attribute `device` (the block device, e.g. /dev/vdc)",
        );
    }
    if fstype.is_none() {
        e.missing_attr("type", format!("{element}: missing attribute `type` (e.g. ext4 or xfs)"));
    }
    if mountpoint.is_none() {
        e.missing_attr(
            "mountpoint",
            format!(
                "{element}: missing attribute `mountpoint` (the absolute directory to mount it on)"
            ),
        );
    }
    e.finish(diags);
    let at = node.range().start;
    let context = |attr: &str| format!("<{tag} {attr}>");

    let lv = name.and_then(|n| read(diags, &context("name"), n, lv_name));
    let backing = match vg {
        Some(vg) => {
            let size_bytes = size.and_then(|s| {
                read(diags, &context("size"), s, |t| {
                    let bytes = value::bytes(t)?;
                    if bytes < MIN_VOLUME_SIZE {
                        return Err(format!(
                            "`{}` is too small: a replicated volume needs at least {} (DRBD keeps its meta-data at the end of it)",
                            xml::shorten(t),
                            value::show_bytes(MIN_VOLUME_SIZE)
                        ));
                    }
                    Ok(bytes)
                })
            });
            match (vg, &lv, size_bytes) {
                (Some(vg), Some(lv), Some(size_bytes)) => {
                    Some(Backing::Lv { vg: vg.to_string(), lv: lv.clone(), size_bytes })
                }
                _ => None,
            }
        }
        None => device.and_then(|d| {
            read(diags, &context("device"), d, |t| {
                let path = value::absolute_path(t)?;
                if !t.starts_with("/dev/") || t.len() <= "/dev/".len() {
                    return Err(format!("`{}` must be a block device under /dev", xml::shorten(t)));
                }
                if minor_of(&path).is_some() {
                    return Err(format!(
                        "`{}` is a DRBD device; give the disk to replicate",
                        xml::shorten(t)
                    ));
                }
                Ok(Backing::Disk { device: path })
            })
        }),
    };
    let backing_at = name.or(device).map_or(at, |s| s.at);
    // The resource is named after the logical volume even when its group is unusable.
    let named = match (&lv, &backing) {
        (Some(lv), _) => Some(lv.as_str()),
        (None, Some(Backing::Disk { device })) => device.file_name().and_then(|n| n.to_str()),
        _ => None,
    };
    let resource = named.and_then(|named| {
        let resource = format!("{}-{named}", cx.app);
        match resource_name(&resource) {
            Ok(()) => Some(resource),
            Err(message) => {
                diags.error(
                    backing_at,
                    format!("{}: {message}", context(if tag == "lv" { "name" } else { "device" })),
                );
                None
            }
        }
    });
    let mount = mountpoint.and_then(|m| {
        read(diags, &context("mountpoint"), m, |t| {
            let path = value::absolute_path(t)?;
            if path == Path::new("/") {
                return Err("`/` cannot be an application filesystem".to_string());
            }
            Ok(path)
        })
    });
    let fstype = fstype.and_then(|t| read(diags, &context("type"), t, value::fs_type));
    let fsck = match fsck {
        Some(f) => read(diags, &context("fsck"), f, value::switch),
        None => Some(true),
    };
    let minor = match minor {
        Some(m) => read(diags, &context("minor"), m, |t| {
            value::count(t, 0, MAX_MINOR).map_err(|_| {
                format!("`{}` must be a DRBD minor from 0 to {MAX_MINOR}", xml::shorten(t))
            })
        })
        .map(|v| Some((v, m.at))),
        None => Some(None),
    };
    let port = match port {
        Some(p) => read(diags, &context("port"), p, |t| match t.parse::<u32>() {
            Ok(n) if (u32::from(MIN_VOLUME_PORT)..=65535).contains(&n) => Ok(n as u16),
            _ => Err(format!(
                "port `{}` must be a number from {MIN_VOLUME_PORT} to 65535",
                xml::shorten(t)
            )),
        })
        .map(|v| Some((v, p.at))),
        None => Some(None),
    };
    let resync_rate_kib = match resync_rate {
        Some(r) => read(diags, &context("resync_rate"), r, rate_kib),
        None => Some(settings.resync_rate_kib),
    };
    let aliases = match &backing {
        Some(Backing::Lv { vg, lv, .. }) => vec![mapper_device(vg, lv)],
        _ => Vec::new(),
    };
    Some(Draft {
        tag,
        element,
        at,
        backing: backing?,
        aliases,
        backing_at,
        resource: resource?,
        minor: minor?,
        port: port?,
        net_written: net.map(|n| (n.value.to_string(), n.at)),
        net: String::new(),
        resync_rate_kib: resync_rate_kib?,
        mountpoint: mount?,
        mount_at: mountpoint.map_or(at, |m| m.at),
        fstype: fstype?,
        options: options.map(|o| o.value.to_string()).unwrap_or_default(),
        fsck: fsck?,
    })
}

/// What is already used, and by whom (for the messages).
struct Taken {
    minors: BTreeMap<u32, String>,
    ports: BTreeMap<u16, String>,
    mountpoints: BTreeMap<PathBuf, String>,
    devices: BTreeMap<PathBuf, String>,
    resources: BTreeMap<String, String>,
}

impl Taken {
    /// The cluster's daemon and arbitrator ports, everything of the other applications, and
    /// the unreplicated filesystems of this one.
    fn from_others(cx: &Inputs<'_>, storage: Node<'_, '_>, diags: &Diagnostics<'_>) -> Taken {
        let mut taken = Taken {
            minors: BTreeMap::new(),
            ports: BTreeMap::new(),
            mountpoints: BTreeMap::new(),
            devices: BTreeMap::new(),
            resources: BTreeMap::new(),
        };
        let p = cx.cluster.ports;
        for (daemon, port) in DAEMON_PORTS.iter().zip([p.cldaemon, p.cllockd, p.clnetd, p.clhbd]) {
            taken.ports.insert(port, format!("{daemon} (<{daemon}_port> in clconf.xml)"));
        }
        if let Some(arbitrator) = &cx.cluster.arbitrator {
            taken
                .ports
                .entry(arbitrator.address.port())
                .or_insert_with(|| "the arbitrator (<arbitrator port> in clconf.xml)".to_string());
        }
        for other in cx.others {
            let owner = format!("application `{}`", other.name);
            for fs in &other.filesystems {
                let who = format!("a filesystem of {owner}");
                taken.mountpoints.insert(fs.mountpoint.clone(), who.clone());
                if let Some(minor) = minor_of(&fs.device) {
                    taken.minors.insert(minor, who.clone());
                }
                taken.devices.insert(fs.device.clone(), who);
            }
            for v in other.replicated_volumes() {
                let who = format!("volume `{}` of {owner}", v.resource);
                taken.minors.insert(v.minor, who.clone());
                taken.ports.insert(v.port, who.clone());
                taken.mountpoints.insert(v.filesystem.mountpoint.clone(), who.clone());
                taken.resources.insert(v.resource.clone(), who.clone());
                taken.devices.insert(v.device(), who.clone());
                taken.devices.insert(v.backing.device(), who.clone());
                if let Backing::Lv { vg, lv, .. } = &v.backing {
                    taken.devices.insert(mapper_device(vg, lv), who.clone());
                }
            }
        }
        for fs in
            storage.children().filter(|c| c.is_element() && c.tag_name().name() == "filesystem")
        {
            let (line, _) = diags.position(fs.range().start);
            let who = format!("the <filesystem> on line {line}");
            let path =
                |name: &str| fs.attribute(name).and_then(|v| value::absolute_path(v.trim()).ok());
            if let Some(mountpoint) = path("mountpoint") {
                taken.mountpoints.entry(mountpoint).or_insert_with(|| who.clone());
            }
            if let Some(device) = path("device") {
                if let Some(minor) = minor_of(&device) {
                    taken.minors.entry(minor).or_insert_with(|| who.clone());
                }
                taken.devices.entry(device).or_insert(who);
            }
        }
        taken
    }
}

/// Check each volume against what is taken, in file order, then give the volumes without an
/// explicit minor or port theirs. False when anything clashed (and was reported).
fn check_and_allocate(
    drafts: &mut [Draft],
    taken: &mut Taken,
    diags: &mut Diagnostics<'_>,
) -> bool {
    let mut ok = true;
    let mut lv_names: BTreeMap<String, usize> = BTreeMap::new();
    for draft in drafts.iter() {
        let (line, _) = diags.position(draft.at);
        let who = format!("{} on line {line}", draft.element);
        if let Backing::Lv { lv, .. } = &draft.backing {
            if let Some(first) = lv_names.get(lv) {
                let (first_line, _) = diags.position(*first);
                diags.error(
                    draft.backing_at,
                    format!("<lv name>: logical volume `{lv}` is already declared on line {first_line}; each <lv> needs its own name"),
                );
                ok = false;
                continue;
            }
            lv_names.insert(lv.clone(), draft.at);
        }
        let context = |attr: &str| format!("<{} {attr}>", draft.tag);
        if let Some(owner) = taken.mountpoints.get(&draft.mountpoint) {
            diags.error(
                draft.mount_at,
                format!(
                    "{}: {} is already the mount point of {owner}; each filesystem needs its own",
                    context("mountpoint"),
                    draft.mountpoint.display()
                ),
            );
            ok = false;
        }
        let device = draft.backing.device();
        let used =
            std::iter::once(&device).chain(&draft.aliases).find_map(|d| taken.devices.get(d));
        let attr = if draft.tag == "lv" { "name" } else { "device" };
        if let Some(owner) = used {
            diags.error(
                draft.backing_at,
                format!(
                    "{}: {} is already used by {owner}; a device can hold only one filesystem",
                    context(attr),
                    device.display()
                ),
            );
            ok = false;
        } else if let Some(owner) = taken.resources.get(&draft.resource) {
            diags.error(
                draft.backing_at,
                format!(
                    "{}: the DRBD resource name `{}` is already used by {owner}; rename the {}",
                    context(attr),
                    draft.resource,
                    if draft.tag == "lv" {
                        "logical volume"
                    } else {
                        "device (its last component names the resource)"
                    }
                ),
            );
            ok = false;
        }
        if let Some((minor, at)) = draft.minor {
            if let Some(owner) = taken.minors.get(&minor) {
                diags.error(
                    at,
                    format!(
                        "{}: minor {minor} (/dev/drbd{minor}) is already used by {owner}",
                        context("minor")
                    ),
                );
                ok = false;
            }
        }
        if let Some((port, at)) = draft.port {
            if let Some(owner) = taken.ports.get(&port) {
                diags.error(
                    at,
                    format!(
                        "{}: port {port} is already used by {owner}; give each volume its own port",
                        context("port")
                    ),
                );
                ok = false;
            }
        }
        taken.resources.insert(draft.resource.clone(), who.clone());
        taken.mountpoints.insert(draft.mountpoint.clone(), who.clone());
        for d in std::iter::once(device).chain(draft.aliases.iter().cloned()) {
            taken.devices.insert(d, who.clone());
        }
        if let Some((minor, _)) = draft.minor {
            taken.minors.entry(minor).or_insert_with(|| who.clone());
        }
        if let Some((port, _)) = draft.port {
            taken.ports.entry(port).or_insert(who);
        }
    }
    // Explicit minors and ports are all taken now; allocate the rest in file order.
    let mut minors: BTreeSet<u32> = taken.minors.keys().copied().collect();
    let mut ports: BTreeSet<u16> = taken.ports.keys().copied().collect();
    for draft in drafts.iter_mut() {
        if draft.minor.is_none() {
            match allocate_minor(&minors) {
                Some(minor) => {
                    minors.insert(minor);
                    draft.minor = Some((minor, draft.at));
                }
                None => {
                    diags.error(
                        draft.at,
                        format!("{}: no DRBD minor is left (0 to {MAX_MINOR})", draft.element),
                    );
                    ok = false;
                    continue;
                }
            }
        }
        let minor = draft.minor.map_or(0, |(m, _)| m);
        if draft.port.is_none() {
            match allocate_port(minor, &ports) {
                Some(port) => {
                    ports.insert(port);
                    draft.port = Some((port, draft.at));
                }
                None => {
                    let start = u32::from(FIRST_PORT) + minor;
                    let why = if start > 65535 {
                        format!("the default port, 7788 + minor {minor} = {start}, is beyond 65535")
                    } else {
                        format!("no port from {start} (7788 + minor {minor}) to 65535 is free")
                    };
                    diags.error(
                        draft.at,
                        format!("{}: {why}; give one with port=\"…\"", draft.element),
                    );
                    ok = false;
                }
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minors_are_the_smallest_free_ones() {
        let taken: BTreeSet<u32> = [0, 1, 3].into_iter().collect();
        assert_eq!(allocate_minor(&taken), Some(2));
        assert_eq!(allocate_minor(&BTreeSet::new()), Some(0));
        let all: BTreeSet<u32> = (0..=MAX_MINOR).collect();
        assert_eq!(allocate_minor(&all), None);
    }

    #[test]
    fn ports_follow_the_minor_and_skip_taken_ones() {
        let none = BTreeSet::new();
        assert_eq!(allocate_port(0, &none), Some(7788));
        assert_eq!(allocate_port(5, &none), Some(7793));
        let taken: BTreeSet<u16> = [7790, 7791].into_iter().collect();
        assert_eq!(allocate_port(2, &taken), Some(7792));
        assert_eq!(allocate_port(1, &taken), Some(7789));
        assert_eq!(allocate_port(65535 - 7788, &none), Some(65535));
        assert_eq!(allocate_port(65535 - 7787, &none), None);
        assert_eq!(allocate_port(MAX_MINOR, &none), None);
        let top: BTreeSet<u16> = [65535].into_iter().collect();
        assert_eq!(allocate_port(65535 - 7788, &top), None);
    }

    #[test]
    fn rates_are_kib_per_second_within_drbds_limits() {
        assert_eq!(rate_kib("100M"), Ok(102_400));
        assert_eq!(rate_kib("40MiB"), Ok(40_960));
        assert_eq!(rate_kib("1K"), Ok(1));
        assert_eq!(rate_kib("4G"), Ok(MAX_RESYNC_RATE_KIB));
        assert!(rate_kib("5G").expect_err("too fast").contains("out of range"));
        assert!(rate_kib("0K").expect_err("zero").contains("out of range"));
        assert!(rate_kib("100").expect_err("no unit").contains("has no unit"));
    }

    #[test]
    fn drbd_time_units() {
        assert_eq!(whole_seconds("2s"), Ok(Duration::from_secs(2)));
        assert!(whole_seconds("1500ms").expect_err("fraction").contains("whole number"));
        assert!(whole_seconds("3m").expect_err("too long").contains("out of range"));
        assert_eq!(tenths("1.5s", Duration::from_secs(60)), Ok(Duration::from_millis(1500)));
        assert!(tenths("150ms", Duration::from_secs(60)).expect_err("unit").contains("100ms"));
        assert!(tenths("50ms", Duration::from_secs(30)).expect_err("short").contains("range"));
        assert!(tenths("31s", Duration::from_secs(30)).expect_err("long").contains("range"));
    }

    #[test]
    fn lvm_and_drbd_names() {
        assert!(lvm_name("apache_vg.1+x", "vg").is_ok());
        assert!(lvm_name("-vg", "vg").is_err());
        assert!(lvm_name("..", "vg").is_err());
        assert!(lvm_name("a/b", "vg").is_err());
        assert!(lvm_name(&"v".repeat(65), "vg").is_err());
        assert!(lv_name("snapshot1").is_err());
        assert!(lv_name("data_tmeta").is_err());
        assert!(resource_name("apache-data").is_ok());
        assert!(resource_name("apache-a+b").is_err());
        assert_eq!(mapper_device("my-vg", "lv-1"), PathBuf::from("/dev/mapper/my--vg-lv--1"));
        assert!(in_volume_group(Path::new("/dev/my-vg/x"), "my-vg"));
        assert!(in_volume_group(Path::new("/dev/mapper/my--vg-x"), "my-vg"));
        assert!(!in_volume_group(Path::new("/dev/mapper/my--vg--x-y"), "my-vg"));
        assert!(!in_volume_group(Path::new("/dev/my-vgx/x"), "my-vg"));
        assert_eq!(minor_of(Path::new("/dev/drbd12")), Some(12));
        assert_eq!(minor_of(Path::new("/dev/drbd")), None);
    }

    #[test]
    fn keywords_suggest_the_close_one() {
        assert_eq!(keyword::<Fencing>("resource-only"), Ok(Fencing::ResourceOnly));
        let e = keyword::<Fencing>("resource-and-stonit").expect_err("typo");
        assert!(e.contains("did you mean `resource-and-stonith`"), "{e}");
        let e = keyword::<DiskFailurePolicy>("panic").expect_err("unknown");
        assert!(e.contains("use detach or move"), "{e}");
    }
}
