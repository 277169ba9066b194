//! LVM (the volume group of an application, Linuxha.net's model) and what a block device holds,
//! for building replicated volumes (ARCHITECTURE.md §4b).
//!
//! Reports are read as JSON (`--reportformat json --units b --nosuffix`, LVM 2.02.158 and later;
//! Debian 12 has 2.03.16): every value is a string, sizes in bytes without suffix. `lvcreate -L
//! <bytes>b` rounds the size up to a whole number of extents; [`Lvm::lv_create`] reports the
//! size LVM made. Blocking calls, each bounded by [`Tools::timeout`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::drbd::{Drbd, DrbdError};
use crate::tool::{CommandFailure, Tools};

/// Default time limit of one LVM command.
pub const LVM_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an LVM (or blkid) operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LvmError {
    /// A command failed: its command line, how it ended, its stderr.
    #[error(transparent)]
    Command(#[from] CommandFailure),
    /// The volume group does not exist.
    #[error("LVM volume group {vg} does not exist on this node")]
    NoSuchVg {
        /// The volume group.
        vg: String,
    },
    /// Not a name LVM accepts (lvm(8): letters, digits, `+_.-`, not starting with `-`).
    #[error("{what} {name:?} is not a valid LVM name (letters, digits, `+`, `_`, `.`, `-`; not starting with `-`)")]
    BadName {
        /// Volume group or logical volume.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A report that is not what LVM prints.
    #[error("`{command}`: unexpected output: {problem}")]
    Output {
        /// The command line.
        command: String,
        /// What was wrong with it.
        problem: String,
    },
    /// The device to probe does not exist.
    #[error("{}: {reason}", .path.display())]
    Device {
        /// The device.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Asking DRBD about the device failed.
    #[error(transparent)]
    Drbd(#[from] DrbdError),
}

/// A volume group's sizes, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VgInfo {
    /// Total size.
    pub size: u64,
    /// Unallocated space.
    pub free: u64,
    /// Extent size: logical volumes are whole multiples of it.
    pub extent_size: u64,
}

/// What a block device holds (`blkid -p`, and DRBD's own check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No signature found.
    Empty,
    /// A filesystem of this type.
    Filesystem(String),
    /// DRBD metadata (8.4 keeps it at the end of the device).
    DrbdMetadata,
    /// Something else (another signature, e.g. `LVM2_member`, or several of them).
    Other(String),
}

/// The LVM tools (and blkid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lvm {
    /// Where the tools are and how long each may run.
    pub tools: Tools,
}

/// The device path of a logical volume, `/dev/<vg>/<lv>`.
pub fn lv_path(vg: &str, lv: &str) -> PathBuf {
    Path::new("/dev").join(vg).join(lv)
}

/// `size` rounded up to whole extents (what `lvcreate -L` allocates for a linear volume).
pub fn round_up_to_extent(size: u64, extent_size: u64) -> u64 {
    if extent_size == 0 {
        return size;
    }
    size.div_ceil(extent_size).saturating_mul(extent_size)
}

impl Lvm {
    /// The system's tools, [`LVM_TIMEOUT`] per command.
    pub fn system() -> Lvm {
        Lvm { tools: Tools::system(LVM_TIMEOUT) }
    }

    /// These tools.
    pub fn new(tools: Tools) -> Lvm {
        Lvm { tools }
    }

    /// The volume group's sizes, `None` when it does not exist.
    pub fn vg_info(&self, vg: &str) -> Result<Option<VgInfo>, LvmError> {
        check_name("volume group", vg)?;
        let ran = self.tools.run(
            "vgs",
            &[
                "--reportformat",
                "json",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "vg_name,vg_size,vg_free,vg_extent_size",
                vg,
            ],
        )?;
        if ran.code != 0 {
            if vg_missing(&ran.stderr, vg) {
                return Ok(None);
            }
            return Err(ran.failure().into());
        }
        let rows = report_rows(&ran.stdout, "vg")
            .map_err(|problem| LvmError::Output { command: ran.command.clone(), problem })?;
        let Some(row) = rows.iter().find(|r| r.get("vg_name").map(String::as_str) == Some(vg))
        else {
            return Ok(None);
        };
        let field = |k: &str| {
            number(row, k)
                .map_err(|problem| LvmError::Output { command: ran.command.clone(), problem })
        };
        Ok(Some(VgInfo {
            size: field("vg_size")?,
            free: field("vg_free")?,
            extent_size: field("vg_extent_size")?,
        }))
    }

    /// Whether the volume group exists.
    pub fn vg_exists(&self, vg: &str) -> Result<bool, LvmError> {
        Ok(self.vg_info(vg)?.is_some())
    }

    /// The volume group's unallocated space, bytes.
    pub fn vg_free_bytes(&self, vg: &str) -> Result<u64, LvmError> {
        self.vg_info(vg)?.map(|i| i.free).ok_or_else(|| LvmError::NoSuchVg { vg: vg.into() })
    }

    /// The logical volume's size in bytes, `None` when the volume group has no such volume.
    pub fn lv_size_bytes(&self, vg: &str, lv: &str) -> Result<Option<u64>, LvmError> {
        check_name("volume group", vg)?;
        check_name("logical volume", lv)?;
        let ran = self.tools.run(
            "lvs",
            &["--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size", vg],
        )?;
        if ran.code != 0 {
            if vg_missing(&ran.stderr, vg) {
                return Err(LvmError::NoSuchVg { vg: vg.into() });
            }
            return Err(ran.failure().into());
        }
        let output = |problem| LvmError::Output { command: ran.command.clone(), problem };
        let rows = report_rows(&ran.stdout, "lv").map_err(output)?;
        match rows.iter().find(|r| r.get("lv_name").map(String::as_str) == Some(lv)) {
            None => Ok(None),
            Some(row) => Ok(Some(number(row, "lv_size").map_err(output)?)),
        }
    }

    /// Creates a linear logical volume of at least `size_bytes` (wiping any signature found in
    /// its space, without asking) and returns its real size (rounded up to extents by LVM).
    pub fn lv_create(&self, vg: &str, lv: &str, size_bytes: u64) -> Result<u64, LvmError> {
        check_name("volume group", vg)?;
        check_name("logical volume", lv)?;
        let size = format!("{size_bytes}b");
        let ran = self
            .tools
            .run("lvcreate", &["--yes", "--wipesignatures", "y", "-L", &size, "-n", lv, vg])?;
        if ran.code != 0 {
            if vg_missing(&ran.stderr, vg) {
                return Err(LvmError::NoSuchVg { vg: vg.into() });
            }
            return Err(ran.failure().into());
        }
        self.lv_size_bytes(vg, lv)?.ok_or_else(|| LvmError::Output {
            command: ran.command,
            problem: format!("{vg}/{lv} is not listed after it was created"),
        })
    }

    /// What `path` holds, from `blkid -p` (a low-level probe, no cache). When blkid finds
    /// nothing and `drbd` names the resource the device backs, DRBD is asked as well
    /// ([`Drbd::has_metadata`]).
    pub fn device_holds_data(
        &self,
        path: &Path,
        drbd: Option<(&Drbd, &str)>,
    ) -> Result<Probe, LvmError> {
        if let Err(e) = std::fs::metadata(path) {
            return Err(LvmError::Device { path: path.into(), reason: e.to_string() });
        }
        let dev = path.to_string_lossy();
        let ran = self.tools.run("blkid", &["-p", "-o", "export", &dev])?;
        let probe = match ran.code {
            0 => blkid_probe(&ran.stdout),
            2 => Probe::Empty,
            8 => Probe::Other("several signatures (blkid: ambivalent result)".into()),
            _ => return Err(ran.failure().into()),
        };
        match (probe, drbd) {
            (Probe::Empty, Some((drbd, res))) if drbd.has_metadata(res)? => Ok(Probe::DrbdMetadata),
            (probe, _) => Ok(probe),
        }
    }
}

/// The probe for `blkid -p -o export` output (`KEY=value` lines).
pub fn blkid_probe(export: &str) -> Probe {
    let get = |key: &str| {
        export.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::trim)
    };
    match (get("TYPE"), get("USAGE")) {
        (Some("drbd"), _) => Probe::DrbdMetadata,
        (Some(t), Some("filesystem")) => Probe::Filesystem(t.to_string()),
        (Some(t), _) => Probe::Other(t.to_string()),
        (None, Some(u)) => Probe::Other(format!("USAGE={u}")),
        (None, None) => Probe::Other("a signature blkid does not name".into()),
    }
}

