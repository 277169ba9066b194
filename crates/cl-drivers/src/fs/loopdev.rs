//! Loop devices for image files, through the loop ioctls (linux/loop.h).
//!
//! Attached with `LO_FLAGS_AUTOCLEAR`, atomically with `LOOP_CONFIGURE` (Linux ≥ 5.8; older
//! kernels get `LOOP_SET_FD` + `LOOP_SET_STATUS64`): the kernel detaches the device when its
//! last opener closes it, so a mount holding it frees it at unmount, and an attach whose mount
//! failed frees it when we close our descriptor.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LOOP_SET_FD: libc::Ioctl = 0x4C00;
const LOOP_CLR_FD: libc::Ioctl = 0x4C01;
const LOOP_SET_STATUS64: libc::Ioctl = 0x4C04;
const LOOP_GET_STATUS64: libc::Ioctl = 0x4C05;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64`.
#[derive(Clone, Copy)]
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn zeroed_info() -> LoopInfo64 {
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: 0,
        lo_file_name: [0; LO_NAME_SIZE],
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

/// A loop device: `/dev/loopN` and its device number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Loop {
    pub path: PathBuf,
    pub rdev: u64,
}

/// A loop device just attached, held open until the mount holds it.
#[derive(Debug)]
pub(crate) struct Attached {
    pub path: PathBuf,
    _held: File,
}

fn check_rc(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An ioctl whose argument is a pointer to `T`.
fn ioctl_ptr<T>(fd: &File, request: libc::Ioctl, arg: *const T) -> io::Result<libc::c_int> {
    // SAFETY: `fd` is open and `arg` points to a live value of the type the request expects
    // (the callers pair each request with its struct).
    check_rc(unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) })
}

/// An ioctl whose argument is an integer (or unused).
fn ioctl_int(fd: &File, request: libc::Ioctl, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: `fd` is open; these requests take an integer argument and no pointer.
    check_rc(unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) })
}

/// Attaches `image` to a free loop device with autoclear (read-only if asked).
pub(crate) fn attach(image: &Path, read_only: bool) -> io::Result<Attached> {
    let backing = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)?;
    let ctl = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
    let mut info = zeroed_info();
    info.lo_flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
    let name = image.as_os_str().as_encoded_bytes();
    let n = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..n].copy_from_slice(&name[..n]);
    let backing_fd = u32::try_from(backing.as_raw_fd()).map_err(io::Error::other)?;

    for _ in 0..16 {
        let n = ioctl_int(&ctl, LOOP_CTL_GET_FREE, 0)?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        let config = LoopConfig { fd: backing_fd, block_size: 0, info, reserved: [0; 8] };
        match ioctl_ptr(&dev, LOOP_CONFIGURE, &config) {
            Ok(_) => return Ok(Attached { path, _held: dev }),
            // Taken by someone else between GET_FREE and here: try the next one.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            // Kernel without LOOP_CONFIGURE.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY) | Some(libc::EINVAL)) => {
                match ioctl_int(&dev, LOOP_SET_FD, backing_fd.into()) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
                    Err(e) => return Err(e),
                }
                if let Err(e) = ioctl_ptr(&dev, LOOP_SET_STATUS64, &config.info) {
                    let _ = ioctl_int(&dev, LOOP_CLR_FD, 0);
                    return Err(e);
                }
                return Ok(Attached { path, _held: dev });
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free loop device after 16 tries"))
}

/// The loop devices currently backed by the file with this device and inode number.
pub(crate) fn backed_by(dev: u64, ino: u64) -> io::Result<Vec<Loop>> {
    let dir = match std::fs::read_dir("/sys/block") {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in dir {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_loop = name
            .strip_prefix("loop")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_loop && backs(name, dev, ino) {
            if let Some(rdev) = sys_devnum(name) {
                found.push(Loop { path: PathBuf::from("/dev").join(name), rdev });
            }
        }
    }
    Ok(found)
}

/// Whether `/sys/block/<name>` is bound to the file (dev, ino).
fn backs(name: &str, dev: u64, ino: u64) -> bool {
    let Ok(file) = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")) else {
        return false;
    };
    let file = file.trim_end_matches('\n');
    if file.ends_with(" (deleted)") {
        return false;
    }
    std::fs::metadata(file).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

fn sys_devnum(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/sys/block/{name}/dev")).ok()?;
    let (maj, min) = text.trim().split_once(':')?;
    Some(libc::makedev(maj.parse().ok()?, min.parse().ok()?))
}

fn name_of(l: &Loop) -> &str {
    l.path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// After the unmount: waits until the loop device is detached (autoclear), detaching it
/// explicitly if it lingers. `Err` if it is still bound to the file at the end (someone else has
/// it open, e.g. a mount in another mount namespace).
pub(crate) fn release(l: &Loop, dev: u64, ino: u64, deadline: Instant) -> Result<(), String> {
    // Autoclear runs when the filesystem lets go of the device, which may be a moment after
    // umount2() returns. Give it a little time, even at the deadline, since the unmount itself
    // is done; the explicit detach below does not wait.
    let until = deadline.max(Instant::now() + Duration::from_millis(200));
    let wait = |limit: Instant| loop {
        if !backs(name_of(l), dev, ino) {
            return true;
        }
        if Instant::now() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if wait(until.min(Instant::now() + Duration::from_secs(1))) {
        return Ok(());
    }
    clear(l, dev, ino).map_err(|e| format!("LOOP_CLR_FD: {e}"))?;
    if wait(until.min(Instant::now() + Duration::from_millis(500))) {
        return Ok(());
    }
    Err("still open by another user (mounted in another mount namespace?); it will be detached \
         when that user closes it"
        .into())
}

/// LOOP_CLR_FD on the device if it is still bound to the file (dev, ino). With other openers
/// the kernel sets autoclear instead of detaching at once.
fn clear(l: &Loop, dev: u64, ino: u64) -> io::Result<()> {
    let f = match OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(&l.path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut info = zeroed_info();
    match ioctl_ptr(&f, LOOP_GET_STATUS64, &mut info as *mut LoopInfo64) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(()),
        Err(e) => return Err(e),
    }
    if info.lo_device != dev || info.lo_inode != ino {
        return Ok(()); // Reused for another file meanwhile: not ours.
    }
    match ioctl_int(&f, LOOP_CLR_FD, 0) {
        Err(e) if e.raw_os_error() != Some(libc::ENXIO) => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        assert_eq!(std::mem::offset_of!(LoopConfig, info), 8);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_flags), 52);
    }
}
