//! The planner's cases, on two nodes as they could be found.

use std::path::PathBuf;
use std::time::Duration;

use cl_config::appconf::Filesystem;
use cl_config::drbd::{DrbdNode, DrbdResource};
use cl_config::replication::{
    AfterSplitBrain, Backing, DiskFailurePolicy, Fencing, ReplicatedVolume, VolumeGroup,
};
use cl_config::{Replication, SourceAt};
use cl_core::storage::VolumeState;
use cl_wire::storage::{
    DrbdConf, Holds, NodeInspection, ResourceFile, StorageOp, VgReport, VolumeReport,
};

use super::plan::{plan, Input, Plan, Problem};

const MIB: u64 = 1 << 20;
const FILE: &str = "/etc/cluster/webdata/appconf.xml";

fn volume(name: &str, minor: u32, backing: Backing, line: u32) -> ReplicatedVolume {
    ReplicatedVolume {
        resource: format!("webdata-{name}"),
        backing,
        minor,
        port: 7788 + minor as u16,
        net: "private".into(),
        resync_rate_kib: 100 << 10,
        filesystem: Filesystem {
            device: PathBuf::from(format!("/dev/drbd{minor}")),
            mountpoint: PathBuf::from(format!("/webdata/{name}")),
            fstype: "ext4".into(),
            options: String::new(),
            fsck: true,
        },
        at: SourceAt { line, column: 5 },
    }
}

fn lv(name: &str, minor: u32, size: u64, line: u32) -> ReplicatedVolume {
    let backing = Backing::Lv { vg: "webdatavg".into(), lv: name.into(), size_bytes: size };
    volume(name, minor, backing, line)
}

fn replication(volumes: Vec<ReplicatedVolume>) -> Replication {
    let has_lv = volumes.iter().any(|v| matches!(v.backing, Backing::Lv { .. }));
    Replication {
        fencing: Fencing::ResourceAndStonith,
        after_split_brain: AfterSplitBrain::Disconnect,
        on_disk_failure: DiskFailurePolicy::Detach,
        ping_int: Duration::from_secs(2),
        ping_timeout: Duration::from_millis(500),
        connect_int: Duration::from_secs(2),
        timeout: Duration::from_millis(1500),
        volume_group: has_lv
            .then(|| VolumeGroup { name: "webdatavg".into(), at: SourceAt { line: 4, column: 3 } }),
        volumes,
    }
}

fn specs(r: &Replication) -> Vec<DrbdResource> {
    r.volumes
        .iter()
        .map(|v| DrbdResource {
            name: v.resource.clone(),
            minor: v.minor,
            nodes: ["node1", "node2"]
                .iter()
                .enumerate()
                .map(|(i, n)| DrbdNode {
                    hostname: n.to_string(),
                    backing_disk: v.backing.device(),
                    address: format!("10.0.0.{}", i + 1).parse().expect("ip"),
                    port: v.port,
                })
                .collect(),
            fencing: r.fencing,
            after_sb: r.after_split_brain,
            resync_rate_kib: v.resync_rate_kib,
            ping_int: r.ping_int,
            ping_timeout: r.ping_timeout,
            connect_int: r.connect_int,
            timeout: r.timeout,
        })
        .collect()
}

/// A healthy node with a 1 GiB volume group (4 MiB extents) and every volume missing.
fn node(name: &str, r: &Replication) -> NodeInspection {
    NodeInspection {
        node: name.into(),
        hostname: name.into(),
        drbd_kernel: Some("8.4.11".into()),
        drbd_utils: Some("9.22.0".into()),
        drbd_conf: DrbdConf::Includes,
        vg: r.volume_group.as_ref().map(|g| VgReport {
            name: g.name.clone(),
            exists: true,
            free_bytes: 1024 * MIB,
            extent_bytes: 4 * MIB,
        }),
        volumes: r
            .volumes
            .iter()
            .map(|v| VolumeReport {
                resource: v.resource.clone(),
                size_bytes: None,
                holds: Holds::Empty,
                file: ResourceFile::Missing,
                state: None,
            })
            .collect(),
        errors: vec![],
    }
}

fn set(n: &mut NodeInspection, i: usize, size: u64, holds: Holds) {
    n.volumes[i].size_bytes = Some(size);
    n.volumes[i].holds = holds;
}

fn built(n: &mut NodeInspection, i: usize, size: u64) {
    set(n, i, size, Holds::DrbdMetadata);
    n.volumes[i].file = ResourceFile::Same;
    n.volumes[i].state = Some(VolumeState::default());
}

