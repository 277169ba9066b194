//! The IO side of the takeover guard (cl-core `guard`): the peer-alive probe over ARP / ND,
//! the fence agent, the arbitrator's lease, and the "taking over" notice the heartbeats carry.
//!
//! Each piece of work runs in its own task and reports back to the manager's loop what it saw,
//! as a [`NodeInput`]; the engine (cl-core `node`) alone decides what it means: whether the
//! peer answered the probe, whether a lease reply counts as a grant.

use std::path::PathBuf;
use std::time::Duration;

use cl_config::clconf::FenceDevice;
use cl_core::arbiter::ArbOp;
use cl_core::dad::SilentAddresses;
use cl_core::guard::{Gate, GuardConfig, GuardStatus, LeaseView};
use cl_core::node::{NodeInput, ProbeAnswer, ProbeSeen};
use cl_core::timing::SafetyTiming;
use cl_core::Time;
use cl_drivers::fence::{FenceAction, FenceOutcome};
use cl_drivers::vip::{self, Probe, ProbeOutcome, Vip};
use cl_paths::Paths;
use tokio::sync::mpsc;
use tracing::warn;

use crate::context::Context;

/// The safety timing of this cluster (docs/safety.md).
pub fn safety_timing(ctx: &Context) -> SafetyTiming {
    let hb = &ctx.cluster().heartbeat;
    let timing = SafetyTiming::new(hb.interval, hb.timeout);
    match ctx.cluster().arbitrator {
        Some(arbitrator) => {
            let lease = arbitrator.lease.unwrap_or_else(|| timing.lease_floor());
            timing.with_lease(lease)
        }
        None => timing,
    }
}

/// The guard's configuration for this node.
pub fn guard_config(ctx: &Context) -> GuardConfig {
    let cluster = ctx.cluster();
    let timing = safety_timing(ctx);
    let peers = ctx
        .peers()
        .into_iter()
        .map(|p| {
            let fenced = cluster.node(&p).is_some_and(|n| n.fence.is_some());
            (p, fenced)
        })
        .collect();
    let fence_retry = ctx
        .peers()
        .iter()
        .filter_map(|p| cluster.node(p).and_then(|n| n.fence.as_ref()).map(|f| f.retry))
        .min();
    let first = cluster.nodes.first().map(|n| n.name.as_str()) == Some(ctx.local.as_str());
    // The fence race is lost by waiting until the peer's fence could have powered this node
    // off: the peer uses this node's own device.
    let local_poweroff = cluster
        .node(&ctx.local)
        .and_then(|n| n.fence.as_ref())
        .map_or(FenceDevice::DEFAULT_POWEROFF, |f| f.poweroff);
    GuardConfig::new(&ctx.local, peers, first, &timing, fence_retry, local_poweroff)
}

/// What the probe of `peer` looks for: its own addresses on every network this node shares with
/// it, and every application address it could hold, each from this node's interface there.
pub fn probe_targets(ctx: &Context, peer: &str) -> Vec<Vip> {
    let cluster = ctx.cluster();
    let (Some(me), Some(them)) = (cluster.node(&ctx.local), cluster.node(peer)) else {
        return Vec::new();
    };
    let mut targets: Vec<Vip> = Vec::new();
    for mine in &me.networks {
        if let Some(theirs) = them.network(&mine.name) {
            targets.push(Vip {
                address: theirs.address,
                prefix: mine.prefix,
                interface: mine.interface.clone(),
            });
        }
    }
    for app in crate::appctl::built_apps(ctx) {
        for v in &app.vips {
            if let Some(interface) = v.interfaces.get(&ctx.local) {
                targets.push(Vip {
                    address: v.address,
                    prefix: v.prefix,
                    interface: interface.clone(),
                });
            }
        }
    }
    targets
}

/// What the peer-alive probes found silent, and when each began, shared with the application
/// starts so that an address probed a moment ago is not probed again (cl-core `dad`).
#[derive(Clone, Debug)]
pub struct SilenceLog {
    origin: std::time::Instant,
    known: std::sync::Arc<std::sync::Mutex<SilentAddresses>>,
}

impl SilenceLog {
    /// An empty log on the clock that starts at `origin` (the manager's).
    pub fn new(origin: std::time::Instant) -> SilenceLog {
        SilenceLog { origin, known: Default::default() }
    }

    /// Now, on the log's clock.
    pub fn now(&self) -> Time {
        Time::ZERO + self.origin.elapsed()
    }

    /// What is known now: the fact handed to a start.
    pub fn snapshot(&self) -> SilentAddresses {
        self.known.lock().map(|k| k.clone()).unwrap_or_default()
    }

    fn record(&self, address: std::net::IpAddr, silent_at: Time, silent: bool) {
        if let Ok(mut known) = self.known.lock() {
            if silent {
                known.silent(address, silent_at);
            } else {
                known.answered(address);
            }
        }
    }
}

