//! One guest: its files in the lab directory, its qemu process, the command agent (a
//! virtio-serial port) and QMP (power control).
//!
//! The files of guest `node1` live in `<lab dir>/node1/`: `data.raw` (the LVM disk),
//! `system.img` (ext4: /etc/cluster, /var/lib/cluster, … survive power cycles), `console.log`
//! (the serial console, appended across boots), `console.sock` (attach with
//! `socat - UNIX-CONNECT:…` for a shell), `agent.sock`, `bmc.sock`, `qmp.sock`, `qemu.pid`,
//! `qemu.err` and `launch.json` (the qemu command line, so any process can power it on again).

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::sys;

/// What a command run in a guest returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The script's exit code.
    pub rc: i32,
    /// Its standard output and standard error, interleaved as written.
    pub stdout: String,
}

impl Output {
    /// Whether the script exited with 0.
    pub fn success(&self) -> bool {
        self.rc == 0
    }
}

/// How a guest is started again after a power-off: the qemu command line and where it runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Launch {
    /// Network namespace the taps live in (qemu must run there to open them).
    pub switch_netns: String,
    /// `qemu-system-x86_64` and its arguments.
    pub argv: Vec<String>,
}

/// What goes into a guest's qemu command line.
#[derive(Clone, Debug)]
pub(crate) struct LaunchParams<'a> {
    /// Node name (hostname).
    pub name: &'a str,
    /// The guest's directory.
    pub dir: &'a Path,
    /// Kernel image.
    pub kernel: &'a Path,
    /// Initramfs.
    pub initrd: &'a Path,
    /// Directory shared read-only at /mnt/host.
    pub binary_dir: &'a Path,
    /// Use KVM instead of TCG.
    pub kvm: bool,
    /// Open the disks with O_DIRECT (`cache=none`); tmpfs cannot.
    pub direct_io: bool,
    /// Guest memory.
    pub memory_mib: u32,
    /// One per network: (tap name, MAC, address/prefix).
    pub nics: Vec<(String, String, String)>,
}

/// The qemu command line of a guest.
pub(crate) fn qemu_argv(p: &LaunchParams<'_>) -> Vec<String> {
    let f = |name: &str| p.dir.join(name).display().to_string();
    let mut append = format!("console=ttyS0 quiet loglevel=3 panic=1 lh.host={}", p.name);
    for (i, (_, mac, addr)) in p.nics.iter().enumerate() {
        append.push_str(&format!(" lh.nic{i}={mac},{addr}"));
    }
    let mut a: Vec<String> = vec!["qemu-system-x86_64".into(), "-name".into(), p.name.into()];
    if p.kvm {
        a.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]);
    } else {
        a.extend(["-accel".into(), "tcg,tb-size=256".into(), "-cpu".into(), "max".into()]);
    }
    let memory = p.memory_mib.to_string();
    a.extend(
        [
            "-machine",
            "q35",
            "-smp",
            "1",
            "-m",
            &memory,
            "-display",
            "none",
            "-nodefaults",
            "-no-user-config",
        ]
        .map(String::from),
    );
    a.extend(["-kernel".into(), p.kernel.display().to_string()]);
    a.extend(["-initrd".into(), p.initrd.display().to_string()]);
    a.extend(["-append".into(), append]);
    a.push("-chardev".into());
    a.push(format!(
        "socket,id=ser,path={},server=on,wait=off,logfile={},logappend=on",
        f("console.sock"),
        f("console.log")
    ));
    a.extend(["-serial".into(), "chardev:ser".into()]);
    a.extend(["-qmp".into(), format!("unix:{},server=on,wait=off", f("qmp.sock"))]);
    a.extend(["-device".into(), "virtio-serial-pci".into()]);
    for port in ["agent", "bmc"] {
        a.push("-chardev".into());
        a.push(format!("socket,id={port},path={},server=on,wait=off", f(&format!("{port}.sock"))));
        a.extend(["-device".into(), format!("virtserialport,chardev={port},name={port}")]);
    }
    let cache = if p.direct_io { "none" } else { "writeback" };
    for (id, file) in [("data", "data.raw"), ("system", "system.img")] {
        a.push("-drive".into());
        a.push(format!("if=none,id={id},file={},format=raw,cache={cache},aio=threads", f(file)));
        a.extend(["-device".into(), format!("virtio-blk-pci,drive={id},serial={id}")]);
    }
    for (i, (tap, mac, _)) in p.nics.iter().enumerate() {
        a.push("-netdev".into());
        a.push(format!("tap,id=net{i},ifname={tap},script=no,downscript=no"));
        a.extend(["-device".into(), format!("virtio-net-pci,id=nic{i},netdev=net{i},mac={mac}")]);
    }
    a.push("-fsdev".into());
    a.push(format!(
        "local,id=host,path={},security_model=none,readonly=on",
        p.binary_dir.display()
    ));
    a.extend(["-device".into(), "virtio-9p-pci,fsdev=host,mount_tag=host".into()]);
    a.extend(["-object".into(), "rng-random,filename=/dev/urandom,id=rng".into()]);
    a.extend(["-device".into(), "virtio-rng-pci,rng=rng".into()]);
    a.extend(["-pidfile".into(), f("qemu.pid"), "-daemonize".into()]);
    a
}