fn ext4() -> Holds {
    Holds::Filesystem { fstype: "ext4".into() }
}

fn run(
    r: &Replication,
    a: &NodeInspection,
    b: &NodeInspection,
    force: bool,
    source: Option<&str>,
) -> Result<Plan, Vec<Problem>> {
    let specs = specs(r);
    let input = Input {
        file: FILE,
        app: "webdata",
        replication: r,
        specs: &specs,
        nodes: ["node1", "node2"],
        found: [a, b],
        force,
        source,
    };
    plan(&input)
}

fn lines(p: &Plan) -> Vec<String> {
    p.steps.iter().map(|s| s.to_string()).collect()
}

fn texts(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(|p| p.to_string()).collect()
}

#[test]
fn both_new_builds_everything_and_syncs_from_the_preferred_node() {
    let r = replication(vec![lv("www", 0, 256 * MIB, 5), lv("db", 1, 130 * MIB, 6)]);
    let (a, b) = (node("node1", &r), node("node2", &r));
    let p = run(&r, &a, &b, false, None).expect("plan");
    assert_eq!(
        lines(&p),
        [
            "node1: create logical volume webdatavg/www (256 MiB, as configured)",
            "node2: create logical volume webdatavg/www (256 MiB, as configured)",
            "node1: create logical volume webdatavg/db (132 MiB, as configured)",
            "node2: create logical volume webdatavg/db (132 MiB, as configured)",
            "both: write /etc/drbd.d/linuxha-webdata-www.res",
            "both: write /etc/drbd.d/linuxha-webdata-db.res",
            "both: create DRBD metadata on /dev/webdatavg/www",
            "both: create DRBD metadata on /dev/webdatavg/db",
            "both: bring webdata-www up",
            "both: bring webdata-db up",
            "node1: initial sync of webdata-www to node2 (node1 is the preferred node; both copies are new)",
            "node1: create an ext4 filesystem on /dev/drbd0",
            "node1: make webdata-www Secondary again (cldaemon promotes it where webdata runs)",
            "node1: initial sync of webdata-db to node2 (node1 is the preferred node; both copies are new)",
            "node1: create an ext4 filesystem on /dev/drbd1",
            "node1: make webdata-db Secondary again (cldaemon promotes it where webdata runs)",
        ]
    );
    assert!(p.overwrites.is_empty());
    assert_eq!(p.follow.len(), 2);
    assert_eq!((p.follow[0].from.as_str(), p.follow[0].to.as_str()), ("node1", "node2"));
    // An explicit --source picks the sync source of new volumes.
    let p = run(&r, &a, &b, true, Some("node2")).expect("plan");
    assert!(lines(&p).contains(&"node2: create an ext4 filesystem on /dev/drbd0".to_string()));
    assert_eq!(p.follow[0].from, "node2");
}

#[test]
fn built_on_both_is_left_alone_and_rerunning_is_harmless() {
    let r = replication(vec![lv("www", 0, 256 * MIB, 5)]);
    let (mut a, mut b) = (node("node1", &r), node("node2", &r));
    built(&mut a, 0, 256 * MIB);
    built(&mut b, 0, 256 * MIB);
    let p = run(&r, &a, &b, true, None).expect("plan");
    assert!(p.steps.is_empty() && p.follow.is_empty(), "{:?}", lines(&p));
    assert_eq!(p.notes, ["webdata-www: built on both nodes"]);
    // A changed resource file on one node, the resource down on the other.
    b.volumes[0].file = ResourceFile::Differs;
    a.volumes[0].state = None;
    let p = run(&r, &a, &b, false, None).expect("plan");
    assert_eq!(
        lines(&p),
        ["node2: write /etc/drbd.d/linuxha-webdata-www.res", "both: bring webdata-www up"]
    );
    assert!(p.steps.iter().all(|s| !matches!(
        s.op,
        StorageOp::CreateMetadata { .. } | StorageOp::PrimaryForce { .. } | StorageOp::Mkfs { .. }
    )));
}

#[test]
fn a_new_side_beside_a_built_one_gets_metadata_and_a_resync() {
    let r = replication(vec![lv("www", 0, 256 * MIB, 5)]);
    let (mut a, b) = (node("node1", &r), node("node2", &r));
    built(&mut a, 0, 260 * MIB);
    let p = run(&r, &a, &b, false, None).expect("plan");
    assert_eq!(
        lines(&p),
        [
            "node2: create logical volume webdatavg/www (260 MiB, as on node1)",
            "node2: write /etc/drbd.d/linuxha-webdata-www.res",
            "node2: create DRBD metadata on /dev/webdatavg/www",
            "node2: bring webdata-www up",
        ]
    );
    assert_eq!((p.follow[0].from.as_str(), p.follow[0].to.as_str()), ("node1", "node2"));
    assert!(p.overwrites.is_empty());
}

