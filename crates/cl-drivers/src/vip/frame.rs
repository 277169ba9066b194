//! Pure builders and parsers for the link-layer frames a VIP needs: ARP probes and
//! announcements (RFC 826, RFC 5227) and IPv6 Neighbor Solicitations / Advertisements (RFC 4861,
//! RFC 4862), each with its Ethernet header. No IO here, so every byte is unit-tested.
//!
//! Parsers take bytes from the wire: they never panic and return a [`FrameError`] for anything
//! that is not exactly what we look for.

use std::net::{Ipv4Addr, Ipv6Addr};

/// An Ethernet (MAC) address.
pub type Mac = [u8; 6];

/// Ethernet broadcast address.
pub const BROADCAST: Mac = [0xff; 6];
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv4 (the ARP protocol type for IPv4 addresses).
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Length of an Ethernet header without VLAN tag.
pub const ETH_HLEN: usize = 14;
/// Length of an Ethernet/IPv4 ARP frame, Ethernet header included (before padding to 60).
pub const ARP_FRAME_LEN: usize = ETH_HLEN + 28;
/// Length of a DAD Neighbor Solicitation frame (Ethernet + IPv6 + NS without options).
pub const NS_FRAME_LEN: usize = ETH_HLEN + IPV6_HLEN + 24;
/// Length of an unsolicited Neighbor Advertisement frame (Ethernet + IPv6 + NA + TLLA option).
pub const NA_FRAME_LEN: usize = ETH_HLEN + IPV6_HLEN + 24 + 8;

/// Length of the fixed IPv6 header.
const IPV6_HLEN: usize = 40;
/// IPv6 next-header value of ICMPv6.
const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 type of a Neighbor Solicitation (RFC 4861 §4.3).
const ND_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 type of a Neighbor Advertisement (RFC 4861 §4.4).
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// ND option type "Source Link-Layer Address" (RFC 4861 §4.6.1).
const ND_OPT_SOURCE_LL: u8 = 1;
/// ND option type "Target Link-Layer Address" (RFC 4861 §4.6.1).
const ND_OPT_TARGET_LL: u8 = 2;
/// NA flag "Override" (RFC 4861 §4.4): replace an existing cache entry's link-layer address.
const NA_FLAG_OVERRIDE: u8 = 0x20;
/// RFC 4861 §7.1.1/§7.1.2: ND packets must arrive with hop limit 255 (proves on-link origin).
const ND_HOP_LIMIT: u8 = 255;
/// `ff02::1`, all-nodes link-local multicast.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Why a received frame was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is shorter than the header it claims to carry.
    #[error("frame truncated: {len} bytes, need {need}")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes the header needs.
        need: usize,
    },
    /// The Ethernet frame carries another protocol.
    #[error("EtherType {0:#06x} is not the expected one")]
    WrongEtherType(u16),
    /// ARP for something other than Ethernet hardware and IPv4 protocol addresses.
    #[error("ARP for hardware type {htype}, protocol {ptype:#06x}, lengths {hlen}/{plen}")]
    NotEthernetIpv4Arp {
        /// Hardware type (1 = Ethernet).
        htype: u16,
        /// Protocol type (0x0800 = IPv4).
        ptype: u16,
        /// Hardware address length.
        hlen: u8,
        /// Protocol address length.
        plen: u8,
    },
    /// An ARP opcode other than request (1) or reply (2), e.g. RARP.
    #[error("ARP opcode {0} is neither request nor reply")]
    UnknownOpcode(u16),
    /// An IPv6 packet that is not a Neighbor Solicitation or Advertisement we can use.
    #[error("not a neighbor discovery message: {0}")]
    NotNd(&'static str),
}

/// An ARP operation (RFC 826).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    /// `ar$op` 1.
    Request,
    /// `ar$op` 2.
    Reply,
}

impl ArpOp {
    /// The opcode on the wire.
    fn code(self) -> u16 {
        match self {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
        }
    }
}

