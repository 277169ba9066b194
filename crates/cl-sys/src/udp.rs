//! UDP sockets for the heartbeat daemons.
//!
//! Heartbeats are small, but a node that stalls briefly must not lose the peer's beats that
//! queued meanwhile, hence the larger receive buffer. Binding to a device makes each heartbeat
//! network a separate path: without it the kernel's routing would send every beat out of the
//! same interface and a dead link could go unnoticed.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Receive buffer we ask for; the kernel caps it at `net.core.rmem_max` (and doubles it).
pub const RECV_BUFFER_BYTES: usize = 1 << 20;

/// Longest interface name the kernel accepts (IFNAMSIZ minus the NUL).
const MAX_IFNAME_LEN: usize = 15;

/// Creates a nonblocking UDP socket for `addr`'s family with SO_REUSEADDR and a large buffer.
fn udp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Lets a restarted daemon rebind at once, and several sockets share the port when each is
    // bound to its own device.
    sock.set_reuse_address(true)?;
    sock.set_recv_buffer_size(RECV_BUFFER_BYTES)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Binds `sock` to `addr` and hands it to tokio (needs a running runtime).
fn finish(sock: Socket, addr: SocketAddr) -> io::Result<UdpSocket> {
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP {addr}: {e}")))?;
    UdpSocket::from_std(sock.into())
}

/// Binds a tokio UDP socket to `addr` with SO_REUSEADDR and a larger receive buffer.
///
/// Must be called inside a tokio runtime.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    finish(udp_socket(addr)?, addr)
}

/// Like [`bind_udp`], but also binds the socket to network interface `device`
/// (SO_BINDTODEVICE): datagrams are sent out of, and only received from, that interface.
///
/// Needs root (CAP_NET_RAW) on kernels before 5.7, and always when the socket is already bound
/// to another device. Must be called inside a tokio runtime.
pub fn bind_udp_on_device(addr: SocketAddr, device: &str) -> io::Result<UdpSocket> {
    if device.is_empty() || device.len() > MAX_IFNAME_LEN || device.contains(['\0', '/']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {device:?}"),
        ));
    }
    let sock = udp_socket(addr)?;
    sock.bind_device(Some(device.as_bytes())).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot bind UDP socket to device {device}: {e}"))
    })?;
    finish(sock, addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn round_trip(a: &UdpSocket, b: &UdpSocket) {
        let to = b.local_addr().expect("b bound");
        a.send_to(b"beat", to).await.expect("send");
        let mut buf = [0u8; 16];
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), b.recv_from(&mut buf))
            .await
            .expect("datagram within 2 s")
            .expect("recv");
        assert_eq!(&buf[..n], b"beat");
        assert_eq!(from, a.local_addr().expect("a bound"));
    }

    #[tokio::test]
    async fn bind_udp_exchanges_datagrams_and_sets_options() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let a = bind_udp(any).expect("bind a");
        let b = bind_udp(any).expect("bind b");
        round_trip(&a, &b).await;
        let sock = socket2::SockRef::from(&b);
        assert!(sock.reuse_address().expect("getsockopt"));
        assert!(sock.recv_buffer_size().expect("getsockopt") > 0);
    }

    #[tokio::test]
    async fn reuse_address_lets_two_sockets_share_a_port() {
        let a = bind_udp(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind a");
        let port = a.local_addr().expect("bound").port();
        bind_udp(SocketAddr::from(([127, 0, 0, 1], port))).expect("second bind on same port");
    }

    #[tokio::test]
    async fn bind_on_device_rejects_bad_names() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        for bad in ["", "a-name-longer-than-15", "et\0h0", "a/b"] {
            let err = bind_udp_on_device(any, bad).expect_err(bad);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn bind_on_loopback_device() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: SO_BINDTODEVICE may need root");
            return;
        }
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let a = bind_udp_on_device(any, "lo").expect("bind a to lo");
        let b = bind_udp_on_device(any, "lo").expect("bind b to lo");
        round_trip(&a, &b).await;
        let sock = socket2::SockRef::from(&a);
        assert_eq!(sock.device().expect("getsockopt").as_deref(), Some(&b"lo"[..]));
        let err = bind_udp_on_device(any, "nosuchdev0").expect_err("unknown device");
        assert!(err.to_string().contains("nosuchdev0"), "{err}");
    }
}