/// Probe `peer` at `targets` ([`probe_targets`]) in the background; what each address did
/// arrives on `results`, and what was found silent goes into `silence`. It probes as the
/// probe before an address is added does (`plan`, cl-core `dad::probe_plan`: scaled to the
/// heartbeat profile, 3 × 70 ms by default, 3 × 20 ms fast): a live peer answers ARP within a
/// millisecond on a LAN, and the same frames make its silence count for that later probe.
pub fn probe(
    targets: Vec<Vip>,
    peer: String,
    plan: cl_core::dad::ProbePlan,
    results: mpsc::Sender<NodeInput>,
    silence: SilenceLog,
) {
    tokio::spawn(async move {
        let began = silence.now();
        let probes = targets.into_iter().map(|t| async move {
            let how = Probe { count: plan.count, interval: plan.interval };
            let outcome = vip::probe_with(&t, how).await;
            (t, outcome)
        });
        let outcomes = futures_join_all(probes).await;
        let mut seen = Vec::new();
        for (target, outcome) in outcomes {
            let free = matches!(outcome, Ok(ProbeOutcome::Free));
            silence.record(target.address, plan.last_frame(began), free);
            let answer = match outcome {
                Ok(ProbeOutcome::InUse { by_mac }) => {
                    let mac: Vec<String> = by_mac.iter().map(|b| format!("{b:02x}")).collect();
                    ProbeAnswer::Answered { by: mac.join(":") }
                }
                Ok(ProbeOutcome::Free) => ProbeAnswer::Silent,
                Err(e) => {
                    warn!("peer-alive probe of {} failed: {e}", target.address);
                    ProbeAnswer::Error { reason: e.to_string() }
                }
            };
            seen.push(ProbeSeen { address: target.address, answer });
        }
        let _ = results.send(NodeInput::ProbeResult { peer, seen }).await;
    });
}

/// Run futures concurrently and collect their outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = Vec::new();
    for f in futures {
        set.push(tokio::spawn(f));
    }
    let mut out = Vec::new();
    for handle in set {
        if let Ok(v) = handle.await {
            out.push(v);
        }
    }
    out
}

/// Where cldaemon leaves the peers it is taking over, for clhbd2 to put in every heartbeat.
pub fn notice_file(ctx: &Context) -> PathBuf {
    ctx.paths.run_dir().join(format!("{}.taking-over", ctx.name()))
}

/// Write the notice; clhbd2 reads it before every beat. An empty list leaves an empty file
/// rather than none: clhbd2 looks for the file relative to its directory, and one that is
/// missing costs it a second look, at the directory, at every beat (issue 12).
pub fn write_notice(ctx: &Context, peers: &[String]) {
    let path = notice_file(ctx);
    let text = peers.join("\n");
    if let Err(e) = cl_paths::write_atomic(&path, text.as_bytes()) {
        // An old notice must not outlive the engine's: no file reads as none too.
        let removed = peers.is_empty()
            && std::fs::remove_file(&path)
                .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
                .is_ok();
        if !removed {
            warn!("cannot write {}: {e:#}", path.display());
        }
    }
}

/// The peers named in the notice file at `path`, if any.
pub fn read_notice_at(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).filter(|l| !l.is_empty()).collect())
        .unwrap_or_default()
}

/// Power `peer` off with its fence device; the result arrives on `results`.
pub fn fence(ctx: &Context, peer: String, results: mpsc::Sender<NodeInput>) {
    spawn_fence_agent(ctx, peer, FenceAction::Off, results, |peer, ok, detail| {
        NodeInput::FenceResult { peer, ok, detail }
    });
}

/// Ask `peer`'s fence device whether it is off; the answer arrives on `results` (a query that
/// fails counts as "not off").
pub fn fence_status(ctx: &Context, peer: String, results: mpsc::Sender<NodeInput>) {
    spawn_fence_agent(ctx, peer, FenceAction::Status, results, |peer, off, detail| {
        NodeInput::FenceStatusResult { peer, off, detail }
    });
}

/// Run `peer`'s fence agent with `action` in the background and report what
/// [`run_fence_agent`] says, as `input` makes it, on `results`.
fn spawn_fence_agent(
    ctx: &Context,
    peer: String,
    action: FenceAction,
    results: mpsc::Sender<NodeInput>,
    input: fn(String, bool, String) -> NodeInput,
) {
    let device = ctx.cluster().node(&peer).and_then(|n| n.fence.clone());
    let paths = ctx.paths.clone();
    // The agent runner's future is not Send: give it a thread and a runtime of its own.
    std::thread::spawn(move || {
        let (off, detail) = run_fence_agent(device, &peer, action, &paths);
        let _ = results.blocking_send(input(peer, off, detail));
    });
}

