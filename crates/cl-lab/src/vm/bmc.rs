//! Power control of VM nodes, and the lab "BMC" that lets a guest fence another guest.
//!
//! Power goes through QMP: off = `quit` (hard, no guest shutdown), on = qemu started again from
//! the guest's `launch.json` with the same disks, reset = `system_reset`, freeze = `stop`,
//! thaw = `cont`.
//!
//! QMP sockets live on the host, so a fence agent inside a guest cannot reach them. The BMC is a
//! host-side server (threads of the lab's owner, or the `linuxha lab bmc` process for labs made
//! by the CLI) that connects to every guest's second virtio-serial port, `bmc`: out of band like
//! a real IPMI port, independent of the networks that tests break. Inside a guest,
//! `linuxha lab fence-vm` (`fence_linuxha_vm`) writes `<tag> <action> <plug>` on that port and
//! the BMC answers `<tag> <exit code> <message>`.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::guest::Guest;
use crate::fence::PowerAction;
use crate::sys;

/// How long power operations wait for qemu to go away or come up.
const POWER_TIMEOUT: Duration = Duration::from_secs(15);

/// Hard power-off: QMP `quit`, SIGKILL if qemu is still there after a while. Off already is fine.
pub(crate) fn power_off(guest: &Guest) -> Result<()> {
    let _lock = sys::FileLock::acquire_within(&guest.file("power.lock"), POWER_TIMEOUT)?;
    let Some(pid) = guest.pid() else { return Ok(()) };
    // The reply may be lost when qemu exits at once; the pid check below is what counts.
    let _ = guest.qmp("quit", None);
    if !sys::wait_until(Duration::from_secs(5), || !sys::pid_alive(pid)) {
        guest.kill()?;
    }
    Ok(())
}

/// Power-on: starts qemu again (the guest then boots); on already is fine.
pub(crate) fn power_on(guest: &Guest) -> Result<()> {
    let _lock = sys::FileLock::acquire_within(&guest.file("power.lock"), POWER_TIMEOUT)?;
    if guest.pid().is_some() {
        return Ok(());
    }
    guest.start().map(|_| ())
}

/// Carries out one fence-agent action on `guest`: exit code (0 done or on, 2 off) and a message.
pub(crate) fn fence_action(guest: &Guest, action: PowerAction) -> Result<(i32, String)> {
    let name = &guest.name;
    Ok(match action {
        PowerAction::Off => {
            power_off(guest)?;
            (0, format!("{name}: powered off"))
        }
        PowerAction::On => {
            power_on(guest)?;
            (0, format!("{name}: powered on"))
        }
        PowerAction::Reboot => {
            power_off(guest)?;
            power_on(guest)?;
            (0, format!("{name}: rebooted"))
        }
        PowerAction::Status => match guest.pid() {
            Some(_) => (0, format!("Status: ON ({name})")),
            None => (2, format!("Status: OFF ({name})")),
        },
        PowerAction::Monitor => (0, "BMC reachable".to_owned()),
    })
}

/// Answers one request line `<tag> <action> <plug>` for the lab in `lab_dir`.
fn answer(lab_dir: &Path, nodes: &[String], line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    let tag = words.next()?;
    let (code, message) = match (words.next(), words.next()) {
        (Some(action), Some(plug)) if nodes.iter().any(|n| n == plug) => {
            let guest = Guest { name: plug.to_owned(), dir: lab_dir.join(plug) };
            match PowerAction::parse(action).and_then(|a| fence_action(&guest, a)) {
                Ok(r) => r,
                Err(e) => (1, format!("{e:#}")),
            }
        }
        (Some(_), Some(plug)) => {
            (1, format!("no node {plug:?} in this lab ({})", nodes.join(", ")))
        }
        _ => (1, format!("bad request {line:?}: want <tag> <action> <plug>")),
    };
    Some(format!("{tag} {code} {}\n", message.replace('\n', " ")))
}

