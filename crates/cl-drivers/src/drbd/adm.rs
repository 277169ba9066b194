//! The DRBD commands (`drbdadm`, `drbdsetup`), blocking, each bounded by [`Tools::timeout`].
//!
//! Behaviour measured on DRBD 8.4.11 with drbd-utils 9.22 (which dispatches to its 8.4 backends):
//! - `up` of a resource that is already up fails (`Device '0' is configured!`), and `up` that
//!   fails at `attach` (no metadata) leaves the resource half up (diskless, connecting).
//!   `adjust` brings a down resource up too, and reconciles an up one with its file.
//! - `secondary`, `primary`, `down` and `resume-io` succeed when there is nothing to do;
//!   `connect` of a connected resource fails (`(102) Local address(port) already in use`) and
//!   `disconnect` of a StandAlone one fails (`unknown connection`), both with status 10.
//! - `outdate` exits 17 on a (disconnected) Primary, 5 on an Inconsistent disk, and **0 without
//!   outdating anything** while connected (DRBD negotiates disk states then): the result is
//!   read back. On a down resource it outdates the metadata (through drbdmeta).
//! - `get-gi` answers from the kernel while attached and from the metadata otherwise (down,
//!   detached): status 0 with metadata, 1 without; a missing device is status 20. `dump-md`
//!   fails while attached, so it cannot be used for [`Drbd::has_metadata`].
//! - `create-md` with stdin not a terminal refuses (status 1, "Operation cancelled") when it
//!   finds metadata; this driver refuses earlier, with its own error.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cl_core::storage::{ConnectionState, DiskState, OutdateReply, VolumeState};

use super::events::parse_snapshot;
use super::{check_resource_name, DrbdError};
use crate::tool::{CommandFailure, Ran, Tools};

/// Default time limit of one DRBD command (a `primary` may wait for the fence-peer handler).
pub const DRBD_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest events2 line kept; the rest of a longer line is dropped.
const LINE_MAX: u64 = 64 * 1024;

/// What [`Drbd::up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpOutcome {
    /// The resource was down and is up now (`drbdadm up`).
    BroughtUp,
    /// The resource was up and was reconciled with its file (`drbdadm adjust`).
    Adjusted,
}

/// The DRBD tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drbd {
    /// Where the tools are and how long each may run.
    pub tools: Tools,
}

impl Drbd {
    /// The system's tools, [`DRBD_TIMEOUT`] per command.
    pub fn system() -> Drbd {
        Drbd { tools: Tools::system(DRBD_TIMEOUT) }
    }

    /// These tools.
    pub fn new(tools: Tools) -> Drbd {
        Drbd { tools }
    }

    fn adm(&self, args: &[&str]) -> Result<Ran, DrbdError> {
        Ok(self.tools.run("drbdadm", args)?)
    }

    fn adm_ok(&self, args: &[&str]) -> Result<(), DrbdError> {
        self.adm(args)?.ok()?;
        Ok(())
    }

    /// Brings `res` up, or reconciles it with its file when it is up already. When `up` fails
    /// the half-configured resource is taken down again, so that a failure leaves nothing up.
    pub fn up(&self, res: &str) -> Result<UpOutcome, DrbdError> {
        check_resource_name(res)?;
        if self.snapshot()?.contains_key(res) {
            self.adm_ok(&["adjust", res])?;
            return Ok(UpOutcome::Adjusted);
        }
        let ran = self.adm(&["up", res])?;
        if ran.code != 0 {
            let _ = self.adm(&["down", res]);
            return Err(ran.failure().into());
        }
        Ok(UpOutcome::BroughtUp)
    }

    /// Takes `res` down (nothing to do when it is down). Fails while it is in use (mounted).
    pub fn down(&self, res: &str) -> Result<(), DrbdError> {
        check_resource_name(res)?;
        self.adm_ok(&["down", res])
    }

    /// Makes this node Primary. DRBD refuses unless this copy is UpToDate (or the peer's is
    /// Outdated); it may call the fence-peer handler first.
    pub fn primary(&self, res: &str) -> Result<(), DrbdError> {
        check_resource_name(res)?;
        self.adm_ok(&["primary", res])
    }

