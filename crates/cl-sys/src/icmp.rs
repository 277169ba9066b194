//! Async ICMP echo ("ping") on raw sockets, used by clnetd to watch the known connections.
//!
//! Raw sockets need root (CAP_NET_RAW). We do not use unprivileged `SOCK_DGRAM` ICMP sockets on
//! purpose: `net.ipv4.ping_group_range` is disabled in the lab's network namespaces, and on a
//! real node the daemons run as root anyway.
//!
//! A raw ICMP socket receives a copy of *every* ICMP packet arriving at the host (other pingers'
//! replies, our own requests on loopback, unreachables…), so the receive side filters for echo
//! replies carrying our identifier and drops everything else silently. The parsers are pure
//! functions so that they can be tested (and fuzzed) without a socket.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// ICMPv4 type of an echo reply.
pub const ICMPV4_ECHO_REPLY: u8 = 0;
/// ICMPv4 type of an echo request.
pub const ICMPV4_ECHO_REQUEST: u8 = 8;
/// ICMPv6 type of an echo request.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 type of an echo reply.
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// Payload carried by every echo request: fixed (no timestamp) so that packets are reproducible
/// in tests and captures; round-trip times are measured by the caller, not from the packet.
pub const ECHO_PAYLOAD: [u8; 8] = *b"linuxha\0";

/// Length of the ICMP echo header (type, code, checksum, identifier, sequence).
const ICMP_HEADER_LEN: usize = 8;

/// Length of an echo request built by [`build_echo_request_v4`] / [`build_echo_request_v6`].
pub const ECHO_REQUEST_LEN: usize = ICMP_HEADER_LEN + ECHO_PAYLOAD.len();

/// Receive buffer size: larger than any MTU we will meet, so replies are never truncated by us.
const RECV_BUF_LEN: usize = 2048;

/// IP protocol number of ICMP, as found in the IPv4 header's protocol field.
const IPPROTO_ICMP: u8 = 1;

/// An ICMPv4 echo reply addressed to our identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReply {
    /// Source address of the reply (the host that answered).
    pub from: Ipv4Addr,
    /// Sequence number echoed back from our request.
    pub seq: u16,
}

/// An ICMPv6 echo reply addressed to our identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReply6 {
    /// Source address of the reply (the host that answered).
    pub from: Ipv6Addr,
    /// Sequence number echoed back from our request.
    pub seq: u16,
}

/// Internet checksum (RFC 1071): one's complement of the one's-complement sum of 16-bit words.
///
/// Computing it over a message that already contains a correct checksum yields 0, which is how
/// received packets are verified.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        // An odd trailing byte is padded with a zero byte on the right.
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The fold above leaves sum <= 0xffff, so the cast is lossless.
    !(sum as u16)
}

/// Builds an ICMP echo message of type `kind` with a zero checksum field.
fn build_echo(kind: u8, identifier: u16, seq: u16) -> [u8; ECHO_REQUEST_LEN] {
    let mut pkt = [0u8; ECHO_REQUEST_LEN];
    pkt[0] = kind;
    pkt[1] = 0; // code
    pkt[4..6].copy_from_slice(&identifier.to_be_bytes());
    pkt[6..8].copy_from_slice(&seq.to_be_bytes());
    pkt[ICMP_HEADER_LEN..].copy_from_slice(&ECHO_PAYLOAD);
    pkt
}

/// Builds an ICMPv4 echo request with a correct checksum.
pub fn build_echo_request_v4(identifier: u16, seq: u16) -> [u8; ECHO_REQUEST_LEN] {
    let mut pkt = build_echo(ICMPV4_ECHO_REQUEST, identifier, seq);
    let sum = checksum(&pkt);
    pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    pkt
}

/// Builds an ICMPv6 echo request; the checksum is left zero because the kernel fills it in
/// (it covers an IPv6 pseudo-header whose source address only the kernel knows).
pub fn build_echo_request_v6(identifier: u16, seq: u16) -> [u8; ECHO_REQUEST_LEN] {
    build_echo(ICMPV6_ECHO_REQUEST, identifier, seq)
}

