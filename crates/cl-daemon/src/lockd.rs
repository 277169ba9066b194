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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use cl_wire::lock::{
    check_name, clean_owner, format_time, Conflict, LockRequest, LockResponse, PeerHold,
    PeerLockAnswer, PeerLockMsg, PeerLockReply, PeerLockRequest,
};
use cl_wire::msg::{AdminRequest, AdminResponse, LocalEvent};
use cl_wire::{Kind, Receiver, Sender};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{oneshot, Notify};
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::transport::admin_request;

/// The shortest lease.
pub const MIN_LEASE: Duration = Duration::from_secs(15);
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

/// The lease of this cluster's reservations (see the module documentation).
pub fn lease(ctx: &Context) -> Duration {
    let takeover = ctx.cluster().heartbeat.timeout + crate::appctl::takeover_delay(ctx);
    (takeover * 3).max(MIN_LEASE)
}

/// Seconds since 1970.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The lock table: pure, with the time passed in.

/// Who holds (or is about to hold) a lock, as shown to whoever finds it taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's description (`clswitchapp on node1 (pid 42)`).
    pub by: String,
    /// Since when (seconds since 1970).
    pub since: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Granted to a local client.
    Held { token: u64, owner: String, since: u64, alone: bool },
    /// A local client asked; the peer's answer is awaited.
    Pending { token: u64, owner: String, since: u64 },
    /// Reserved for the peer's holder (or its pending request) until `expires`.
    Reserved { token: u64, owner: String, since: u64, expires: Duration },
}

impl Entry {
    fn holder(&self) -> Holder {
        let (Entry::Held { owner, since, .. }
        | Entry::Pending { owner, since, .. }
        | Entry::Reserved { owner, since, .. }) = self;
        Holder { by: owner.clone(), since: *since }
    }
}

/// What a local request needs after [`LockTable::begin_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Held, pending or reserved: not now.
    Busy(Holder),
    /// Now pending here: ask the peer to reserve it.
    AskPeer,
}

/// What the peer said to a `Reserve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAnswer {
    /// Reserved for this node's request.
    Reserved,
    /// Held (or pending and winning) on the peer.
    Refused(Holder),
    /// No answer.
    Unreachable,
}

/// The end of a local request, from [`LockTable::finish_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The client holds the lock; `alone` when granted without the peer.
    Granted {
        /// Granted without the peer's agreement.
        alone: bool,
    },
    /// Someone else holds it.
    Busy(Holder),
    /// The peer reserved the name for a request that no longer stands here: release that
    /// reservation. The holder here, if any, is what the client is told.
    ReleasePeer(Option<Holder>),
    /// The peer did not answer and may not be counted out: nothing can be granted safely.
    Unavailable,
}

/// A local hold that lost to one on the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// Lock name.
    pub name: String,
    /// The local grant's token.
    pub token: u64,
    /// The winning holder on the peer.
    pub by: String,
    /// Since when.
    pub since: u64,
}

/// One node's view of every named lock.
#[derive(Debug, Clone)]
pub struct LockTable {
    local: String,
    peer: String,
    lease: Duration,
    started: Duration,
    peer_heard: Option<Duration>,
    peer_gone: bool,
    locks: BTreeMap<String, Entry>,
    /// Tokens the peer released or abandoned, until a lease has passed.
    released: BTreeMap<u64, Duration>,
}

impl LockTable {
    /// The table of `local`, whose only peer is `peer`, starting at `now`.
    pub fn new(local: &str, peer: &str, lease: Duration, now: Duration) -> LockTable {
        LockTable {
            local: local.to_string(),
            peer: peer.to_string(),
            lease,
            started: now,
            peer_heard: None,
            peer_gone: false,
            locks: BTreeMap::new(),
            released: BTreeMap::new(),
        }
    }

    /// The lease of reservations.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often holds are renewed with the peer: five times per lease.
    pub fn renew_interval(&self) -> Duration {
        self.lease / 5
    }

    /// Whoever holds, is about to hold, or has a reservation for `name`.
    pub fn holder(&mut self, name: &str, now: Duration) -> Option<Holder> {
        self.prune(now);
        self.locks.get(name).map(Entry::holder)
    }

    /// How many locks are held by local clients.
    pub fn held_here(&self) -> usize {
        self.locks.values().filter(|e| matches!(e, Entry::Held { .. })).count()
    }

    fn prune(&mut self, now: Duration) {
        self.locks.retain(|_, e| !matches!(e, Entry::Reserved { expires, .. } if *expires <= now));
        self.released.retain(|_, until| *until > now);
    }

    /// A local client asks for `name` with a fresh `token`.
    pub fn begin_acquire(
        &mut self,
        name: &str,
        token: u64,
        owner: &str,
        since: u64,
        now: Duration,
    ) -> Begin {
        self.prune(now);
        if let Some(entry) = self.locks.get(name) {
            return Begin::Busy(entry.holder());
        }
        let owner = owner.to_string();
        self.locks.insert(name.to_string(), Entry::Pending { token, owner, since });
        Begin::AskPeer
    }

