//! The client on `ext`: every 5 ms a TCP connect to VIP:port (the server names the node that
//! answered) and an ARP request for the VIP (every MAC that replies is recorded, so two owners
//! at once are seen even though a client only ever talks to one of them).
//!
//! The probe runs as `bench probe` inside ext's namespaces and prints one line per sample; the
//! benchmark reads them into [`Sample`]s. Both sides stamp with CLOCK_MONOTONIC, which is one
//! clock for every process on the machine, so the fault time taken by the benchmark and the
//! sample times taken by the probe compare directly.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cl_lab::Lab;
use serde::Serialize;

/// Nanoseconds of CLOCK_MONOTONIC: the one clock shared by the benchmark and its probe.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds between two [`mono_ns`] stamps.
pub fn secs_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e9
}

/// One probe sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When the TCP connect finished (monotonic ns).
    pub t_ns: u64,
    /// Whether the TCP connect succeeded.
    pub ok: bool,
    /// The node the server said it runs on, when it answered.
    pub owner: Option<String>,
    /// The MACs that answered this sample's ARP request for the VIP.
    pub arp: Vec<String>,
}

impl Sample {
    /// The line the probe prints: `<t_ns> <0|1> <owner|-> <mac,mac|->`.
    pub fn to_line(&self) -> String {
        let owner = self.owner.as_deref().unwrap_or("-");
        let arp = if self.arp.is_empty() { "-".to_string() } else { self.arp.join(",") };
        format!("{} {} {owner} {arp}", self.t_ns, u8::from(self.ok))
    }

    /// Parses [`Sample::to_line`]'s output; `None` for anything else.
    pub fn parse(line: &str) -> Option<Sample> {
        let mut words = line.split_whitespace();
        let t_ns = words.next()?.parse().ok()?;
        let ok = match words.next()? {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        let owner = match words.next()? {
            "-" => None,
            o => Some(o.to_string()),
        };
        let arp = match words.next()? {
            "-" => Vec::new(),
            list => list.split(',').map(String::from).collect(),
        };
        Some(Sample { t_ns, ok, owner, arp })
    }

    /// More than one MAC answered ARP for the VIP in this sample.
    pub fn two_owners(&self) -> bool {
        self.arp.len() > 1
    }
}

/// The first sample at or after `from_ns` for which `pred` holds.
pub fn first_after(
    samples: &[Sample],
    from_ns: u64,
    pred: impl Fn(&Sample) -> bool,
) -> Option<&Sample> {
    samples.iter().filter(|s| s.t_ns >= from_ns).find(|s| pred(s))
}

/// After a fault at `from_ns` that stops the service: the first success that follows the first
/// failure (a success still in flight when the fault hit does not count).
pub fn recovered_after_outage(samples: &[Sample], from_ns: u64) -> Option<&Sample> {
    let fail = first_after(samples, from_ns, |s| !s.ok)?;
    first_after(samples, fail.t_ns + 1, |s| s.ok)
}

/// What a client saw after a partition healed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealOutcome {
    /// The node that answered last (the final owner), if any answered.
    pub final_owner: Option<String>,
    /// Seconds from the heal until the final owner answers for good (0 when it never stopped).
    pub reach_s: Option<f64>,
    /// The longest run of unanswered samples after the heal, in seconds.
    pub max_gap_s: f64,
    /// Samples after the heal in which two MACs answered ARP for the VIP.
    pub two_owner_samples: usize,
    /// Samples after the heal.
    pub samples: usize,
}