/// Reads `(identifier, seq)` from an ICMP message if it is an echo message of type `kind`.
fn parse_echo(icmp: &[u8], kind: u8) -> Option<(u16, u16)> {
    if icmp.len() < ICMP_HEADER_LEN || icmp[0] != kind || icmp[1] != 0 {
        return None;
    }
    let identifier = u16::from_be_bytes([icmp[4], icmp[5]]);
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    Some((identifier, seq))
}

/// Parses a packet read from a raw IPv4 ICMP socket (IPv4 header included) and returns the echo
/// reply in it if it carries `identifier` and a valid ICMP checksum; `None` for anything else
/// (short, garbage, fragments, other ICMP types, other identifiers).
pub fn parse_echo_reply_v4(packet: &[u8], identifier: u16) -> Option<EchoReply> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl {
        return None;
    }
    if packet[9] != IPPROTO_ICMP {
        return None;
    }
    // A non-first fragment has no ICMP header at its start; a first fragment has an incomplete
    // message whose checksum cannot be verified. The kernel reassembles before raw delivery, so
    // this only drops forged input.
    let frag = u16::from_be_bytes([packet[6], packet[7]]);
    if frag & 0x3fff != 0 {
        return None;
    }
    // Linux hands raw sockets the header unchanged, so total length is in network order and
    // includes the header. Trust it only to shorten (Ethernet padding), never to lengthen.
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total < ihl || total > packet.len() {
        return None;
    }
    let icmp = &packet[ihl..total];
    let (id, seq) = parse_echo(icmp, ICMPV4_ECHO_REPLY)?;
    if id != identifier || checksum(icmp) != 0 {
        return None;
    }
    let from = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    Some(EchoReply { from, seq })
}

/// Parses an ICMPv6 message read from a raw ICMPv6 socket (no IP header; the kernel has already
/// verified the checksum) and returns the sequence number if it is an echo reply for `identifier`.
pub fn parse_echo_reply_v6(icmp: &[u8], identifier: u16) -> Option<u16> {
    match parse_echo(icmp, ICMPV6_ECHO_REPLY)? {
        (id, seq) if id == identifier => Some(seq),
        _ => None,
    }
}

/// Receives one datagram into an initialised buffer, returning its length and source.
fn recv_from_init(sock: &Socket, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout. The only writer is
    // recvfrom(2) via socket2, which stores initialised bytes and never de-initialises memory,
    // so `buf` stays a valid `[u8]` afterwards (socket2's own `Read` impl relies on the same).
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    sock.recv_from(uninit)
}

/// A nonblocking raw ICMP socket registered with the tokio reactor.
#[derive(Debug)]
struct RawIcmp {
    fd: AsyncFd<Socket>,
}

impl RawIcmp {
    /// Opens a raw ICMP socket of the given family; must run inside a tokio runtime.
    fn open(domain: Domain, protocol: Protocol) -> io::Result<Self> {
        let sock = Socket::new(domain, Type::RAW, Some(protocol))?;
        sock.set_nonblocking(true)?;
        // tokio 1.54 deprecates `with_interest` for its successor, the `unsafe`
        // `register_with_interest`, which tokio 1.53 (the last release that builds with our
        // rust-version 1.80) lacks. The deprecation is about wrappers whose fd can change or
        // close under the registration; `Socket` owns its fd for its whole life and we never
        // hand out `&mut Socket`, so the old call is sound here.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(sock, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Self { fd })
    }

    /// Sends one datagram, waiting while the socket buffer is full.
    async fn send_to(&self, pkt: &[u8], to: &SockAddr) -> io::Result<()> {
        self.fd.async_io(Interest::WRITABLE, |sock| sock.send_to(pkt, to)).await.map(drop)
    }

    /// Receives one datagram, waiting until one arrives.
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
        self.fd.async_io(Interest::READABLE, |sock| recv_from_init(sock, buf)).await
    }
}

/// An async ICMPv4 echo pinger on a raw socket (needs root / CAP_NET_RAW).
///
/// `send` and `recv` take `&self`, so one task can send while another receives.
#[derive(Debug)]
pub struct Pinger {
    raw: RawIcmp,
    identifier: u16,
}

impl Pinger {
    /// Opens the raw socket; `identifier` tags our requests so that replies to other pingers on
    /// the host are ignored. Must be called inside a tokio runtime.
    pub fn new(identifier: u16) -> io::Result<Pinger> {
        Ok(Pinger { raw: RawIcmp::open(Domain::IPV4, Protocol::ICMPV4)?, identifier })
    }