    /// The peer answered (or did not) the `Reserve` for request `token`. `peer_down`: cldaemon
    /// says the peer is down and this node connected (asked only when the peer is unreachable).
    pub fn finish_acquire(
        &mut self,
        name: &str,
        token: u64,
        answer: PeerAnswer,
        peer_down: bool,
        now: Duration,
    ) -> Decision {
        self.prune(now);
        let ours =
            matches!(self.locks.get(name), Some(Entry::Pending { token: t, .. }) if *t == token);
        let current = self.locks.get(name).map(Entry::holder);
        if !ours {
            // The peer's request won the tie-break (or its hold was renewed) meanwhile.
            return match answer {
                PeerAnswer::Reserved => Decision::ReleasePeer(current),
                PeerAnswer::Refused(holder) => Decision::Busy(holder),
                PeerAnswer::Unreachable => current.map_or(Decision::Unavailable, Decision::Busy),
            };
        }
        let alone = match answer {
            PeerAnswer::Reserved => false,
            PeerAnswer::Refused(holder) => {
                self.locks.remove(name);
                return Decision::Busy(holder);
            }
            PeerAnswer::Unreachable if self.may_decide_alone(peer_down, now) => true,
            PeerAnswer::Unreachable => {
                self.locks.remove(name);
                return Decision::Unavailable;
            }
        };
        if let Some(Entry::Pending { token, owner, since }) = self.locks.remove(name) {
            self.locks.insert(name.to_string(), Entry::Held { token, owner, since, alone });
        }
        Decision::Granted { alone }
    }

    /// Whether a lock may be granted without the peer (see the module documentation).
    pub fn may_decide_alone(&self, peer_down: bool, now: Duration) -> bool {
        if self.peer_gone {
            return true;
        }
        let last = self.peer_heard.map_or(self.started, |heard| heard.max(self.started));
        peer_down && now.saturating_sub(last) >= self.lease
    }

    /// How long until the peer has been silent for a whole lease (zero once it has).
    pub fn silence_left(&self, now: Duration) -> Duration {
        let last = self.peer_heard.map_or(self.started, |heard| heard.max(self.started));
        self.lease.saturating_sub(now.saturating_sub(last))
    }

    /// A local client released grant `token`; true when the peer should be told.
    pub fn release_local(&mut self, name: &str, token: u64) -> bool {
        let held =
            matches!(self.locks.get(name), Some(Entry::Held { token: t, .. }) if *t == token);
        if held {
            self.locks.remove(name);
        }
        held
    }

    /// Something authentic came from the peer's cllockd.
    pub fn heard_peer(&mut self, now: Duration) {
        self.peer_heard = Some(now);
        self.peer_gone = false;
    }

    /// The peer asks to reserve `hold.name` for its client: Ok when reserved.
    pub fn peer_reserve(&mut self, hold: &PeerHold, now: Duration) -> Result<(), Holder> {
        self.prune(now);
        if self.released.contains_key(&hold.token) {
            return Err(Holder {
                by: "nobody (the request was abandoned)".into(),
                since: hold.since,
            });
        }
        match self.locks.get(&hold.name) {
            Some(entry @ Entry::Held { .. }) => return Err(entry.holder()),
            Some(entry @ Entry::Pending { .. }) if self.local < self.peer => {
                return Err(entry.holder())
            }
            _ => {}
        }
        self.reserve(hold, now);
        Ok(())
    }

    fn reserve(&mut self, hold: &PeerHold, now: Duration) {
        let entry = Entry::Reserved {
            token: hold.token,
            owner: hold.owner.clone(),
            since: hold.since,
            expires: now + self.lease,
        };
        self.locks.insert(hold.name.clone(), entry);
    }

    /// The peer's grant (or abandoned request) `token` ended.
    pub fn peer_release(&mut self, name: &str, token: u64, now: Duration) {
        self.prune(now);
        self.released.insert(token, now + self.lease);
        if matches!(self.locks.get(name), Some(Entry::Reserved { token: t, .. }) if *t == token) {
            self.locks.remove(name);
        }
    }

    /// The peer still holds `holds`: extend their reservations. Returns the holds the peer
    /// lost to local ones (to answer) and the local holds that lost to the peer's.
    pub fn peer_renew(&mut self, holds: &[PeerHold], now: Duration) -> (Vec<Conflict>, Vec<Lost>) {
        self.prune(now);
        let mut conflicts = Vec::new();
        let mut lost = Vec::new();
        for hold in holds {
            if self.released.contains_key(&hold.token) {
                continue; // a renewal that crossed its own Release
            }
            if let Some(Entry::Held { token, owner, since, alone }) = self.locks.get(&hold.name) {
                if self.local_wins(*alone, hold.alone) {
                    conflicts.push(Conflict {
                        name: hold.name.clone(),
                        token: hold.token,
                        by: owner.clone(),
                        since: *since,
                    });
                    continue;
                }
                lost.push(Lost {
                    name: hold.name.clone(),
                    token: *token,
                    by: hold.owner.clone(),
                    since: hold.since,
                });
            }
            self.reserve(hold, now);
        }
        (conflicts, lost)
    }