#[test]
fn data_without_metadata_is_refused_unless_a_source_is_named() {
    let r = replication(vec![lv("www", 0, 256 * MIB, 5)]);
    let (mut a, b) = (node("node1", &r), node("node2", &r));
    set(&mut a, 0, 256 * MIB, ext4());
    let expected = format!(
        "{FILE}:5:5: error: <lv name=\"www\">: /dev/webdatavg/www on node1 holds an ext4 filesystem but no DRBD metadata: it is never overwritten; to keep this copy and replicate it to node2 (whose copy is then overwritten), run clbuildapp --vgbuild --force --source node1 --application webdata"
    );
    for force in [false, true] {
        let problems = run(&r, &a, &b, force, None).expect_err("refused");
        assert_eq!(texts(&problems), std::slice::from_ref(&expected));
    }
    // Keeping node1's data: its volume grows by the metadata, node2's is made as large.
    let p = run(&r, &a, &b, true, Some("node1")).expect("plan");
    assert_eq!(
        lines(&p),
        [
            "node1: extend logical volume webdatavg/www from 256 MiB to 260 MiB (so that DRBD's metadata (48 KiB) goes after the data it keeps)",
            "node2: create logical volume webdatavg/www (260 MiB, as on node1)",
            "both: write /etc/drbd.d/linuxha-webdata-www.res",
            "both: create DRBD metadata on /dev/webdatavg/www",
            "both: bring webdata-www up",
            "node1: initial sync of webdata-www to node2 (its data is kept: --force --source node1)",
            "node1: make webdata-www Secondary again (cldaemon promotes it where webdata runs)",
        ]
    );
    assert_eq!(p.overwrites.len(), 1);
    assert!(p.overwrites[0].contains("it is KEPT"), "{:?}", p.overwrites);
    // Keeping node2's (empty) copy instead erases node1's data, loudly.
    let p = run(&r, &a, &b, true, Some("node2")).expect("plan");
    assert!(lines(&p).contains(&"node1: ERASE /dev/webdatavg/www (it holds an ext4 filesystem; node2's copy replaces it)".to_string()), "{:?}", lines(&p));
    assert!(lines(&p).contains(&"node2: create an ext4 filesystem on /dev/drbd0".to_string()));
    assert!(
        p.overwrites[0]
            .starts_with("node1: /dev/webdatavg/www holds an ext4 filesystem: it is ERASED"),
        "{:?}",
        p.overwrites
    );
}

#[test]
fn a_plain_disk_with_data_cannot_be_kept() {
    let disk = Backing::Disk { device: "/dev/vdc".into() };
    let r = replication(vec![volume("vdc", 3, disk, 7)]);
    let (mut a, mut b) = (node("node1", &r), node("node2", &r));
    set(&mut a, 0, 512 * MIB, ext4());
    set(&mut b, 0, 512 * MIB, Holds::Empty);
    let problems = run(&r, &a, &b, true, Some("node1")).expect_err("refused");
    assert_eq!(problems.len(), 1);
    let text = problems[0].to_string();
    assert!(text.starts_with(&format!("{FILE}:7:5: error: <disk device=\"/dev/vdc\">: /dev/vdc on node1 holds an ext4 filesystem without DRBD metadata, and a plain disk cannot be made larger")), "{text}");
    // A missing disk is reported where it is written.
    b.volumes[0].size_bytes = None;
    let problems = run(&r, &a, &b, false, None).expect_err("refused");
    assert!(
        texts(&problems).contains(&format!(
            "{FILE}:7:5: error: <disk device=\"/dev/vdc\">: /dev/vdc does not exist on node2"
        )),
        "{:?}",
        texts(&problems)
    );
}

