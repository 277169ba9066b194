//! cllockd: cluster-wide named locks with owners and leases, held in both nodes' cllockd.
//!
//! ## Clients
//!
//! Local clients (`cllock`, and clstartapp/clhaltapp/clswitchapp, which take `app:<name>`) talk
//! to their node's cllockd over the root-only Unix socket `run/cluster/cllockd-<cluster>.sock`,
//! one JSON line each way ([`cl_wire::lock::LockRequest`], [`cl_wire::lock::LockResponse`]):
//! `Acquire{name, owner, wait}` is answered `Granted`, `Held{by, since}` (after waiting up to
//! `wait` seconds) or `Error`. A granted lock belongs to the connection: closing it, or the
//! client dying, releases it. If the lock is lost (below), cllockd sends `Lost` and closes the
//! connection; `cllock` then stops its command. The client side is [`crate::lockclient`].
//!
//! ## Between the nodes
//!
//! Each request is one authenticated frame (kind [`cl_wire::Kind::Lock`], one sender per
//! cllockd run, replies echo the request id) on a fresh TCP connection to the peer's `cllockd`
//! port, trying each of its addresses for [`PEER_TIMEOUT`]. Frames that fail authentication,
//! come from another node or replay an old one are dropped, counted (`clstat --verbose`,
//! `counters.cllockd`) and logged at most once per 10 s. A lock is granted only when both
//! nodes agree:
//!
//! 1. The asking node marks the name *pending* (refusing at once if it is held here, pending
//!    here or reserved for the peer) and sends `Reserve{name, token, owner}`.
//! 2. The peer refuses if it holds the name or has a pending request of its own that wins the
//!    tie-break (the node whose name sorts first wins); otherwise it records a *reservation* for
//!    the asker with a lease and answers `Reserved`. Reservations of a lost tie-break replace
//!    the loser's pending request, so both nodes reach the same verdict.
//! 3. On `Reserved` the asker grants the lock. Every [`LockTable::renew_interval`] it sends
//!    `Renew` with all its holds; the peer extends (or re-creates, after a cllockd restart)
//!    their reservations. On release it sends `Release{token}`; a lost Release only delays the
//!    name by one lease. Tokens are unique per grant, so late or reordered messages cannot
//!    touch a newer grant; released tokens are remembered for a lease so that a late Reserve
//!    or Renew cannot revive them.
//!
//! A reservation that is not renewed within the lease ([`lease`]: 15 s, or three times the
//! heartbeat timeout plus the take-over delay if that is longer) is dropped. That is what
//! frees a dead node's locks. The lease must exceed the heartbeat timeout plus the take-over
//! delay. Then, by the time a dead node's locks are free, the survivor's membership has
//! declared the node down and taken its applications over, and a node that is merely isolated
//! has stopped its applications.
//!
//! ## When the peer does not answer
//!
//! No node ever grants on its own while the peer answers. When the peer's cllockd cannot be
//! reached, a node grants alone only if all of these hold:
//!
//! - it holds no unexpired reservation for the peer on that name;
//! - its cldaemon says the peer is `down` (or never heard: `joining`) and this node is
//!   `connected`: exactly the nodes that would take over the peer's applications;
//! - it has heard nothing from the peer's cllockd for a whole lease, counted from its own
//!   start too. A restarted cllockd therefore learns the peer's holds from the peer's renewals
//!   before it decides alone.
//!
//! The only exception is a peer whose cllockd said `Bye` (it stopped, so it holds and grants
//! nothing), until it is heard again. Otherwise the client's request waits, or fails with
//! "cannot be reached". So a second holder can only appear in the case where the cluster itself
//! would run an application twice: a partition that both sides survive (docs/cluster.md). A
//! frozen node that thaws is the other case. When renewals show two holders, the grant made
//! alone wins (both made alone: the first node name). The other holder is told `Lost`, and
//! `cllock` stops its command. If cllockd stops or restarts, its locks go with it (the clients
//! see their connection close). A configuration reload (SIGHUP) keeps them unless the key,
//! the port, the nodes' addresses or the lease changed.

mod client;
mod peer;
mod renew;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use cl_core::locks::LockTable;
use cl_core::Time;
use cl_wire::{Daemon, Receiver, Sender};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{oneshot, Notify};
use tracing::{info, warn};

use crate::context::Context;

pub use cl_core::locks::MIN_LEASE;

/// How long one attempt to reach the peer's cllockd (one address) may take.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a waiting request tries again (sooner when a lock is released here).
const RETRY: Duration = Duration::from_millis(250);
/// The longest wait a client may ask for.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// How often the frame counters go to cldaemon even when unchanged.
const COUNTERS_REFRESH: Duration = Duration::from_secs(60);
/// The longest request line a client may send.
const MAX_LINE: u64 = 4096;

/// The lease of this cluster's reservations ([`cl_core::locks::lease`]).
pub fn lease(ctx: &Context) -> Duration {
    cl_core::locks::lease(ctx.cluster().heartbeat.timeout, crate::appctl::takeover_delay(ctx))
}

/// Seconds since 1970.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the settings cllockd runs on look like, to tell whether a reload touches them.
fn settings(ctx: &Context) -> String {
    let nodes: Vec<String> = ctx
        .cluster()
        .nodes
        .iter()
        .map(|n| {
            let addresses: Vec<String> = n.networks.iter().map(|x| x.address.to_string()).collect();
            format!("{}={}", n.name, addresses.join(","))
        })
        .collect();
    format!(
        "{} {} {} {:?} {}",
        ctx.key.fingerprint(),
        ctx.cluster().ports.cllockd,
        nodes.join(" "),
        lease(ctx),
        ctx.local
    )
}

