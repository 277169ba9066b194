//! Delivery of cluster events to the administrator's notifiers (`<notify>` in clconf.xml).
//!
//! The engine decides what an event is (cl-core `notice`); this only delivers. The manager's
//! loop hands each event to [`Notifications::notify`], which never waits: the event goes into
//! a bounded queue, or is dropped and counted when the queue is full. One task takes the events
//! out in order and runs every notifier that wants each one, one at a time: the event's
//! variables in the environment, the event as a JSON document on stdin, stdout and stderr to
//! the log (bounded), and a time limit after which the notifier's process group is killed.
//! Failures are logged (rate-limited) and counted; they never reach the engine.
//!
//! ```text
//!  engine ──Notify──► notify() ──try_send──► [queue 1024] ──► task: notifier 1, notifier 2…
//!                        └─ full: dropped += 1 (told with the next event delivered)
//! ```

mod run;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use cl_config::notify::Notifier;
use cl_core::notice::ClusterEvent;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::context::Context;

/// How many events may wait for the notifiers before new ones are dropped.
pub const QUEUE: usize = 1024;

/// How a notifier's configured program becomes the file run, or why it may not run.
pub type Resolve = Arc<dyn Fn(&Path) -> Result<PathBuf, String> + Send + Sync>;

/// What the notifiers did, for `clstat --verbose` and the metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Notifier runs that exited 0.
    pub sent: AtomicU64,
    /// Notifier runs that failed, timed out, or were not run (untrusted, missing).
    pub failed: AtomicU64,
    /// Events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Dropped since the last event delivered (told with the next one).
    pending_dropped: AtomicU64,
}

/// One event waiting for the notifiers, numbered and timed when it happened.
#[derive(Debug, Clone)]
struct Queued {
    seq: u64,
    time: SystemTime,
    event: ClusterEvent,
}

/// Who this node is, for the variables and the document.
#[derive(Debug, Clone)]
struct Origin {
    cluster: String,
    local: String,
}

/// The manager's handle on the notifiers.
pub struct Notifications {
    tx: Option<mpsc::Sender<Queued>>,
    stats: Arc<Stats>,
    next_seq: u64,
}

impl Notifications {
    /// The notifiers of `ctx`'s clconf.xml, each checked like every program run as root (under
    /// the node root, owned by root, not writable by others) before every run. Without
    /// notifiers nothing is started and [`enabled`](Self::enabled) is false.
    pub fn spawn(ctx: &Context) -> Notifications {
        let paths = ctx.paths.clone();
        let resolve: Resolve =
            Arc::new(move |program| crate::runner::trusted_program(&paths, program));
        let (cluster, local) = (ctx.name().to_string(), ctx.local.clone());
        Notifications::start(cluster, local, ctx.cluster().notify.clone(), resolve, QUEUE)
    }

    /// Start the delivery task for `notifiers` (none: a handle that drops every event).
    pub fn start(
        cluster: String,
        local: String,
        notifiers: Vec<Notifier>,
        resolve: Resolve,
        capacity: usize,
    ) -> Notifications {
        let stats = Arc::new(Stats::default());
        if notifiers.is_empty() {
            return Notifications { tx: None, stats, next_seq: 1 };
        }
        for n in &notifiers {
            info!(program = %n.program.display(), "notifier {} is told about cluster events", n.program.display());
        }
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let origin = Origin { cluster, local };
        tokio::spawn(deliver(rx, origin, notifiers, resolve, stats.clone()));
        Notifications { tx: Some(tx), stats, next_seq: 1 }
    }

    /// Whether any notifier is configured (the engine need not hand out events otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queue `event` for the notifiers; never waits. A full queue drops it, logged and counted.
    pub fn notify(&mut self, event: ClusterEvent) {
        let Some(tx) = self.tx.as_ref() else { return };
        let queued = Queued { seq: self.next_seq, time: SystemTime::now(), event };
        match tx.try_send(queued) {
            Ok(()) => self.next_seq += 1,
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.stats.pending_dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(not_logged) =
                    cl_sys::ratelimit::global().admit("notify", "queue full", Instant::now())
                {
                    warn!(not_logged, "notifications dropped: {QUEUE} events already wait for the notifiers (a notifier is too slow)");
                }
            }
        }
    }

    /// The counters, as `clstat --verbose` and `--json` show them.
    pub fn counters(&self) -> serde_json::Value {
        serde_json::json!({
            "notify_sent": self.stats.sent.load(Ordering::Relaxed),
            "notify_failed": self.stats.failed.load(Ordering::Relaxed),
            "notify_dropped": self.stats.dropped.load(Ordering::Relaxed),
        })
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }
}

