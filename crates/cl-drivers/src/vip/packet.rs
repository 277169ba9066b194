//! A small AF_PACKET socket bound to one interface and one EtherType: sends whole Ethernet
//! frames built by [`super::frame`] and receives the frames of that EtherType, async through
//! tokio's `AsyncFd`. Raw frames, not the kernel's ARP/ND code, because a probe must use sender
//! IP 0.0.0.0 / source `::` and an announcement must go out even when no cache entry is stale.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `PACKET_OUTGOING` (linux/if_packet.h): a frame this host sent, looped back to packet sockets.
const PACKET_OUTGOING: u8 = 4;

/// A raw link-layer socket on one interface, for one EtherType.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    /// The non-blocking socket, registered with tokio.
    fd: AsyncFd<OwnedFd>,
}

/// A received frame's length and whether this host sent it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Received {
    /// Bytes written into the buffer (the frame may have been longer).
    pub len: usize,
    /// The kernel reports the frame as one of ours going out.
    pub outgoing: bool,
}

impl PacketSocket {
    /// Opens a socket that sees only `ethertype` frames of interface `ifindex`. Needs
    /// CAP_NET_RAW in the calling thread's network namespace, which is also where it lives.
    pub(crate) fn bind(ifindex: u32, ethertype: u16) -> io::Result<PacketSocket> {
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
        // Protocol 0 at creation: the socket receives nothing until bind() below sets both the
        // interface and the EtherType, so no frame of another interface can slip in between.
        // SAFETY: socket(2) takes no pointers; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = ethertype.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: the pointer and length describe `sll`, which outlives the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast::<libc::sockaddr>(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a valid open descriptor and the AsyncFd owns it from here on, so it
        // stays open and refers to the same socket until the AsyncFd is dropped.
        let fd = unsafe {
            AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE)?
        };
        Ok(PacketSocket { fd })
    }

    /// Sends one complete Ethernet frame out of the bound interface.
    pub(crate) async fn send(&self, frame: &[u8]) -> io::Result<()> {
        let sent = self
            .fd
            .async_io(Interest::WRITABLE, |fd| {
                // SAFETY: the pointer and length describe `frame`, borrowed for the call. A
                // bound packet socket needs no destination address: the frame carries it.
                let n =
                    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                // A negative return means failure, and errno says which.
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            })
            .await?;
        if sent != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short send: {sent} of {} bytes", frame.len()),
            ));
        }
        Ok(())
    }

    /// Receives one frame into `buf` (truncated to its size).
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        self.fd
            .async_io(Interest::READABLE, |fd| {
                // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
                let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
                let mut from_len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: `buf` and `from` are valid for writes of the lengths passed, and
                // `from_len` holds the size of `from` as recvfrom(2) requires.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&raw mut from).cast::<libc::sockaddr>(),
                        &raw mut from_len,
                    )
                };
                let len = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
                Ok(Received { len, outgoing: from.sll_pkttype == PACKET_OUTGOING })
            })
            .await
    }
}
