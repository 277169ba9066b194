//! Who is mounted where: `/proc/thread-self/mountinfo`, matched against a device by device
//! number (so symlinks such as `/dev/disk/by-uuid/…` and loop devices backed by an image file
//! are recognised whatever name they were mounted by).

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::loopdev::{self, Loop};
use super::FsError;

/// What a configured device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A block device with this device number.
    Block {
        /// `st_rdev`.
        rdev: u64,
    },
    /// A regular file, mounted through a loop device.
    Image {
        /// `st_dev` of the file.
        dev: u64,
        /// `st_ino` of the file.
        ino: u64,
    },
    /// The device node is gone (a disk that disappeared while mounted): recognised only by
    /// the source name in mountinfo. Only for looking at and undoing existing mounts.
    Missing,
}

/// A configured device, resolved.
#[derive(Clone, Debug)]
pub(crate) struct DeviceId {
    /// The path with symlinks resolved.
    pub path: PathBuf,
    pub kind: Kind,
}

impl DeviceId {
    pub fn resolve(device: &Path) -> Result<DeviceId, FsError> {
        let err = |reason: String| FsError::Device { device: device.to_owned(), reason };
        let meta = std::fs::metadata(device).map_err(|e| err(e.to_string()))?;
        let kind = if meta.file_type().is_block_device() {
            Kind::Block { rdev: meta.rdev() }
        } else if meta.is_file() {
            Kind::Image { dev: meta.dev(), ino: meta.ino() }
        } else {
            return Err(err("neither a block device nor a regular (image) file".into()));
        };
        let path = device.canonicalize().map_err(|e| err(e.to_string()))?;
        Ok(DeviceId { path, kind })
    }

    /// As [`DeviceId::resolve`], but a device that no longer exists is [`Kind::Missing`].
    pub fn resolve_or_missing(device: &Path) -> Result<DeviceId, FsError> {
        match std::fs::symlink_metadata(device) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok(DeviceId { path: device.to_owned(), kind: Kind::Missing })
            }
            _ => DeviceId::resolve(device),
        }
    }
}

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub id: u64,
    pub parent: u64,
    /// Device number of the mounted filesystem (`st_dev` of its files).
    pub dev: u64,
    /// The directory of the filesystem mounted (`/` unless a bind mount of a subdirectory).
    pub root: PathBuf,
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4].iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn path_field(field: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

/// Parses mountinfo text; malformed lines are skipped.
pub(crate) fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let id = fields.next()?.parse().ok()?;
    let parent = fields.next()?.parse().ok()?;
    let (maj, min) = fields.next()?.split_once(':')?;
    let dev = libc::makedev(maj.parse().ok()?, min.parse().ok()?);
    let root = path_field(fields.next()?);
    let mountpoint = path_field(fields.next()?);
    let _options = fields.next()?;
    // Optional fields up to the "-" separator.
    fields.by_ref().find(|f| *f == "-")?;
    let fstype = String::from_utf8_lossy(&unescape(fields.next()?)).into_owned();
    let source = String::from_utf8_lossy(&unescape(fields.next()?)).into_owned();
    Some(MountEntry { id, parent, dev, root, mountpoint, fstype, source })
}

/// The mounts concerning one device and one mount point.
#[derive(Debug, Default)]
pub(crate) struct Survey {
    /// This device mounted (whole, root `/`) on the mount point; the top-most if stacked.
    pub here: Option<MountEntry>,
    /// This device mounted anywhere else (or only a subdirectory of it on the mount point).
    pub elsewhere: Vec<MountEntry>,
    /// Other filesystems mounted on the mount point, in mount order.
    pub others_here: Vec<MountEntry>,
    /// All mounts, for the relations between them.
    all: Vec<MountEntry>,
    /// Loop devices backed by the image file (empty for a block device).
    loops: Vec<Loop>,
}

impl Survey {
    /// Reads this thread's mountinfo. `mountpoint` must be canonical; `None`: no mount point
    /// (everything found is elsewhere).
    pub fn take(dev: &DeviceId, mountpoint: Option<&Path>) -> Result<Survey, FsError> {
        let sys = |what: &str, source: io::Error| FsError::System {
            what: what.into(),
            device: dev.path.clone(),
            source,
        };
        let text = std::fs::read_to_string("/proc/thread-self/mountinfo")
            .map_err(|e| sys("/proc/thread-self/mountinfo", e))?;
        let loops = match dev.kind {
            Kind::Image { dev: d, ino } => {
                loopdev::backed_by(d, ino).map_err(|e| sys("/sys/block/loop*", e))?
            }
            Kind::Block { .. } | Kind::Missing => Vec::new(),
        };
        Ok(Survey::from_entries(parse(&text), dev, mountpoint, loops))
    }