/// An Ethernet/IPv4 ARP packet with its Ethernet header, field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    /// Ethernet destination.
    pub eth_dst: Mac,
    /// Ethernet source.
    pub eth_src: Mac,
    /// Request or reply.
    pub op: ArpOp,
    /// Sender hardware address (`ar$sha`).
    pub sender_mac: Mac,
    /// Sender protocol address (`ar$spa`); 0.0.0.0 in an RFC 5227 probe.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (`ar$tha`).
    pub target_mac: Mac,
    /// Target protocol address (`ar$tpa`).
    pub target_ip: Ipv4Addr,
}

impl ArpFrame {
    /// The frame's bytes (42; the NIC pads to the 60-byte Ethernet minimum).
    pub fn to_bytes(&self) -> [u8; ARP_FRAME_LEN] {
        let mut b = [0u8; ARP_FRAME_LEN];
        b[0..6].copy_from_slice(&self.eth_dst);
        b[6..12].copy_from_slice(&self.eth_src);
        b[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
        b[14..16].copy_from_slice(&1u16.to_be_bytes()); // htype: Ethernet
        b[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes()); // ptype: IPv4
        b[18] = 6; // hlen
        b[19] = 4; // plen
        b[20..22].copy_from_slice(&self.op.code().to_be_bytes());
        b[22..28].copy_from_slice(&self.sender_mac);
        b[28..32].copy_from_slice(&self.sender_ip.octets());
        b[32..38].copy_from_slice(&self.target_mac);
        b[38..42].copy_from_slice(&self.target_ip.octets());
        b
    }

    /// Parses an untagged Ethernet frame holding an Ethernet/IPv4 ARP request or reply.
    /// Trailing bytes (Ethernet padding) are ignored.
    pub fn parse(frame: &[u8]) -> Result<ArpFrame, FrameError> {
        let b: &[u8; ARP_FRAME_LEN] = frame
            .get(..ARP_FRAME_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(FrameError::Truncated { len: frame.len(), need: ARP_FRAME_LEN })?;
        let be16 = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let mac = |i: usize| -> Mac { [b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5]] };
        let ip = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
        if be16(12) != ETH_P_ARP {
            return Err(FrameError::WrongEtherType(be16(12)));
        }
        let (htype, ptype, hlen, plen) = (be16(14), be16(16), b[18], b[19]);
        if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4) {
            return Err(FrameError::NotEthernetIpv4Arp { htype, ptype, hlen, plen });
        }
        let op = match be16(20) {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            other => return Err(FrameError::UnknownOpcode(other)),
        };
        Ok(ArpFrame {
            eth_dst: mac(0),
            eth_src: mac(6),
            op,
            sender_mac: mac(22),
            sender_ip: ip(28),
            target_mac: mac(32),
            target_ip: ip(38),
        })
    }
}

/// RFC 5227 §2.1.1 ARP Probe for `ip` from `mac`: a broadcast request with sender IP 0.0.0.0
/// (so that no receiver updates its cache with a binding we do not hold yet) and target hardware
/// address zero.
pub fn probe_frame(mac: Mac, ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    ArpFrame {
        eth_dst: BROADCAST,
        eth_src: mac,
        op: ArpOp::Request,
        sender_mac: mac,
        sender_ip: Ipv4Addr::UNSPECIFIED,
        target_mac: [0; 6],
        target_ip: ip,
    }
    .to_bytes()
}

/// Gratuitous ARP for `ip` at `mac`: the RFC 5227 §2.3 "ARP Announcement", a broadcast ARP
/// request with sender IP = target IP = `ip`. RFC 5944 §4.6 explains why it moves clients: every
/// host that already has `ip` in its cache replaces the hardware address (Linux does so even
/// inside `locktime`, because sender IP = target IP marks it as gratuitous). A request rather
/// than a reply, because RFC 5227 §3 notes that requests are handled by more stacks.
pub fn garp_frame(mac: Mac, ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    ArpFrame {
        eth_dst: BROADCAST,
        eth_src: mac,
        op: ArpOp::Request,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: [0; 6],
        target_ip: ip,
    }
    .to_bytes()
}

