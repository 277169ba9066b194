//! The planner of `clbuildapp --vgbuild`: from the application's replicated volumes and what
//! each node found (cl-wire `NodeInspection`), either every problem (at its `<vg>`, `<lv>` or
//! `<disk>` in appconf.xml) or the ordered steps that build the storage on both nodes. Pure: no
//! IO, so every case is a unit test.
//!
//! Per volume, on each node, the device is missing, empty, built (DRBD metadata) or holds other
//! data. Both built: nothing but a changed resource file and `up`. One built, the other new:
//! the new side gets metadata and DRBD resynchronises it. Both new: full build, initial sync
//! from the preferred node (or `--source`), filesystem made on the DRBD device. Data without
//! metadata is never overwritten unless `--force --source <node>` names the copy to keep.

use std::fmt;

use cl_config::drbd::DrbdResource;
use cl_config::replication::{Backing, ReplicatedVolume};
use cl_config::{Diagnostic, Replication};
use cl_wire::storage::{DrbdConf, Holds, NodeInspection, ResourceFile, StorageOp, VolumeReport};

use super::sizes::{human, internal_metadata_bytes, round_up, size_keeping};

/// What the planner is given.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// appconf.xml as named in messages.
    pub file: &'a str,
    /// The application.
    pub app: &'a str,
    /// Its replicated storage.
    pub replication: &'a Replication,
    /// The DRBD resource of each volume, in the same order.
    pub specs: &'a [DrbdResource],
    /// The application's two nodes, preferred first.
    pub nodes: [&'a str; 2],
    /// What each of them found, in the same order.
    pub found: [&'a NodeInspection; 2],
    /// `--force`.
    pub force: bool,
    /// `--source <node>` (with `--force`): the copy to keep where data exists without metadata.
    pub source: Option<&'a str>,
}

/// A reason not to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// About an element of appconf.xml.
    At(Diagnostic),
    /// About a node as a whole (its host name, its DRBD installation).
    Node {
        /// The node.
        node: String,
        /// What is wrong, with the fix.
        message: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::At(d) => d.fmt(f),
            Problem::Node { node, message } => write!(f, "{node}: {message}"),
        }
    }
}

/// One step: an operation run on one node, or on both in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Where it runs.
    pub nodes: Vec<String>,
    /// What runs.
    pub op: StorageOp,
    /// What it does, for people.
    pub say: String,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = if self.nodes.len() > 1 { "both".to_string() } else { self.nodes.join("") };
        write!(f, "{who}: {}", self.say)
    }
}

/// A synchronisation to follow after the steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    /// The resource.
    pub resource: String,
    /// The node whose copy is sent.
    pub from: String,
    /// The node that receives it.
    pub to: String,
}

/// What `--vgbuild` will do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// What was found, worth saying before the steps.
    pub notes: Vec<String>,
    /// Data that is overwritten: said loudly, and confirmed before anything is done.
    pub overwrites: Vec<String>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Synchronisations to follow to their end.
    pub follow: Vec<Follow>,
}

/// A volume's device on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side<'r> {
    Missing,
    Empty(u64),
    Built(u64),
    Data(u64, &'r Holds),
}

impl Side<'_> {
    fn size(self) -> Option<u64> {
        match self {
            Side::Missing => None,
            Side::Empty(s) | Side::Built(s) | Side::Data(s, _) => Some(s),
        }
    }

    fn is_new(self) -> bool {
        matches!(self, Side::Missing | Side::Empty(_))
    }
}

/// What one volume needs on each node (index 0: preferred node).
#[derive(Debug, Default)]
struct VolumeWork {
    lvm: [Option<(StorageOp, String, u64)>; 2],
    wipe: [Option<String>; 2],
    metadata: [bool; 2],
    /// The initial sync's source, and whether a filesystem is made on it.
    primary: Option<(usize, bool, String)>,
    follow: Option<(usize, usize)>,
}