    /// Two holders of one name (after a partition or a freeze): the grant made alone wins, as
    /// the peer had been counted out for it; between equals, the node whose name sorts first.
    fn local_wins(&self, local_alone: bool, peer_alone: bool) -> bool {
        if local_alone != peer_alone {
            local_alone
        } else {
            self.local < self.peer
        }
    }

    /// Every local hold, for a `Renew`.
    pub fn renewals(&self) -> Vec<PeerHold> {
        self.locks
            .iter()
            .filter_map(|(name, entry)| match entry {
                Entry::Held { token, owner, since, alone } => Some(PeerHold {
                    name: name.clone(),
                    token: *token,
                    owner: owner.clone(),
                    since: *since,
                    alone: *alone,
                }),
                _ => None,
            })
            .collect()
    }

    /// The peer answered a `Renew`: the holds in `conflicts` are lost.
    pub fn renewed(&mut self, conflicts: &[Conflict]) -> Vec<Lost> {
        let mut lost = Vec::new();
        for c in conflicts {
            if self.release_local(&c.name, c.token) {
                lost.push(Lost {
                    name: c.name.clone(),
                    token: c.token,
                    by: c.by.clone(),
                    since: c.since,
                });
            }
        }
        lost
    }

    /// The peer's cllockd stopped: it holds and reserves nothing.
    pub fn peer_bye(&mut self, now: Duration) {
        self.heard_peer(now);
        self.locks.retain(|_, e| !matches!(e, Entry::Reserved { .. }));
        self.peer_gone = true;
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon.

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
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a client's acquire ended.
enum Acquired {
    Granted { token: u64, since: u64 },
    Refused(LockResponse),
    ClientGone,
}

impl Lockd {
    fn new(ctx: Context) -> Result<Lockd> {
        let Some(peer) = ctx.peers().into_iter().next() else {
            bail!("the cluster has no other node");
        };
        let epoch = crate::epoch::next()?;
        let lease = lease(&ctx);
        Ok(Lockd {
            table: Mutex::new(LockTable::new(&ctx.local, &peer, lease, Duration::ZERO)),
            sender: Mutex::new(Sender::new(ctx.key.clone(), ctx.name(), &ctx.local, epoch)),
            requests: Mutex::new(Receiver::new(ctx.key.clone(), ctx.name())),
            next: AtomicU64::new(epoch),
            preferred: AtomicUsize::new(0),
            holders: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            frames: Notify::new(),
            origin: Instant::now(),
            peer,
            ctx,
        })
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
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
                    "cllockd",
                    "epoch counter",
                    "cannot take an id from the epoch counter, counting on: {e:#}"
                );
                self.next.fetch_add(1, Ordering::Relaxed)
            }
        }
    }

    fn peer_addresses(&self) -> Vec<SocketAddr> {
        let port = self.ctx.cluster().ports.cllockd;
        self.ctx
            .cluster()
            .node(&self.peer)
            .map(|n| n.networks.iter().map(|net| SocketAddr::new(net.address, port)).collect())
            .unwrap_or_default()
    }

    /// Send one request to the peer's cllockd and wait for its answer, trying each address.
    async fn ask_peer(&self, request: &PeerLockRequest) -> Result<PeerLockReply> {
        let id = self.fresh();
        let msg = PeerLockMsg { id, request: request.clone() };
        let addresses = self.peer_addresses();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = anyhow!("{} has no address", self.peer);
        for i in 0..addresses.len() {
            let index = (first + i) % addresses.len();
            let address = addresses[index];
            // A fresh exchange per attempt: a frame that reached the peer late is not a replay.
            let attempt = async {
                let mut stream = TcpStream::connect(address).await.context("connect")?;
                crate::exchange::request::<_, _, PeerLockAnswer>(
                    &mut stream,
                    &self.sender,
                    &self.ctx.key,
                    self.ctx.name(),
                    Kind::Lock,
                    &msg,
                )
                .await
            };
            match tokio::time::timeout(PEER_TIMEOUT, attempt).await {
                Ok(Ok((header, answer))) if header.sender == self.peer && answer.id == id => {
                    self.preferred.store(index, Ordering::Relaxed);
                    self.table().heard_peer(self.now());
                    return Ok(answer.reply);
                }
                Ok(Ok((header, _))) => {
                    last_error =
                        anyhow!("{address}: an answer from {} to another request", header.sender)
                }
                Ok(Err(e)) => last_error = e.context(address.to_string()),
                Err(_) => last_error = anyhow!("{address}: no answer within {PEER_TIMEOUT:?}"),
            }
        }
        Err(last_error)
    }

    /// Tell the peer, in the background, that grant (or request) `token` of `name` ended.
    fn release_on_peer(self: &Arc<Self>, name: &str, token: u64) {
        let this = self.clone();
        let request = PeerLockRequest::Release { name: name.to_string(), token };
        tokio::spawn(async move {
            if let Err(e) = this.ask_peer(&request).await {
                debug!("could not tell {} about a release: {e:#}", this.peer);
            }
        });
    }

    /// Does cldaemon count the peer out (down or never heard) with this node connected?
    async fn peer_down(&self) -> bool {
        let socket = self.ctx.admin_socket();
        match admin_request(&socket, &AdminRequest::Status, Duration::from_secs(1)).await {
            Ok(AdminResponse::Status(status)) => {
                status.local_state == "connected"
                    && status
                        .nodes
                        .iter()
                        .any(|n| n.name == self.peer && (n.state == "down" || n.state == "joining"))
            }
            _ => false,
        }
    }

    /// Tell the clients of lost locks.
    fn lose(&self, lost: Vec<Lost>) {
        for l in lost {
            let reason =
                format!("{} gave it to {} since {}", self.peer, l.by, format_time(l.since));
            warn!(lock = %l.name, "lock {} lost: {reason}", l.name);
            if let Some(client) = locked(&self.holders).remove(&l.token) {
                let _ = client.send(reason);
            }
        }
        self.changed.notify_waiters();
    }

    /// One attempt at `name` for a client: granted (alone or not), or what to tell it.
    async fn try_once(
        self: &Arc<Self>,
        name: &str,
        owner: &str,
        token: u64,
        since: u64,
    ) -> Result<(), LockResponse> {
        let held =
            |h: Holder| LockResponse::Held { name: name.to_string(), by: h.by, since: h.since };
        if let Begin::Busy(holder) =
            self.table().begin_acquire(name, token, owner, since, self.now())
        {
            return Err(held(holder));
        }
        let hold = PeerHold { name: name.into(), token, owner: owner.into(), since, alone: false };
        let mut why = None;
        let answer = match self.ask_peer(&PeerLockRequest::Reserve { hold }).await {
            Ok(PeerLockReply::Reserved) => PeerAnswer::Reserved,
            Ok(PeerLockReply::Refused { by, since }) => PeerAnswer::Refused(Holder { by, since }),
            Ok(other) => {
                why = Some(format!("it answered {other:?}"));
                PeerAnswer::Unreachable
            }
            Err(e) => {
                why = Some(format!("{e:#}"));
                PeerAnswer::Unreachable
            }
        };
        let unreachable = answer == PeerAnswer::Unreachable;
        let peer_down = unreachable && self.peer_down().await;
        let decision = self.table().finish_acquire(name, token, answer, peer_down, self.now());
        if unreachable && !matches!(decision, Decision::Granted { .. }) {
            // The Reserve may have arrived after all: take it back.
            self.release_on_peer(name, token);
        }
        match decision {
            Decision::Granted { alone } => {
                if alone {
                    warn!(lock = name, "granted {name} to {owner} without {} ({} counts as down and has been silent for a lease)", self.peer, self.peer);
                } else {
                    info!(lock = name, "granted {name} to {owner}");
                }
                Ok(())
            }
            Decision::Busy(holder) => Err(held(holder)),
            Decision::ReleasePeer(holder) => {
                self.release_on_peer(name, token);
                Err(holder.map(held).unwrap_or_else(|| LockResponse::Error {
                    message: format!("{name} changed hands while it was being granted; try again"),
                }))
            }
            Decision::Unavailable => {
                let peer = &self.peer;
                let why = why.unwrap_or_default();
                let left = self.table().silence_left(self.now());
                let message = if peer_down && !left.is_zero() {
                    format!("{peer}'s cllockd cannot be reached ({why}); {peer} is down, but locks it may hold last until it has been silent for a lease: try again in {} s", left.as_secs().max(1))
                } else {
                    format!("{peer}'s cllockd cannot be reached ({why}) and {peer} is not down in this node's view, so no lock can be granted safely")
                };
                Err(LockResponse::Error { message })
            }
        }
    }

    /// Try for `name` until granted or `wait` has passed (or the client goes away).
    async fn acquire<R: AsyncReadExt + Unpin>(
        self: &Arc<Self>,
        name: &str,
        owner: &str,
        wait: Duration,
        client: &mut R,
    ) -> Acquired {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let token = self.fresh();
            let since = unix_now();
            let last = match self.try_once(name, owner, token, since).await {
                Ok(()) => return Acquired::Granted { token, since },
                Err(response) => response,
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Acquired::Refused(last);
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline.min(now + RETRY)) => {}
                _ = closed(client) => return Acquired::ClientGone,
            }
        }
    }

    async fn serve_client(self: Arc<Self>, stream: UnixStream, conn: crate::serve::Conn) {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read.take(MAX_LINE));
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        match crate::serve::within(&conn, Duration::from_secs(10), "a lock request", read).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return,
        }
        let response = match serde_json::from_str::<LockRequest>(line.trim()) {
            Err(e) => {
                conn.rejected("unreadable request", &format!("unreadable lock request: {e}"));
                LockResponse::Error { message: format!("unreadable request: {e}") }
            }
            Ok(LockRequest::Acquire { name, owner, wait }) => match check_name(&name) {
                Err(message) => LockResponse::Error { message },
                Ok(()) => {
                    let owner = clean_owner(&owner);
                    let wait = Duration::from_secs(wait);
                    match self.acquire(&name, &owner, wait, &mut reader).await {
                        Acquired::Refused(response) => response,
                        Acquired::ClientGone => return,
                        Acquired::Granted { token, since } => {
                            self.hold(&name, &owner, token, since, &mut reader, &mut write).await;
                            return;
                        }
                    }
                }
            },
        };
        let _ = write_line(&mut write, &response).await;
    }

    /// The client holds `name`: until it closes the connection or the lock is lost.
    async fn hold<R: AsyncReadExt + Unpin, W: AsyncWriteExt + Unpin>(
        self: &Arc<Self>,
        name: &str,
        owner: &str,
        token: u64,
        since: u64,
        client: &mut R,
        write: &mut W,
    ) {
        let (lost_tx, lost_rx) = oneshot::channel();
        locked(&self.holders).insert(token, lost_tx);
        let granted = LockResponse::Granted { name: name.to_string(), since };
        let lost = if write_line(write, &granted).await.is_ok() {
            tokio::select! {
                reason = lost_rx => reason.ok(),
                _ = closed(client) => None,
            }
        } else {
            None
        };
        locked(&self.holders).remove(&token);
        match lost {
            Some(reason) => {
                let lost = LockResponse::Lost { name: name.to_string(), reason };
                let _ = write_line(write, &lost).await;
            }
            None => {
                if self.table().release_local(name, token) {
                    info!(lock = name, "{owner} released {name}");
                    self.release_on_peer(name, token);
                }
                self.changed.notify_waiters();
            }
        }
    }

    async fn serve_peer(
        self: Arc<Self>,
        mut stream: TcpStream,
        from: SocketAddr,
        conn: crate::serve::Conn,
    ) {
        let accept = crate::exchange::accept::<_, PeerLockMsg>(
            &mut stream,
            &self.requests,
            &self.sender,
            Kind::Lock,
        );
        let accepted = crate::serve::within(&conn, PEER_TIMEOUT * 2, "a request", accept).await;
        self.frames.notify_one();
        let incoming = match accepted {
            Some(Ok(incoming)) if incoming.header.sender == self.peer => incoming,
            Some(Ok(incoming)) => {
                return conn.rejected(
                    "wrong sender",
                    &format!(
                        "a lock request from {from} claims to come from {}, not {}",
                        incoming.header.sender, self.peer
                    ),
                )
            }
            None => return,
            Some(Err(e)) => {
                return conn.rejected(
                    &crate::serve::accept_reason(&e),
                    &format!(
                    "lock request from {from}: {e} (is the cluster key the same on both nodes?)"
                ),
                )
            }
        };
        let reply = self.on_peer_request(incoming.request.request.clone());
        let answer = PeerLockAnswer { id: incoming.request.id, reply };
        let _ = crate::exchange::reply(&mut stream, &self.sender, &incoming, &answer).await;
    }

    fn on_peer_request(&self, request: PeerLockRequest) -> PeerLockReply {
        let now = self.now();
        let mut table = self.table();
        table.heard_peer(now);
        match request {
            PeerLockRequest::Reserve { mut hold } => {
                hold.owner = clean_owner(&hold.owner);
                if let Err(why) = check_name(&hold.name) {
                    return PeerLockReply::Refused {
                        by: format!("nobody ({why})"),
                        since: hold.since,
                    };
                }
                match table.peer_reserve(&hold, now) {
                    Ok(()) => {
                        info!(lock = %hold.name, "reserved {} for {} ({})", hold.name, hold.owner, self.peer);
                        PeerLockReply::Reserved
                    }
                    Err(holder) => PeerLockReply::Refused { by: holder.by, since: holder.since },
                }
            }
            PeerLockRequest::Release { name, token } => {
                table.peer_release(&name, token, now);
                drop(table);
                debug!(lock = %name, "{} released {name}", self.peer);
                self.changed.notify_waiters();
                PeerLockReply::Ok
            }
            PeerLockRequest::Renew { mut holds } => {
                for hold in &mut holds {
                    hold.owner = clean_owner(&hold.owner);
                }
                holds.retain(|h| check_name(&h.name).is_ok());
                let (conflicts, lost) = table.peer_renew(&holds, now);
                drop(table);
                for c in &conflicts {
                    warn!(lock = %c.name, "{} renewed {} which {} holds here: it loses", self.peer, c.name, c.by);
                }
                self.lose(lost);
                PeerLockReply::Renewed { conflicts }
            }
            PeerLockRequest::Bye => {
                table.peer_bye(now);
                drop(table);
                info!("{}'s cllockd stopped: its locks are free", self.peer);
                self.changed.notify_waiters();
                PeerLockReply::Ok
            }
        }
    }

    async fn renew_loop(self: Arc<Self>) {
        let interval = self.table().renew_interval();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let holds = self.table().renewals();
            if holds.is_empty() {
                continue;
            }
            match self.ask_peer(&PeerLockRequest::Renew { holds: holds.clone() }).await {
                Ok(PeerLockReply::Renewed { conflicts }) => {
                    if failing {
                        info!("renewing locks with {} works again", self.peer);
                        failing = false;
                    }
                    let lost = self.table().renewed(&conflicts);
                    self.lose(lost);
                }
                Ok(other) => warn!("unexpected answer to a renewal from {}: {other:?}", self.peer),
                Err(e) => {
                    if !failing {
                        warn!(
                            "cannot renew {} lock(s) with {}: {e:#}; they stay held here, and {} frees them after {:?} unless it hears from this node",
                            holds.len(),
                            self.peer,
                            self.peer,
                            self.table().lease()
                        );
                        failing = true;
                    }
                }
            }
        }
    }

    /// Send the counters of the peer's frames to cldaemon (clstat --verbose) when they changed,
    /// at most once a second (idle, nothing is sent and nothing wakes), and once a minute
    /// anyway, so that a cldaemon restarted without a new configuration has them again soon.
    async fn report_counters(self: Arc<Self>) {
        let Ok(events) = crate::heartbeat::event_sender() else { return };
        let mut last = None;
        loop {
            let counters = *locked(&self.requests).counters();
            if last != Some(counters) {
                let event = LocalEvent::Counters { daemon: "cllockd".into(), counters };
                crate::heartbeat::notify(&events, &self.ctx, &event).await;
                last = Some(counters);
            }
            tokio::select! {
                _ = self.frames.notified() => {}
                _ = tokio::time::sleep(COUNTERS_REFRESH) => last = None,
            }
            tokio::time::sleep(crate::heartbeat::COUNTERS_EVERY).await;
        }
    }

    /// Tell the peer this cllockd stops (best effort, one attempt per address).
    async fn bye(&self) {
        if let Err(e) = self.ask_peer(&PeerLockRequest::Bye).await {
            debug!("could not tell {} that this cllockd stops: {e:#}", self.peer);
        }
    }
}

