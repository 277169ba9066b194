//! What DRBD passes to a handler (`fence-peer`, `split-brain`, `after-resync-target`, …).
//!
//! The kernel runs `drbdadm <handler> minor-N` with `DRBD_PEER_AF` and `DRBD_PEER_ADDRESS`;
//! drbdadm (8.4 backend, `adm_khelper`) adds `DRBD_RESOURCE`, `DRBD_CONF`, the peer's
//! `DRBD_PEERS` (host names; `DRBD_PEER` is its deprecated single form) and `DRBD_MINOR`, and runs
//! the configured command with `/bin/sh -c`. Per-volume handlers (`split-brain`,
//! `after-resync-target`) also get `DRBD_VOLUME` and `DRBD_LL_DISK`; resource-wide ones
//! (`fence-peer`) get `DRBD_MINOR` as a space-separated list of the resource's minors.
//! Recorded from a fence-peer call on 8.4.11: `DRBD_RESOURCE=r0 DRBD_MINOR=0
//! DRBD_PEER_AF=ipv4 DRBD_PEER_ADDRESS=192.168.77.2 DRBD_PEERS=vm2 DRBD_PEER=vm2
//! DRBD_CONF=/etc/drbd.conf`.

use std::net::IpAddr;
use std::path::PathBuf;

/// What DRBD told a handler.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandlerContext {
    /// `DRBD_RESOURCE`: the resource.
    pub resource: String,
    /// `DRBD_MINOR`: the minor(s) concerned.
    pub minors: Vec<u32>,
    /// `DRBD_VOLUME`: the volume, for per-volume handlers.
    pub volume: Option<u32>,
    /// `DRBD_LL_DISK`: the backing device, for per-volume handlers.
    pub backing_disk: Option<PathBuf>,
    /// `DRBD_PEER_ADDRESS`: the peer's replication address.
    pub peer_address: Option<IpAddr>,
    /// `DRBD_PEER_AF`: its address family (`ipv4`, `ipv6`).
    pub peer_af: Option<String>,
    /// `DRBD_PEERS` (or the older `DRBD_PEER`): the peer's host names.
    pub peers: Vec<String>,
    /// `DRBD_CONF`: the configuration file drbdadm read.
    pub conf: Option<PathBuf>,
}

/// What is missing or malformed in a handler's environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DRBD handler environment: {0} (is this run by DRBD?)")]
pub struct HandlerEnvError(pub String);

/// The handler's context from this process's environment.
pub fn handler_env() -> Result<HandlerContext, HandlerEnvError> {
    handler_context(
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
    )
}

/// The handler's context from these variables (the environment, or a test's).
pub fn handler_context(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<HandlerContext, HandlerEnvError> {
    let mut ctx = HandlerContext::default();
    let mut peer = None;
    for (key, value) in vars {
        let value = value.trim().to_string();
        match key.as_str() {
            "DRBD_RESOURCE" => ctx.resource = value,
            "DRBD_MINOR" => {
                ctx.minors =
                    value.split_whitespace().map(|m| m.parse()).collect::<Result<_, _>>().map_err(
                        |_| {
                            HandlerEnvError(format!("DRBD_MINOR={value:?} is not a list of minors"))
                        },
                    )?;
            }
            "DRBD_VOLUME" => {
                ctx.volume = Some(value.parse().map_err(|_| {
                    HandlerEnvError(format!("DRBD_VOLUME={value:?} is not a number"))
                })?)
            }
            "DRBD_LL_DISK" if !value.is_empty() => ctx.backing_disk = Some(value.into()),
            "DRBD_PEER_ADDRESS" if !value.is_empty() => {
                let bare = value.trim_start_matches('[').trim_end_matches(']');
                ctx.peer_address = Some(bare.parse().map_err(|_| {
                    HandlerEnvError(format!("DRBD_PEER_ADDRESS={value:?} is not an IP address"))
                })?);
            }
            "DRBD_PEER_AF" if !value.is_empty() => ctx.peer_af = Some(value),
            "DRBD_PEERS" => ctx.peers = value.split_whitespace().map(str::to_string).collect(),
            "DRBD_PEER" if !value.is_empty() => peer = Some(value),
            "DRBD_CONF" if !value.is_empty() => ctx.conf = Some(value.into()),
            _ => {}
        }
    }
    if ctx.resource.is_empty() {
        return Err(HandlerEnvError("DRBD_RESOURCE is not set".into()));
    }
    if ctx.peers.is_empty() {
        ctx.peers.extend(peer);
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_recorded_fence_peer_call() {
        let ctx = handler_context(vars(&[
            ("DRBD_PEER_ADDRESS", "192.168.77.2"),
            ("DRBD_CONF", "/etc/drbd.conf"),
            ("DRBD_PEER_AF", "ipv4"),
            ("DRBD_PEER", "vm2"),
            ("DRBD_RESOURCE", "r0"),
            ("DRBD_PEERS", "vm2"),
            ("DRBD_MINOR", "0"),
            ("DRBD_DONT_WARN_ON_VERSION_MISMATCH", "1"),
            ("PATH", "/sbin:/bin"),
        ]))
        .expect("valid");
        assert_eq!(
            ctx,
            HandlerContext {
                resource: "r0".into(),
                minors: vec![0],
                volume: None,
                backing_disk: None,
                peer_address: Some("192.168.77.2".parse().expect("ip")),
                peer_af: Some("ipv4".into()),
                peers: vec!["vm2".into()],
                conf: Some("/etc/drbd.conf".into()),
            }
        );
    }

    #[test]
    fn per_volume_handlers_and_ipv6() {
        let ctx = handler_context(vars(&[
            ("DRBD_RESOURCE", "web"),
            ("DRBD_MINOR", "3"),
            ("DRBD_VOLUME", "0"),
            ("DRBD_LL_DISK", "/dev/vg0/web"),
            ("DRBD_PEER_ADDRESS", "fd00::2"),
            ("DRBD_PEER", "beta"),
        ]))
        .expect("valid");
        assert_eq!((ctx.volume, ctx.minors), (Some(0), vec![3]));
        assert_eq!(ctx.backing_disk, Some(PathBuf::from("/dev/vg0/web")));
        assert_eq!(ctx.peer_address, Some("fd00::2".parse().expect("ip")));
        assert_eq!(ctx.peers, vec!["beta".to_string()], "DRBD_PEER when DRBD_PEERS is absent");
    }

    #[test]
    fn a_missing_resource_or_a_bad_value_is_an_error() {
        let err = handler_context(vars(&[("DRBD_MINOR", "0")])).expect_err("no resource");
        assert!(err.to_string().contains("DRBD_RESOURCE"), "{err}");
        let err = handler_context(vars(&[("DRBD_RESOURCE", "r0"), ("DRBD_MINOR", "zero")]))
            .expect_err("bad minor");
        assert!(err.to_string().contains("DRBD_MINOR"), "{err}");
        let ctx = handler_context(vars(&[("DRBD_RESOURCE", "r0"), ("DRBD_MINOR", "1 2")]))
            .expect("a list");
        assert_eq!(ctx.minors, vec![1, 2]);
    }
}