#[derive(Deserialize)]
struct Report {
    report: Vec<std::collections::BTreeMap<String, serde_json::Value>>,
}

type Row = std::collections::BTreeMap<String, String>;

/// The rows of the `kind` (`vg`, `lv`) report in LVM's JSON output.
fn report_rows(json: &str, kind: &str) -> Result<Vec<Row>, String> {
    let report: Report =
        serde_json::from_str(json).map_err(|e| format!("not an LVM JSON report: {e}"))?;
    let mut rows = Vec::new();
    for section in report.report {
        let Some(list) = section.get(kind) else { continue };
        let list: Vec<Row> = serde_json::from_value(list.clone())
            .map_err(|e| format!("{kind} rows are not objects of strings: {e}"))?;
        rows.extend(list);
    }
    Ok(rows)
}

fn number(row: &Row, key: &str) -> Result<u64, String> {
    let text = row.get(key).ok_or_else(|| format!("no {key}"))?;
    text.trim().parse().map_err(|_| format!("{key} {text:?} is not a number of bytes"))
}

/// LVM's messages for a volume group that does not exist.
fn vg_missing(stderr: &str, vg: &str) -> bool {
    stderr.contains(&format!("Volume group \"{vg}\" not found"))
        || stderr.contains(&format!("Cannot process volume group {vg}"))
}