/// One guest, by its directory. Cheap to make: all state is in files and the qemu process.
#[derive(Clone, Debug)]
pub(crate) struct Guest {
    /// Node name.
    pub name: String,
    /// `<lab dir>/<node>`.
    pub dir: PathBuf,
}

impl Guest {
    /// A file in the guest's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The serial console log, for error messages.
    pub fn console_log(&self) -> PathBuf {
        self.file("console.log")
    }

    /// The last lines of the console log, to put into an error.
    pub fn console_tail(&self) -> String {
        let text = fs::read_to_string(self.console_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n    ")
    }

    /// Saves how to start this guest.
    pub fn save_launch(&self, launch: &Launch) -> Result<()> {
        let json = serde_json::to_vec_pretty(launch).context("serialising launch.json")?;
        fs::write(self.file("launch.json"), json)
            .with_context(|| format!("writing {}", self.file("launch.json").display()))
    }

    /// Powers the guest on: starts qemu (daemonized, in the switch namespace, so its taps are
    /// found) and returns its pid once qemu has opened its sockets. The guest then boots.
    pub fn start(&self) -> Result<u32> {
        let path = self.file("launch.json");
        let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let launch: Launch =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(pid) = self.pid() {
            bail!("{} is already running (qemu pid {pid})", self.name);
        }
        for s in ["console.sock", "agent.sock", "bmc.sock", "qmp.sock", "qemu.pid"] {
            let _ = fs::remove_file(self.file(s));
        }
        self.mark_boot()?;
        let err_path = self.file("qemu.err");
        let err = fs::File::create(&err_path)
            .with_context(|| format!("creating {}", err_path.display()))?;
        let status = Command::new("nsenter")
            .arg(format!("--net={}", sys::netns_path(&launch.switch_netns).display()))
            .arg("--")
            .args(&launch.argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .status()
            .context("starting qemu-system-x86_64")?;
        if !status.success() {
            bail!(
                "qemu for {} failed ({status}): {}\n  console log: {}",
                self.name,
                fs::read_to_string(&err_path).unwrap_or_default().trim(),
                self.console_log().display()
            );
        }
        let found = sys::wait_until(Duration::from_secs(5), || self.pid().is_some());
        match (found, self.pid()) {
            (true, Some(pid)) => Ok(pid),
            _ => bail!("qemu for {} started but left no live pid in qemu.pid", self.name),
        }
    }

    /// Notes the console log's current end: [`Guest::wait_ready`] looks for the ready line of
    /// the boot that follows after it.
    pub fn mark_boot(&self) -> Result<()> {
        let offset = fs::metadata(self.console_log()).map(|m| m.len()).unwrap_or(0);
        fs::write(self.file("console.offset"), offset.to_string())
            .with_context(|| format!("writing {}", self.file("console.offset").display()))
    }

    /// Pid of this guest's qemu, when it runs: from `qemu.pid`, checked against the process's
    /// command line so a reused pid is never taken for it.
    pub fn pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.file("qemu.pid")).ok()?.trim().parse().ok()?;
        if !sys::pid_alive(pid) {
            return None;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let needle = self.file("qmp.sock").display().to_string();
        let ours = cmdline.windows(needle.len()).any(|w| w == needle.as_bytes());
        ours.then_some(pid)
    }

    /// SIGKILLs qemu (if it runs) and waits until it is gone.
    pub fn kill(&self) -> Result<()> {
        if let Some(pid) = self.pid() {
            sys::kill_pid(pid)?;
            if !sys::wait_until(Duration::from_secs(10), || !sys::pid_alive(pid)) {
                bail!("qemu {pid} of {} survived SIGKILL", self.name);
            }
        }
        Ok(())
    }

    /// Runs one QMP command and returns its `return` value.
    pub fn qmp(&self, execute: &str, arguments: Option<Value>) -> Result<Value> {
        let path = self.file("qmp.sock");
        let what = format!("QMP {execute} on {} ({})", self.name, path.display());
        let stream = UnixStream::connect(&path).with_context(|| format!("{what}: connect"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).context("socket timeout")?;
        let mut writer = stream.try_clone().context("cloning the QMP socket")?;
        let mut reader = BufReader::new(stream);
        let read_reply = |reader: &mut BufReader<UnixStream>| -> Result<Value> {
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).with_context(|| format!("{what}: read"))? == 0 {
                    bail!("{what}: connection closed");
                }
                let v: Value = serde_json::from_str(&line)
                    .with_context(|| format!("{what}: bad reply {line:?}"))?;
                if v.get("event").is_some() {
                    continue;
                }
                return Ok(v);
            }
        };
        let greeting = read_reply(&mut reader)?;
        if greeting.get("QMP").is_none() {
            bail!("{what}: no QMP greeting: {greeting}");
        }
        for (cmd, args) in [("qmp_capabilities", None), (execute, arguments)] {
            let mut req = json!({ "execute": cmd });
            if let Some(args) = args {
                req["arguments"] = args;
            }
            writer
                .write_all(format!("{req}\n").as_bytes())
                .with_context(|| format!("{what}: write"))?;
            let reply = read_reply(&mut reader)?;
            if let Some(err) = reply.get("error") {
                bail!("{what}: {err}");
            }
            if cmd == execute {
                return Ok(reply.get("return").cloned().unwrap_or(Value::Null));
            }
        }
        Err(anyhow!("{what}: no reply"))
    }