async fn write_line<W: AsyncWriteExt + Unpin>(
    write: &mut W,
    response: &LockResponse,
) -> Result<()> {
    let mut text = serde_json::to_string(response)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    Ok(())
}

/// Resolves when the client closes its end (anything it sends is ignored).
async fn closed<R: AsyncReadExt + Unpin>(client: &mut R) {
    let mut buf = [0u8; 256];
    loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
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
        let stats = crate::serve::Listener::register("cllockd", name, crate::serve::PEER_LIMITS);
        tokio::spawn(crate::serve::serve(listener, stats, move |stream, from, conn| {
            lockd.clone().serve_peer(stream, from, conn)
        }));
    }
    {
        let lockd = lockd.clone();
        let stats =
            crate::serve::Listener::register("cllockd", "clients", crate::serve::LOCAL_LIMITS);
        tokio::spawn(crate::serve::serve(local, stats, move |stream, (), conn| {
            lockd.clone().serve_client(stream, conn)
        }));
    }
    tokio::spawn(crate::serve::monitor(Some((ctx.clone(), "cllockd"))));
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

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// node1's and node2's tables, started at 0.
    fn pair() -> (LockTable, LockTable) {
        (
            LockTable::new("node1", "node2", LEASE, at(0)),
            LockTable::new("node2", "node1", LEASE, at(0)),
        )
    }

    fn hold(name: &str, token: u64, owner: &str) -> PeerHold {
        PeerHold {
            name: name.into(),
            token,
            owner: owner.into(),
            since: 1000 + token,
            alone: false,
        }
    }

    fn holder(owner: &str, token: u64) -> Holder {
        Holder { by: owner.into(), since: 1000 + token }
    }

    /// The whole exchange for a request on `asker`, the peer answering at once.
    fn acquire(
        asker: &mut LockTable,
        peer: &mut LockTable,
        name: &str,
        token: u64,
        owner: &str,
        now: Duration,
    ) -> Decision {
        match asker.begin_acquire(name, token, owner, 1000 + token, now) {
            Begin::Busy(h) => Decision::Busy(h),
            Begin::AskPeer => {
                let answer = match peer.peer_reserve(&hold(name, token, owner), now) {
                    Ok(()) => PeerAnswer::Reserved,
                    Err(h) => PeerAnswer::Refused(h),
                };
                asker.finish_acquire(name, token, answer, false, now)
            }
        }
    }

    #[test]
    fn a_lock_is_granted_with_the_peers_agreement_and_refused_to_the_other_node() {
        let (mut n1, mut n2) = pair();
        assert_eq!(
            acquire(&mut n1, &mut n2, "x", 1, "a", at(1)),
            Decision::Granted { alone: false }
        );
        assert_eq!(n2.holder("x", at(1)), Some(holder("a", 1)), "reserved on node2");
        // node2's own client is refused locally, without asking.
        assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(2)), Begin::Busy(holder("a", 1)));
        // A second client on node1 too.
        assert_eq!(n1.begin_acquire("x", 3, "c", 1003, at(2)), Begin::Busy(holder("a", 1)));
        // Another name is independent.
        assert_eq!(
            acquire(&mut n2, &mut n1, "y", 4, "d", at(2)),
            Decision::Granted { alone: false }
        );
        // Released on node1 and node2 is told: node2 may take it.
        assert!(n1.release_local("x", 1));
        assert!(!n1.release_local("x", 1), "released once");
        n2.peer_release("x", 1, at(3));
        assert_eq!(
            acquire(&mut n2, &mut n1, "x", 5, "e", at(3)),
            Decision::Granted { alone: false }
        );
        assert_eq!(n1.holder("x", at(3)), Some(holder("e", 5)));
    }

    #[test]
    fn the_peer_refuses_what_it_holds() {
        let (mut n1, mut n2) = pair();
        assert_eq!(
            acquire(&mut n1, &mut n2, "x", 1, "a", at(1)),
            Decision::Granted { alone: false }
        );
        // node1's reservation on node2 is lost (node2's cllockd restarted): node1 still refuses.
        let mut n2 = LockTable::new("node2", "node1", LEASE, at(2));
        assert_eq!(acquire(&mut n2, &mut n1, "x", 2, "b", at(2)), Decision::Busy(holder("a", 1)));
        assert_eq!(n2.holder("x", at(2)), None, "the refused request is gone");
        // node1's next renewal teaches the new node2.
        let (conflicts, lost) = n2.peer_renew(&n1.renewals(), at(3));
        assert!(conflicts.is_empty() && lost.is_empty());
        assert_eq!(n2.holder("x", at(3)), Some(holder("a", 1)));
    }

    #[test]
    fn simultaneous_requests_are_decided_by_the_tie_break() {
        let (mut n1, mut n2) = pair();
        // Both mark pending, then both Reserves cross.
        assert_eq!(n1.begin_acquire("x", 1, "a", 1001, at(1)), Begin::AskPeer);
        assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(1)), Begin::AskPeer);
        let at_n2 = n2.peer_reserve(&hold("x", 1, "a"), at(1));
        let at_n1 = n1.peer_reserve(&hold("x", 2, "b"), at(1));
        assert_eq!(at_n2, Ok(()), "node1 sorts first: node2 gives way");
        assert_eq!(at_n1, Err(holder("a", 1)), "node1 keeps its request");
        assert_eq!(
            n1.finish_acquire("x", 1, PeerAnswer::Reserved, false, at(1)),
            Decision::Granted { alone: false }
        );
        let refused = PeerAnswer::Refused(holder("a", 1));
        assert_eq!(
            n2.finish_acquire("x", 2, refused, false, at(1)),
            Decision::Busy(holder("a", 1))
        );
        assert_eq!(n2.holder("x", at(1)), Some(holder("a", 1)), "node2 keeps the reservation");
    }

    #[test]
    fn a_reservation_for_a_request_that_lost_meanwhile_is_given_back() {
        let (mut n1, mut n2) = pair();
        // node2 asks; node1's Reserve reaches node2 first and wins; then node1 (whose own
        // request was abandoned) is free and reserves for node2 after all.
        assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(1)), Begin::AskPeer);
        assert_eq!(n2.peer_reserve(&hold("x", 1, "a"), at(1)), Ok(()));
        assert_eq!(n1.peer_reserve(&hold("x", 2, "b"), at(1)), Ok(()));
        assert_eq!(
            n2.finish_acquire("x", 2, PeerAnswer::Reserved, false, at(1)),
            Decision::ReleasePeer(Some(holder("a", 1)))
        );
        n1.peer_release("x", 2, at(1));
        assert_eq!(n1.holder("x", at(1)), None);
    }

    #[test]
    fn reservations_expire_without_renewal() {
        let (mut n1, mut n2) = pair();
        assert_eq!(
            acquire(&mut n1, &mut n2, "x", 1, "a", at(1)),
            Decision::Granted { alone: false }
        );
        // Renewed at 10: lasts until 25.
        n2.peer_renew(&n1.renewals(), at(10));
        assert_eq!(n2.holder("x", at(24)), Some(holder("a", 1)));
        assert_eq!(n2.holder("x", at(25)), None, "expired a lease after the last renewal");
    }

    #[test]
    fn a_silent_peer_is_counted_out_only_when_down_and_silent_for_a_lease() {
        let (mut n1, mut n2) = pair();
        assert_eq!(
            acquire(&mut n1, &mut n2, "x", 1, "a", at(1)),
            Decision::Granted { alone: false }
        );
        n2.heard_peer(at(1));
        // node1 dies. While the reservation lasts, node2 refuses at once.
        assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(5)), Begin::Busy(holder("a", 1)));
        // Another name: node1 does not answer, and is not (yet) down: nothing granted.
        assert_eq!(n2.begin_acquire("y", 3, "b", 1003, at(5)), Begin::AskPeer);
        assert_eq!(
            n2.finish_acquire("y", 3, PeerAnswer::Unreachable, false, at(5)),
            Decision::Unavailable
        );
        // Down, but not silent for a lease yet.
        assert_eq!(n2.begin_acquire("y", 4, "b", 1004, at(6)), Begin::AskPeer);
        assert_eq!(
            n2.finish_acquire("y", 4, PeerAnswer::Unreachable, true, at(6)),
            Decision::Unavailable
        );
        // Silent for a lease but not down in cldaemon's view (a partition): still nothing.
        assert_eq!(n2.begin_acquire("x", 5, "b", 1005, at(16)), Begin::AskPeer);
        assert_eq!(
            n2.finish_acquire("x", 5, PeerAnswer::Unreachable, false, at(16)),
            Decision::Unavailable
        );
        // Down and silent for a lease: granted alone.
        assert_eq!(n2.begin_acquire("x", 6, "b", 1006, at(16)), Begin::AskPeer);
        assert_eq!(
            n2.finish_acquire("x", 6, PeerAnswer::Unreachable, true, at(16)),
            Decision::Granted { alone: true }
        );
    }

    #[test]
    fn a_restarted_cllockd_waits_a_lease_before_deciding_alone() {
        let mut n2 = LockTable::new("node2", "node1", LEASE, at(100));
        assert!(!n2.may_decide_alone(true, at(110)));
        assert_eq!(n2.silence_left(at(110)), at(5));
        assert!(n2.may_decide_alone(true, at(115)));
        n2.heard_peer(at(112));
        assert!(!n2.may_decide_alone(true, at(115)), "heard since");
        assert!(n2.may_decide_alone(true, at(127)));
    }

    #[test]
    fn a_peer_that_said_bye_holds_nothing() {
        let (mut n1, mut n2) = pair();
        assert_eq!(
            acquire(&mut n1, &mut n2, "x", 1, "a", at(1)),
            Decision::Granted { alone: false }
        );
        n2.peer_bye(at(2));
        assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(2)), Begin::AskPeer);
        assert_eq!(
            n2.finish_acquire("x", 2, PeerAnswer::Unreachable, false, at(2)),
            Decision::Granted { alone: true }
        );
        // Once heard again, the peer counts again.
        n2.heard_peer(at(3));
        assert!(!n2.may_decide_alone(false, at(3)));
    }

    #[test]
    fn late_messages_cannot_revive_a_released_grant() {
        let (mut n1, mut n2) = pair();
        assert_eq!(
            acquire(&mut n1, &mut n2, "x", 1, "a", at(1)),
            Decision::Granted { alone: false }
        );
        let stale = n1.renewals();
        assert!(n1.release_local("x", 1));
        n2.peer_release("x", 1, at(2));
        // The renewal sent before the release arrives after it.
        n2.peer_renew(&stale, at(2));
        assert_eq!(n2.holder("x", at(2)), None);
        // A new grant of the same name is untouched by the old token's release.
        assert_eq!(
            acquire(&mut n1, &mut n2, "x", 3, "c", at(3)),
            Decision::Granted { alone: false }
        );
        n2.peer_release("x", 1, at(3));
        assert_eq!(n2.holder("x", at(3)), Some(holder("c", 3)));
        // An abandoned request's Release overtaking its Reserve.
        n2.peer_release("y", 9, at(4));
        assert!(n2.peer_reserve(&hold("y", 9, "z"), at(4)).is_err());
        assert_eq!(n2.holder("y", at(4)), None);
    }

    #[test]
    fn after_a_freeze_the_grant_made_alone_wins() {
        let (mut n1, mut n2) = pair();
        assert_eq!(
            acquire(&mut n1, &mut n2, "x", 1, "a", at(1)),
            Decision::Granted { alone: false }
        );
        n2.heard_peer(at(1));
        // node1 freezes; node2 counts it out and grants alone.
        assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(20)), Begin::AskPeer);
        assert_eq!(
            n2.finish_acquire("x", 2, PeerAnswer::Unreachable, true, at(20)),
            Decision::Granted { alone: true }
        );
        // node1 thaws and renews: node2 keeps its grant and node1 loses its own.
        let (conflicts, lost) = n2.peer_renew(&n1.renewals(), at(21));
        assert!(lost.is_empty());
        assert_eq!(conflicts.len(), 1);
        let lost = n1.renewed(&conflicts);
        assert_eq!(lost, vec![Lost { name: "x".into(), token: 1, by: "b".into(), since: 1002 }]);
        assert_eq!(n1.held_here(), 0);
        // node2's renewal, the other way round, also makes node1 give way.
        let (mut n1, mut n2) = pair();
        acquire(&mut n1, &mut n2, "x", 1, "a", at(1));
        n2.begin_acquire("x", 2, "b", 1002, at(20));
        n2.finish_acquire("x", 2, PeerAnswer::Unreachable, true, at(20));
        let (conflicts, lost) = n1.peer_renew(&n2.renewals(), at(21));
        assert!(conflicts.is_empty());
        assert_eq!(lost, vec![Lost { name: "x".into(), token: 1, by: "b".into(), since: 1002 }]);
        assert_eq!(n1.holder("x", at(21)), Some(holder("b", 2)), "now reserved for node2");
    }

    #[test]
    fn a_renewal_of_a_hold_replaces_a_losing_pending_request() {
        let (mut n1, mut n2) = pair();
        assert_eq!(n2.begin_acquire("x", 2, "b", 1002, at(1)), Begin::AskPeer);
        // node1 holds x (node2 had restarted and forgotten) and renews.
        let (conflicts, lost) = n2.peer_renew(&[hold("x", 1, "a")], at(1));
        assert!(conflicts.is_empty() && lost.is_empty());
        let refused = PeerAnswer::Refused(holder("a", 1));
        assert_eq!(
            n2.finish_acquire("x", 2, refused, false, at(1)),
            Decision::Busy(holder("a", 1))
        );
        assert_eq!(n2.holder("x", at(1)), Some(holder("a", 1)));
        let _ = &mut n1;
    }
}