    /// [`primary`](Self::primary), tried again up to `attempts` times in all, `pause` apart,
    /// while DRBD refuses only because the peer's copy is not yet known to be Outdated
    /// ([`DrbdError::peer_not_outdated`]): the cluster may declare a dead peer gone before DRBD
    /// itself has noticed (its `ping-int`), and the first promotion then races DRBD's fence-peer
    /// handler. Every try is DRBD's full check again; nothing is forced.
    pub fn primary_retrying(
        &self,
        res: &str,
        attempts: u32,
        pause: std::time::Duration,
    ) -> Result<(), DrbdError> {
        let mut attempt = 1;
        loop {
            match self.primary(res) {
                Err(e) if attempt < attempts && e.peer_not_outdated() => {
                    std::thread::sleep(pause);
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// Makes this node Primary whatever its data: only for the initial sync source of a new
    /// resource (both copies are empty), never for a failover.
    pub fn primary_force(&self, res: &str) -> Result<(), DrbdError> {
        check_resource_name(res)?;
        self.adm_ok(&["primary", "--force", res])
    }

    /// Makes this node Secondary (nothing to do when it is). Fails while the device is open.
    pub fn secondary(&self, res: &str) -> Result<(), DrbdError> {
        check_resource_name(res)?;
        self.adm_ok(&["secondary", res])
    }

    /// Marks this node's copy Outdated, for the peer's fence-peer handler. `Ok` is one of
    /// `Outdated`, `Inconsistent` (nothing to outdate) or `Primary` (refused: this node is
    /// Primary); an error means the answer is [`OutdateReply::Failed`] (see [`outdate_answer`]),
    /// including "still UpToDate" (the resource is connected to its peer, so DRBD did nothing).
    pub fn outdate(&self, res: &str) -> Result<OutdateReply, DrbdError> {
        check_resource_name(res)?;
        let ran = self.adm(&["outdate", res])?;
        match ran.code {
            17 => return Ok(OutdateReply::Primary),
            5 => return Ok(OutdateReply::Inconsistent),
            0 => {}
            _ => return Err(ran.failure().into()),
        }
        let disk = self.disk_state(res)?;
        outdate_reply(disk).ok_or_else(|| DrbdError::NotOutdated { resource: res.into(), disk })
    }

    /// This node's disk state from `drbdadm dstate`: the kernel's while up, the metadata's while
    /// down (`UpToDate`, `Consistent`, `Outdated` or `Inconsistent`).
    pub fn disk_state(&self, res: &str) -> Result<DiskState, DrbdError> {
        check_resource_name(res)?;
        let out = self.adm(&["dstate", res])?;
        let command = out.command.clone();
        let text = out.ok()?;
        let local = text.trim().split('/').next().unwrap_or("").trim();
        match DiskState::parse(local) {
            DiskState::Unknown => Err(DrbdError::Output {
                command,
                problem: format!("not a disk state: {:?}", text.trim()),
            }),
            disk => Ok(disk),
        }
    }

    /// Connects to the peer (nothing to do when connected or connecting).
    pub fn connect(&self, res: &str) -> Result<(), DrbdError> {
        check_resource_name(res)?;
        let ran = self.adm(&["connect", res])?;
        if ran.code == 0 || self.connection(res)?.is_some_and(|c| c != ConnectionState::StandAlone)
        {
            return Ok(());
        }
        Err(ran.failure().into())
    }

    /// The split-brain victim's side of the resolution: drop the connection, then reconnect
    /// discarding this node's changes since the split (this node becomes the sync target).
    /// The node must be Secondary.
    pub fn connect_discard_my_data(&self, res: &str) -> Result<(), DrbdError> {
        self.disconnect(res)?;
        self.adm_ok(&["--", "--discard-my-data", "connect", res])
    }

    /// Drops the connection to the peer (nothing to do when StandAlone).
    pub fn disconnect(&self, res: &str) -> Result<(), DrbdError> {
        check_resource_name(res)?;
        let ran = self.adm(&["disconnect", res])?;
        if ran.code == 0 || self.connection(res)? == Some(ConnectionState::StandAlone) {
            return Ok(());
        }
        Err(ran.failure().into())
    }

    /// Resumes frozen I/O (after a failed fence-peer handler under resource-and-stonith); the
    /// writes that were frozen then fail, as drbd.conf(5) says.
    pub fn resume_io(&self, res: &str) -> Result<(), DrbdError> {
        check_resource_name(res)?;
        self.adm_ok(&["resume-io", res])
    }

    /// Whether `res`'s backing device holds DRBD metadata (`drbdadm get-gi`: non-destructive,
    /// and it works while the resource is down, up, or up but detached).
    pub fn has_metadata(&self, res: &str) -> Result<bool, DrbdError> {
        check_resource_name(res)?;
        let ran = self.adm(&["get-gi", res])?;
        match ran.code {
            0 => Ok(true),
            1 if ran.stderr.contains("not defined in your config") => {
                Err(DrbdError::NotDefined { resource: res.into(), failure: ran.failure() })
            }
            1 => Ok(false),
            _ => Err(ran.failure().into()),
        }
    }

    /// Writes fresh metadata on `res`'s backing device, never over existing metadata (refused
    /// with [`DrbdError::MetadataExists`]). Non-interactive: if drbdmeta finds something else
    /// on the device (a filesystem) it asks, gets no answer and fails.
    pub fn create_md(&self, res: &str) -> Result<(), DrbdError> {
        if self.has_metadata(res)? {
            return Err(DrbdError::MetadataExists { resource: res.into() });
        }
        self.adm_ok(&["create-md", res])
    }

    /// Like [`Drbd::create_md`], but drbdmeta's question about what it found on the device (a
    /// filesystem, a signature it does not know) is answered yes (`--force`): for a device the
    /// administrator told linuxha to overwrite or keep. Existing DRBD metadata is still refused.
    pub fn create_md_confirmed(&self, res: &str) -> Result<(), DrbdError> {
        if self.has_metadata(res)? {
            return Err(DrbdError::MetadataExists { resource: res.into() });
        }
        self.adm_ok(&["--", "--force", "create-md", res])
    }

    /// The state of every resource that is up, from `drbdsetup events2 --now --statistics all`
    /// (call it about once a second during a resync: 8.4 reports no progress by itself).
    pub fn snapshot(&self) -> Result<BTreeMap<String, VolumeState>, DrbdError> {
        let ran = self.tools.run("drbdsetup", &["events2", "--now", "--statistics", "all"])?;
        let command = ran.command.clone();
        let text = ran.ok()?;
        let (states, complete) = parse_snapshot(&text);
        if !complete {
            return Err(DrbdError::Output {
                command,
                problem: "the dump did not end with `exists -`".into(),
            });
        }
        Ok(states)
    }

    fn connection(&self, res: &str) -> Result<Option<ConnectionState>, DrbdError> {
        Ok(self.snapshot()?.get(res).map(|v| v.connection))
    }

    /// The drbd-utils version (`DRBDADM_VERSION` of `drbdadm --version`, e.g. `9.22.0`).
    pub fn utils_version(&self) -> Result<String, DrbdError> {
        let ran = self.adm(&["--version"])?;
        let command = ran.command.clone();
        let text = ran.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("DRBDADM_VERSION="))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| DrbdError::Output { command, problem: "no DRBDADM_VERSION".into() })
    }

    /// Starts `drbdsetup events2 --timestamps --statistics all` (see [`Events2Reader`]).
    pub fn events2(&self) -> Result<Events2Reader, DrbdError> {
        let args = ["events2", "--timestamps", "--statistics", "all"];
        let path = self.tools.path("drbdsetup");
        let command = crate::tool::command_line("drbdsetup", &args);
        let mut child = Command::new(&path)
            .args(args)
            .env("LC_ALL", "C")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CommandFailure {
                command,
                ending: crate::tool::Ending::NotStarted(format!("{}: {e}", path.display())),
                stderr: String::new(),
            })?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(pipe) = child.stderr.take() {
            keep_tail(pipe, Arc::clone(&stderr));
        }
        let pidfd = crate::script::pidfd_open(child.id()).ok().map(Arc::new);
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Events2Reader { child, stdout, pidfd, stderr })
    }
}

