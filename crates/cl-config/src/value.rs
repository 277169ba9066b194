//! Parsing single values (durations, switches, addresses, names) with messages that say the rule.

use std::net::IpAddr;
use std::time::Duration;

use crate::diag::Diagnostics;
use crate::xml::{shorten, Spanned};

/// Parse a duration written with a unit: `250ms`, `2s`, `1.5s`, `5m`.
pub fn duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(format!(
            "`{}` is not a duration; write a number and a unit, e.g. 500ms or 2s",
            shorten(text)
        ));
    }
    let value: f64 = number.parse().map_err(|_| {
        format!(
            "`{}` is not a duration; write a number and a unit, e.g. 500ms or 2s",
            shorten(text)
        )
    })?;
    let millis_per_unit = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" | "min" => 60_000.0,
        "" => {
            return Err(format!(
                "`{}` has no unit; write {number}ms, {number}s or {number}m",
                shorten(text)
            ))
        }
        other => {
            return Err(format!(
                "unknown unit `{}` in `{}`; use ms, s or m",
                shorten(other),
                shorten(text)
            ))
        }
    };
    let millis = value * millis_per_unit;
    if !millis.is_finite() || millis > 86_400_000.0 {
        return Err(format!("`{}` is longer than a day", shorten(text)));
    }
    Ok(Duration::from_micros((millis * 1000.0).round() as u64))
}

/// Render a duration the way it is written in the files.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parse a yes/no switch (`yes`, `no`, `true`, `false`, `1`, `0`, `on`, `off`).
pub fn switch(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" => Ok(true),
        "no" | "false" | "0" | "off" => Ok(false),
        _ => Err(format!("`{}` is not yes or no", shorten(text))),
    }
}

/// Parse an IPv4 or IPv6 address.
pub fn ip(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| format!("`{}` is not an IPv4 or IPv6 address", shorten(text)))
}

/// Parse a prefix length that fits `address`.
pub fn prefix(text: &str, address: Option<IpAddr>) -> Result<u8, String> {
    let max = match address {
        Some(IpAddr::V6(_)) => 128,
        _ => 32,
    };
    match text.parse::<u8>() {
        Ok(p) if p <= max && p > 0 => Ok(p),
        _ => Err(format!("`{}` must be a prefix length from 1 to {max}", shorten(text))),
    }
}

/// Turn a dotted IPv4 netmask into a prefix length (contiguous masks only).
pub fn netmask(text: &str) -> Result<u8, String> {
    let mask: std::net::Ipv4Addr = text.parse().map_err(|_| {
        format!("`{}` is not a dotted IPv4 netmask (e.g. 255.255.255.0)", shorten(text))
    })?;
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 || ones == 0 {
        return Err(format!(
            "`{}` is not a valid netmask: its one bits must be contiguous (e.g. 255.255.255.0)",
            shorten(text)
        ));
    }
    Ok(ones as u8)
}

/// Check a network interface name as the kernel accepts it (`eth0`, `eth0:1`, `bond0.100`).
pub fn interface(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 15 || text.contains(['/', ' ']) {
        Err(format!(
            "`{}` is not an interface name (1 to 15 characters, no `/` or spaces)",
            shorten(text)
        ))
    } else {
        Ok(text.to_string())
    }
}

/// The network address of `address`/`prefix` (host bits cleared), for messages.
pub fn network_of(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(a) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask =
                if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Why `address` cannot be a host's address on the network `address`/`prefix`: the
/// unspecified, loopback or a multicast address, or the network or broadcast address of its
/// subnet (IPv4 up to /30; for IPv6 the all-zeros subnet-router anycast address up to /126).
/// `None` when it is a usable host address.
pub fn host_address_problem(address: IpAddr, prefix: u8) -> Option<String> {
    if address.is_unspecified() {
        return Some(format!("{address} is the unspecified address, not a host's address"));
    }
    if address.is_loopback() {
        return Some(format!("{address} is a loopback address, which never leaves the machine"));
    }
    if address.is_multicast() {
        return Some(format!("{address} is a multicast address, not a host's address"));
    }
    let network = network_of(address, prefix);
    match address {
        IpAddr::V4(a) => {
            if a.is_broadcast() {
                return Some(format!("{address} is the broadcast address, not a host's address"));
            }
            if prefix <= 30 {
                let host_bits = 32 - u32::from(prefix);
                let broadcast = u32::from(a) | (u32::MAX >> (32 - host_bits));
                if address == network {
                    return Some(format!(
                        "{address} is the network address of {network}/{prefix}, not a host's address"
                    ));
                }
                if u32::from(a) == broadcast {
                    return Some(format!(
                        "{address} is the broadcast address of {network}/{prefix}, not a host's address"
                    ));
                }
            }
        }
        IpAddr::V6(_) => {
            if prefix <= 126 && address == network {
                return Some(format!(
                    "{address} is the subnet-router anycast address of {network}/{prefix} (all host bits zero), not a host's address"
                ));
            }
        }
    }
    None
}

/// The netmask attribute is for IPv4 only: an IPv6 address needs a prefix length.
pub fn netmask_for(text: &str, address: Option<IpAddr>) -> Result<u8, String> {
    if let Some(IpAddr::V6(_)) = address {
        return Err(format!(
            "`{}` is an IPv4 netmask but the address is IPv6; give prefix=\"64\" (the prefix length) instead",
            shorten(text)
        ));
    }
    netmask(text)
}

/// Parse a TCP/UDP port number.
pub fn port(text: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("port `{}` must be a number from 1 to 65535", shorten(text))),
    }
}