/// The MAC that claims `ip` in `frame`, if `frame` shows another host using or probing for it:
/// - any ARP packet (reply, request or announcement) whose sender IP is `ip` (RFC 5227 §2.1.1,
///   "sender IP address is the address being probed for");
/// - an ARP probe (sender IP 0.0.0.0) for target `ip` from another host, i.e. someone probing
///   for the same address at the same time (RFC 5227 §2.1.1, second rule).
///
/// Frames sent by `own_mac` are never a conflict: they are our own probes looping back.
pub fn arp_conflict(frame: &ArpFrame, ip: Ipv4Addr, own_mac: Mac) -> Option<Mac> {
    if frame.sender_mac == own_mac {
        return None;
    }
    let uses = frame.sender_ip == ip;
    let probes = frame.op == ArpOp::Request
        && frame.sender_ip == Ipv4Addr::UNSPECIFIED
        && frame.target_ip == ip;
    (uses || probes).then_some(frame.sender_mac)
}

/// `ff02::1:ffXX:XXXX`, the solicited-node multicast address of `ip` (RFC 4291 §2.7.1).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet multicast address `33:33:` + the last 32 bits of `ip` (RFC 2464 §7).
fn multicast_mac(ip: Ipv6Addr) -> Mac {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The ICMPv6 checksum (RFC 4443 §2.3) over the IPv6 pseudo-header (RFC 8200 §8.1) and `icmp`.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = pair.first().copied().unwrap_or(0);
            let lo = pair.get(1).copied().unwrap_or(0);
            sum += u64::from(u16::from_be_bytes([hi, lo]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    let len = u32::try_from(icmp.len()).unwrap_or(u32::MAX);
    add(&len.to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The fold above leaves at most 16 bits.
    !(sum as u16)
}

/// Writes Ethernet + IPv6 headers and the ICMPv6 `body` (checksum field zero) into one frame,
/// then fills in the checksum.
fn nd_frame<const N: usize>(eth_src: Mac, src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> [u8; N] {
    let mut b = [0u8; N];
    b[0..6].copy_from_slice(&multicast_mac(dst));
    b[6..12].copy_from_slice(&eth_src);
    b[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    let ip = &mut b[ETH_HLEN..ETH_HLEN + IPV6_HLEN];
    ip[0] = 0x60; // version 6, traffic class 0, flow label 0
    let payload_len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
    ip[6] = IPPROTO_ICMPV6;
    ip[7] = ND_HOP_LIMIT;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    let icmp = &mut b[ETH_HLEN + IPV6_HLEN..];
    icmp.copy_from_slice(body);
    let sum = icmpv6_checksum(src, dst, icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    b
}

/// RFC 4862 §5.4.2 Duplicate Address Detection probe for `ip`: a Neighbor Solicitation from the
/// unspecified address to `ip`'s solicited-node group, without a source link-layer option (which
/// §5.4.2 forbids with an unspecified source). The IPv6 twin of [`probe_frame`].
pub fn ns_probe_frame(mac: Mac, ip: Ipv6Addr) -> [u8; NS_FRAME_LEN] {
    let mut body = [0u8; 24];
    body[0] = ND_NEIGHBOR_SOLICIT;
    body[8..24].copy_from_slice(&ip.octets());
    nd_frame(mac, Ipv6Addr::UNSPECIFIED, solicited_node(ip), &body)
}

/// Unsolicited Neighbor Advertisement for `ip` at `mac` (RFC 4861 §7.2.6), sent from `ip` to
/// all-nodes with the Override flag and a target link-layer option: every neighbour that caches
/// `ip` replaces its link-layer address. The IPv6 twin of [`garp_frame`].
pub fn na_frame(mac: Mac, ip: Ipv6Addr) -> [u8; NA_FRAME_LEN] {
    let mut body = [0u8; 32];
    body[0] = ND_NEIGHBOR_ADVERT;
    body[4] = NA_FLAG_OVERRIDE;
    body[8..24].copy_from_slice(&ip.octets());
    body[24] = ND_OPT_TARGET_LL;
    body[25] = 1; // option length in units of 8 bytes
    body[26..32].copy_from_slice(&mac);
    nd_frame(mac, ip, ALL_NODES, &body)
}

/// A Neighbor Solicitation or Advertisement as far as conflict detection needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdFrame {
    /// Ethernet source.
    pub eth_src: Mac,
    /// IPv6 source address.
    pub src: Ipv6Addr,
    /// Solicitation or advertisement.
    pub kind: NdKind,
    /// The target address field.
    pub target: Ipv6Addr,
    /// The source (NS) or target (NA) link-layer address option, if present.
    pub ll_addr: Option<Mac>,
}

/// Which neighbor discovery message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdKind {
    /// Neighbor Solicitation (type 135).
    Solicitation,
    /// Neighbor Advertisement (type 136).
    Advertisement,
}

impl NdFrame {
    /// Parses an untagged Ethernet frame holding an IPv6 NS or NA directly after the fixed
    /// header, with hop limit 255 and a valid checksum (RFC 4861 §7.1: anything else is ignored).
    pub fn parse(frame: &[u8]) -> Result<NdFrame, FrameError> {
        let need = ETH_HLEN + IPV6_HLEN + 24;
        if frame.len() < need {
            return Err(FrameError::Truncated { len: frame.len(), need });
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if ethertype != ETH_P_IPV6 {
            return Err(FrameError::WrongEtherType(ethertype));
        }
        let ip = &frame[ETH_HLEN..ETH_HLEN + IPV6_HLEN];
        if ip[0] >> 4 != 6 {
            return Err(FrameError::NotNd("IP version is not 6"));
        }
        if ip[6] != IPPROTO_ICMPV6 {
            return Err(FrameError::NotNd("next header is not ICMPv6"));
        }
        if ip[7] != ND_HOP_LIMIT {
            return Err(FrameError::NotNd("hop limit is not 255"));
        }
        let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let icmp = frame.get(ETH_HLEN + IPV6_HLEN..ETH_HLEN + IPV6_HLEN + payload_len).ok_or(
            FrameError::Truncated { len: frame.len(), need: ETH_HLEN + IPV6_HLEN + payload_len },
        )?;
        if icmp.len() < 24 {
            return Err(FrameError::Truncated { len: frame.len(), need });
        }
        let kind = match icmp[0] {
            ND_NEIGHBOR_SOLICIT => NdKind::Solicitation,
            ND_NEIGHBOR_ADVERT => NdKind::Advertisement,
            _ => return Err(FrameError::NotNd("ICMPv6 type is not NS or NA")),
        };
        if icmp[1] != 0 {
            return Err(FrameError::NotNd("ICMPv6 code is not 0"));
        }
        let octets16 = |s: &[u8]| -> Option<Ipv6Addr> {
            let a: [u8; 16] = s.try_into().ok()?;
            Some(Ipv6Addr::from(a))
        };
        let (Some(src), Some(dst), Some(target)) =
            (octets16(&ip[8..24]), octets16(&ip[24..40]), octets16(&icmp[8..24]))
        else {
            return Err(FrameError::NotNd("address fields"));
        };
        if icmpv6_checksum(src, dst, icmp) != 0 {
            return Err(FrameError::NotNd("bad ICMPv6 checksum"));
        }
        let want_opt = match kind {
            NdKind::Solicitation => ND_OPT_SOURCE_LL,
            NdKind::Advertisement => ND_OPT_TARGET_LL,
        };
        // Walk the options (RFC 4861 §4.6): type, length in 8-byte units, value.
        let mut ll_addr = None;
        let mut opts = &icmp[24..];
        while let [otype, olen, ..] = *opts {
            let len = usize::from(olen) * 8;
            if len == 0 || len > opts.len() {
                return Err(FrameError::NotNd("malformed option"));
            }
            if otype == want_opt && len >= 8 {
                ll_addr = Some([opts[2], opts[3], opts[4], opts[5], opts[6], opts[7]]);
            }
            opts = &opts[len..];
        }
        let eth_src = [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]];
        Ok(NdFrame { eth_src, src, kind, target, ll_addr })
    }
}

/// The MAC that claims `ip` in `frame`, if it shows another host holding or probing for it
/// (RFC 4862 §5.4.3 and §5.4.4): an advertisement for `ip`, or a DAD solicitation for `ip`
/// (unspecified source) from another MAC. An ordinary NS for `ip` from a host that merely
/// wants to talk to it is not a conflict.
pub fn nd_conflict(frame: &NdFrame, ip: Ipv6Addr, own_mac: Mac) -> Option<Mac> {
    let mac = frame.ll_addr.unwrap_or(frame.eth_src);
    if frame.eth_src == own_mac || mac == own_mac || frame.target != ip {
        return None;
    }
    match frame.kind {
        NdKind::Advertisement => Some(mac),
        NdKind::Solicitation if frame.src.is_unspecified() => Some(mac),
        NdKind::Solicitation => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    const OTHER: Mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 100);

    #[test]
    fn garp_exact_bytes() {
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // eth dst: broadcast
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, // eth src
            0x08, 0x06, // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4, // Ethernet / IPv4
            0x00, 0x01, // request
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, // sha
            10, 10, 0, 100, // spa = VIP
            0, 0, 0, 0, 0, 0, // tha
            10, 10, 0, 100, // tpa = VIP
        ];
        assert_eq!(garp_frame(MAC, VIP), expected);
    }

    #[test]
    fn probe_exact_bytes() {
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, //
            0x08, 0x06, //
            0x00, 0x01, 0x08, 0x00, 6, 4, //
            0x00, 0x01, //
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, //
            0, 0, 0, 0, // spa = 0.0.0.0
            0, 0, 0, 0, 0, 0, //
            10, 10, 0, 100, //
        ];
        assert_eq!(probe_frame(MAC, VIP), expected);
    }

    /// The reply a Linux host sends to our probe: unicast to us, sender = the VIP's holder.
    fn reply_from_holder() -> ArpFrame {
        ArpFrame {
            eth_dst: MAC,
            eth_src: OTHER,
            op: ArpOp::Reply,
            sender_mac: OTHER,
            sender_ip: VIP,
            target_mac: MAC,
            target_ip: Ipv4Addr::UNSPECIFIED,
        }
    }

    #[test]
    fn parse_round_trip_with_padding() {
        let reply = reply_from_holder();
        let mut wire = reply.to_bytes().to_vec();
        wire.resize(60, 0); // Ethernet minimum-size padding
        assert_eq!(ArpFrame::parse(&wire), Ok(reply));
        assert_eq!(ArpFrame::parse(&garp_frame(MAC, VIP)).map(|f| f.sender_ip), Ok(VIP));
    }

    #[test]
    fn parse_rejects_truncated() {
        let wire = reply_from_holder().to_bytes();
        for len in [0, 13, 14, 41] {
            assert_eq!(ArpFrame::parse(&wire[..len]), Err(FrameError::Truncated { len, need: 42 }));
        }
    }

    #[test]
    fn parse_rejects_wrong_opcode_type_and_lengths() {
        let mut wire = reply_from_holder().to_bytes();
        wire[21] = 3; // RARP request
        assert_eq!(ArpFrame::parse(&wire), Err(FrameError::UnknownOpcode(3)));
        let mut wire = reply_from_holder().to_bytes();
        wire[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(ArpFrame::parse(&wire), Err(FrameError::WrongEtherType(0x0800)));
        let mut wire = reply_from_holder().to_bytes();
        wire[19] = 16; // IPv6-sized protocol addresses
        assert!(matches!(ArpFrame::parse(&wire), Err(FrameError::NotEthernetIpv4Arp { .. })));
    }

    #[test]
    fn conflicts() {
        let reply = reply_from_holder();
        assert_eq!(arp_conflict(&reply, VIP, MAC), Some(OTHER));
        // A reply about another address is not about us.
        assert_eq!(arp_conflict(&reply, Ipv4Addr::new(10, 10, 0, 101), MAC), None);
        // Someone else's announcement or probe for the VIP.
        let garp = ArpFrame::parse(&garp_frame(OTHER, VIP)).expect("garp");
        assert_eq!(arp_conflict(&garp, VIP, MAC), Some(OTHER));
        let probe = ArpFrame::parse(&probe_frame(OTHER, VIP)).expect("probe");
        assert_eq!(arp_conflict(&probe, VIP, MAC), Some(OTHER));
        // Our own frames, seen on the socket, are not.
        let own = ArpFrame::parse(&probe_frame(MAC, VIP)).expect("own probe");
        assert_eq!(arp_conflict(&own, VIP, MAC), None);
        // A host merely asking who has the VIP (sender IP its own) is not a holder.
        let who_has = ArpFrame {
            sender_ip: Ipv4Addr::new(10, 10, 0, 1),
            op: ArpOp::Request,
            target_ip: VIP,
            ..reply
        };
        assert_eq!(arp_conflict(&who_has, VIP, MAC), None);
    }

    const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0x12, 0x3456);

    #[test]
    fn solicited_node_and_mac() {
        assert_eq!(solicited_node(VIP6), "ff02::1:ff12:3456".parse::<Ipv6Addr>().expect("ip"));
        assert_eq!(multicast_mac(solicited_node(VIP6)), [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn checksum_known_vector() {
        // NS for fe80::1 from :: to ff02::1:ff00:1; checksum computed by hand (RFC 1071 sum of
        // the pseudo-header and body in Python), not by this module.
        let target: Ipv6Addr = "fe80::1".parse().expect("ip");
        let f = ns_probe_frame(MAC, target);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0x00, 0x00, 0x01]);
        let icmp = &f[54..];
        assert_eq!(u16::from_be_bytes([icmp[2], icmp[3]]), 0x7c25);
    }

    #[test]
    fn ns_and_na_round_trip() {
        let ns = NdFrame::parse(&ns_probe_frame(OTHER, VIP6)).expect("ns");
        assert_eq!(ns.kind, NdKind::Solicitation);
        assert!(ns.src.is_unspecified());
        assert_eq!((ns.target, ns.ll_addr, ns.eth_src), (VIP6, None, OTHER));
        assert_eq!(nd_conflict(&ns, VIP6, MAC), Some(OTHER));

        let na_bytes = na_frame(OTHER, VIP6);
        assert_eq!(na_bytes.len(), 86);
        assert_eq!(&na_bytes[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        let na = NdFrame::parse(&na_bytes).expect("na");
        assert_eq!(
            (na.kind, na.src, na.target, na.ll_addr),
            (NdKind::Advertisement, VIP6, VIP6, Some(OTHER))
        );
        assert_eq!(nd_conflict(&na, VIP6, MAC), Some(OTHER));
        assert_eq!(nd_conflict(&na, VIP6, OTHER), None);
        // An address-resolution NS (source set) is a client, not a holder.
        let client = NdFrame { src: "fd00:10::1".parse().expect("ip"), ..ns };
        assert_eq!(nd_conflict(&client, VIP6, MAC), None);
    }

    #[test]
    fn nd_parse_rejects_damage() {
        let good = na_frame(OTHER, VIP6);
        for len in [0, 20, 60, 77] {
            assert!(matches!(NdFrame::parse(&good[..len]), Err(FrameError::Truncated { .. })));
        }
        let mut bad = good;
        bad[ETH_HLEN + 7] = 64; // hop limit
        assert_eq!(NdFrame::parse(&bad), Err(FrameError::NotNd("hop limit is not 255")));
        let mut bad = good;
        bad[ETH_HLEN + IPV6_HLEN + 10] ^= 1; // target changed, checksum now wrong
        assert_eq!(NdFrame::parse(&bad), Err(FrameError::NotNd("bad ICMPv6 checksum")));
        // A zero-length option (with a valid checksum) would loop forever if accepted.
        let mut body = [0u8; 32];
        body[0] = ND_NEIGHBOR_ADVERT;
        body[8..24].copy_from_slice(&VIP6.octets());
        body[24] = ND_OPT_TARGET_LL;
        let bad: [u8; NA_FRAME_LEN] = nd_frame(OTHER, VIP6, ALL_NODES, &body);
        assert_eq!(NdFrame::parse(&bad), Err(FrameError::NotNd("malformed option")));
    }
}
