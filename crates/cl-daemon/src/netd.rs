//! clnetd: pings every known connection continuously, so that when a peer falls silent this
//! node already knows whether it still reaches the outside world. One wake-up per ping tick:
//! replies are read at the next tick and count from their ping's send time. Replies go to
//! cldaemon as [`LocalEvent::KnownReply`], at a tick, when [`cl_core::relay`] says so;
//! cldaemon's core decides what a missing reply means.
//!
//! Two paces, chosen by cldaemon's core (cl_core::membership::KnownPace) and passed in the
//! pace file with SIGWINCH:
//! - **fast**, one ping per heartbeat interval: a reply is read one tick after its ping and
//!   counts from the ping's send time, so the newest one cldaemon has is at most two intervals
//!   old (400 ms at the default profile, 40 ms fast), fresher than the half timeout a verdict
//!   needs (500 / 50 ms). A lost ping at that moment only makes the verdict wait for the next
//!   reply (cl_core::membership's undecided wait). Fast from start, while a peer is late or
//!   down, and while anything is wrong;
//! - **slow**, twice per heartbeat timeout, while every peer is heard in time and nothing is
//!   about to be judged. The core turns the pace fast, and clnetd pings at once, when a peer
//!   has been silent for all but a quarter of the timeout, so a verdict still finds a fresh
//!   reply. Pings are the bulk of this process's CPU (the kernel charges the round trip to the
//!   sender): until stop 21 it pinged once per interval all the time.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use cl_core::membership::{KnownPace, MembershipConfig};
use cl_core::relay::Relay;
use cl_wire::msg::LocalEvent;
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::relaying::{event_sender, notify, EventSender};

/// How often each known connection is pinged: once per heartbeat interval, at most every 10 ms.
pub fn ping_interval(ctx: &Context) -> Duration {
    ctx.cluster().heartbeat.interval.max(Duration::from_millis(10))
}

/// The file cldaemon writes the ping pace to (its core's `Action::PingPace`), read by clnetd
/// at start and on SIGWINCH.
pub fn pace_file(ctx: &Context) -> PathBuf {
    ctx.paths.run_dir().join(format!("{}.ping-pace", ctx.name()))
}

/// What the pace file holds for `pace`.
pub fn pace_text(pace: KnownPace) -> &'static str {
    match pace {
        KnownPace::Slow => "slow\n",
        KnownPace::Fast => "fast\n",
    }
}

/// The pace the file asks for: slow only when it says so (missing or unreadable: fast, the
/// pace that never leaves a verdict without a fresh reply).
fn read_pace(path: &Path) -> KnownPace {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim() == "slow" => KnownPace::Slow,
        _ => KnownPace::Fast,
    }
}

/// How clnetd pings at one pace: the tick, and the relay window that keeps cldaemon's view
/// of the replies as fresh as that pace needs.
struct Pacing {
    fast: Duration,
    slow: Duration,
    freshness: Duration,
    timeout: Duration,
}

impl Pacing {
    fn new(ctx: &Context) -> Pacing {
        let timeout = ctx.cluster().heartbeat.timeout;
        let fast = ping_interval(ctx);
        Pacing {
            fast,
            slow: MembershipConfig::default_slow_pings(ctx.cluster().heartbeat.interval, timeout)
                .unwrap_or(fast)
                .max(fast),
            freshness: MembershipConfig::default_freshness(timeout),
            timeout,
        }
    }

    fn period(&self, pace: KnownPace) -> Duration {
        match pace {
            KnownPace::Slow => self.slow,
            KnownPace::Fast => self.fast,
        }
    }

    /// Fast: a verdict may come, so cldaemon always holds a reply younger than the freshness
    /// it needs. Slow: only reachability is shown, judged over a timeout and a slow period.
    fn relay_window(&self, pace: KnownPace) -> Duration {
        match pace {
            KnownPace::Slow => self.timeout,
            KnownPace::Fast => self.freshness,
        }
    }
}

/// Run clnetd until it is told to stop.
pub async fn run(ctx: Context) -> Result<()> {
    // First the handler, then the file: a change written after this is signalled and read.
    // (SIGWINCH: ignored by default, so one sent before this line does no harm.)
    let mut pace_changed =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
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
    let pinger = cl_sys::icmp::PolledPinger::new((std::process::id() & 0xffff) as u16)
        .context("cannot open a raw ICMP socket (clnetd must run as root)")?;
    let events = event_sender();
    tokio::spawn(crate::serve::monitor(None));
    let pacing = Pacing::new(&ctx);
    let pace_path = pace_file(&ctx);
    let mut pace = read_pace(&pace_path);
    // cldaemon's core needs a reply no older than the freshness at a verdict; replies go as
    // cl_core::relay decides (at most one relay per tick).
    let mut relay = Relay::new(pacing.relay_window(pace));
    info!(targets = ?targets, interval_ms = pacing.fast.as_millis() as u64, slow_ms = pacing.slow.as_millis() as u64, "pinging known connections");
    // One wake-up per ping tick, a timerfd (tokio's timer wheel took two for a 100 ms interval):
    // read the replies that arrived since the last tick, then ping again. A reply wakes nobody
    // (the socket is polled, not watched); it counts from when its ping was sent, which is never
    // later than when it arrived, so the core's view of a connection is never fresher than the
    // truth, only up to one tick staler.
    let clock = |pace| {
        cl_sys::ticker::Ticker::new(pacing.period(pace))
            .context("cannot create the ping clock (timerfd)")
    };
    let mut tick = clock(pace)?;
    let mut pings = SentPings::default();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            ticked = tick.tick() => {
                if let Err(e) = ticked {
                    cl_sys::warn_limited!("clnetd clock", "timerfd", "ping clock failed: {e}");
                    tokio::time::sleep(pacing.period(pace)).await;
                    continue;
                }
                let round = Round { pinger: &pinger, targets: &targets, events: &events, ctx: &ctx };
                round.run(&mut pings, &mut relay, pacing.period(pace)).await;
            }
            _ = pace_changed.recv() => {
                let asked = read_pace(&pace_path);
                if asked != pace {
                    pace = asked;
                    debug!(?pace, "pinging at the {pace:?} pace");
                    relay.set_window(pacing.relay_window(pace));
                    // A new clock ticks at once: turning fast pings now, as the core needs.
                    tick = clock(pace)?;
                }
            }
            _ = hangup.recv() => {
                // cldaemon starts a fresh clnetd, which reads the new known connections.
                info!("configuration changed: exiting to be restarted on it");
                return Ok(());
            }
            _ = terminate.recv() => {
                info!("stopping");
                return Ok(());
            }
        }
    }
}

