//! Reading configuration and key files safely, and the ownership rules (sshd's StrictModes)
//! for everything linuxha reads as configuration or runs as root.
//!
//! - [`read_regular`]: regular files only (a FIFO, a device or a directory is refused without
//!   blocking or reading), a size cap checked before reading and enforced while reading.
//! - [`check_strict`]: the file and every directory above it up to the root must be owned by
//!   root (or the user running the command) and not writable by group or others; a key file
//!   must also not be readable by them. `LINUXHA_STRICT_MODES=no` turns the check off.
//!
//! No message ever contains a byte of the file.

use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Environment variable that turns the ownership and permission checks off (`no`).
pub const STRICT_MODES_ENV: &str = "LINUXHA_STRICT_MODES";
/// Size cap of a configuration source (`clconf.xml`, `appconf.xml`).
pub const XML_CAP: u64 = 1 << 20;
/// Size cap of a built artefact (it holds the source and the resolved configuration).
pub const BUILT_CAP: u64 = 8 << 20;
/// Size cap of a key file (a 256-bit key is 65 bytes).
pub const KEY_CAP: u64 = 4096;

/// Why a file was not read or not trusted. Every message names the path; none quotes it.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Nothing at the path.
    #[error("{} does not exist", path.display())]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// A FIFO, a device, a socket or a directory where a regular file was expected.
    #[error("{} is {what}, not a regular file", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is (`a directory`, `a FIFO`, …).
        what: &'static str,
    },
    /// Larger than the cap for its kind.
    #[error("{} is too large ({size} bytes; at most {cap} are accepted)", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size (at least the cap plus one when it grew while being read).
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// Owned by someone other than root or the user running the command.
    #[error(
        "{} is owned by {owner} (mode {mode:04o}), but linuxha trusts only files owned by root; run `chown root {}` (or set {STRICT_MODES_ENV}=no)",
        path.display(),
        path.display()
    )]
    BadOwner {
        /// The path.
        path: PathBuf,
        /// Its owner, as a name when known.
        owner: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Writable by group or others.
    #[error(
        "{} is writable by group or others (owner {owner}, mode {mode:04o}); run `chmod go-w {}` (or set {STRICT_MODES_ENV}=no)",
        path.display(),
        path.display()
    )]
    Writable {
        /// The path.
        path: PathBuf,
        /// Its owner, as a name when known.
        owner: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret (the key) readable by group or others.
    #[error(
        "{} is readable by group or others (owner {owner}, mode {mode:04o}); run `chmod 600 {}` (or set {STRICT_MODES_ENV}=no)",
        path.display(),
        path.display()
    )]
    Readable {
        /// The path.
        path: PathBuf,
        /// Its owner, as a name when known.
        owner: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A configured path that leads out of the root (`..`, a symlink).
    #[error(
        "{} leads to {}, outside the root {}; configured paths must stay under the root",
        configured.display(),
        resolved.display(),
        root.display()
    )]
    OutsideRoot {
        /// The path as configured.
        configured: PathBuf,
        /// Where it leads.
        resolved: PathBuf,
        /// The root.
        root: PathBuf,
    },
    /// Any other IO error.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl FileError {
    /// True for problems of configuration (exit 2), false for failed IO (exit 1).
    pub fn is_config(&self) -> bool {
        !matches!(self, FileError::Io { .. })
    }

    fn io(path: &Path, source: io::Error) -> FileError {
        if source.kind() == io::ErrorKind::NotFound {
            FileError::Missing { path: path.to_path_buf() }
        } else {
            FileError::Io { path: path.to_path_buf(), source }
        }
    }
}