    fn from_entries(
        all: Vec<MountEntry>,
        dev: &DeviceId,
        mountpoint: Option<&Path>,
        loops: Vec<Loop>,
    ) -> Survey {
        let mut s = Survey { loops, ..Survey::default() };
        for e in &all {
            let ours = match dev.kind {
                Kind::Block { rdev } => {
                    e.dev == rdev
                        || (e.source.starts_with('/')
                            && Path::new(&e.source).canonicalize().is_ok_and(|p| p == dev.path))
                }
                Kind::Image { .. } => s.loops.iter().any(|l| l.rdev == e.dev),
                Kind::Missing => Path::new(&e.source) == dev.path,
            };
            let at_mp = mountpoint.is_some_and(|mp| e.mountpoint == mp);
            match (ours, at_mp) {
                (true, true) if e.root == Path::new("/") => s.here = Some(e.clone()),
                (true, _) => s.elsewhere.push(e.clone()),
                (false, true) => s.others_here.push(e.clone()),
                (false, false) => {}
            }
        }
        s.all = all;
        s
    }

    /// A mount stacked over `here` on the same mount point, if any.
    pub fn on_top_of(&self, here: &MountEntry) -> Option<&MountEntry> {
        self.all.iter().find(|e| e.parent == here.id && e.mountpoint == here.mountpoint)
    }

    /// Mount points of the filesystems mounted below `here`.
    pub fn submounts_of(&self, here: &MountEntry) -> Vec<PathBuf> {
        self.all
            .iter()
            .filter(|e| e.parent == here.id && e.mountpoint != here.mountpoint)
            .map(|e| e.mountpoint.clone())
            .collect()
    }

    /// The loop device `here` is mounted from, if the device is an image file.
    pub fn loop_of(&self, here: &MountEntry) -> Option<Loop> {
        self.loops.iter().find(|l| l.rdev == here.dev).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 7:3 / /srv/my\\040app rw,noatime shared:5 master:2 - ext4 /dev/loop3 rw
37 36 0:40 / /srv/my\\040app/tmp rw - tmpfs tmpfs rw
38 22 7:3 /sub /mnt/bind rw - ext4 /dev/loop3 rw
39 36 0:41 / /srv/my\\040app rw - tmpfs over rw
garbage line
";

    fn image() -> DeviceId {
        DeviceId { path: "/img".into(), kind: Kind::Image { dev: 1, ino: 2 } }
    }

    fn loop3() -> Vec<Loop> {
        vec![Loop { path: "/dev/loop3".into(), rdev: libc::makedev(7, 3) }]
    }

    #[test]
    fn parses_escapes_and_optional_fields() {
        let all = parse(SAMPLE);
        assert_eq!(all.len(), 5);
        assert_eq!(all[1].mountpoint, Path::new("/srv/my app"));
        assert_eq!(all[1].dev, libc::makedev(7, 3));
        assert_eq!(all[1].fstype, "ext4");
        assert_eq!(all[1].source, "/dev/loop3");
        assert_eq!(all[3].root, Path::new("/sub"));
        assert_eq!(unescape("a\\134b\\011"), b"a\\b\t");
        assert_eq!(unescape("trailing\\04"), b"trailing\\04");
    }

    #[test]
    fn survey_sorts_mounts() {
        let s =
            Survey::from_entries(parse(SAMPLE), &image(), Some(Path::new("/srv/my app")), loop3());
        let here = s.here.clone().expect("here");
        assert_eq!(here.id, 36);
        assert_eq!(s.elsewhere.iter().map(|e| e.id).collect::<Vec<_>>(), vec![38]);
        assert_eq!(s.others_here.iter().map(|e| e.id).collect::<Vec<_>>(), vec![39]);
        assert_eq!(s.on_top_of(&here).map(|e| e.id), Some(39));
        assert_eq!(s.submounts_of(&here), vec![PathBuf::from("/srv/my app/tmp")]);
        assert_eq!(s.loop_of(&here).map(|l| l.path), Some(PathBuf::from("/dev/loop3")));

        let none = Survey::from_entries(parse(SAMPLE), &image(), None, Vec::new());
        assert!(none.here.is_none() && none.elsewhere.is_empty());
        let block =
            DeviceId { path: "/dev/sda1".into(), kind: Kind::Block { rdev: libc::makedev(8, 1) } };
        let s = Survey::from_entries(parse(SAMPLE), &block, Some(Path::new("/srv/x")), Vec::new());
        assert_eq!(s.elsewhere.iter().map(|e| e.id).collect::<Vec<_>>(), vec![22]);
    }
}