/// One ping tick's work.
struct Round<'a> {
    pinger: &'a cl_sys::icmp::PolledPinger,
    targets: &'a [Ipv4Addr],
    events: &'a EventSender,
    ctx: &'a Context,
}

impl Round<'_> {
    /// Read the replies that arrived, relay them when due, ping every target again.
    async fn run(&self, pings: &mut SentPings, relay: &mut Relay<Ipv4Addr>, period: Duration) {
        let mut news = false;
        loop {
            match self.pinger.try_recv() {
                Ok(Some(reply)) => {
                    let Some(sent) = pings.sent(reply.seq) else { continue };
                    if self.targets.contains(&reply.from) {
                        news |= relay.observe(reply.from, sent, false);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    cl_sys::warn_limited!(
                        "clnetd icmp",
                        "receive error",
                        "ICMP receive failed: {e}"
                    );
                    break;
                }
            }
        }
        // Relayed at a tick, never by a timer of its own: at the last tick before the relay is
        // due (at most one tick early).
        let now = crate::relaying::now();
        if news || relay.due().is_some_and(|due| due <= now + period) {
            send_replies(relay, self.events, self.ctx).await;
        }
        let seq = pings.next(now);
        for target in self.targets {
            let _ = self.pinger.send(*target, seq);
        }
    }
}

/// Tell cldaemon of every known connection's newest reply the relay held.
async fn send_replies(relay: &mut Relay<Ipv4Addr>, events: &EventSender, ctx: &Context) {
    let mut delivered = true;
    for (target, at) in relay.take() {
        let at = crate::relaying::stamp(at);
        let event = LocalEvent::KnownReply { target: IpAddr::V4(target), at };
        delivered &= notify(events, ctx, &event).await;
    }
    if !delivered {
        // Not counted as told: the next reply goes out at once.
        relay.reset();
    }
}

/// The send times of the last pings, by sequence number: a reply counts from when its ping
/// left, and a reply to a ping older than these (or never sent) does not count.
#[derive(Default)]
struct SentPings {
    seq: u16,
    sent: std::collections::VecDeque<(u16, cl_core::time::Time)>,
}

impl SentPings {
    /// How many pings' send times are kept: replies later than this many ticks prove nothing fresh.
    const KEPT: usize = 8;

    /// The sequence number of a ping sent now, at `at`.
    fn next(&mut self, at: cl_core::time::Time) -> u16 {
        self.seq = self.seq.wrapping_add(1);
        if self.sent.len() == Self::KEPT {
            self.sent.pop_front();
        }
        self.sent.push_back((self.seq, at));
        self.seq
    }

    /// When the ping `seq` was sent, if it is one of the last few.
    fn sent(&self, seq: u16) -> Option<cl_core::time::Time> {
        self.sent.iter().find(|(s, _)| *s == seq).map(|(_, at)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_file_asks_for_slow_only_in_so_many_words() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.ping-pace");
        assert_eq!(read_pace(&path), KnownPace::Fast, "no file: fast");
        std::fs::write(&path, pace_text(KnownPace::Slow)).expect("write");
        assert_eq!(read_pace(&path), KnownPace::Slow);
        std::fs::write(&path, pace_text(KnownPace::Fast)).expect("write");
        assert_eq!(read_pace(&path), KnownPace::Fast);
        std::fs::write(&path, "sl").expect("write");
        assert_eq!(read_pace(&path), KnownPace::Fast, "anything else: fast");
    }

    #[test]
    fn a_reply_counts_from_its_pings_send_time_and_only_for_recent_pings() {
        let mut pings = SentPings::default();
        let first = pings.next(cl_core::time::Time::from_millis(0));
        for n in 1..SentPings::KEPT as u64 {
            pings.next(cl_core::time::Time::from_millis(n * 100));
        }
        assert_eq!(pings.sent(first), Some(cl_core::time::Time::from_millis(0)));
        let last = pings.next(cl_core::time::Time::from_millis(800));
        assert_eq!(pings.sent(first), None, "too old: forgotten");
        assert_eq!(pings.sent(last), Some(cl_core::time::Time::from_millis(800)));
        assert_eq!(pings.sent(last.wrapping_add(1)), None, "never sent");
    }
}
