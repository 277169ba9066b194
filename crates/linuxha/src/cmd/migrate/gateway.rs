//! This node's default gateway, proposed by `linuxha migrate` as a known connection: read from
//! the kernel's routing tables (`/proc/net/route`, then `/proc/net/ipv6_route`) of the network
//! namespace the command runs in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cl_config::migrate::Gateway;

/// Route flag: the route is up.
const RTF_UP: u32 = 0x1;
/// Route flag: the route goes through a gateway.
const RTF_GATEWAY: u32 = 0x2;

/// The default gateway of this node's network namespace, or why there is none.
pub fn detect() -> Gateway {
    let v4 = std::fs::read_to_string("/proc/net/route").ok().and_then(|t| ipv4_default(&t));
    let v6 = || std::fs::read_to_string("/proc/net/ipv6_route").ok().and_then(|t| ipv6_default(&t));
    match v4.or_else(v6) {
        Some(address) => Gateway::Found(address),
        None => Gateway::Missing(
            "this node has no default route through a gateway (/proc/net/route, /proc/net/ipv6_route)"
                .to_string(),
        ),
    }
}

/// The gateway of the IPv4 default route with the lowest metric in `/proc/net/route` text.
///
/// Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask …; addresses are the
/// kernel's 32-bit words in host byte order, printed in hexadecimal.
pub fn ipv4_default(table: &str) -> Option<IpAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| fields.get(i).and_then(|f| u32::from_str_radix(f, 16).ok());
            let (destination, gateway, flags, metric, mask) =
                (hex(1)?, hex(2)?, hex(3)?, fields.get(6)?.parse::<u32>().ok()?, hex(7)?);
            let default_via_gateway = destination == 0
                && mask == 0
                && gateway != 0
                && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY;
            default_via_gateway.then(|| (metric, Ipv4Addr::from(gateway.to_ne_bytes())))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, address)| IpAddr::V4(address))
}

/// The next hop of the IPv6 default route with the lowest metric in `/proc/net/ipv6_route`
/// text, unless it is link-local (which needs an interface a known connection cannot name).
///
/// Columns: destination, its prefix length, source, its prefix length, next hop, metric,
/// reference count, use, flags, interface; all hexadecimal.
pub fn ipv6_default(table: &str) -> Option<IpAddr> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let destination = ipv6(fields.first()?)?;
            let prefix = u8::from_str_radix(fields.get(1)?, 16).ok()?;
            let next_hop = ipv6(fields.get(4)?)?;
            let metric = u32::from_str_radix(fields.get(5)?, 16).ok()?;
            let flags = u32::from_str_radix(fields.get(8)?, 16).ok()?;
            let default_via_gateway = destination.is_unspecified()
                && prefix == 0
                && !next_hop.is_unspecified()
                && !next_hop.is_unicast_link_local()
                && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY;
            default_via_gateway.then_some((metric, next_hop))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, address)| IpAddr::V6(address))
}

/// 32 hexadecimal digits as an IPv6 address.
fn ipv6(hex: &str) -> Option<Ipv6Addr> {
    (hex.len() == 32).then_some(())?;
    u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv4_default_route_with_the_lowest_metric_wins() {
        // 192.168.1.1 (metric 100) and 10.0.0.1 (metric 600) as a little-endian kernel prints.
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            wlan0\t00000000\t0100000A\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        let expected = Ipv4Addr::from(0x0101_A8C0_u32.to_ne_bytes());
        if cfg!(target_endian = "little") {
            assert_eq!(expected, Ipv4Addr::new(192, 168, 1, 1));
        }
        assert_eq!(ipv4_default(table), Some(IpAddr::V4(expected)));
    }

    #[test]
    fn no_default_route_or_one_without_a_gateway_gives_none() {
        let header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n";
        assert_eq!(ipv4_default(header), None);
        let on_link = format!("{header}eth0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\n");
        assert_eq!(ipv4_default(&on_link), None);
        let down = format!("{header}eth0\t00000000\t0101A8C0\t0002\t0\t0\t0\t00000000\n");
        assert_eq!(ipv4_default(&down), None);
        assert_eq!(ipv4_default("garbage\nmore garbage here\n"), None);
    }

    #[test]
    fn the_ipv6_default_route_through_a_global_gateway() {
        let zero = "00000000000000000000000000000000";
        let table = format!(
            "{zero} 00 {zero} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
             {zero} 00 {zero} 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003 eth1\n\
             20010db8000000000000000000000000 40 {zero} 00 {zero} 00000100 00000001 00000000 00000001 eth1\n"
        );
        assert_eq!(ipv6_default(&table), Some("2001:db8::1".parse().expect("literal")));
        assert_eq!(ipv6_default("short line\n"), None);
    }
}
