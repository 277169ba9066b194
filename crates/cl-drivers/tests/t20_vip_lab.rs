//! VIP driver end-to-end in a lab (root only): add / remove / probe / announce on real
//! interfaces in network namespaces, checked from the `ext` client's point of view (ping and
//! its neighbour cache), for IPv4 and IPv6. One lab for the whole file to stay fast.

use std::fs::File;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cl_drivers::vip::{self, Announce, LinkInfo, Mac, ProbeOutcome, Vip, VipError};
use cl_lab::{Lab, LabSpec};

/// Whether to skip: labs need root, the tools and cgroup v2. Prints why.
fn skip(test: &str) -> bool {
    match cl_lab::check_supported() {
        Ok(()) => false,
        Err(e) => {
            println!("SKIPPED {test}: {e}");
            true
        }
    }
}

/// Starts `f` on a new thread that has entered `host`'s network namespace, on a current-thread
/// tokio runtime. Namespaces are per thread, so this is how the driver runs "on" a node.
fn spawn_on<T, F, Fut>(lab: &Lab, host: &str, f: F) -> Result<JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = format!("/run/netns/{}", lab.netns(host)?);
    Ok(std::thread::spawn(move || -> Result<T> {
        let ns = File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: setns(2) with a valid namespace fd; it changes only this thread's network
        // namespace, which is what we want and nothing else on the thread depends on.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(rt.block_on(f()))
    }))
}

/// [`spawn_on`] and wait for the result.
fn on<T, F, Fut>(lab: &Lab, host: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    spawn_on(lab, host, f)?.join().map_err(|_| anyhow!("thread on {host} panicked"))?
}

/// Runs `ip -n <ns of host> args…` and returns stdout.
fn ip(lab: &Lab, host: &str, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("ip")
        .arg("-n")
        .arg(lab.netns(host)?)
        .args(args)
        .output()
        .context("running ip")?;
    ensure!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Formats a MAC the way `ip` prints it.
fn mac_str(mac: Mac) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The word after `key` in `text`.
fn word_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == key)?;
    words.next()
}

/// `host`'s `eth0` MAC as `ip link show` prints it.
fn link_mac(lab: &Lab, host: &str) -> Result<String> {
    let out = ip(lab, host, &["link", "show", "eth0"])?;
    word_after(&out, "link/ether").map(str::to_owned).ok_or_else(|| anyhow!("no MAC in {out}"))
}

/// The MAC `ext` has cached for `addr`, if any.
fn ext_neigh(lab: &Lab, addr: IpAddr) -> Result<Option<String>> {
    let out = ip(lab, "ext", &["neigh", "show", &addr.to_string(), "dev", "eth0"])?;
    Ok(word_after(&out, "lladdr").map(str::to_owned))
}

/// Whether one ping from `ext` to `addr` is answered.
fn ping_from_ext(lab: &Lab, addr: IpAddr) -> Result<bool> {
    let a = addr.to_string();
    Ok(lab.run("ext", &["ping", "-c1", "-W1", &a])?.status.success())
}