/// The BMC's connections to the guests' `bmc` ports, one thread per guest.
#[derive(Debug)]
pub(crate) struct Bmc {
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<UnixStream>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Bmc {
    /// Starts serving the guests `nodes` of the lab in `lab_dir`.
    pub fn start(lab_dir: &Path, nodes: &[String]) -> Bmc {
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let threads = nodes
            .iter()
            .map(|node| {
                let (stop, streams) = (stop.clone(), streams.clone());
                let (dir, nodes, node) = (lab_dir.to_path_buf(), nodes.to_vec(), node.clone());
                std::thread::spawn(move || serve_port(&dir, &nodes, &node, &stop, &streams))
            })
            .collect();
        Bmc { stop, streams, threads }
    }

    /// Stops every thread and closes the connections.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(streams) = self.streams.lock() {
            for s in streams.iter() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One guest's port: connect (again after every power cycle), answer requests, until stopped.
fn serve_port(
    dir: &Path,
    nodes: &[String],
    node: &str,
    stop: &AtomicBool,
    streams: &Mutex<Vec<UnixStream>>,
) {
    let path: PathBuf = dir.join(node).join("bmc.sock");
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut stream) = UnixStream::connect(&path) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        if let (Ok(clone), Ok(mut list)) = (stream.try_clone(), streams.lock()) {
            list.push(clone);
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => break,
            }
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line).trim().to_owned();
                if let Some(reply) = answer(dir, nodes, &line) {
                    // The requester may have been powered off by its own request.
                    let _ = stream.write_all(reply.as_bytes());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the BMC in this process until it is killed (`linuxha lab bmc`).
pub fn serve_forever(lab_dir: &Path, nodes: &[String]) -> Result<()> {
    let _bmc = Bmc::start(lab_dir, nodes);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Where the guest's `bmc` virtio-serial port is (`/dev/vport…`), found by its name.
fn guest_port() -> Result<PathBuf> {
    for entry in
        fs::read_dir("/sys/class/virtio-ports").context("no virtio ports: not a lab VM")?.flatten()
    {
        let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim() == "bmc" {
            return Ok(Path::new("/dev").join(entry.file_name()));
        }
    }
    bail!("no virtio-serial port named bmc: not a lab VM guest")
}

/// The in-guest side of a fence request: asks the lab BMC to do `action` on `plug` and returns
/// its exit code and message.
pub fn guest_request(action: PowerAction, plug: &str, timeout: Duration) -> Result<(i32, String)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let port = guest_port()?;
    let deadline = Instant::now() + timeout;
    // The port opens once at a time (EBUSY): wait for another agent to finish.
    let mut dev = loop {
        match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&port)
        {
            Ok(f) => break f,
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", port.display())),
        }
    };
    let action_word = match action {
        PowerAction::Off => "off",
        PowerAction::On => "on",
        PowerAction::Reboot => "reboot",
        PowerAction::Status => "status",
        PowerAction::Monitor => "monitor",
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let tag = format!("{:x}x{nanos:x}", std::process::id());
    let request = format!("{tag} {action_word} {plug}\n");
    let mut written = 0;
    while written < request.len() {
        match dev.write(&request.as_bytes()[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).context("writing to the BMC port (is the lab BMC running?)"),
        }
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if Instant::now() > deadline {
            bail!("no answer from the lab BMC within {timeout:?}");
        }
        match dev.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).context("reading the BMC port"),
        }
        for line in String::from_utf8_lossy(&buf).lines() {
            let mut parts = line.splitn(3, ' ');
            if parts.next() == Some(tag.as_str()) {
                let code: i32 = parts.next().unwrap_or("1").parse().unwrap_or(1);
                return Ok((code, parts.next().unwrap_or("").to_owned()));
            }
        }
    }
}

/// Sets the guest's NIC `nic<net>` link state through QMP (the guest sees carrier loss).
pub(crate) fn set_link(guest: &Guest, net: usize, up: bool) -> Result<()> {
    if guest.pid().is_none() {
        return Ok(());
    }
    guest.qmp("set_link", Some(json!({ "name": format!("nic{net}"), "up": up })))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_get_an_error_answer() {
        let nodes = vec!["node1".to_owned()];
        let dir = Path::new("/nonexistent-lab");
        assert_eq!(answer(dir, &nodes, ""), None);
        assert!(answer(dir, &nodes, "t1").is_some_and(|r| r.starts_with("t1 1 bad request")));
        assert!(answer(dir, &nodes, "t2 off node9").is_some_and(|r| r.starts_with("t2 1 no node")));
        assert!(answer(dir, &nodes, "t3 explode node1").is_some_and(|r| r.starts_with("t3 1 ")));
        assert_eq!(
            answer(dir, &nodes, "t4 status node1").as_deref(),
            Some("t4 2 Status: OFF (node1)\n")
        );
    }
}
