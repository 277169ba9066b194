//! Service addresses (VIPs): probe before taking one, add and remove it through netlink, and
//! announce it with gratuitous ARP / unsolicited NA so that clients follow at once
//! (ARCHITECTURE.md §3–4, §7: without an announcement clients follow after 15–50 s).
//!
//! Start of an application on this node: [`probe`] → [`add`] → [`announce`]. The probe is the
//! split-brain guard of §3: never add an address that another host answers for.
//!
//! Namespaces: netlink and packet sockets are opened in the network namespace of the thread that
//! polls the call; run these functions on a thread that stays in one namespace (the daemons'
//! namespace, or a lab node's in tests).
//!
//! IPv4 and IPv6 are both supported: ARP (RFC 5227) for IPv4, Neighbor Discovery (RFC 4861/4862)
//! for IPv6; IPv6 addresses are added with `nodad` because [`probe`] does the DAD.

pub mod frame;
mod netlink;
mod packet;

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

pub use frame::{garp_frame, na_frame, ns_probe_frame, probe_frame, Mac};
use frame::{ArpFrame, NdFrame, ETH_P_ARP, ETH_P_IPV6};
use packet::PacketSocket;

/// A service address: an IP address with its prefix length, on a named interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Vip {
    /// The address clients use.
    pub address: IpAddr,
    /// Prefix length (0..=32 for IPv4, 0..=128 for IPv6).
    pub prefix: u8,
    /// The interface that carries it, e.g. `eth0`.
    pub interface: String,
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} on {}", self.address, self.prefix, self.interface)
    }
}

/// What a probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Nobody else answered for or probed the address during the probe.
    Free,
    /// Another host uses (or is probing for) the address: do not add it.
    InUse {
        /// The other host's MAC address.
        by_mac: Mac,
    },
}

/// How to probe: `count` probes, `interval` apart, listening until `interval` after the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Number of probes sent (at least one is always sent).
    pub count: u32,
    /// Time between probes, and the wait after the last one.
    pub interval: Duration,
}

impl Default for Probe {
    /// 3 probes over 300 ms. RFC 5227 §2.1.1 asks for PROBE_NUM = 3 spread over 1–2 s after a
    /// random PROBE_WAIT; that is tuned for hosts booting at the same moment. Here the peer is
    /// either long up (it answers within a millisecond on a LAN) or dead, and every 100 ms counts
    /// in a failover; three probes still ride out the loss of one frame.
    fn default() -> Self {
        Probe { count: 3, interval: Duration::from_millis(100) }
    }
}

impl Probe {
    /// The default number of probes, spread evenly over `timeout`.
    pub fn over(timeout: Duration) -> Probe {
        let count = Probe::default().count;
        Probe { count, interval: timeout / count }
    }
}

/// How to announce: `count` announcements, `interval` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce {
    /// Number of announcements (0 sends nothing).
    pub count: u32,
    /// Time between two announcements.
    pub interval: Duration,
}

impl Default for Announce {
    /// 5 announcements 200 ms apart (~1 s). RFC 5227 §2.3 asks for 2, 2 s apart; more and faster
    /// ones here because a lost first announcement would leave clients on the dead node, and a
    /// switch that learned the old port relearns only from frames the new holder sends.
    fn default() -> Self {
        Announce { count: 5, interval: Duration::from_millis(200) }
    }
}

/// An interface as netlink reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Hardware (MAC) address.
    pub mac: Mac,
    /// Administratively up (`IFF_UP`, `ip link set … up`).
    pub up: bool,
    /// The link has carrier (cable in, peer end up).
    pub carrier: bool,
}