/// Reads the samples from `heal_ns` on: who owns the VIP at the end, since when it answered
/// without interruption, the longest gap and whether two owners answered ARP at once.
pub fn heal_outcome(samples: &[Sample], heal_ns: u64) -> HealOutcome {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t_ns >= heal_ns).collect();
    let final_owner = after.iter().rev().find(|s| s.ok).and_then(|s| s.owner.clone());
    let mut reach_s = None;
    if final_owner.is_some() {
        // Walk back from the end over the final owner's unbroken run of answers.
        let mut start = None;
        for s in after.iter().rev() {
            if s.ok && s.owner == final_owner {
                start = Some(s.t_ns);
            } else {
                break;
            }
        }
        reach_s = start.map(|t| {
            if after.first().map(|f| f.t_ns) == Some(t) {
                0.0
            } else {
                secs_between(heal_ns, t)
            }
        });
    }
    let mut max_gap_s: f64 = 0.0;
    let mut gap_start: Option<u64> = None;
    for s in &after {
        match (s.ok, gap_start) {
            (false, None) => gap_start = Some(s.t_ns),
            (true, Some(g)) => {
                max_gap_s = max_gap_s.max(secs_between(g, s.t_ns));
                gap_start = None;
            }
            _ => {}
        }
    }
    if let (Some(g), Some(last)) = (gap_start, after.last()) {
        max_gap_s = max_gap_s.max(secs_between(g, last.t_ns));
    }
    HealOutcome {
        final_owner,
        reach_s,
        max_gap_s,
        two_owner_samples: after.iter().filter(|s| s.two_owners()).count(),
        samples: after.len(),
    }
}

/// One change in what the client saw: seconds from a reference time, connected, owner, ARP.
pub type Change = (f64, bool, Option<String>, Vec<String>);

/// The samples from `from_ns` on, reduced to the points where what the client saw changed
/// (times relative to `from_ns`): the raw story of one repetition, small enough to keep.
pub fn timeline(samples: &[Sample], from_ns: u64) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    for s in samples.iter().filter(|s| s.t_ns >= from_ns) {
        let same = out
            .last()
            .is_some_and(|(_, ok, owner, arp)| *ok == s.ok && *owner == s.owner && *arp == s.arp);
        if !same {
            let t = (secs_between(from_ns, s.t_ns) * 1000.0).round() / 1000.0;
            out.push((t, s.ok, s.owner.clone(), s.arp.clone()));
        }
    }
    out
}

/// Runs of unanswered samples between `from_ns` and `to_ns` lasting at least `min_s`.
pub fn outages(samples: &[Sample], from_ns: u64, to_ns: u64, min_s: f64) -> Vec<f64> {
    let mut found = Vec::new();
    let mut start: Option<u64> = None;
    for s in samples.iter().filter(|s| s.t_ns >= from_ns && s.t_ns <= to_ns) {
        match (s.ok, start) {
            (false, None) => start = Some(s.t_ns),
            (true, Some(b)) => {
                let len = secs_between(b, s.t_ns);
                if len >= min_s {
                    found.push(len);
                }
                start = None;
            }
            _ => {}
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// The probe itself (runs on ext).

/// Options of `bench probe`.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// The VIP.
    pub vip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// The interface ARP goes out of.
    pub iface: String,
    /// ext's own address (the ARP sender address; replies are addressed to it).
    pub src: Ipv4Addr,
    /// Time between samples.
    pub interval: Duration,
    /// TCP connect (and greeting) timeout.
    pub timeout: Duration,
}

/// A raw ARP socket bound to one interface.
struct Arp {
    fd: OwnedFd,
    request: [u8; 42],
    vip: [u8; 4],
    src: [u8; 4],
}

impl Arp {
    fn open(iface: &str, src: Ipv4Addr, vip: Ipv4Addr) -> Result<Arp> {
        let proto = 0x0806u16.to_be();
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = CString::new(iface).context("interface name")?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            bail!("no interface {iface}");
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `sll` lives across the call and `len` is its size.
        let rc =
            unsafe { libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), len) };
        if rc < 0 {
            bail!("bind to {iface}: {}", std::io::Error::last_os_error());
        }
        let mac_text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
            .with_context(|| format!("MAC address of {iface}"))?;
        let mut mac = [0u8; 6];
        for (i, part) in mac_text.trim().split(':').enumerate().take(6) {
            mac[i] = u8::from_str_radix(part, 16).context("MAC address")?;
        }
        let mut request = [0u8; 42];
        request[..6].fill(0xff);
        request[6..12].copy_from_slice(&mac);
        request[12..14].copy_from_slice(&[0x08, 0x06]);
        request[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
        request[22..28].copy_from_slice(&mac);
        request[28..32].copy_from_slice(&src.octets());
        request[38..42].copy_from_slice(&vip.octets());
        Ok(Arp { fd, request, vip: vip.octets(), src: src.octets() })
    }

    fn send(&self) {
        // SAFETY: the buffer is ours and its length is passed; a failed send is one lost sample.
        unsafe {
            libc::send(self.fd.as_raw_fd(), self.request.as_ptr().cast(), self.request.len(), 0)
        };
    }

    /// The MACs of the replies for the VIP addressed to us that have arrived.
    fn drain(&self, into: &mut BTreeSet<String>) {
        let mut buf = [0u8; 128];
        loop {
            // SAFETY: `buf` is ours and its length is passed.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 42 {
                if n < 0 {
                    return;
                }
                continue;
            }
            let p = &buf[..n as usize];
            let reply = p[12..14] == [0x08, 0x06] && p[20..22] == [0, 2];
            if reply && p[28..32] == self.vip && p[38..42] == self.src {
                let mac: Vec<String> = p[22..28].iter().map(|b| format!("{b:02x}")).collect();
                into.insert(mac.join(":"));
            }
        }
    }
}