/// What a non-regular file is, for messages.
fn kind_of(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Read a regular file of at most `cap` bytes. FIFOs, devices, sockets and directories are
/// refused before they are opened for reading (and the open never blocks); the size is checked
/// before reading and the read stops after `cap` bytes, so a growing file is capped too.
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    let meta = fs::metadata(path).map_err(|e| FileError::io(path, e))?;
    if let Some(what) = kind_of(&meta) {
        return Err(FileError::NotRegular { path: path.to_path_buf(), what });
    }
    if meta.len() > cap {
        return Err(FileError::TooLarge { path: path.to_path_buf(), size: meta.len(), cap });
    }
    // O_NONBLOCK: a file swapped for a FIFO after the check must not hang the open.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| FileError::io(path, e))?;
    let opened = file.metadata().map_err(|e| FileError::io(path, e))?;
    if let Some(what) = kind_of(&opened) {
        return Err(FileError::NotRegular { path: path.to_path_buf(), what });
    }
    let mut bytes = Vec::with_capacity(opened.len().min(cap) as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|e| FileError::io(path, e))?;
    if bytes.len() as u64 > cap {
        return Err(FileError::TooLarge { path: path.to_path_buf(), size: cap + 1, cap });
    }
    Ok(bytes)
}

/// [`read_regular`], with `Ok(None)` for a missing file.
pub fn read_regular_if_exists(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, FileError> {
    match read_regular(path, cap) {
        Err(FileError::Missing { .. }) => Ok(None),
        other => other.map(Some),
    }
}

/// Whether the ownership checks are on: everything but `LINUXHA_STRICT_MODES=no` (or `0`,
/// `off`, `false`).
pub fn strict_modes() -> bool {
    match std::env::var(STRICT_MODES_ENV) {
        Ok(v) => !matches!(v.trim().to_ascii_lowercase().as_str(), "no" | "0" | "off" | "false"),
        Err(_) => true,
    }
}

/// What the file is to linuxha, for the rules that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Configuration read, or a program run as root: not writable by group or others.
    Config,
    /// A secret: also not readable by group or others.
    Secret,
}

/// sshd's StrictModes for `path` (after symlinks) and every directory above it up to, not
/// including, `root`: owned by root or the user running linuxha, not writable by group or
/// others; a [`Trust::Secret`] not readable by them either. Nothing is checked when
/// `LINUXHA_STRICT_MODES=no`. A missing file is [`FileError::Missing`].
pub fn check_strict(path: &Path, root: &Path, trust: Trust) -> Result<(), FileError> {
    if !strict_modes() {
        return Ok(());
    }
    let real = fs::canonicalize(path).map_err(|e| FileError::io(path, e))?;
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let meta = fs::metadata(&real).map_err(|e| FileError::io(path, e))?;
    check_one(&real, &meta, trust)?;
    for dir in real.ancestors().skip(1) {
        if !dir.starts_with(&root) || dir == root {
            break;
        }
        let meta = fs::metadata(dir).map_err(|e| FileError::io(dir, e))?;
        check_one(dir, &meta, Trust::Config)?;
    }
    Ok(())
}

fn check_one(path: &Path, meta: &Metadata, trust: Trust) -> Result<(), FileError> {
    let mode = meta.mode() & 0o7777;
    let uid = meta.uid();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let path = path.to_path_buf();
    if uid != 0 && uid != me {
        return Err(FileError::BadOwner { path, owner: owner_name(uid), mode });
    }
    if mode & 0o022 != 0 {
        return Err(FileError::Writable { path, owner: owner_name(uid), mode });
    }
    if trust == Trust::Secret && mode & 0o044 != 0 {
        return Err(FileError::Readable { path, owner: owner_name(uid), mode });
    }
    Ok(())
}

/// `root`, `alice`, or `uid 1234` when /etc/passwd does not name it.
fn owner_name(uid: u32) -> String {
    let passwd = read_regular(Path::new("/etc/passwd"), 4 << 20).unwrap_or_default();
    String::from_utf8_lossy(&passwd)
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid).then(|| format!("{name} (uid {uid})"))
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// A configured file (as written in a configuration, absolute as on a real node) read the
/// safe way: confined to the root ([`crate::Paths::confine`]), a regular file of at most
/// `cap` bytes, and trusted as `trust` says ([`check_strict`]). Returns where it was found.
pub fn read_configured(
    paths: &crate::Paths,
    configured: &Path,
    cap: u64,
    trust: Trust,
) -> Result<(PathBuf, Vec<u8>), FileError> {
    let resolved = paths.confine(configured)?;
    let bytes = read_regular(&resolved, cap)?;
    check_strict(&resolved, paths.root(), trust)?;
    Ok((resolved, bytes))
}