fn check_name(what: &'static str, name: &str) -> Result<(), LvmError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '.' | '-');
    if name.is_empty()
        || name.len() > 127
        || name.starts_with('-')
        || name == "."
        || name == ".."
        || !name.chars().all(ok)
    {
        return Err(LvmError::BadName { what, name: name.into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::fake::FakeBin;

    /// `lvs --reportformat json --units b --nosuffix -o lv_name,lv_size vg0` (LVM 2.03 layout).
    const LVS: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"web-data", "lv_size":"1077936128"},
                  {"lv_name":"db", "lv_size":"4194304"}
              ]
          }
      ]
  }
"#;

    const VGS: &str = r#"  {
      "report": [
          {
              "vg": [
                  {"vg_name":"vg0", "vg_size":"10733223936", "vg_free":"9651093504", "vg_extent_size":"4194304"}
              ]
          }
      ]
  }
"#;

    fn lvm(bin: &FakeBin) -> Lvm {
        Lvm::new(bin.tools())
    }

    #[test]
    fn lvs_json_is_parsed() {
        let rows = report_rows(LVS, "lv").expect("valid");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["lv_size"], "1077936128");
        assert!(report_rows("not json", "lv").is_err());
        assert!(report_rows(r#"{"report":[{"lv":[{"lv_name":3}]}]}"#, "lv").is_err());
        assert_eq!(report_rows(r#"{"report":[{"vg":[]}]}"#, "lv").expect("none"), vec![]);
    }

    #[test]
    fn sizes_round_up_to_extents() {
        let mib4 = 4 << 20;
        assert_eq!(round_up_to_extent(1, mib4), mib4);
        assert_eq!(round_up_to_extent(mib4, mib4), mib4);
        assert_eq!(round_up_to_extent(1 << 30, mib4), 1 << 30);
        assert_eq!(round_up_to_extent((1 << 30) + 1, mib4), (1 << 30) + mib4);
        assert_eq!(round_up_to_extent(5, 0), 5);
        assert_eq!(round_up_to_extent(u64::MAX, mib4), u64::MAX, "saturates");
    }

    #[test]
    fn lv_size_and_missing_volumes() {
        let bin = FakeBin::new("lvs");
        bin.tool("lvs", &format!("[ \"$8\" = vg0 ] || {{ echo '  Volume group \"'$8'\" not found' >&2; echo '  Cannot process volume group '$8 >&2; exit 5; }}\ncat <<'EOF'\n{LVS}EOF"));
        let lvm = lvm(&bin);
        assert_eq!(lvm.lv_size_bytes("vg0", "web-data").expect("ok"), Some(1077936128));
        assert_eq!(lvm.lv_size_bytes("vg0", "nope").expect("ok"), None);
        let err = lvm.lv_size_bytes("vg9", "web-data").expect_err("no vg");
        assert!(matches!(err, LvmError::NoSuchVg { .. }), "{err}");
        let err = lvm.lv_size_bytes("vg0", "-rf").expect_err("bad name");
        assert!(matches!(err, LvmError::BadName { .. }), "{err}");
    }

    #[test]
    fn vg_info_exists_and_free() {
        let bin = FakeBin::new("vgs");
        bin.tool("vgs", &format!("for a; do v=$a; done\n[ \"$v\" = vg0 ] || {{ echo '  Volume group \"'$v'\" not found' >&2; exit 5; }}\ncat <<'EOF'\n{VGS}EOF"));
        let lvm = lvm(&bin);
        assert_eq!(
            lvm.vg_info("vg0").expect("ok"),
            Some(VgInfo { size: 10733223936, free: 9651093504, extent_size: 4194304 })
        );
        assert!(lvm.vg_exists("vg0").expect("ok"));
        assert!(!lvm.vg_exists("vg1").expect("ok"));
        assert_eq!(lvm.vg_free_bytes("vg0").expect("ok"), 9651093504);
        assert!(matches!(lvm.vg_free_bytes("vg1"), Err(LvmError::NoSuchVg { .. })));
    }

    #[test]
    fn lv_create_passes_the_flags_and_reports_the_real_size() {
        let bin = FakeBin::new("lvcreate");
        let log = bin.0.join("args");
        bin.tool("lvcreate", &format!("echo \"$@\" > {}\necho '  Rounding up size to full physical extent 8.00 MiB'\necho '  Logical volume \"db\" created.'", log.display()));
        bin.tool("lvs", &format!("cat <<'EOF'\n{LVS}EOF"));
        let size = lvm(&bin).lv_create("vg0", "db", 4_000_000).expect("created");
        assert_eq!(size, 4194304, "the size LVM reports, not the one asked for");
        let args = std::fs::read_to_string(&log).expect("args");
        assert_eq!(args.trim(), "--yes --wipesignatures y -L 4000000b -n db vg0");
        bin.tool("lvcreate", "echo '  Insufficient free space: 2560 extents needed, but only 10 available' >&2; exit 5");
        let err = lvm(&bin).lv_create("vg0", "big", 10 << 30).expect_err("no space");
        let text = err.to_string();
        assert!(text.contains("lvcreate --yes") && text.contains("Insufficient free"), "{text}");
    }

    #[test]
    fn blkid_output_is_classified() {
        // Recorded with blkid 2.38.1 on a DRBD 8.4 backing device and on an ext4 image.
        let drbd =
            "DEVNAME=/tmp/vm1.disk\nUUID=fb50c2a9ebe47560\nVERSION=v08\nTYPE=drbd\nUSAGE=raid\n";
        assert_eq!(blkid_probe(drbd), Probe::DrbdMetadata);
        let ext4 =
            "DEVNAME=x\nUUID=21dd\nVERSION=1.0\nBLOCK_SIZE=1024\nTYPE=ext4\nUSAGE=filesystem\n";
        assert_eq!(blkid_probe(ext4), Probe::Filesystem("ext4".into()));
        let pv = "DEVNAME=/dev/sdb\nUUID=abc\nVERSION=LVM2 001\nTYPE=LVM2_member\nUSAGE=raid\n";
        assert_eq!(blkid_probe(pv), Probe::Other("LVM2_member".into()));
        // PTTYPE alone (a partition table) has no TYPE.
        assert!(matches!(blkid_probe("PTUUID=1\nPTTYPE=gpt\n"), Probe::Other(_)));
    }

    #[test]
    fn real_blkid_on_image_files() {
        let Some(_) = crate::tool::find_tool("blkid") else {
            eprintln!("skipped: no blkid");
            return;
        };
        let dir = FakeBin::new("blkid-real");
        let img = dir.0.join("zero.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).expect("image");
        let lvm = Lvm::system();
        assert_eq!(lvm.device_holds_data(&img, None).expect("probe"), Probe::Empty);
        let missing = dir.0.join("missing.img");
        let err = lvm.device_holds_data(&missing, None).expect_err("missing");
        assert!(matches!(err, LvmError::Device { .. }), "{err}");
        if crate::tool::find_tool("mkfs.ext4").is_some() {
            let ok =
                std::process::Command::new(crate::tool::find_tool("mkfs.ext4").expect("found"))
                    .args(["-q", "-F"])
                    .arg(&img)
                    .status()
                    .is_ok_and(|s| s.success());
            if ok {
                assert_eq!(
                    lvm.device_holds_data(&img, None).expect("probe"),
                    Probe::Filesystem("ext4".into())
                );
            }
        }
    }

    #[test]
    fn an_empty_looking_device_is_checked_with_drbd() {
        let bin = FakeBin::new("blkid-drbd");
        bin.tool("blkid", "exit 2");
        bin.tool(
            "drbdadm",
            "[ \"$1\" = get-gi ] && { echo 0000000000000004:0:0:0:0:0:0:0:0:0:0; exit 0; }; exit 1",
        );
        let dev = bin.0.join("blkid"); // any existing path
        let lvm = lvm(&bin);
        let drbd = Drbd::new(bin.tools());
        assert_eq!(lvm.device_holds_data(&dev, None).expect("probe"), Probe::Empty);
        assert_eq!(
            lvm.device_holds_data(&dev, Some((&drbd, "r0"))).expect("probe"),
            Probe::DrbdMetadata
        );
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "-x", "a b", "a/b", "..", "a;b"] {
            assert!(check_name("logical volume", bad).is_err(), "{bad:?}");
        }
        for good in ["vg0", "web-data", "a+b_c.d"] {
            assert!(check_name("logical volume", good).is_ok(), "{good:?}");
        }
        assert_eq!(lv_path("vg0", "web"), PathBuf::from("/dev/vg0/web"));
    }
}