/// The local socket of cllockd for `ctx`'s cluster.
fn socket(ctx: &Context) -> std::path::PathBuf {
    crate::lockclient::socket_path(&ctx.paths, ctx.name())
}

/// One cllockd: the lock table, the frames to and from the peer, and the clients holding locks.
struct Lockd {
    ctx: Context,
    peer: String,
    origin: Instant,
    table: Mutex<LockTable>,
    sender: Mutex<Sender>,
    /// The peer's requests.
    requests: Mutex<Receiver>,
    /// Where request ids and grant tokens come from when the epoch counter cannot be written
    /// (they are taken from it, so unique and higher than any earlier run's).
    next: AtomicU64,
    /// The peer address that answered last.
    preferred: AtomicUsize,
    /// The clients holding locks, by token: told when their lock is lost.
    holders: Mutex<HashMap<u64, oneshot::Sender<String>>>,
    /// Woken when a lock may have become free.
    changed: Notify,
    /// Woken when a frame from the peer was taken in (its counters may have changed).
    frames: Notify,
    /// Woken when a lock was granted here: the renewals start (none run while nothing is held).
    held: Notify,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Lockd {
    fn new(ctx: Context) -> Result<Lockd> {
        let Some(peer) = ctx.peers().into_iter().next() else {
            bail!("the cluster has no other node");
        };
        let epoch = crate::epoch::next()?;
        let lease = lease(&ctx);
        Ok(Lockd {
            table: Mutex::new(LockTable::new(&ctx.local, &peer, lease, Time::ZERO)),
            sender: Mutex::new(Sender::new(ctx.key.clone(), ctx.name(), &ctx.local, epoch)),
            requests: Mutex::new(Receiver::new(ctx.key.clone(), ctx.name())),
            next: AtomicU64::new(epoch),
            preferred: AtomicUsize::new(0),
            holders: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            frames: Notify::new(),
            held: Notify::new(),
            origin: Instant::now(),
            peer,
            ctx,
        })
    }

    fn now(&self) -> Time {
        Time::ZERO + self.origin.elapsed()
    }

    fn table(&self) -> MutexGuard<'_, LockTable> {
        locked(&self.table)
    }

    fn fresh(&self) -> u64 {
        match crate::epoch::next() {
            Ok(id) => {
                self.next.fetch_max(id + 1, Ordering::Relaxed);
                id
            }
            Err(e) => {
                cl_sys::warn_limited!(
                    Daemon::Cllockd.name(),
                    "epoch counter",
                    "cannot take an id from the epoch counter, counting on: {e:#}"
                );
                self.next.fetch_add(1, Ordering::Relaxed)
            }
        }
    }
}

/// Run cllockd until it is told to stop.
pub async fn run(ctx: Context) -> Result<()> {
    let port = ctx.cluster().ports.cllockd;
    let mut listeners = Vec::new();
    for (network, address) in ctx.local_addresses() {
        let address = SocketAddr::new(address, port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} ({network})"))?;
        info!(%address, "listening");
        listeners.push(listener);
    }
    let path = socket(&ctx);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&path);
    let local =
        UnixListener::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let lockd = Arc::new(Lockd::new(ctx.clone())?);
    info!(
        peer = %lockd.peer,
        lease = ?lockd.table().lease(),
        "serving locks on {}; a lock is granted only with {}'s agreement, or alone once {} has been down and silent for a lease",
        path.display(),
        lockd.peer,
        lockd.peer
    );
    for listener in listeners {
        let lockd = lockd.clone();
        let name = listener.local_addr().map(|a| format!("peers {a}")).unwrap_or("peers".into());
        let stats =
            crate::serve::Listener::register(Daemon::Cllockd, name, crate::serve::PEER_LIMITS);
        tokio::spawn(crate::serve::serve(listener, stats, move |stream, from, conn| {
            lockd.clone().serve_peer(stream, from, conn)
        }));
    }
    {
        let lockd = lockd.clone();
        let stats = crate::serve::Listener::register(
            Daemon::Cllockd,
            "clients",
            crate::serve::LOCAL_LIMITS,
        );
        tokio::spawn(crate::serve::serve(local, stats, move |stream, (), conn| {
            lockd.clone().serve_client(stream, conn)
        }));
    }
    tokio::spawn(crate::serve::monitor(Some((ctx.clone(), Daemon::Cllockd))));
    tokio::spawn(lockd.clone().renew_loop());
    tokio::spawn(lockd.clone().report_counters());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => {
                info!("stopping; {} lock(s) held here are released", lockd.table().held_here());
                break;
            }
            _ = hangup.recv() => {
                match Context::load(ctx.paths.clone()) {
                    Ok(new) if settings(&new) == settings(&ctx) => {
                        info!("configuration changed; nothing cllockd uses did: locks are kept");
                    }
                    Ok(_) => {
                        // cldaemon starts a fresh cllockd on the new configuration.
                        info!("configuration changed: exiting to be restarted on it; {} lock(s) held here are released", lockd.table().held_here());
                        break;
                    }
                    Err(e) => warn!("configuration changed but cannot be read: {e:#}; keeping the old one"),
                }
            }
        }
    }
    lockd.bye().await;
    let _ = std::fs::remove_file(&path);
    Ok(())
}
