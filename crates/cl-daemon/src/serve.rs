//! The accept loop of every listening socket of every daemon (cldaemon's peer port and admin
//! socket, cllockd's port and client socket).
//!
//! It never ends on an accept error: out of file descriptors (EMFILE, ENFILE), buffers
//! (ENOBUFS, ENOMEM) or an aborted connection, it logs (rate-limited), backs off briefly on
//! resource errors and keeps accepting. It bounds the connections open at once, per peer
//! address and in total, closing the ones over a bound at once; the handlers bound how long a
//! request may take to arrive ([`within`]). Everything refused or rejected is counted per
//! listener, and a listener that failed to accept or hit a bound in the last
//! [`TROUBLE_WINDOW`] says so in clstat ([`statuses`]) and in the log ([`monitor`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cl_sys::warn_limited;
use cl_wire::msg::{ListenerStatus, LocalEvent, ServeCounters};
use cl_wire::{Daemon, ReceiveError};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tracing::{info, warn};

use crate::context::Context;

/// How long an accept error or a reached bound keeps a listener "in trouble".
pub const TROUBLE_WINDOW: Duration = Duration::from_secs(10);
/// The first pause after an accept failed for want of resources.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest pause between failing accepts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long another daemon's report of its listeners stays current: longer than
/// [`REPORT_REFRESH`], so an unchanged report sent only that often never lapses.
const REPORT_FRESH: Duration = Duration::from_secs(25);
/// How often a daemon sends its listeners again although they did not change.
const REPORT_REFRESH: Duration = Duration::from_secs(10);
/// The monitor's pace while something is going on (a listener in trouble or busy).
const MONITOR_TICK: Duration = Duration::from_secs(1);
/// How long the monitor sleeps at most when nothing is going on; not longer than the log
/// limiter's interval, so it sees every new rejection before that rejection's summary is due.
const MONITOR_IDLE: Duration = cl_sys::ratelimit::INTERVAL;

/// How many connections a listener keeps open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From one peer address (TCP); Unix sockets have no address and only the total bound.
    pub per_address: usize,
    /// In total.
    pub total: usize,
}

/// For the ports other nodes connect to: their requests are few, small and fast.
pub const PEER_LIMITS: Limits = Limits { per_address: 32, total: 256 };
/// For root-only Unix sockets (admin commands, lock clients that hold their connection).
pub const LOCAL_LIMITS: Limits = Limits { per_address: usize::MAX, total: 1024 };

/// A listening socket the loop can accept from.
pub trait Accept: Send + 'static {
    /// A connection.
    type Stream: Send + 'static;
    /// Who connected.
    type Peer: Send + 'static;
    /// Wait for the next connection.
    fn accept_one(&self) -> impl Future<Output = io::Result<(Self::Stream, Self::Peer)>> + Send;
    /// The address a peer is bounded by, if any.
    fn address(peer: &Self::Peer) -> Option<IpAddr>;
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    type Peer = SocketAddr;
    fn accept_one(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
    fn address(peer: &SocketAddr) -> Option<IpAddr> {
        Some(peer.ip())
    }
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    type Peer = ();
    async fn accept_one(&self) -> io::Result<(UnixStream, ())> {
        UnixListener::accept(self).await.map(|(stream, _)| (stream, ()))
    }
    fn address(_: &()) -> Option<IpAddr> {
        None
    }
}

/// What a listener remembers of its recent trouble.
#[derive(Debug, Default)]
struct Recent {
    /// The last failed accept: when, and the error.
    accept_error: Option<(Instant, String)>,
    /// Failed accepts since the listener last served normally.
    errors_in_trouble: u64,
    /// The last connection refused at the total bound.
    refused_total: Option<Instant>,
    /// The last connection refused at the per-address bound, and its address.
    refused_address: Option<(Instant, IpAddr)>,
    /// Whether the monitor last saw it in trouble.
    reported: bool,
}

/// One listening socket's bounds, open connections and counters.
#[derive(Debug)]
pub struct Listener {
    daemon: Daemon,
    name: String,
    limits: Limits,
    accepted: AtomicU64,
    refused_per_address: AtomicU64,
    refused_total: AtomicU64,
    accept_errors: AtomicU64,
    timeouts: AtomicU64,
    bad_input: AtomicU64,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    recent: Mutex<Recent>,
}

/// The value behind `mutex`, even if a thread panicked holding it (counters stay readable).
pub(crate) fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
    poke_monitor();
}

/// Wakes [`monitor`] after a listener's counters, open connections or trouble changed (it
/// runs at most once per [`MONITOR_TICK`] even so); an idle daemon's monitor sleeps.
static MONITOR_WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn poke_monitor() {
    MONITOR_WAKE.notify_one();
}