/// Run `device`'s agent on `peer` with `action`: whether the peer is off afterwards (for
/// `Off`: the fence succeeded; for `Status`: the device reports it off), and what to say.
fn run_fence_agent(
    device: Option<FenceDevice>,
    peer: &str,
    action: FenceAction,
    paths: &Paths,
) -> (bool, String) {
    let Some(device) = device else {
        return (false, "no fence device is configured for it".to_string());
    };
    // Checked again now, not only at clbuild: the agent runs as root, and a fence that cannot
    // run safely is a failed fence (no takeover).
    if let Err(why) = crate::runner::trusted_program(paths, &device.agent) {
        return (false, format!("fence agent {}: {why}", device.agent.display()));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return (false, format!("cannot run the fence agent: {e}")),
    };
    let agent = device.agent.display().to_string();
    match runtime.block_on(cl_drivers::fence::fence(&device, peer, action, paths.root())) {
        Ok(FenceOutcome::PoweredOn) => (false, format!("{agent} reports it on")),
        Ok(_) => (true, format!("{agent} reported it off")),
        Err(e) => (false, e.to_string()),
    }
}

/// Send lease request `id` to the arbitrator; its answer, as given, arrives on `results`. No
/// answer is reported as nothing: the engine counts a request unanswered in time as refused.
pub fn lease(ctx: &Context, link: &ArbLink, id: u64, op: ArbOp, results: mpsc::Sender<NodeInput>) {
    let ctx = ctx.clone();
    let link = link.clone();
    let timing = safety_timing(&ctx);
    tokio::spawn(async move {
        // One client for the daemon's life: its sequence numbers and replay window make an
        // old grant, replayed, worthless; a fresh client per request would accept it.
        let mut slot = link.lock().await;
        if slot.is_none() {
            match crate::arbclient::ArbClient::from_context(&ctx).await {
                Some(Ok(client)) => *slot = Some(client),
                Some(Err(e)) => {
                    warn!("cannot reach the arbitrator: {e}");
                    return;
                }
                None => return,
            }
        }
        let Some(client) = slot.as_mut() else { return };
        let answer_timeout = timing.lease.map_or(timing.decision_time(), |l| l.answer_timeout);
        match client.request(op, answer_timeout).await {
            Ok(answer) => {
                let reply = answer.reply;
                if let Some(error) = &reply.error {
                    warn!("the arbitrator refused lease request {id}: {error}");
                }
                let input = NodeInput::LeaseReply {
                    id,
                    granted: reply.granted,
                    holder: reply.holder,
                    lease: Duration::from_millis(reply.lease_ms),
                    remaining: Duration::from_millis(reply.remaining_ms),
                };
                let _ = results.send(input).await;
            }
            Err(e) => warn!("lease request {id} ({op:?}) got no answer: {e}"),
        }
    });
}

/// The node's connection to the arbitrator, kept for the daemon's life.
pub type ArbLink = std::sync::Arc<tokio::sync::Mutex<Option<crate::arbclient::ArbClient>>>;

/// The guard's status as clstat lines: alarms, and where each takeover stands.
pub fn describe(status: &GuardStatus, now: Time) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    for (peer, gate) in &status.gates {
        let text = match gate {
            Gate::Idle => continue,
            Gate::StandBy => "down; this node takes nothing over (it cannot tell it is connected)".to_string(),
            Gate::Lease => "down; waiting for the arbitrator's lease before taking anything over".to_string(),
            Gate::FenceAt { at, attempts } => format!(
                "down; fencing it in {} ms ({attempts} failed attempts so far)",
                at.since(now).as_millis()
            ),
            Gate::Fencing { attempts } => format!("down; fencing it (attempt {attempts})"),
            Gate::Probing => "down; probing its addresses before taking over".to_string(),
            Gate::ProbeAt { .. } => "down on the heartbeat links but it answers on the public network: not taken over".to_string(),
            Gate::Settle { at } => format!(
                "down and silent everywhere now; taking over in {} ms, then the takeover delay (it may only now have lost this node)",
                at.since(now).as_millis()
            ),
            Gate::Delay { until, .. } => format!(
                "silent everywhere; its applications start here in {} ms (the takeover delay)",
                until.since(now).as_millis()
            ),
            Gate::Cleared { fenced: true } => "fenced; its applications are taken over".to_string(),
            Gate::Cleared { fenced: false } => "silent everywhere; its applications are taken over".to_string(),
        };
        lines.push(format!("{peer}: {text}"));
    }
    if let Some(lease) = &status.lease {
        let text = match lease {
            LeaseView::NotNeeded => None,
            LeaseView::Asking => Some("asking the arbitrator for the lease".to_string()),
            LeaseView::Held { until } => Some(format!(
                "this node holds the arbitrator's lease (for {} ms more)",
                until.since(now).as_millis()
            )),
            LeaseView::Denied { holder: Some(h) } => {
                Some(format!("the arbitrator's lease is held by {h}"))
            }
            LeaseView::Denied { holder: None } => {
                Some("the arbitrator refused the lease".to_string())
            }
            LeaseView::NoAnswer => Some("the arbitrator does not answer".to_string()),
        };
        lines.extend(text);
    }
    (status.alarms.clone(), lines)
}