/// Polls `cond` every 10 ms for up to `limit`; returns the time it took to become true.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<Option<Duration>> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond()? {
            return Ok(Some(start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(None)
}

/// A VIP on `eth0`.
fn vip_on_eth0(addr: &str, prefix: u8) -> Result<Vip> {
    Ok(Vip { address: addr.parse()?, prefix, interface: "eth0".into() })
}

#[test]
fn t20_vip_on_real_links() -> Result<()> {
    if skip("t20_vip_on_real_links") {
        return Ok(());
    }
    let started = Instant::now();
    let mut lab = Lab::up(LabSpec { nodes: 2, networks: 1, name: None })?;
    let mac1 = link_mac(&lab, "node1")?;
    let mac2 = link_mac(&lab, "node2")?;

    // link_info agrees with `ip link`.
    let info: LinkInfo = on(&lab, "node1", || vip::link_info("eth0"))??;
    ensure!(mac_str(info.mac) == mac1, "link_info MAC {:?} vs ip {mac1}", info.mac);
    ensure!(info.up && info.carrier && info.index > 0, "node1 eth0: {info:?}");
    let err = on(&lab, "node1", || vip::link_info("nosuch0"))?.expect_err("nosuch0");
    ensure!(matches!(err, VipError::NoInterface { .. }), "{err:?}");
    ensure!(err.to_string().contains("nosuch0"), "message names the interface: {err}");

    ipv4(&lab, &mac1, &mac2)?;
    ipv6(&lab, &mac1, &mac2)?;

    // (5) Carrier: the switch end goes down, the node's eth0 stays admin-up without carrier,
    // and a probe there refuses to answer "Free".
    lab.link_down("node1", 0)?;
    let down = wait_for(Duration::from_secs(2), || {
        Ok(!on(&lab, "node1", || vip::link_info("eth0"))??.carrier)
    })?;
    ensure!(down.is_some(), "carrier still up after link_down");
    let info = on(&lab, "node1", || vip::link_info("eth0"))??;
    ensure!(info.up && !info.carrier, "after link_down: {info:?}");
    let v = vip_on_eth0("10.10.0.100", 24)?;
    let err =
        on(&lab, "node1", move || async move { vip::probe(&v, Duration::from_millis(300)).await })?
            .expect_err("probe without carrier");
    ensure!(matches!(err, VipError::LinkDown { .. }), "{err:?}");
    println!("probe without carrier: {err}");
    lab.link_up("node1", 0)?;
    let up = wait_for(Duration::from_secs(2), || {
        Ok(on(&lab, "node1", || vip::link_info("eth0"))??.carrier)
    })?;
    ensure!(up.is_some(), "carrier not back after link_up");

    println!("t20 took {:?}", started.elapsed());
    Ok(())
}

/// Steps (1)–(4) for 10.10.0.100/24.
fn ipv4(lab: &Lab, mac1: &str, mac2: &str) -> Result<()> {
    let v = vip_on_eth0("10.10.0.100", 24)?;
    let addr = v.address;

    // (1) Add on node1 (twice: idempotent); ext reaches it and caches node1's MAC.
    let vv = v.clone();
    on(lab, "node1", move || async move {
        vip::add(&vv).await?;
        vip::add(&vv).await?;
        anyhow::Ok(vip::is_present(&vv).await?)
    })?
    .and_then(|present| if present { Ok(()) } else { Err(anyhow!("not present after add")) })?;
    ensure!(ping_from_ext(lab, addr)?, "ext cannot ping {addr} on node1");
    ensure!(ext_neigh(lab, addr)?.as_deref() == Some(mac1), "ext neigh is not node1's {mac1}");

    // (3) Probe from node2 while node1 holds it: InUse by node1.
    let vv = v.clone();
    let t = Instant::now();
    let outcome =
        on(
            lab,
            "node2",
            move || async move { vip::probe(&vv, Duration::from_millis(300)).await },
        )??;
    println!("ipv4 probe from node2 with VIP on node1: {outcome:?} in {:?}", t.elapsed());
    match outcome {
        ProbeOutcome::InUse { by_mac } if mac_str(by_mac) == mac1 => {}
        other => bail!("probe from node2: {other:?}, expected InUse by {mac1}"),
    }
    // Announcing an address one does not hold is refused.
    let vv = v.clone();
    let err = on(lab, "node2", move || async move { Announce::default().send(&vv).await })?
        .expect_err("announce without the address");
    ensure!(matches!(err, VipError::NotPresent { .. }), "{err:?}");

    // (4) Remove on node1 (twice: idempotent), then the probe finds it free.
    let vv = v.clone();
    let present = on(lab, "node1", move || async move {
        vip::remove(&vv).await?;
        vip::remove(&vv).await?;
        anyhow::Ok(vip::is_present(&vv).await?)
    })??;
    ensure!(!present, "still present after remove");
    let vv = v.clone();
    let t = Instant::now();
    let outcome =
        on(
            lab,
            "node2",
            move || async move { vip::probe(&vv, Duration::from_millis(300)).await },
        )??;
    println!("ipv4 probe from node2 after removal: {outcome:?} in {:?}", t.elapsed());
    ensure!(outcome == ProbeOutcome::Free, "probe after removal: {outcome:?}");

    // (2) Move to node2: after the add alone ext still points at node1 (its cache is not
    // flushed); the announcement moves it to node2 within about a second.
    let vv = v.clone();
    on(lab, "node2", move || async move { vip::add(&vv).await })??;
    // Control: without an announcement ext keeps pointing at node1.
    let drifted =
        wait_for(
            Duration::from_millis(300),
            || Ok(ext_neigh(lab, addr)?.as_deref() != Some(mac1)),
        )?;
    ensure!(drifted.is_none(), "ext cache changed without an announcement");
    let vv = v.clone();
    let announcer =
        spawn_on(lab, "node2", move || async move { Announce::default().send(&vv).await })?;
    let moved = wait_for(Duration::from_millis(1500), || {
        Ok(ext_neigh(lab, addr)?.as_deref() == Some(mac2))
    })?;
    announcer.join().map_err(|_| anyhow!("announcer panicked"))???;
    let moved = moved.ok_or_else(|| anyhow!("ext neigh for {addr} never became node2's {mac2}"))?;
    println!("ipv4 ext neighbour moved to node2 {moved:?} after the announcement started");
    ensure!(ping_from_ext(lab, addr)?, "ext cannot ping {addr} on node2");
    ensure!(ext_neigh(lab, addr)?.as_deref() == Some(mac2), "ext neigh left node2");

    // The guard works the other way round too, and clean up.
    let vv = v.clone();
    let outcome =
        on(
            lab,
            "node1",
            move || async move { vip::probe(&vv, Duration::from_millis(300)).await },
        )??;
    match outcome {
        ProbeOutcome::InUse { by_mac } if mac_str(by_mac) == mac2 => {}
        other => bail!("probe from node1: {other:?}, expected InUse by {mac2}"),
    }
    on(lab, "node2", move || async move { vip::remove(&v).await })??;
    Ok(())
}

/// The same story for fd00:10::100/64 (IPv6: DAD probe and unsolicited NA).
fn ipv6(lab: &Lab, mac1: &str, mac2: &str) -> Result<()> {
    // ext gets an address on the VIP's subnet to talk to it.
    ip(lab, "ext", &["addr", "add", "fd00:10::1/64", "dev", "eth0", "nodad"])?;
    let v = vip_on_eth0("fd00:10::100", 64)?;
    let addr = v.address;

    let vv = v.clone();
    on(lab, "node1", move || async move { vip::add(&vv).await })??;
    let reached = wait_for(Duration::from_secs(3), || ping_from_ext(lab, addr))?;
    ensure!(reached.is_some(), "ext cannot ping {addr} on node1");
    ensure!(ext_neigh(lab, addr)?.as_deref() == Some(mac1), "ext neigh is not node1's {mac1}");

    let vv = v.clone();
    let outcome =
        on(
            lab,
            "node2",
            move || async move { vip::probe(&vv, Duration::from_millis(300)).await },
        )??;
    println!("ipv6 probe from node2 with VIP on node1: {outcome:?}");
    match outcome {
        ProbeOutcome::InUse { by_mac } if mac_str(by_mac) == mac1 => {}
        other => bail!("ipv6 probe from node2: {other:?}, expected InUse by {mac1}"),
    }

    let vv = v.clone();
    on(lab, "node1", move || async move { vip::remove(&vv).await })??;
    let vv = v.clone();
    let outcome =
        on(
            lab,
            "node2",
            move || async move { vip::probe(&vv, Duration::from_millis(300)).await },
        )??;
    ensure!(outcome == ProbeOutcome::Free, "ipv6 probe after removal: {outcome:?}");

    let vv = v.clone();
    on(lab, "node2", move || async move { vip::add(&vv).await })??;
    ensure!(ext_neigh(lab, addr)?.as_deref() == Some(mac1), "ext cache changed before announce");
    let vv = v.clone();
    let announcer =
        spawn_on(lab, "node2", move || async move { Announce::default().send(&vv).await })?;
    let moved = wait_for(Duration::from_millis(1500), || {
        Ok(ext_neigh(lab, addr)?.as_deref() == Some(mac2))
    })?;
    announcer.join().map_err(|_| anyhow!("announcer panicked"))???;
    let moved = moved.ok_or_else(|| anyhow!("ext neigh for {addr} never became node2's {mac2}"))?;
    println!("ipv6 ext neighbour moved to node2 {moved:?} after the announcement started");
    ensure!(ping_from_ext(lab, addr)?, "ext cannot ping {addr} on node2");

    on(lab, "node2", move || async move { vip::remove(&v).await })??;
    Ok(())
}