/// One TCP connect to the service; `(connected, greeting)`.
fn connect(to: SocketAddr, timeout: Duration) -> (bool, Option<String>) {
    let Ok(mut stream) = TcpStream::connect_timeout(&to, timeout) else { return (false, None) };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got += n;
                if buf[..got].contains(&b'\n') {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&buf[..got]);
    let owner = text.lines().next().map(str::trim).filter(|t| !t.is_empty()).map(String::from);
    (true, owner)
}

/// The probe loop: samples until stdout is closed (the benchmark went away).
pub fn run(opts: &ProbeOptions) -> Result<()> {
    let arp = Arp::open(&opts.iface, opts.src, opts.vip)?;
    let to = SocketAddr::from((opts.vip, opts.port));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let interval_ns = opts.interval.as_nanos() as u64;
    let mut next = mono_ns();
    loop {
        let mut macs = BTreeSet::new();
        // Replies that come after a sample's window are dropped, not credited to the next one:
        // a late reply of the old owner must not look like two owners.
        arp.drain(&mut BTreeSet::new());
        arp.send();
        let (ok, owner) = connect(to, opts.timeout);
        let t_ns = mono_ns();
        // Give the ARP replies 2 ms (a lab round trip is far below that).
        let window_end = t_ns.max(next + 2_000_000);
        let now = mono_ns();
        if window_end > now {
            std::thread::sleep(Duration::from_nanos(window_end - now));
        }
        arp.drain(&mut macs);
        let sample = Sample { t_ns, ok, owner, arp: macs.into_iter().collect() };
        if writeln!(out, "{}", sample.to_line()).and_then(|_| out.flush()).is_err() {
            return Ok(());
        }
        next += interval_ns;
        let now = mono_ns();
        if next > now {
            std::thread::sleep(Duration::from_nanos(next - now));
        } else {
            next = now;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark's side.

/// A running probe on ext and the samples it has sent so far.
pub struct Probe {
    child: Child,
    samples: Arc<Mutex<Vec<Sample>>>,
    reader: Option<JoinHandle<()>>,
}

impl Probe {
    /// Starts `bench probe` on ext against `vip:port` and waits for its first sample.
    pub fn start(lab: &Lab, exe: &Path, vip: Ipv4Addr, port: u16) -> Result<Probe> {
        let src = lab.addr("ext", 0)?.to_string();
        let exe = exe.to_string_lossy().into_owned();
        let vip = vip.to_string();
        let port = port.to_string();
        let argv = [
            exe.as_str(),
            "probe",
            "--vip",
            &vip,
            "--port",
            &port,
            "--src",
            &src,
            "--iface",
            "eth0",
        ];
        let mut cmd = lab.exec("ext", &argv)?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("starting the probe on ext")?;
        let stdout = child.stdout.take().context("probe stdout")?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(sample) = Sample::parse(&line) {
                    if let Ok(mut all) = sink.lock() {
                        all.push(sample);
                    }
                }
            }
        });
        let probe = Probe { child, samples, reader: Some(reader) };
        let started = mono_ns();
        while probe.len() == 0 {
            if secs_between(started, mono_ns()) > 10.0 {
                bail!("the probe on ext sends no samples");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(probe)
    }

    /// Number of samples so far.
    pub fn len(&self) -> usize {
        self.samples.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// The samples taken at or after `from_ns`.
    pub fn since(&self, from_ns: u64) -> Vec<Sample> {
        self.samples
            .lock()
            .map(|all| {
                let start = all.partition_point(|s| s.t_ns < from_ns);
                all[start..].to_vec()
            })
            .unwrap_or_default()
    }

    /// Polls until `find(samples since from_ns)` gives a time, or `limit` passes.
    pub fn wait(
        &self,
        from_ns: u64,
        limit: Duration,
        find: impl Fn(&[Sample]) -> Option<u64>,
    ) -> Option<u64> {
        loop {
            if let Some(t) = find(&self.since(from_ns)) {
                return Some(t);
            }
            if secs_between(from_ns, mono_ns()) > limit.as_secs_f64() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_ms: u64, ok: bool, owner: &str, arp: &[&str]) -> Sample {
        Sample {
            t_ns: t_ms * 1_000_000,
            ok,
            owner: (!owner.is_empty()).then(|| owner.to_string()),
            arp: arp.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn lines_round_trip() {
        for sample in
            [s(5, true, "node1", &["aa:bb"]), s(7, false, "", &[]), s(9, true, "", &["a", "b"])]
        {
            assert_eq!(Sample::parse(&sample.to_line()), Some(sample.clone()));
        }
        assert_eq!(Sample::parse("garbage"), None);
        assert_eq!(Sample::parse("1 2 - -"), None);
    }

    #[test]
    fn outage_recovery_needs_a_failure_first() {
        let v = vec![s(10, true, "n1", &[]), s(20, false, "", &[]), s(30, true, "n1", &[])];
        assert_eq!(recovered_after_outage(&v, 5_000_000).map(|x| x.t_ns), Some(30_000_000));
        assert_eq!(recovered_after_outage(&v, 25_000_000), None);
    }

    #[test]
    fn heal_reads_final_owner_gap_and_two_owners() {
        let v = vec![
            s(0, true, "n2", &["m2"]),
            s(100, true, "n2", &["m1", "m2"]),
            s(200, false, "", &["m1"]),
            s(300, false, "", &["m1"]),
            s(400, true, "n1", &["m1"]),
            s(500, true, "n1", &["m1"]),
        ];
        let h = heal_outcome(&v, 50_000_000);
        assert_eq!(h.final_owner.as_deref(), Some("n1"));
        assert!((h.reach_s.unwrap_or(0.0) - 0.35).abs() < 1e-9, "{h:?}");
        assert!((h.max_gap_s - 0.2).abs() < 1e-9, "{h:?}");
        assert_eq!(h.two_owner_samples, 1);
        assert_eq!(h.samples, 5);
        // Never interrupted: reached at once.
        let h = heal_outcome(&v[..2], 0);
        assert_eq!(h.reach_s, Some(0.0));
        assert_eq!(h.max_gap_s, 0.0);
    }

    #[test]
    fn timeline_keeps_changes_only() {
        let v = vec![
            s(0, true, "a", &["m1"]),
            s(5, true, "a", &["m1"]),
            s(10, false, "", &[]),
            s(15, false, "", &[]),
            s(20, true, "b", &["m2"]),
        ];
        let t = timeline(&v, 5_000_000);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0], (0.0, true, Some("a".into()), vec!["m1".to_string()]));
        assert_eq!(t[1].0, 0.005);
        assert_eq!(t[2], (0.015, true, Some("b".into()), vec!["m2".to_string()]));
    }

    #[test]
    fn outages_above_a_length() {
        let v = vec![
            s(0, true, "a", &[]),
            s(10, false, "", &[]),
            s(20, true, "a", &[]),
            s(30, false, "", &[]),
            s(200, false, "", &[]),
            s(250, true, "a", &[]),
        ];
        let long = outages(&v, 0, 1_000_000_000, 0.1);
        assert_eq!(long.len(), 1);
        assert!((long[0] - 0.22).abs() < 1e-9, "{long:?}");
        assert_eq!(outages(&v, 0, 1_000_000_000, 0.0).len(), 2);
    }
}