    /// Whether the guest's CPU runs (false when frozen with QMP `stop`).
    pub fn is_cpu_running(&self) -> Result<bool> {
        let status = self.qmp("query-status", None)?;
        Ok(status.get("running").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Runs `script` with `sh` in the guest through the agent port, at most `timeout`.
    pub fn exec(&self, script: &str, timeout: Duration) -> Result<Output> {
        let deadline = Instant::now() + timeout;
        let _lock = sys::FileLock::acquire_within(&self.file("agent.lock"), timeout)?;
        let path = self.file("agent.sock");
        let mut stream = UnixStream::connect(&path).with_context(|| {
            format!("{}: cannot reach the agent at {} (guest off?)", self.name, path.display())
        })?;
        let seq = TAG_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{:x}.{:x}.{seq}", std::process::id(), now_nanos());
        stream
            .write_all(format!("{tag} {}\n", b64_encode(script.as_bytes())).as_bytes())
            .with_context(|| format!("{}: writing to the agent", self.name))?;
        let begin = format!("\n__BEGIN__ {tag}\n");
        let marker = format!("\n__RC__ {tag} ");
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("{}: command timed out after {timeout:?}: {script:?}", self.name);
            }
            stream
                .set_read_timeout(Some(left.min(Duration::from_millis(500))))
                .context("timeout")?;
            match stream.read(&mut chunk) {
                Ok(0) => bail!("{}: agent connection closed (guest powered off?)", self.name),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("{}: reading the agent", self.name))
                }
            }
            let Some(i) = find(&buf, marker.as_bytes()) else { continue };
            let tail = &buf[i + marker.len()..];
            let Some(nl) = tail.iter().position(|b| *b == b'\n') else { continue };
            let rc: i32 =
                String::from_utf8_lossy(&tail[..nl]).trim().parse().context("agent rc")?;
            // Output of an earlier, abandoned command may come first: keep only ours.
            let body = &buf[..i + 1];
            let start = rfind(body, begin.as_bytes()).map_or(0, |j| j + begin.len());
            let mut out = body[start..].to_vec();
            if out.last() == Some(&b'\n') {
                out.pop();
            }
            return Ok(Output { rc, stdout: String::from_utf8_lossy(&out).into_owned() });
        }
    }

    /// Waits until the agent answers (the guest has booted) and returns how long that took.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let offset: usize = fs::read_to_string(self.file("console.offset"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        loop {
            let log = fs::read(self.console_log()).unwrap_or_default();
            let ready = log.get(offset..).is_some_and(|new| find(new, b"LH-READY").is_some());
            if ready {
                if let Ok(out) = self.exec("true", Duration::from_secs(5)) {
                    if out.success() {
                        return Ok(start.elapsed());
                    }
                }
            }
            if self.pid().is_none() {
                bail!(
                    "{}: qemu exited during boot; console log {}:\n    {}",
                    self.name,
                    self.console_log().display(),
                    self.console_tail()
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "{}: not booted after {timeout:?}; console log {}:\n    {}",
                    self.name,
                    self.console_log().display(),
                    self.console_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Makes agent tags unique within a process.
static TAG_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Nanoseconds since the epoch, to make agent tags unique across calls.
fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// First position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Last position of `needle` in `hay`.
fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64, ignoring whitespace.
pub(crate) fn b64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|b| *b == c).ok_or_else(|| anyhow!("bad base64 byte {c:?}"))?;
        acc = (acc << 6) | u32::try_from(v).unwrap_or(0);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() -> Result<()> {
        for s in ["", "a", "ab", "abc", "abcd", "hello\nworld\0\u{ff}"] {
            let e = b64_encode(s.as_bytes());
            assert_eq!(b64_decode(&e)?, s.as_bytes(), "{s:?} -> {e}");
        }
        assert_eq!(b64_encode(b"abcd"), "YWJjZA==");
        assert_eq!(b64_decode("YWJj\nZA==")?, b"abcd");
        Ok(())
    }

    #[test]
    fn qemu_line_has_the_lab_wiring() {
        let p = LaunchParams {
            name: "node1",
            dir: Path::new("/tmp/l/node1"),
            kernel: Path::new("/c/vmlinuz"),
            initrd: Path::new("/c/initrd.gz"),
            binary_dir: Path::new("/b"),
            kvm: false,
            direct_io: true,
            memory_mib: 512,
            nics: vec![("n1e0".into(), "52:54:00:00:00:01".into(), "10.10.0.11/24".into())],
        };
        let a = qemu_argv(&p).join(" ");
        assert!(a.contains("-accel tcg,tb-size=256 -cpu max -machine q35 -smp 1 -m 512"));
        assert!(a.contains("tap,id=net0,ifname=n1e0,script=no"));
        assert!(a.contains("lh.host=node1 lh.nic0=52:54:00:00:00:01,10.10.0.11/24"));
        assert!(a.contains("file=/tmp/l/node1/data.raw,format=raw,cache=none"));
        assert!(a.contains("virtserialport,chardev=bmc,name=bmc"));
    }
}
