//! What building replicated volumes needs beside [`crate::lvm`] and [`crate::drbd`]: growing a
//! logical volume, erasing a device's signatures, making a filesystem, a device's size. Each is
//! one bounded tool run ([`Tools`]); the callers decide when they are allowed.

use std::io::{Seek, SeekFrom};
use std::path::Path;

use crate::lvm::{Lvm, LvmError};
use crate::tool::{CommandFailure, Tools};

/// Grows `vg/lv` to at least `size_bytes` (LVM rounds up to extents; nothing when it is that
/// large already) and returns its size.
pub fn lv_extend(lvm: &Lvm, vg: &str, lv: &str, size_bytes: u64) -> Result<u64, LvmError> {
    let now = lvm.lv_size_bytes(vg, lv)?.ok_or_else(|| LvmError::Output {
        command: format!("lvs {vg}"),
        problem: format!("{vg}/{lv} does not exist"),
    })?;
    if now >= size_bytes {
        return Ok(now);
    }
    let size = format!("{size_bytes}b");
    let target = format!("{vg}/{lv}");
    lvm.tools.run("lvextend", &["-L", &size, &target])?.ok()?;
    lvm.lv_size_bytes(vg, lv)?.ok_or_else(|| LvmError::Output {
        command: format!("lvs {vg}"),
        problem: format!("{vg}/{lv} is not listed after it was extended"),
    })
}

/// `wipefs -a <device>`: erases every signature blkid knows (filesystems, DRBD metadata).
pub fn wipe_signatures(tools: &Tools, device: &Path) -> Result<(), CommandFailure> {
    let dev = device.to_string_lossy();
    tools.run("wipefs", &["-a", &dev])?.ok()?;
    Ok(())
}

/// `mkfs.<fstype>` on `device` (quiet for ext2/3/4).
pub fn mkfs(tools: &Tools, device: &Path, fstype: &str) -> Result<(), CommandFailure> {
    let dev = device.to_string_lossy();
    let program = format!("mkfs.{fstype}");
    let mut args: Vec<&str> = Vec::new();
    if fstype.starts_with("ext") {
        args.push("-q");
    }
    args.push(&dev);
    tools.run(&program, &args)?.ok()?;
    Ok(())
}

/// The size of a block device (or file), bytes.
pub fn device_size(device: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(device)?;
    file.seek(SeekFrom::End(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::fake::FakeBin;

    #[test]
    fn extend_wipe_and_mkfs_run_their_tools() {
        let bin = FakeBin::new("blockdev-tools");
        bin.tool("wipefs", "echo \"$@\" > \"$(dirname \"$0\")/wipefs.args\"");
        bin.tool("mkfs.ext4", "echo \"$@\" > \"$(dirname \"$0\")/mkfs.args\"");
        let tools = bin.tools();
        wipe_signatures(&tools, Path::new("/dev/vg/www")).expect("wipefs");
        mkfs(&tools, Path::new("/dev/drbd0"), "ext4").expect("mkfs");
        let read = |f: &str| std::fs::read_to_string(bin.0.join(f)).expect("args");
        assert_eq!(read("wipefs.args"), "-a /dev/vg/www\n");
        assert_eq!(read("mkfs.args"), "-q /dev/drbd0\n");
        let err = mkfs(&tools, Path::new("/dev/drbd0"), "xfs").expect_err("no mkfs.xfs");
        assert!(err.to_string().contains("mkfs.xfs"), "{err}");
    }

    #[test]
    fn a_files_size() {
        let dir = std::env::temp_dir().join(format!("cl-blockdev-size-{}", std::process::id()));
        std::fs::File::create(&dir).and_then(|f| f.set_len(12345)).expect("file");
        assert_eq!(device_size(&dir).expect("size"), 12345);
        let _ = std::fs::remove_file(&dir);
    }
}