/// The outdate answer for the disk state read back after a successful `drbdadm outdate`.
pub fn outdate_reply(disk: DiskState) -> Option<OutdateReply> {
    match disk {
        DiskState::Outdated => Some(OutdateReply::Outdated),
        DiskState::Inconsistent | DiskState::Diskless => Some(OutdateReply::Inconsistent),
        _ => None,
    }
}

/// The answer for the fence-peer handler: the reply, or `Failed` for an error.
pub fn outdate_answer(result: &Result<OutdateReply, DrbdError>) -> OutdateReply {
    match result {
        Ok(reply) => *reply,
        Err(_) => OutdateReply::Failed,
    }
}

/// Whether the kernel has the DRBD driver loaded (`/proc/drbd` exists).
pub fn kernel_has_drbd() -> bool {
    std::path::Path::new("/proc/drbd").exists()
}

/// The loaded DRBD driver's version (`8.4.11`), from `/proc/drbd`; `None` when not loaded.
pub fn drbd_version() -> Option<String> {
    proc_drbd_version(&std::fs::read_to_string("/proc/drbd").ok()?)
}

/// The version in the text of `/proc/drbd` (`version: 8.4.11 (api:1/proto:86-101)`).
pub fn proc_drbd_version(text: &str) -> Option<String> {
    let rest = text.lines().find_map(|l| l.trim().strip_prefix("version:"))?;
    let v = rest.split_whitespace().next()?;
    v.chars().all(|c| c.is_ascii_digit() || c == '.').then(|| v.to_string())
}