    /// The identifier carried in our echo requests.
    pub fn identifier(&self) -> u16 {
        self.identifier
    }

    /// Sends one echo request with sequence number `seq` to `target`.
    pub async fn send(&self, target: Ipv4Addr, seq: u16) -> io::Result<()> {
        let pkt = build_echo_request_v4(self.identifier, seq);
        let to = SockAddr::from(SocketAddrV4::new(target, 0));
        self.raw.send_to(&pkt, &to).await
    }

    /// Waits for the next echo reply carrying our identifier, skipping every other packet.
    ///
    /// Cancel-safe: a reply is returned in the same poll that reads it, so dropping this future
    /// (e.g. on a timeout) never loses one of our replies.
    pub async fn recv(&self) -> io::Result<EchoReply> {
        let mut buf = [0u8; RECV_BUF_LEN];
        loop {
            let (len, _) = self.raw.recv_from(&mut buf).await?;
            if let Some(reply) =
                buf.get(..len).and_then(|p| parse_echo_reply_v4(p, self.identifier))
            {
                return Ok(reply);
            }
        }
    }
}

/// An ICMPv4 echo pinger its owner polls (clnetd, once per ping tick) instead of waiting on:
/// the socket is not registered with any reactor, so an arriving reply wakes nobody, and
/// [`try_recv`](Self::try_recv) reads what arrived since the last poll. Needs root / CAP_NET_RAW.
#[derive(Debug)]
pub struct PolledPinger {
    sock: Socket,
    identifier: u16,
}

impl PolledPinger {
    /// Opens the raw socket, nonblocking; `identifier` as in [`Pinger::new`].
    pub fn new(identifier: u16) -> io::Result<PolledPinger> {
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
        sock.set_nonblocking(true)?;
        Ok(PolledPinger { sock, identifier })
    }

    /// Sends one echo request; a full socket buffer is an error (the ping is lost, not queued).
    pub fn send(&self, target: Ipv4Addr, seq: u16) -> io::Result<()> {
        let pkt = build_echo_request_v4(self.identifier, seq);
        self.sock.send_to(&pkt, &SockAddr::from(SocketAddrV4::new(target, 0))).map(drop)
    }