/// Parse a whole number within `range`.
pub fn count(text: &str, min: u32, max: u32) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("`{}` must be a whole number from {min} to {max}", shorten(text))),
    }
}

/// Check a name used in file names and process names: letters, digits, `-`, `_`, `.`.
pub fn name(text: &str, what: &str) -> Result<String, String> {
    let ok_chars = text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if text.is_empty() || text.len() > 32 || !ok_chars || text.starts_with(['.', '-']) {
        return Err(format!(
            "{what} `{}` must be 1 to 32 letters, digits, `-`, `_` or `.`, not starting with `.` or `-`",
            shorten(text)
        ));
    }
    Ok(text.to_string())
}

/// True when `a` lies inside the network `net`/`prefix`.
pub fn in_subnet(a: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask =
                if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// True when two networks share any address.
pub fn subnets_overlap(a: IpAddr, a_prefix: u8, b: IpAddr, b_prefix: u8) -> bool {
    let shorter = a_prefix.min(b_prefix);
    in_subnet(a, b, shorter) && in_subnet(b, a, shorter)
}

/// Parse a size in bytes written with a binary unit: `K`, `M`, `G`, `T` (or `KiB`, `MiB`,
/// `GiB`, `TiB`, any case), e.g. `256M`, `1G`. A number without a unit is an error (LVM would
/// read it as MiB, DRBD as KiB), and so are fractions and decimal units (`MB`).
pub fn bytes(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(format!(
            "`{}` is not a size; write a whole number and a unit, e.g. 256M or 2G",
            shorten(text)
        ));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "" => {
            return Err(format!(
            "`{}` has no unit; write {number}K, {number}M, {number}G or {number}T (binary units)",
            shorten(text)
        ))
        }
        "kb" | "mb" | "gb" | "tb" => {
            return Err(format!(
            "`{}`: use the binary units K, M, G, T (or KiB, MiB, GiB, TiB); `{unit}` is ambiguous",
            shorten(text)
        ))
        }
        other if other.starts_with('.') || other.starts_with(',') => {
            return Err(format!(
                "`{}` must be a whole number; use a smaller unit (e.g. 1536M, not 1.5G)",
                shorten(text)
            ))
        }
        _ => {
            return Err(format!(
                "unknown unit `{}` in `{}`; use K, M, G or T",
                shorten(unit),
                shorten(text)
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("`{}` is too large", shorten(text)))
}

/// Render a byte count the way it is written in the files (the largest exact binary unit).
pub fn show_bytes(n: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n > 0 && n % (1u64 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// An absolute path without `..` (device and mount point attributes).
pub fn absolute_path(text: &str) -> Result<std::path::PathBuf, String> {
    if text.starts_with('/') && !text.split('/').any(|part| part == "..") {
        Ok(std::path::PathBuf::from(text))
    } else if text.starts_with('/') {
        Err(format!("`{}` must not contain `..`", shorten(text)))
    } else {
        Err(format!("`{}` must be an absolute path (starting with /)", shorten(text)))
    }
}

/// A filesystem type: 1 to 16 letters, digits or `.` (`ext4`, `xfs`, `fuse.sshfs`).
pub fn fs_type(text: &str) -> Result<String, String> {
    if !text.is_empty()
        && text.len() <= 16
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
    {
        Ok(text.to_string())
    } else {
        Err(format!("`{}` is not a filesystem type (e.g. ext4, xfs)", shorten(text)))
    }
}

/// Apply `parse` to a spanned value, reporting a failure as `<context>: <message>` at its place.
pub fn read<T>(
    diags: &mut Diagnostics<'_>,
    context: &str,
    value: Spanned<'_>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    match parse(value.value) {
        Ok(v) => Some(v),
        Err(message) => {
            diags.error(value.at, format!("{context}: {message}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert!(duration("250").expect_err("no unit").contains("has no unit"));
        assert!(duration("fast").is_err());
        assert!(duration("5h").expect_err("hours").contains("unknown unit"));
    }

    #[test]
    fn sizes_need_binary_units() {
        assert_eq!(bytes("256M"), Ok(256 << 20));
        assert_eq!(bytes("256MiB"), Ok(256 << 20));
        assert_eq!(bytes("1 g"), Ok(1 << 30));
        assert_eq!(bytes("2T"), Ok(2 << 40));
        assert_eq!(bytes("40K"), Ok(40 << 10));
        assert!(bytes("256").expect_err("no unit").contains("has no unit"));
        assert!(bytes("100MB").expect_err("decimal").contains("binary units"));
        assert!(bytes("1.5G").expect_err("fraction").contains("whole number"));
        assert!(bytes("5P").expect_err("unit").contains("unknown unit"));
        assert!(bytes("M").is_err());
        assert!(bytes("-5M").is_err());
        assert!(bytes("99999999999999999999M").expect_err("huge").contains("too large"));
        assert!(bytes("17179869184T").expect_err("overflow").contains("too large"));
        assert_eq!(show_bytes(256 << 20), "256M");
        assert_eq!(show_bytes(1536 << 20), "1536M");
        assert_eq!(show_bytes(8 << 30), "8G");
        assert_eq!(show_bytes(1000), "1000 bytes");
    }

    #[test]
    fn netmasks_become_prefixes() {
        assert_eq!(netmask("255.255.255.0"), Ok(24));
        assert_eq!(netmask("255.255.255.255"), Ok(32));
        assert!(netmask("255.0.255.0").is_err());
        assert!(netmask("0.0.0.0").is_err());
    }

    #[test]
    fn network_broadcast_and_special_addresses_are_not_host_addresses() {
        let ip = |t: &str| t.parse::<IpAddr>().expect("address");
        assert_eq!(host_address_problem(ip("10.0.0.5"), 24), None);
        assert!(host_address_problem(ip("10.0.0.0"), 24).is_some_and(|m| m.contains("network")));
        assert!(host_address_problem(ip("10.0.0.255"), 24).is_some_and(|m| m.contains("broadcast")));
        assert!(host_address_problem(ip("224.0.0.1"), 24).is_some_and(|m| m.contains("multicast")));
        assert!(host_address_problem(ip("0.0.0.0"), 8).is_some());
        assert!(host_address_problem(ip("127.0.0.1"), 8).is_some_and(|m| m.contains("loopback")));
        assert!(host_address_problem(ip("255.255.255.255"), 32).is_some());
        // /31 and /32 have no network or broadcast address (RFC 3021).
        assert_eq!(host_address_problem(ip("10.0.0.0"), 31), None);
        assert_eq!(host_address_problem(ip("10.0.0.1"), 31), None);
        assert_eq!(host_address_problem(ip("10.0.0.7"), 32), None);
        assert!(host_address_problem(ip("fd00::"), 64).is_some());
        assert!(host_address_problem(ip("ff02::1"), 64).is_some_and(|m| m.contains("multicast")));
        assert_eq!(host_address_problem(ip("fd00::1"), 64), None);
        assert!(netmask_for("255.255.255.0", Some(ip("fd00::1"))).is_err());
        assert_eq!(netmask_for("255.255.255.0", Some(ip("10.0.0.1"))), Ok(24));
    }

    #[test]
    fn subnet_arithmetic() {
        let a: IpAddr = "192.168.1.10".parse().expect("literal");
        let n: IpAddr = "192.168.1.0".parse().expect("literal");
        assert!(in_subnet(a, n, 24));
        assert!(!in_subnet(a, "192.168.2.0".parse().expect("literal"), 24));
        assert!(subnets_overlap(n, 24, "192.168.0.0".parse().expect("literal"), 16));
        let v6: IpAddr = "2001:db8::10".parse().expect("literal");
        assert!(in_subnet(v6, "2001:db8::".parse().expect("literal"), 64));
        assert!(!in_subnet(v6, n, 0));
        assert_eq!(network_of(a, 24), n);
        assert_eq!(network_of(v6, 64), "2001:db8::".parse::<IpAddr>().expect("literal"));
    }
}