/// The listeners of this process, for [`statuses`] and [`monitor`].
fn registry() -> MutexGuard<'static, Vec<Arc<Listener>>> {
    static REGISTRY: Mutex<Vec<Arc<Listener>>> = Mutex::new(Vec::new());
    locked(&REGISTRY)
}

/// The listeners other daemons of this node reported (cldaemon only), by daemon.
fn reported() -> MutexGuard<'static, BTreeMap<Daemon, (Instant, Vec<ListenerStatus>)>> {
    static REPORTED: Mutex<BTreeMap<Daemon, (Instant, Vec<ListenerStatus>)>> =
        Mutex::new(BTreeMap::new());
    locked(&REPORTED)
}

impl Listener {
    /// A listener of `daemon` named `name` (e.g. `peers 10.0.0.1:9901`), not registered.
    pub fn new(daemon: Daemon, name: impl Into<String>, limits: Limits) -> Arc<Listener> {
        Arc::new(Listener {
            daemon,
            name: name.into(),
            limits,
            accepted: AtomicU64::new(0),
            refused_per_address: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            bad_input: AtomicU64::new(0),
            open: Mutex::new((0, HashMap::new())),
            recent: Mutex::new(Recent::default()),
        })
    }

    /// As [`Self::new`], and shown by [`statuses`] and watched by [`monitor`].
    pub fn register(daemon: Daemon, name: impl Into<String>, limits: Limits) -> Arc<Self> {
        let listener = Listener::new(daemon, name, limits);
        registry().push(listener.clone());
        listener
    }

    /// The source kind its rejections are logged under: `cldaemon peers 10.0.0.1:9901`.
    fn kind(&self) -> String {
        format!("{} {}", self.daemon, self.name)
    }

    /// The counters so far.
    pub fn counters(&self) -> ServeCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServeCounters {
            accepted: get(&self.accepted),
            refused_per_address: get(&self.refused_per_address),
            refused_total: get(&self.refused_total),
            accept_errors: get(&self.accept_errors),
            timeouts: get(&self.timeouts),
            bad_input: get(&self.bad_input),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        locked(&self.open).0
    }

