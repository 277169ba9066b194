//! clnetd: pings every known connection continuously, so that when a peer falls silent this
//! node already knows whether it still reaches the outside world. Replies go to cldaemon as
//! [`LocalEvent::KnownReply`] when [`cl_core::relay`] says so (about twice per freshness);
//! cldaemon's core decides what a missing reply means.
//! (VIPs and link watching arrive with the applications work.)

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context as _, Result};
use cl_core::membership::MembershipConfig;
use cl_core::relay::Relay;
use cl_wire::msg::LocalEvent;
use tracing::{info, warn};

use crate::context::Context;
use crate::heartbeat::{event_sender, notify};

/// How often each known connection is pinged: twice per heartbeat interval, at most every 10 ms.
pub fn ping_interval(ctx: &Context) -> Duration {
    (ctx.cluster().heartbeat.interval / 2).max(Duration::from_millis(10))
}

/// Run clnetd until it is told to stop.
pub async fn run(ctx: Context) -> Result<()> {
    let targets: Vec<Ipv4Addr> = ctx
        .cluster()
        .known_connections
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(v6) => {
                warn!(target = %v6, "IPv6 known connections are not pinged yet");
                None
            }
        })
        .collect();
    if targets.is_empty() {
        warn!("no known connections configured: partition detection is impossible");
    }
    let pinger = cl_sys::icmp::Pinger::new((std::process::id() & 0xffff) as u16)
        .context("cannot open a raw ICMP socket (clnetd must run as root)")?;
    let events = event_sender()?;
    tokio::spawn(crate::serve::monitor(None));
    let interval = ping_interval(&ctx);
    // cldaemon's core needs a reply no older than the freshness; forwarding each reply (two per
    // heartbeat interval) woke cldaemon ten times a second for news it already had. Replies go
    // as cl_core::relay decides, stamped with the time they arrived.
    let mut relay =
        Relay::new(MembershipConfig::default_freshness(ctx.cluster().heartbeat.timeout));
    info!(targets = ?targets, interval_ms = interval.as_millis() as u64, "pinging known connections");
    // One task sends and receives: the ping clock is a branch of the loop, not a task of its own
    // waking this one.
    // A timerfd: one wake-up per ping (tokio's timer wheel took two for a 100 ms interval).
    let mut tick =
        cl_sys::ticker::Ticker::new(interval).context("cannot create the ping clock (timerfd)")?;
    let mut seq: u16 = 0;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            ticked = tick.tick() => {
                if let Err(e) = ticked {
                    cl_sys::warn_limited!("clnetd clock", "timerfd", "ping clock failed: {e}");
                    tokio::time::sleep(interval).await;
                    continue;
                }
                seq = seq.wrapping_add(1);
                for target in &targets {
                    let _ = pinger.send(*target, seq).await;
                }
            }
            _ = hangup.recv() => {
                // cldaemon starts a fresh clnetd, which reads the new known connections.
                info!("configuration changed: exiting to be restarted on it");
                return Ok(());
            }
            reply = pinger.recv() => match reply {
                Ok(reply) => {
                    if !targets.contains(&reply.from) {
                        continue;
                    }
                    if relay.observe(reply.from, crate::relaying::now(), false) {
                        send_replies(&mut relay, &events, &ctx).await;
                    }
                }
                Err(e) => {
                    cl_sys::warn_limited!("clnetd icmp", "receive error", "ICMP receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = crate::relaying::until(relay.due()) => send_replies(&mut relay, &events, &ctx).await,
            _ = terminate.recv() => {
                info!("stopping");
                return Ok(());
            }
        }
    }
}

/// Tell cldaemon of every known connection's newest reply the relay held.
async fn send_replies(
    relay: &mut Relay<Ipv4Addr>,
    events: &tokio::net::UnixDatagram,
    ctx: &Context,
) {
    for (target, at) in relay.take() {
        let at = crate::relaying::stamp(at);
        notify(events, ctx, &LocalEvent::KnownReply { target: IpAddr::V4(target), at }).await;
    }
}