/// The JSON document a notifier reads on stdin.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    /// The event's name (`node_down`), as `LINUXHA_EVENT`.
    pub event: &'static str,
    /// Numbers the events this cldaemon delivered, from 1.
    pub seq: u64,
    /// When the event happened, RFC 3339 UTC.
    pub time: String,
    /// The cluster.
    pub cluster: &'a str,
    /// This node (where the event was seen).
    pub node: &'a str,
    /// The other node the event is about.
    pub subject_node: Option<&'a str>,
    /// The application it is about.
    pub application: Option<&'a str>,
    /// Why, in words.
    pub reason: Option<&'a str>,
    /// Events dropped (queue full) since the previous one delivered.
    pub dropped: u64,
    /// Every field of the event.
    pub details: &'a ClusterEvent,
}

/// The variables a notifier gets for one event (beside cldaemon's own environment).
fn variables(origin: &Origin, queued: &Queued, dropped: u64) -> Vec<(&'static str, String)> {
    let event = &queued.event;
    let mut vars = vec![
        ("LINUXHA_EVENT", event.kind().name().to_string()),
        ("LINUXHA_CLUSTER", origin.cluster.clone()),
        ("LINUXHA_NODE", origin.local.clone()),
        ("LINUXHA_SEQ", queued.seq.to_string()),
        ("LINUXHA_TIME", cl_drivers::script::rfc3339_utc(queued.time)),
        ("LINUXHA_DROPPED", dropped.to_string()),
    ];
    let optional = [
        ("LINUXHA_SUBJECT_NODE", event.subject_node()),
        ("LINUXHA_APPLICATION", event.application()),
        ("LINUXHA_REASON", event.reason()),
    ];
    vars.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v.to_string()))));
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    match event {
        ClusterEvent::NodeDown { take_over, .. } => {
            vars.push(("LINUXHA_TAKE_OVER", yes_no(*take_over)))
        }
        ClusterEvent::AppMoved { from, to, .. } => {
            vars.push(("LINUXHA_FROM", from.clone()));
            vars.push(("LINUXHA_TO", to.clone()));
        }
        ClusterEvent::TakeoverHeldBack { why, .. } => {
            let name = serde_json::to_value(why).ok().and_then(|v| v.as_str().map(String::from));
            vars.push(("LINUXHA_HOLD", name.unwrap_or_default()));
        }
        ClusterEvent::FenceResult { ok, .. } => vars.push(("LINUXHA_OK", yes_no(*ok))),
        ClusterEvent::LeaseChanged { holder } => {
            vars.push(("LINUXHA_HOLDER", holder.clone().unwrap_or_default()))
        }
        _ => {}
    }
    vars
}

/// The delivery task: events in order, each to every notifier that wants it, one at a time.
async fn deliver(
    mut rx: mpsc::Receiver<Queued>,
    origin: Origin,
    notifiers: Vec<Notifier>,
    resolve: Resolve,
    stats: Arc<Stats>,
) {
    while let Some(queued) = rx.recv().await {
        let dropped = stats.pending_dropped.swap(0, Ordering::Relaxed);
        let kind = queued.event.kind();
        let event = &queued.event;
        let document = Document {
            event: kind.name(),
            seq: queued.seq,
            time: cl_drivers::script::rfc3339_utc(queued.time),
            cluster: &origin.cluster,
            node: &origin.local,
            subject_node: event.subject_node(),
            application: event.application(),
            reason: event.reason(),
            dropped,
            details: event,
        };
        let mut json = serde_json::to_vec(&document).unwrap_or_default();
        json.push(b'\n');
        let vars = variables(&origin, &queued, dropped);
        for notifier in notifiers.iter().filter(|n| n.wants(kind)) {
            let ran = match resolve(&notifier.program) {
                Ok(program) => run::run(&program, &vars, &json, notifier.timeout).await,
                Err(why) => Err(run::Failure::NotRun(why)),
            };
            match ran {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(failure) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    let shown = notifier.program.display().to_string();
                    if let Some(not_logged) = cl_sys::ratelimit::global().admit(
                        "notify",
                        &format!("{shown}: {}", failure.class()),
                        Instant::now(),
                    ) {
                        warn!(program = %shown, seq = queued.seq, not_logged, "notifier {shown} failed on event {} #{}: {failure}", kind.name(), queued.seq);
                    }
                }
            }
        }
    }
}