    /// Why it cannot serve normally at `now`, if so.
    pub fn trouble(&self, now: Instant) -> Option<String> {
        let recent = locked(&self.recent);
        let fresh = |at: Instant| now.saturating_duration_since(at) < TROUBLE_WINDOW;
        let mut why = Vec::new();
        if let Some((_, error)) = recent.accept_error.as_ref().filter(|(at, _)| fresh(*at)) {
            why.push(format!(
                "accepting connections fails: {error} ({} failed accepts)",
                recent.errors_in_trouble
            ));
        }
        if recent.refused_total.is_some_and(fresh) {
            why.push(format!(
                "at its bound of {} open connections: refusing new ones",
                self.limits.total
            ));
        }
        if let Some((_, address)) = recent.refused_address.filter(|(at, _)| fresh(*at)) {
            why.push(format!(
                "refusing connections from {address}: {} open from there already",
                self.limits.per_address
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// Its entry in clstat.
    pub fn status(&self, now: Instant) -> ListenerStatus {
        ListenerStatus {
            daemon: self.daemon,
            listener: self.name.clone(),
            open: self.open() as u64,
            counters: self.counters(),
            trouble: self.trouble(now),
        }
    }

    /// Take a connection from `address` if the bounds allow it; counts and logs a refusal.
    pub fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Option<Conn> {
        let mut open = locked(&self.open);
        let from_address = address.and_then(|a| open.1.get(&a).copied()).unwrap_or(0);
        if open.0 >= self.limits.total {
            drop(open);
            bump(&self.refused_total);
            locked(&self.recent).refused_total = Some(Instant::now());
            let total = self.limits.total;
            warn_limited!(&self.kind(), "total bound", listener = %self.name,
                "{} {}: {total} connections open, refusing more", self.daemon, self.name);
            return None;
        }
        if let Some(address) = address.filter(|_| from_address >= self.limits.per_address) {
            drop(open);
            bump(&self.refused_per_address);
            locked(&self.recent).refused_address = Some((Instant::now(), address));
            let bound = self.limits.per_address;
            warn_limited!(&self.kind(), "per-address bound", listener = %self.name, %address,
                "{} {}: {bound} connections open from {address}, refusing more from there", self.daemon, self.name);
            return None;
        }
        open.0 += 1;
        if let Some(address) = address {
            *open.1.entry(address).or_insert(0) += 1;
        }
        drop(open);
        bump(&self.accepted);
        Some(Conn { listener: self.clone(), address })
    }

    /// Count and log (rate-limited) a failed accept.
    fn accept_failed(&self, error: &io::Error) {
        bump(&self.accept_errors);
        {
            let mut recent = locked(&self.recent);
            recent.accept_error = Some((Instant::now(), error.to_string()));
            recent.errors_in_trouble = recent.errors_in_trouble.saturating_add(1);
        }
        let reason = format!("accept: {:?}", error.kind());
        warn_limited!(&self.kind(), &reason, listener = %self.name,
            "{} {}: cannot accept a connection: {error}; still listening", self.daemon, self.name);
    }
}

/// A connection admitted by a [`Listener`]: counts as open until dropped.
#[derive(Debug)]
pub struct Conn {
    listener: Arc<Listener>,
    address: Option<IpAddr>,
}

impl Conn {
    /// Who connected, for the log: the address, or `local` on a Unix socket.
    fn peer(&self) -> String {
        self.address.map(|a| a.to_string()).unwrap_or_else(|| "local".into())
    }

    /// Count a request that did not arrive within its deadline (the connection is closed).
    pub fn timed_out(&self, what: &str) {
        bump(&self.listener.timeouts);
        let l = &self.listener;
        warn_limited!(&l.kind(), "timeout", listener = %l.name, peer = %self.peer(),
            "{} {}: closed a connection: {what}", l.daemon, l.name);
    }

    /// Count and log (rate-limited by `reason`) a request rejected as unreadable or
    /// unauthentic; `detail` says what was wrong.
    pub fn rejected(&self, reason: &str, detail: &str) {
        bump(&self.listener.bad_input);
        let l = &self.listener;
        warn_limited!(&l.kind(), reason, listener = %l.name, peer = %self.peer(),
            "{} {}: rejected a request: {detail}", l.daemon, l.name);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut open = locked(&self.listener.open);
        open.0 = open.0.saturating_sub(1);
        if let Some(address) = self.address {
            if let Some(n) = open.1.get_mut(&address) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.1.remove(&address);
                }
            }
        }
        drop(open);
        poke_monitor();
    }
}

/// `work` if it completes within `deadline`; otherwise the connection's timeout is counted
/// (`what` says what did not arrive) and `None`.
pub async fn within<T>(
    conn: &Conn,
    deadline: Duration,
    what: &str,
    work: impl Future<Output = T>,
) -> Option<T> {
    match tokio::time::timeout(deadline, work).await {
        Ok(done) => Some(done),
        Err(_) => {
            conn.timed_out(&format!("{what} did not arrive within {} ms", deadline.as_millis()));
            None
        }
    }
}

/// Whether an accept error means the process or system ran out of something: then wait a
/// little before trying again instead of spinning.
fn out_of_resources(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Accept connections on `listener` forever, handing each admitted one to `handler` in a
/// task of its own; see the module documentation.
pub async fn serve<L, F, Fut>(listener: L, stats: Arc<Listener>, handler: F)
where
    L: Accept,
    F: Fn(L::Stream, L::Peer, Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = BACKOFF_MIN;
    loop {
        match listener.accept_one().await {
            Ok((stream, peer)) => {
                backoff = BACKOFF_MIN;
                // Refused: the stream is dropped here, which closes it at once.
                if let Some(conn) = stats.admit(L::address(&peer)) {
                    tokio::spawn(handler(stream, peer, conn));
                }
                // Let the handlers run before the next accept: on a single-threaded runtime a
                // burst of connections would otherwise count as open before any was looked at.
                tokio::task::yield_now().await;
            }
            Err(error) => {
                stats.accept_failed(&error);
                if out_of_resources(&error) {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// Raise the open-files limit to the hard limit (there may be no systemd to set
/// `LimitNOFILE`), logging the result; call once at daemon start, after logging is set up.
pub fn raise_open_files() {
    match cl_sys::rlimit::raise_nofile_limit() {
        Ok((soft, hard)) => info!(soft, hard, "open files limit"),
        Err(e) => warn!("cannot raise the open files limit: {e}"),
    }
}

/// The class of a rejected frame, as a rate-limiting key: `frame BadMac`, `frame Replay`…
pub fn reason(error: &ReceiveError) -> String {
    match error {
        ReceiveError::Decode(d) => {
            let text = format!("{d:?}");
            format!("frame {}", text.split(['(', ' ', '{']).next().unwrap_or(""))
        }
        ReceiveError::Replay(_) => "frame Replay".to_string(),
        ReceiveError::Unfresh { .. } => "frame Unfresh".to_string(),
    }
}

/// The class of a failed request exchange ([`crate::exchange::accept`]), as a rate-limiting
/// key: `unreadable frame` (bad header, oversized, closed early), a rejected frame's class, or
/// `wrong sender`.
pub fn accept_reason(error: &crate::exchange::AcceptError) -> String {
    match error {
        crate::exchange::AcceptError::Io(_) => "unreadable frame".to_string(),
        crate::exchange::AcceptError::Rejected(e) => reason(e),
        crate::exchange::AcceptError::SenderMismatch { .. } => "wrong sender".to_string(),
    }
}

/// The listeners of this process, and those other daemons reported recently, for clstat.
pub fn statuses() -> Vec<ListenerStatus> {
    let now = Instant::now();
    let mut out: Vec<ListenerStatus> = registry().iter().map(|l| l.status(now)).collect();
    for (at, listeners) in reported().values() {
        if now.saturating_duration_since(*at) < REPORT_FRESH {
            out.extend(listeners.iter().cloned());
        }
    }
    out
}

/// Keep what `daemon` reported of its listeners (cldaemon, from a [`LocalEvent::Listeners`]).
pub fn record_report(daemon: Daemon, listeners: Vec<ListenerStatus>) {
    reported().insert(daemon, (Instant::now(), listeners));
}

/// The clstat warnings of listeners in trouble.
pub fn warnings(listeners: &[ListenerStatus]) -> Vec<String> {
    listeners
        .iter()
        .filter_map(|l| {
            let trouble = l.trouble.as_ref()?;
            Some(format!("{} {} cannot serve normally: {trouble}", l.daemon, l.listener))
        })
        .collect()
}

/// Log the rate limiter's summaries when due, log when a listener gets into trouble and out of
/// it, and, with `report`, send this daemon's listeners to cldaemon for clstat when they
/// changed (and every [`REPORT_REFRESH`] regardless). It runs at most once per
/// [`MONITOR_TICK`], and only when something is due or changed: an idle daemon does not wake
/// for it more than once per [`MONITOR_IDLE`].
pub async fn monitor(report: Option<(Context, Daemon)>) {
    let events = report.as_ref().map(|_| crate::relaying::event_sender());
    let mut sent: Option<(Instant, Vec<ListenerStatus>)> = None;
    loop {
        let now = Instant::now();
        cl_sys::ratelimit::log_summaries(now);
        let listeners: Vec<Arc<Listener>> = registry().clone();
        let mut in_trouble = false;
        for l in &listeners {
            let trouble = l.trouble(now);
            in_trouble |= trouble.is_some();
            let mut recent = locked(&l.recent);
            match (&trouble, recent.reported) {
                (Some(why), false) => {
                    recent.reported = true;
                    warn!(listener = %l.name, "{} {} cannot serve normally: {why}", l.daemon, l.name);
                }
                (None, true) => {
                    recent.reported = false;
                    recent.errors_in_trouble = 0;
                    info!(listener = %l.name, counters = ?l.counters(), "{} {} serves normally again", l.daemon, l.name);
                }
                _ => {}
            }
        }
        let mut wait = MONITOR_IDLE;
        if let (Some((ctx, daemon)), Some(events)) = (report.as_ref(), events.as_ref()) {
            let statuses: Vec<ListenerStatus> = listeners.iter().map(|l| l.status(now)).collect();
            if report_due(sent.as_ref(), &statuses, now) {
                let event = LocalEvent::Listeners { daemon: *daemon, listeners: statuses.clone() };
                crate::relaying::notify(events, ctx, &event).await;
                sent = Some((now, statuses));
            }
            wait = wait.min(REPORT_REFRESH);
        }
        if in_trouble {
            // Each second while in trouble: the trouble text and its end are time-dependent.
            wait = MONITOR_TICK;
        }
        if let Some(due) = cl_sys::ratelimit::global().next_due() {
            wait = wait.min(due.saturating_duration_since(now));
        }
        let wait = wait.max(MONITOR_TICK);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = MONITOR_WAKE.notified() => {
                // Changes come in bursts (a connection opens, is served, closes): one pass for
                // each burst, at most one per tick.
                tokio::time::sleep_until((now + MONITOR_TICK).into()).await;
            }
        }
    }
}

/// Whether `statuses` must go to cldaemon: never sent, changed since `sent`, or unchanged for
/// [`REPORT_REFRESH`] (cldaemon forgets a report after [`REPORT_FRESH`]).
fn report_due(
    sent: Option<&(Instant, Vec<ListenerStatus>)>,
    statuses: &[ListenerStatus],
    now: Instant,
) -> bool {
    match sent {
        None => true,
        Some((at, last)) => {
            last.as_slice() != statuses || now.saturating_duration_since(*at) >= REPORT_REFRESH
        }
    }
}

#[cfg(test)]
#[path = "serve_test.rs"]
mod tests;