/// The plan, or every problem.
pub fn plan(input: &Input) -> Result<Plan, Vec<Problem>> {
    let mut problems = Vec::new();
    for i in 0..2 {
        node_problems(input, i, &mut problems);
    }
    let vgs = [input.found[0].vg.as_ref(), input.found[1].vg.as_ref()];
    let vg_ok = [0, 1].map(|i| vgs[i].is_some_and(|v| v.exists));
    if let Some(vg) = &input.replication.volume_group {
        for (i, found) in vgs.iter().enumerate() {
            // Not known (LVM could not be asked): in the node's errors.
            if found.is_some_and(|v| !v.exists) {
                problems.push(Problem::At(vg.error(
                    input.file,
                    &format!(
                        "the volume group does not exist on {}: create it there with `vgcreate {} <physical volume>` (e.g. vgcreate {} /dev/sdb)",
                        input.nodes[i], vg.name, vg.name
                    ),
                )));
            }
        }
    }
    let extent = vgs.iter().flatten().map(|v| v.extent_bytes).max().unwrap_or(0);
    let mut plan = Plan::default();
    let mut works = Vec::new();
    let mut need = [0u64; 2];
    for (volume, spec) in input.replication.volumes.iter().zip(input.specs) {
        let reports =
            [0, 1].map(|i| input.found[i].volumes.iter().find(|r| r.resource == volume.resource));
        let [Some(a), Some(b)] = reports else {
            for (report, node) in reports.iter().zip(input.nodes) {
                if report.is_none() {
                    problems.push(Problem::Node {
                        node: node.into(),
                        message: format!("did not report on {}", volume.resource),
                    });
                }
            }
            continue;
        };
        let mut work = VolumeWork::default();
        let before = problems.len();
        decide(input, volume, [a, b], vg_ok, extent, &mut work, &mut plan, &mut problems);
        if problems.len() == before {
            for (need, lvm) in need.iter_mut().zip(&work.lvm) {
                *need += lvm.as_ref().map_or(0, |(_, _, grow)| *grow);
            }
            works.push((volume, spec, [a, b], work));
        }
    }
    if let Some(vg) = &input.replication.volume_group {
        for i in 0..2 {
            let Some(found) = vgs[i].filter(|v| v.exists) else { continue };
            if need[i] > found.free_bytes {
                problems.push(Problem::At(vg.error(
                    input.file,
                    &format!(
                        "{} has {} free in {}, but the logical volumes to create or extend need {}: add a physical volume there (vgextend {} <device>) or free space",
                        input.nodes[i], human(found.free_bytes), vg.name, human(need[i]), vg.name
                    ),
                )));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    assemble(input, works, &mut plan);
    Ok(plan)
}

/// The node itself: its name, DRBD installed and loaded, drbd.conf, its tools.
fn node_problems(input: &Input, i: usize, problems: &mut Vec<Problem>) {
    let node = input.nodes[i];
    let found = input.found[i];
    let mut say = |message: String| problems.push(Problem::Node { node: node.into(), message });
    if found.node != node {
        say(format!(
            "the node that answered calls itself `{}`; check LINUXHA_NODE and the host names",
            found.node
        ));
    }
    if found.hostname != node {
        say(format!(
            "its host name (uname -n) is `{}`, but DRBD finds its part of a resource file by host name, and linuxha names it `{node}`: set the host name to {node} (hostnamectl set-hostname {node}) or name the node `{}` in clconf.xml",
            found.hostname, found.hostname
        ));
    }
    if found.drbd_utils.is_none() {
        say("drbdadm is not installed: install drbd-utils (apt-get install drbd-utils)".into());
    }
    if found.drbd_kernel.is_none() {
        say(format!(
            "the DRBD kernel module is not loaded on {node}: run `modprobe drbd` there (and list drbd in /etc/modules-load.d/ so that it loads at boot)"
        ));
    }
    if let DrbdConf::Missing { fix } = &found.drbd_conf {
        say(fix.clone());
    }
    for error in &found.errors {
        say(error.clone());
    }
}

fn side(report: &VolumeReport) -> Option<Side<'_>> {
    match (report.size_bytes, &report.holds) {
        (None, _) => Some(Side::Missing),
        (Some(s), Holds::Empty) => Some(Side::Empty(s)),
        (Some(s), Holds::DrbdMetadata) => Some(Side::Built(s)),
        (Some(s), h) if h.is_foreign_data() => Some(Side::Data(s, h)),
        _ => None,
    }
}

/// What one volume needs (or its problems).
#[allow(clippy::too_many_arguments)]
fn decide(
    input: &Input,
    volume: &ReplicatedVolume,
    reports: [&VolumeReport; 2],
    vg_ok: [bool; 2],
    extent: u64,
    work: &mut VolumeWork,
    plan: &mut Plan,
    problems: &mut Vec<Problem>,
) {
    let names = input.nodes;
    let device = volume.backing.device().display().to_string();
    let at = |message: String| Problem::At(volume.error(input.file, &message));
    let (lv, configured) = match &volume.backing {
        Backing::Lv { vg, lv, size_bytes } => (Some((vg.as_str(), lv.as_str())), *size_bytes),
        Backing::Disk { .. } => (None, 0),
    };
    let Some(sides) = reports.map(side).into_iter().collect::<Option<Vec<_>>>() else {
        return; // the probe failed: in the node's errors
    };
    let sides = [sides[0], sides[1]];
    let mut stop = false;
    for i in 0..2 {
        if sides[i] == Side::Missing {
            match lv {
                None => {
                    problems.push(at(format!("{device} does not exist on {}", names[i])));
                    stop = true;
                }
                Some(_) if !vg_ok[i] => stop = true, // reported at the <vg>
                Some(_) => {}
            }
        }
    }
    if stop {
        return;
    }
    let round = |s: u64| if lv.is_some() { round_up(s, extent) } else { s };
    let create = |size: u64, why: String| {
        let (vg, lv) = lv.unwrap_or_default();
        let op = StorageOp::CreateLv { vg: vg.into(), lv: lv.into(), size_bytes: size };
        (op, format!("create logical volume {vg}/{lv} ({}, {why})", human(size)), size)
    };
    let extend = |from: u64, to: u64, why: String| {
        let (vg, lv) = lv.unwrap_or_default();
        let op = StorageOp::ExtendLv { vg: vg.into(), lv: lv.into(), size_bytes: to };
        let say = format!(
            "extend logical volume {vg}/{lv} from {} to {} ({why})",
            human(from),
            human(to)
        );
        (op, say, to.saturating_sub(from))
    };
    let data: Vec<usize> = (0..2).filter(|&i| matches!(sides[i], Side::Data(..))).collect();
    let source = input.source.and_then(|s| names.iter().position(|n| *n == s));
    let res = &volume.resource;

    if data.is_empty() {
        let both_new = sides[0].is_new() && sides[1].is_new();
        if let (Some(s), false) = (input.source, both_new) {
            plan.notes.push(format!(
                "{res}: --source {s} changes nothing: no copy holds data without DRBD metadata"
            ));
        }
        match sides {
            [Side::Built(a), Side::Built(b)] => {
                if round(a) != round(b) {
                    problems.push(at(format!(
                        "the two copies differ in size: {} on {}, {} on {}; DRBD needs both the same: resize one of them",
                        human(a), names[0], human(b), names[1]
                    )));
                    return;
                }
                plan.notes.push(format!("{res}: built on both nodes"));
            }
            [Side::Built(k), other] | [other, Side::Built(k)] => {
                let b = if matches!(sides[0], Side::Built(_)) { 0 } else { 1 };
                let n = 1 - b;
                if let Some(s) = other.size() {
                    if round(s) < round(k) {
                        problems.push(at(format!(
                            "{device} on {} is {}, smaller than {}'s copy ({}): DRBD cannot replicate onto it; make it at least as large (lvextend) or remove it so that clbuildapp creates it",
                            names[n], human(s), names[b], human(k)
                        )));
                        return;
                    }
                } else {
                    work.lvm[n] = Some(create(k, format!("as on {}", names[b])));
                }
                work.metadata[n] = true;
                work.follow = Some((b, n));
                plan.notes.push(format!(
                    "{res}: built on {}, new on {}: DRBD copies {}'s data to it once both are up",
                    names[b], names[n], names[b]
                ));
            }
            _ => {
                let src = source.unwrap_or(0);
                let size = match (sides[0].size(), sides[1].size()) {
                    (Some(a), Some(b)) if round(a) != round(b) => {
                        problems.push(at(format!(
                            "the two (empty) devices differ in size: {} on {}, {} on {}; DRBD needs both the same: resize one of them",
                            human(a), names[0], human(b), names[1]
                        )));
                        return;
                    }
                    (Some(s), _) | (None, Some(s)) => s,
                    (None, None) => round(configured),
                };
                for i in 0..2 {
                    if sides[i] == Side::Missing {
                        let why = match sides[1 - i].size() {
                            Some(_) => format!("as on {}", names[1 - i]),
                            None => "as configured".to_string(),
                        };
                        work.lvm[i] = Some(create(size, why));
                    }
                }
                work.metadata = [true, true];
                let why = match input.source {
                    Some(s) => format!("{s} was named with --source; both copies are new"),
                    None => format!("{} is the preferred node; both copies are new", names[0]),
                };
                work.primary = Some((src, true, why));
                work.follow = Some((src, 1 - src));
            }
        }
        return;
    }

    let Some(x) = source.filter(|_| input.force) else {
        for &i in &data {
            let what = reports[i].holds.describe();
            problems.push(at(format!(
                "{device} on {} holds {what} but no DRBD metadata: it is never overwritten; to keep this copy and replicate it to {} (whose copy is then overwritten), run clbuildapp --vgbuild --force --source {} --application {}",
                names[i], names[1 - i], names[i], input.app
            )));
        }
        return;
    };
    let y = 1 - x;
    let (sx, sy) = (sides[x], sides[y]);
    if let Side::Built(_) = sy {
        if reports[y].state.is_some() {
            problems.push(at(format!(
                "{device} on {} is built and up, and {}'s data is to replace it: take it down there first (drbdadm down {res}), then run this again",
                names[y], names[x]
            )));
            return;
        }
    }
    let size = match sx {
        Side::Data(s, holds) => {
            if lv.is_none() {
                problems.push(at(format!(
                    "{device} on {} holds {} without DRBD metadata, and a plain disk cannot be made larger: DRBD's metadata ({}) would overwrite the end of the data. Copy the data elsewhere, empty the disk (wipefs -a {device}), run clbuildapp --vgbuild again and copy the data onto /dev/drbd{}",
                    names[x], holds.describe(), human(internal_metadata_bytes(s)), volume.minor
                )));
                return;
            }
            let size = round(size_keeping(s));
            let md = human(internal_metadata_bytes(size));
            if size > s {
                let why = format!("so that DRBD's metadata ({md}) goes after the data it keeps");
                work.lvm[x] = Some(extend(s, size, why));
            }
            plan.overwrites.push(format!(
                "{}: {device} holds {}: it is KEPT, grown to {} and DRBD's metadata ({md}) written after it; it becomes the copy both nodes hold",
                names[x], holds.describe(), human(size)
            ));
            work.metadata[x] = true;
            work.primary =
                Some((x, false, format!("its data is kept: --force --source {}", names[x])));
            size
        }
        Side::Built(s) => round(s),
        Side::Missing | Side::Empty(_) => {
            let size = round(sx.size().unwrap_or(0).max(sy.size().unwrap_or(0)).max(configured));
            match sx.size() {
                None => work.lvm[x] = Some(create(size, "as configured".into())),
                Some(s) if round(s) < size => {
                    work.lvm[x] = Some(extend(s, size, format!("as large as {}'s", names[y])))
                }
                Some(_) => {}
            }
            work.metadata[x] = true;
            work.primary = Some((x, true, format!("named with --source {}", names[x])));
            size
        }
    };
    match sy.size() {
        None => work.lvm[y] = Some(create(size, format!("as on {}", names[x]))),
        Some(s) if s < size => work.lvm[y] = Some(extend(s, size, format!("as on {}", names[x]))),
        Some(_) => {}
    }
    let discarded = match sy {
        Side::Data(_, holds) => Some(holds.describe()),
        Side::Built(_) => Some("DRBD metadata and data".to_string()),
        Side::Missing | Side::Empty(_) => None,
    };
    if let Some(what) = discarded {
        plan.overwrites.push(format!(
            "{}: {device} holds {what}: it is ERASED and overwritten with {}'s copy (--force --source {})",
            names[y], names[x], names[x]
        ));
        work.wipe[y] = Some(what);
    }
    work.metadata[y] = true;
    work.follow = Some((x, y));
}

/// The steps in order: LVM, wiping, resource files, metadata, up; then each volume's initial
/// sync source (primary --force, mkfs, secondary).
fn assemble(
    input: &Input,
    works: Vec<(&ReplicatedVolume, &DrbdResource, [&VolumeReport; 2], VolumeWork)>,
    plan: &mut Plan,
) {
    let names = input.nodes;
    let one = |i: usize| vec![names[i].to_string()];
    let pick = |flags: [bool; 2]| -> Vec<String> {
        (0..2).filter(|&i| flags[i]).map(|i| names[i].to_string()).collect()
    };
    let mut phases: [Vec<Step>; 6] = Default::default();
    for (volume, spec, reports, work) in &works {
        let res = &volume.resource;
        let device = volume.backing.device().display().to_string();
        for i in 0..2 {
            if let Some((op, say, _)) = &work.lvm[i] {
                phases[0].push(Step { nodes: one(i), op: op.clone(), say: say.clone() });
            }
            if let Some(what) = &work.wipe[i] {
                phases[1].push(Step {
                    nodes: one(i),
                    op: StorageOp::Wipe { device: volume.backing.device() },
                    say: format!(
                        "ERASE {device} (it holds {what}; {}'s copy replaces it)",
                        names[1 - i]
                    ),
                });
            }
        }
        let write = [0, 1].map(|i| work.metadata[i] || reports[i].file != ResourceFile::Same);
        let nodes = pick(write);
        if !nodes.is_empty() {
            let path = format!("/etc/drbd.d/linuxha-{res}.res");
            phases[2].push(Step {
                nodes,
                op: StorageOp::WriteResource { spec: (*spec).clone() },
                say: format!("write {path}"),
            });
        }
        let nodes = pick(work.metadata);
        if !nodes.is_empty() {
            phases[3].push(Step {
                nodes,
                op: StorageOp::CreateMetadata { resource: res.clone(), confirmed: input.force },
                say: format!("create DRBD metadata on {device}"),
            });
        }
        let up = [0, 1].map(|i| write[i] || reports[i].state.is_none());
        let nodes = pick(up);
        if !nodes.is_empty() {
            phases[4].push(Step {
                nodes,
                op: StorageOp::Up { resource: res.clone() },
                say: format!("bring {res} up"),
            });
        }
        if let Some((src, mkfs, why)) = &work.primary {
            let to = names[1 - src];
            phases[5].push(Step {
                nodes: one(*src),
                op: StorageOp::PrimaryForce { resource: res.clone() },
                say: format!("initial sync of {res} to {to} ({why})"),
            });
            if *mkfs {
                let fs = &volume.filesystem;
                phases[5].push(Step {
                    nodes: one(*src),
                    op: StorageOp::Mkfs { device: fs.device.clone(), fstype: fs.fstype.clone() },
                    say: format!(
                        "create {} on {}",
                        Holds::Filesystem { fstype: fs.fstype.clone() }.describe(),
                        fs.device.display()
                    ),
                });
            }
            phases[5].push(Step {
                nodes: one(*src),
                op: StorageOp::Secondary { resource: res.clone() },
                say: format!(
                    "make {res} Secondary again (cldaemon promotes it where {} runs)",
                    input.app
                ),
            });
        }
        if let Some((from, to)) = work.follow {
            plan.follow.push(Follow {
                resource: res.clone(),
                from: names[from].into(),
                to: names[to].into(),
            });
        }
    }
    plan.steps = phases.into_iter().flatten().collect();
}