#[test]
fn a_missing_volume_group_a_size_mismatch_and_too_little_space_are_all_reported() {
    let r = replication(vec![lv("www", 0, 256 * MIB, 5), lv("db", 1, 128 * MIB, 6)]);
    let (mut a, mut b) = (node("node1", &r), node("node2", &r));
    if let Some(vg) = b.vg.as_mut() {
        vg.exists = false;
    }
    let problems = run(&r, &a, &b, false, None).expect_err("refused");
    assert_eq!(
        texts(&problems),
        [format!("{FILE}:4:3: error: <vg name=\"webdatavg\">: the volume group does not exist on node2: create it there with `vgcreate webdatavg <physical volume>` (e.g. vgcreate webdatavg /dev/sdb)")]
    );
    let mut b = node("node2", &r);
    built(&mut a, 0, 256 * MIB);
    built(&mut b, 0, 512 * MIB);
    if let Some(vg) = a.vg.as_mut() {
        vg.free_bytes = 100 * MIB;
    }
    let problems = run(&r, &a, &b, false, None).expect_err("refused");
    assert_eq!(
        texts(&problems),
        [
            format!("{FILE}:5:5: error: <lv name=\"www\">: the two copies differ in size: 256 MiB on node1, 512 MiB on node2; DRBD needs both the same: resize one of them"),
            format!("{FILE}:4:3: error: <vg name=\"webdatavg\">: node1 has 100 MiB free in webdatavg, but the logical volumes to create or extend need 128 MiB: add a physical volume there (vgextend webdatavg <device>) or free space"),
        ]
    );
}

#[test]
fn an_existing_device_smaller_than_the_built_copy_is_refused() {
    let r = replication(vec![lv("www", 0, 256 * MIB, 5)]);
    let (mut a, mut b) = (node("node1", &r), node("node2", &r));
    built(&mut a, 0, 256 * MIB);
    set(&mut b, 0, 128 * MIB, Holds::Empty);
    let problems = run(&r, &a, &b, false, None).expect_err("refused");
    assert!(
        texts(&problems)[0].contains("on node2 is 128 MiB, smaller than node1's copy (256 MiB)"),
        "{:?}",
        texts(&problems)
    );
}

#[test]
fn node_problems_name_the_node_and_the_fix() {
    let r = replication(vec![lv("www", 0, 256 * MIB, 5)]);
    let (mut a, mut b) = (node("node1", &r), node("node2", &r));
    a.hostname = "vm1".into();
    b.drbd_kernel = None;
    b.drbd_conf = DrbdConf::Missing { fix: "/etc/drbd.conf does not include …".into() };
    let problems = run(&r, &a, &b, false, None).expect_err("refused");
    assert_eq!(
        texts(&problems),
        [
            "node1: its host name (uname -n) is `vm1`, but DRBD finds its part of a resource file by host name, and linuxha names it `node1`: set the host name to node1 (hostnamectl set-hostname node1) or name the node `vm1` in clconf.xml",
            "node2: the DRBD kernel module is not loaded on node2: run `modprobe drbd` there (and list drbd in /etc/modules-load.d/ so that it loads at boot)",
            "node2: /etc/drbd.conf does not include …",
        ]
    );
}

#[test]
fn a_built_copy_is_replaced_only_when_named_and_down() {
    let r = replication(vec![lv("www", 0, 256 * MIB, 5)]);
    let (mut a, mut b) = (node("node1", &r), node("node2", &r));
    set(&mut a, 0, 256 * MIB, ext4());
    built(&mut b, 0, 260 * MIB);
    // node2 is built: without --source node1's data is refused, not node2's copy touched.
    assert!(run(&r, &a, &b, false, None).is_err());
    // Keeping node2's built copy: node1's data is erased and resynchronised.
    let p = run(&r, &a, &b, true, Some("node2")).expect("plan");
    assert_eq!(
        lines(&p),
        [
            "node1: extend logical volume webdatavg/www from 256 MiB to 260 MiB (as on node2)",
            "node1: ERASE /dev/webdatavg/www (it holds an ext4 filesystem; node2's copy replaces it)",
            "node1: write /etc/drbd.d/linuxha-webdata-www.res",
            "node1: create DRBD metadata on /dev/webdatavg/www",
            "node1: bring webdata-www up",
        ]
    );
    // Keeping node1's data over node2's built copy needs node2's resource down first.
    let problems = run(&r, &a, &b, true, Some("node1")).expect_err("refused");
    assert!(texts(&problems)[0].contains("take it down there first (drbdadm down webdata-www)"));
    b.volumes[0].state = None;
    let p = run(&r, &a, &b, true, Some("node1")).expect("plan");
    assert!(
        p.overwrites.iter().any(|w| w
            .starts_with("node2: /dev/webdatavg/www holds DRBD metadata and data: it is ERASED")),
        "{:?}",
        p.overwrites
    );
}
