//! The netlink side of VIPs: interface lookup and address add / remove / query, through
//! rtnetlink. One short-lived connection per call keeps callers free of shared state; its socket
//! lives in the network namespace of the thread that opens it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{AddressMessageBuilder, Handle};
use tokio::task::JoinHandle;

use super::{LinkInfo, Vip, VipError};

/// An open rtnetlink connection whose driver task ends with it.
struct Netlink {
    /// Request handle.
    handle: Handle,
    /// The task that drives the connection's socket.
    task: JoinHandle<()>,
}

impl Netlink {
    /// Opens a connection in the calling thread's network namespace.
    fn open(interface: &str) -> Result<Netlink, VipError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|source| VipError::netlink(interface, "open a netlink socket", source))?;
        Ok(Netlink { handle, task: tokio::spawn(conn) })
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        // The connection task would otherwise linger until the runtime shuts down.
        self.task.abort();
    }
}

/// The errno inside a netlink error, if the kernel sent one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

/// A readable `io::Error` for a netlink failure ("File exists (os error 17)", not a Debug dump).
fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// Fetches the link message of `name`; `NoInterface` if the kernel has none by that name.
async fn get_link(nl: &Netlink, name: &str) -> Result<LinkMessage, VipError> {
    let mut links = nl.handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link),
        Ok(None) => Err(VipError::NoInterface { interface: name.to_owned() }),
        // ENODEV: no such name; EINVAL: a name the kernel cannot even hold (too long).
        Err(e) if matches!(errno(&e), Some(libc::ENODEV | libc::EINVAL)) => {
            Err(VipError::NoInterface { interface: name.to_owned() })
        }
        Err(e) => Err(VipError::netlink(name, "look up the interface", to_io(e))),
    }
}

/// Interface index, MAC, administrative state and carrier of `name`.
pub(crate) async fn link_info(name: &str) -> Result<LinkInfo, VipError> {
    let nl = Netlink::open(name)?;
    let link = get_link(&nl, name).await?;
    let mut mac = None;
    let mut carrier = None;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::Address(bytes) => mac = Some(bytes.clone()),
            LinkAttribute::Carrier(c) => carrier = Some(*c != 0),
            _ => {}
        }
    }
    let mac = mac.unwrap_or_default();
    let mac: [u8; 6] = mac
        .as_slice()
        .try_into()
        .map_err(|_| VipError::NotEthernet { interface: name.to_owned(), len: mac.len() })?;
    let flags = link.header.flags;
    Ok(LinkInfo {
        index: link.header.index,
        mac,
        up: flags.contains(LinkFlags::Up),
        // IFLA_CARRIER is the kernel's own view; IFF_LOWER_UP says the same on kernels that
        // omit the attribute.
        carrier: carrier.unwrap_or(flags.contains(LinkFlags::LowerUp)),
    })
}

/// The address message that names exactly `vip` on interface `index`.
fn address_message(vip: &Vip, index: u32) -> AddressMessage {
    match vip.address {
        IpAddr::V4(a) => {
            AddressMessageBuilder::<Ipv4Addr>::new().index(index).address(a, vip.prefix).build()
        }
        IpAddr::V6(a) => {
            let mut msg = AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(a, vip.prefix)
                .build();
            // No kernel DAD: our own probe (RFC 4862 §5.4 done by `probe`) already checked the
            // address, and kernel DAD would keep it "tentative", i.e. unusable, for ~1 s of
            // failover time and make a returning owner's address fail instead of ours.
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            msg
        }
    }
}

/// Adds `vip`; an `EEXIST` from the kernel (same address and prefix there already) is success.
pub(crate) async fn add(vip: &Vip) -> Result<(), VipError> {
    let nl = Netlink::open(&vip.interface)?;
    let index = get_link(&nl, &vip.interface).await?.header.index;
    let msg = address_message(vip, index);
    let mut req = nl.handle.address().add(index, vip.address, vip.prefix);
    *req.message_mut() = msg;
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(VipError::netlink(&vip.interface, format!("add {vip}"), to_io(e))),
    }
}

/// Removes `vip`; `EADDRNOTAVAIL` (not there) and a missing interface are success.
pub(crate) async fn remove(vip: &Vip) -> Result<(), VipError> {
    let nl = Netlink::open(&vip.interface)?;
    let index = match get_link(&nl, &vip.interface).await {
        Ok(link) => link.header.index,
        // No interface, so certainly no address on it.
        Err(VipError::NoInterface { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    match nl.handle.address().del(address_message(vip, index)).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(()),
        Err(e) => Err(VipError::netlink(&vip.interface, format!("remove {vip}"), to_io(e))),
    }
}

/// Whether `vip` (address and prefix) is configured on its interface.
pub(crate) async fn is_present(vip: &Vip) -> Result<bool, VipError> {
    let nl = Netlink::open(&vip.interface)?;
    let index = get_link(&nl, &vip.interface).await?.header.index;
    let mut addrs = nl
        .handle
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(vip.address)
        .execute();
    loop {
        match addrs.try_next().await {
            Ok(Some(msg)) if msg.header.prefix_len == vip.prefix => return Ok(true),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(false),
            Err(e) => {
                return Err(VipError::netlink(
                    &vip.interface,
                    format!("list addresses for {vip}"),
                    to_io(e),
                ))
            }
        }
    }
}

/// The kernel's link notifications (RTNLGRP_LINK): an interface appeared, went, or changed
/// state (administrative state, carrier), in the calling thread's network namespace.
pub struct LinkEvents {
    /// One item per notification.
    messages: futures_util::stream::BoxStream<'static, ()>,
    task: JoinHandle<()>,
}

/// `RTNLGRP_LINK` (linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;

impl LinkEvents {
    /// Subscribes to link notifications.
    pub fn open() -> Result<LinkEvents, VipError> {
        use rtnetlink::sys::AsyncSocket;
        let fail = |source| VipError::netlink("(all)", "subscribe to link changes", source);
        let (mut conn, _handle, messages) = rtnetlink::new_connection().map_err(fail)?;
        conn.socket_mut().socket_mut().add_membership(RTNLGRP_LINK).map_err(fail)?;
        use futures_util::StreamExt;
        let messages = messages.map(|_| ()).boxed();
        Ok(LinkEvents { messages, task: tokio::spawn(conn) })
    }

    /// Waits for the next notification; `false` once the connection has ended (the caller
    /// falls back to asking).
    pub async fn changed(&mut self) -> bool {
        use futures_util::StreamExt;
        self.messages.next().await.is_some()
    }
}

impl Drop for LinkEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}