/// A running `drbdsetup events2 --timestamps --statistics all`: its lines, one at a time
/// (blocking: read it on a thread of its own). The process is killed (through a pidfd, never a
/// recycled pid) and reaped when the reader is dropped; [`Events2Stopper`] kills it from another
/// thread, which ends the lines.
#[derive(Debug)]
pub struct Events2Reader {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
    pidfd: Option<Arc<OwnedFd>>,
    stderr: Arc<Mutex<String>>,
}

/// Stops an [`Events2Reader`]'s process from another thread.
#[derive(Debug, Clone)]
pub struct Events2Stopper {
    pidfd: Option<Arc<OwnedFd>>,
}

impl Events2Stopper {
    /// Kills the process (SIGKILL): the reader then sees the end of its lines.
    pub fn stop(&self) {
        if let Some(fd) = &self.pidfd {
            let _ = crate::script::pidfd_send_signal(fd, libc::SIGKILL);
        }
    }
}

impl Events2Reader {
    /// The process id of drbdsetup.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A handle to stop the process from another thread (no-op where pidfds are missing).
    pub fn stopper(&self) -> Events2Stopper {
        Events2Stopper { pidfd: self.pidfd.clone() }
    }

    /// The next line without its newline (invalid UTF-8 replaced), `None` when the process
    /// ended; then [`Events2Reader::stderr_tail`] may say why.
    pub fn next_line(&mut self) -> io::Result<Option<String>> {
        let Some(reader) = self.stdout.as_mut() else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        let n = reader.by_ref().take(LINE_MAX).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() != Some(&b'\n') && n as u64 == LINE_MAX {
            // Too long: drop the rest of it.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest)?;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    /// The end of what drbdsetup wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().map(|s| s.trim().to_string()).unwrap_or_default()
    }
}

impl Iterator for Events2Reader {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<io::Result<String>> {
        self.next_line().transpose()
    }
}

impl Drop for Events2Reader {
    fn drop(&mut self) {
        // Not reaped yet, so the pid is still this child's.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` on a thread, keeping its last 4 KiB in `into`.
fn keep_tail(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    let _ = std::thread::Builder::new().name("drbd-events2-stderr".into()).spawn(move || {
        let mut buf = [0u8; 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Ok(mut kept) = into.lock() {
                        kept.push_str(&String::from_utf8_lossy(&buf[..n]));
                        if kept.len() > 4096 {
                            let cut = kept.len() - 4096;
                            let cut = (cut..kept.len()).find(|&i| kept.is_char_boundary(i));
                            kept.drain(..cut.unwrap_or(0));
                        }
                    }
                }
            }
        }
    });
}