/// Why a VIP operation failed; every message names the interface and, where there is one,
/// the address.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// The VIP itself makes no sense (bad prefix, multicast address …).
    #[error("invalid VIP {vip}: {reason}")]
    Invalid {
        /// The VIP as given.
        vip: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No interface of that name in this network namespace.
    #[error("interface {interface}: no such interface")]
    NoInterface {
        /// The interface asked for.
        interface: String,
    },
    /// The interface has no 6-byte hardware address, so no ARP/ND can be sent on it.
    #[error("interface {interface}: not an Ethernet interface ({len}-byte link-layer address)")]
    NotEthernet {
        /// The interface asked for.
        interface: String,
        /// Length of its link-layer address.
        len: usize,
    },
    /// The interface is down or has no carrier: a probe there would see nobody and prove
    /// nothing, an announcement would reach nobody.
    #[error("cannot {action} {address} on {interface}: interface {state}")]
    LinkDown {
        /// The interface.
        interface: String,
        /// The VIP address.
        address: IpAddr,
        /// "probe" or "announce".
        action: &'static str,
        /// "is administratively down" or "has no carrier".
        state: &'static str,
    },
    /// Refused to announce an address this host does not hold: that would pull its traffic here.
    #[error("will not announce {vip}: the address is not configured there")]
    NotPresent {
        /// The VIP.
        vip: String,
    },
    /// The kernel refused a netlink request.
    #[error("interface {interface}: cannot {op}: {source}")]
    Netlink {
        /// The interface.
        interface: String,
        /// What was being done, with the address.
        op: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The raw (AF_PACKET) socket failed.
    #[error("interface {interface}: raw socket: cannot {op}: {source}")]
    Socket {
        /// The interface.
        interface: String,
        /// What was being done, with the address.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl VipError {
    /// A [`VipError::Netlink`].
    fn netlink(interface: &str, op: impl Into<String>, source: io::Error) -> VipError {
        VipError::Netlink { interface: interface.to_owned(), op: op.into(), source }
    }

    /// A [`VipError::Socket`].
    fn socket(vip: &Vip, op: &str, source: io::Error) -> VipError {
        VipError::Socket {
            interface: vip.interface.clone(),
            op: format!("{op} for {}", vip.address),
            source,
        }
    }
}

/// Rejects VIPs the kernel would take but that can never be a service address.
fn validate(vip: &Vip) -> Result<(), VipError> {
    let invalid = |reason| Err(VipError::Invalid { vip: vip.to_string(), reason });
    let max = if vip.address.is_ipv4() { 32 } else { 128 };
    if vip.prefix > max {
        return invalid("prefix length too long for the address family");
    }
    if vip.address.is_unspecified() || vip.address.is_multicast() || vip.address.is_loopback() {
        return invalid("unspecified, multicast or loopback address");
    }
    if let IpAddr::V4(a) = vip.address {
        if a.is_broadcast() {
            return invalid("broadcast address");
        }
    }
    if vip.interface.is_empty() {
        return invalid("empty interface name");
    }
    Ok(())
}

/// Index, MAC, administrative state and carrier of interface `name`.
pub async fn link_info(name: &str) -> Result<LinkInfo, VipError> {
    netlink::link_info(name).await
}

pub use netlink::LinkEvents;

/// Adds `vip` to its interface; already present (same address and prefix) is success.
pub async fn add(vip: &Vip) -> Result<(), VipError> {
    validate(vip)?;
    netlink::add(vip).await
}

/// Removes `vip` from its interface; absent (or no such interface) is success.
pub async fn remove(vip: &Vip) -> Result<(), VipError> {
    validate(vip)?;
    netlink::remove(vip).await
}

/// Whether `vip` (same address and prefix) is configured on its interface.
pub async fn is_present(vip: &Vip) -> Result<bool, VipError> {
    validate(vip)?;
    netlink::is_present(vip).await
}

/// Looks up the interface for `action` and insists it can carry frames.
async fn usable_link(vip: &Vip, action: &'static str) -> Result<LinkInfo, VipError> {
    validate(vip)?;
    let link = link_info(&vip.interface).await?;
    let down = |state| VipError::LinkDown {
        interface: vip.interface.clone(),
        address: vip.address,
        action,
        state,
    };
    if !link.up {
        return Err(down("is administratively down"));
    }
    if !link.carrier {
        return Err(down("has no carrier"));
    }
    Ok(link)
}

/// The socket and frame kind for `vip`'s address family.
fn open_socket(vip: &Vip, link: &LinkInfo) -> Result<PacketSocket, VipError> {
    let ethertype = if vip.address.is_ipv4() { ETH_P_ARP } else { ETH_P_IPV6 };
    PacketSocket::bind(link.index, ethertype).map_err(|e| VipError::socket(vip, "open", e))
}

/// Probes for `vip` with the default probe count spread over `timeout` (see [`probe_with`]).
pub async fn probe(vip: &Vip, timeout: Duration) -> Result<ProbeOutcome, VipError> {
    probe_with(vip, Probe::over(timeout)).await
}

/// Asks the link whether anyone else holds `vip`: RFC 5227 ARP probes (IPv4) or RFC 4862 DAD
/// solicitations (IPv6) from this interface's MAC, and `InUse` as soon as another MAC replies,
/// announces the address or probes for it too. Fails rather than answer `Free` on a link that
/// is down, where silence means nothing.
pub async fn probe_with(vip: &Vip, how: Probe) -> Result<ProbeOutcome, VipError> {
    let link = usable_link(vip, "probe").await?;
    let sock = open_socket(vip, &link)?;
    let frame: Vec<u8> = match vip.address {
        IpAddr::V4(a) => probe_frame(link.mac, a).to_vec(),
        IpAddr::V6(a) => ns_probe_frame(link.mac, a).to_vec(),
    };
    let count = how.count.max(1);
    let start = Instant::now();
    let end = start + how.interval * count;
    let mut sent = 0u32;
    // A full-size Ethernet frame; longer ones are truncated, and ARP/ND fit in far less.
    let mut buf = [0u8; 1514];
    loop {
        let now = Instant::now();
        if sent < count && now >= start + how.interval * sent {
            sock.send(&frame).await.map_err(|e| VipError::socket(vip, "send a probe", e))?;
            sent += 1;
            continue;
        }
        let wake = if sent < count { start + how.interval * sent } else { end };
        if sent == count && now >= end {
            return Ok(ProbeOutcome::Free);
        }
        let got = match timeout_at(wake, sock.recv(&mut buf)).await {
            Err(_elapsed) => continue,
            Ok(r) => r.map_err(|e| VipError::socket(vip, "receive", e))?,
        };
        if got.outgoing {
            continue;
        }
        let Some(bytes) = buf.get(..got.len) else { continue };
        let by = match vip.address {
            IpAddr::V4(a) => {
                ArpFrame::parse(bytes).ok().and_then(|f| frame::arp_conflict(&f, a, link.mac))
            }
            IpAddr::V6(a) => {
                NdFrame::parse(bytes).ok().and_then(|f| frame::nd_conflict(&f, a, link.mac))
            }
        };
        if let Some(by_mac) = by {
            return Ok(ProbeOutcome::InUse { by_mac });
        }
    }
}

/// Announces `vip` `count` times, `interval` apart: gratuitous ARP (RFC 5227 §2.3 ARP
/// Announcement, RFC 5944 §4.6) for IPv4, unsolicited Neighbor Advertisements with the Override
/// flag (RFC 4861 §7.2.6) for IPv6. Clients that cache the address switch to this interface's
/// MAC without waiting for their cache entry to expire. `vip` must already be configured here.
pub async fn announce(vip: &Vip, count: u32, interval: Duration) -> Result<(), VipError> {
    let link = usable_link(vip, "announce").await?;
    if !netlink::is_present(vip).await? {
        return Err(VipError::NotPresent { vip: vip.to_string() });
    }
    let sock = open_socket(vip, &link)?;
    let frame: Vec<u8> = match vip.address {
        IpAddr::V4(a) => garp_frame(link.mac, a).to_vec(),
        IpAddr::V6(a) => na_frame(link.mac, a).to_vec(),
    };
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        sock.send(&frame).await.map_err(|e| VipError::socket(vip, "send an announcement", e))?;
    }
    Ok(())
}

impl Announce {
    /// [`announce`] with these settings.
    pub async fn send(&self, vip: &Vip) -> Result<(), VipError> {
        announce(vip, self.count, self.interval).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(addr: &str, prefix: u8) -> Vip {
        Vip { address: addr.parse().expect("addr"), prefix, interface: "eth0".into() }
    }

    #[test]
    fn validation() {
        assert!(validate(&vip("10.10.0.100", 24)).is_ok());
        assert!(validate(&vip("fd00::100", 64)).is_ok());
        for (a, p) in [("10.0.0.1", 33), ("fd00::1", 129), ("0.0.0.0", 24), ("224.0.0.1", 4)] {
            let e = validate(&vip(a, p)).expect_err(a);
            assert!(e.to_string().contains(&format!("{a}/{p} on eth0")), "{e}");
        }
        let mut v = vip("10.0.0.1", 24);
        v.interface.clear();
        assert!(validate(&v).is_err());
    }

    #[test]
    fn defaults() {
        assert_eq!(Probe::over(Duration::from_millis(300)), Probe::default());
        let a = Announce::default();
        assert_eq!(a.interval * (a.count - 1), Duration::from_millis(800));
    }
}