    /// The next echo reply of ours that arrived since the last call, if any (never waits).
    pub fn try_recv(&self) -> io::Result<Option<EchoReply>> {
        let mut buf = [0u8; RECV_BUF_LEN];
        loop {
            match recv_from_init(&self.sock, &mut buf) {
                Ok((len, _)) => {
                    let reply =
                        buf.get(..len).and_then(|p| parse_echo_reply_v4(p, self.identifier));
                    if reply.is_some() {
                        return Ok(reply);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

/// An async ICMPv6 echo pinger on a raw socket (needs root / CAP_NET_RAW).
#[derive(Debug)]
pub struct Pinger6 {
    raw: RawIcmp,
    identifier: u16,
}

impl Pinger6 {
    /// Opens the raw ICMPv6 socket; see [`Pinger::new`].
    pub fn new(identifier: u16) -> io::Result<Pinger6> {
        Ok(Pinger6 { raw: RawIcmp::open(Domain::IPV6, Protocol::ICMPV6)?, identifier })
    }

    /// The identifier carried in our echo requests.
    pub fn identifier(&self) -> u16 {
        self.identifier
    }

    /// Sends one echo request with sequence number `seq` to `target` (`scope_id` selects the
    /// interface for link-local targets; 0 otherwise).
    pub async fn send(&self, target: Ipv6Addr, scope_id: u32, seq: u16) -> io::Result<()> {
        let pkt = build_echo_request_v6(self.identifier, seq);
        // The port field of a raw IPv6 destination must be 0 (or the protocol number).
        let to = SockAddr::from(SocketAddrV6::new(target, 0, 0, scope_id));
        self.raw.send_to(&pkt, &to).await
    }

    /// Waits for the next echo reply carrying our identifier, skipping every other packet.
    pub async fn recv(&self) -> io::Result<EchoReply6> {
        let mut buf = [0u8; RECV_BUF_LEN];
        loop {
            let (len, from) = self.raw.recv_from(&mut buf).await?;
            let Some(SocketAddr::V6(from)) = from.as_socket() else {
                continue;
            };
            if let Some(seq) = buf.get(..len).and_then(|p| parse_echo_reply_v6(p, self.identifier))
            {
                return Ok(EchoReply6 { from: *from.ip(), seq });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Wraps an ICMP message in a minimal IPv4 header from `src` to 127.0.0.1.
    fn ipv4(src: Ipv4Addr, icmp: &[u8]) -> Vec<u8> {
        let total = u16::try_from(20 + icmp.len()).expect("test packet fits");
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IPPROTO_ICMP, 0, 0];
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&[127, 0, 0, 1]);
        let sum = checksum(&p);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(icmp);
        p
    }

    /// An echo reply to `id`/`seq` with a correct checksum.
    fn reply(id: u16, seq: u16) -> [u8; ECHO_REQUEST_LEN] {
        let mut pkt = build_echo(ICMPV4_ECHO_REPLY, id, seq);
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        pkt
    }

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

    #[test]
    fn checksum_matches_rfc1071_example() {
        // The worked example from RFC 1071 section 3: sum 0xddf2, checksum its complement.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        assert_eq!(checksum(&[]), 0xffff);
        // Odd length: the last byte is the high byte of a zero-padded word.
        assert_eq!(checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn echo_request_has_valid_checksum_and_fields() {
        let pkt = build_echo_request_v4(0x1234, 0xabcd);
        assert_eq!(pkt[0], ICMPV4_ECHO_REQUEST);
        assert_eq!(pkt[1], 0);
        assert_eq!(&pkt[4..8], &[0x12, 0x34, 0xab, 0xcd]);
        assert_eq!(&pkt[8..], &ECHO_PAYLOAD);
        assert_eq!(checksum(&pkt), 0, "a correct checksum sums to zero");
        // Every sequence number, including ones that make the sum wrap.
        for seq in [0, 1, 0xffff, 0x8000] {
            assert_eq!(checksum(&build_echo_request_v4(0xffff, seq)), 0);
        }
    }

    #[test]
    fn parses_a_matching_reply() {
        let p = ipv4(SRC, &reply(7, 42));
        assert_eq!(parse_echo_reply_v4(&p, 7), Some(EchoReply { from: SRC, seq: 42 }));
    }

    #[test]
    fn ignores_ethernet_padding_beyond_total_length() {
        let mut p = ipv4(SRC, &reply(7, 42));
        p.extend_from_slice(&[0xee; 6]);
        assert_eq!(parse_echo_reply_v4(&p, 7).map(|r| r.seq), Some(42));
    }

    #[test]
    fn honours_ip_options() {
        // IHL 6: one 4-byte option word (NOPs) between header and ICMP.
        let icmp = reply(7, 3);
        let mut p = ipv4(SRC, &icmp);
        p[0] = 0x46;
        let total = u16::try_from(p.len() + 4).expect("fits");
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.splice(20..20, [1, 1, 1, 1]);
        assert_eq!(parse_echo_reply_v4(&p, 7).map(|r| r.seq), Some(3));
    }

    #[test]
    fn rejects_wrong_identifier() {
        assert_eq!(parse_echo_reply_v4(&ipv4(SRC, &reply(8, 42)), 7), None);
    }

    #[test]
    fn rejects_wrong_type() {
        // Our own request, seen on loopback by the raw socket.
        let p = ipv4(SRC, &build_echo_request_v4(7, 42));
        assert_eq!(parse_echo_reply_v4(&p, 7), None);
        // A destination unreachable (type 3) of the right length.
        let mut unreach = reply(7, 42);
        unreach[0] = 3;
        assert_eq!(parse_echo_reply_v4(&ipv4(SRC, &unreach), 7), None);
    }

    #[test]
    fn rejects_bad_checksum() {
        let mut icmp = reply(7, 42);
        icmp[9] ^= 0x01;
        assert_eq!(parse_echo_reply_v4(&ipv4(SRC, &icmp), 7), None);
    }

    #[test]
    fn rejects_non_icmp_and_fragments() {
        let mut p = ipv4(SRC, &reply(7, 42));
        p[9] = 17;
        assert_eq!(parse_echo_reply_v4(&p, 7), None);
        let mut p = ipv4(SRC, &reply(7, 42));
        p[6] = 0x20; // more fragments
        assert_eq!(parse_echo_reply_v4(&p, 7), None);
    }

    #[test]
    fn truncated_and_garbage_input_never_panics() {
        let full = ipv4(SRC, &reply(7, 42));
        for len in 0..full.len() {
            assert_eq!(parse_echo_reply_v4(&full[..len], 7), None, "len {len}");
        }
        // IHL claiming more header than there is, total length lies, wrong version.
        let mut p = full.clone();
        p[0] = 0x4f;
        assert_eq!(parse_echo_reply_v4(&p, 7), None);
        let mut p = full.clone();
        p[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(parse_echo_reply_v4(&p, 7), None);
        let mut p = full.clone();
        p[2..4].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(parse_echo_reply_v4(&p, 7), None);
        let mut p = full;
        p[0] = 0x65;
        assert_eq!(parse_echo_reply_v4(&p, 7), None);
        // Pseudo-random bytes of every length must not panic.
        let mut x: u32 = 0x1234_5678;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x.to_le_bytes()[0]
                })
                .collect();
            let _ = parse_echo_reply_v4(&bytes, 7);
            let _ = parse_echo_reply_v6(&bytes, 7);
        }
    }

    #[test]
    fn v6_parser_checks_type_and_identifier() {
        let mut r = build_echo_request_v6(9, 5);
        assert_eq!(parse_echo_reply_v6(&r, 9), None, "a request is not a reply");
        r[0] = ICMPV6_ECHO_REPLY;
        assert_eq!(parse_echo_reply_v6(&r, 9), Some(5));
        assert_eq!(parse_echo_reply_v6(&r, 10), None);
        assert_eq!(parse_echo_reply_v6(&r[..7], 9), None);
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[tokio::test]
    async fn pings_loopback_v4() {
        if !is_root() {
            eprintln!("skipped: raw ICMP sockets need root");
            return;
        }
        let pinger = Pinger::new(0x4c48).expect("raw ICMP socket as root");
        for seq in [1u16, 2, 3] {
            pinger.send(Ipv4Addr::LOCALHOST, seq).await.expect("send to 127.0.0.1");
            let reply = tokio::time::timeout(Duration::from_secs(2), pinger.recv())
                .await
                .expect("echo reply from 127.0.0.1 within 2 s")
                .expect("recv");
            assert_eq!(reply, EchoReply { from: Ipv4Addr::LOCALHOST, seq });
        }
    }

    #[test]
    fn a_polled_pinger_reads_the_replies_that_arrived_meanwhile() {
        if !is_root() {
            eprintln!("skipped: raw ICMP sockets need root");
            return;
        }
        let pinger = PolledPinger::new(0x4c4a).expect("raw ICMP socket as root");
        assert_eq!(pinger.try_recv().expect("poll"), None, "nothing sent yet");
        for seq in [1u16, 2] {
            pinger.send(Ipv4Addr::LOCALHOST, seq).expect("send to 127.0.0.1");
        }
        let mut seqs = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while seqs.len() < 2 && std::time::Instant::now() < deadline {
            match pinger.try_recv().expect("poll") {
                Some(reply) => seqs.push(reply.seq),
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert_eq!(seqs, vec![1, 2]);
    }

    #[tokio::test]
    async fn pings_loopback_v6() {
        if !is_root() {
            eprintln!("skipped: raw ICMPv6 sockets need root");
            return;
        }
        if std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
            .map(|s| s.trim() != "0")
            .unwrap_or(true)
        {
            eprintln!("skipped: IPv6 is disabled on lo");
            return;
        }
        let pinger = Pinger6::new(0x4c49).expect("raw ICMPv6 socket as root");
        pinger.send(Ipv6Addr::LOCALHOST, 0, 9).await.expect("send to ::1");
        let reply = tokio::time::timeout(Duration::from_secs(2), pinger.recv())
            .await
            .expect("echo reply from ::1 within 2 s")
            .expect("recv");
        assert_eq!(reply, EchoReply6 { from: Ipv6Addr::LOCALHOST, seq: 9 });
    }
}
