//! The applications side of cldaemon: the IO of the engine's application actions (cl-core
//! `node`). Starts and stops run in [`Runner`]s in tasks whose results come back to the main
//! loop as [`AppEvent`]s, which it hands to the engine as `NodeInput`s; monitors, DRBD's
//! events and the announcements to the peers live here too. Nothing here decides where an
//! application runs.

use std::collections::BTreeMap;
use std::time::Instant;

use cl_config::{AppConfig, Built};
use cl_core::apps::{Announcement, AppPolicy, AppState, Apps, Failback};
use cl_core::node::NodeInput;
use cl_core::Time;
use cl_wire::msg::{
    ApplicationState, ApplicationStatus, DataBlocked, MonitorStatus, PeerRequest, ResourceStatus,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::context::Context;
use crate::runner::Runner;

/// A resource task's result, for the main loop.
pub enum AppEvent {
    /// The start sequence ended.
    Started {
        /// Application.
        app: String,
        /// Ok, or why not.
        result: Result<(), String>,
    },
    /// The stop sequence ended.
    Stopped {
        /// Application.
        app: String,
        /// Ok, or what may still be held.
        result: Result<(), String>,
    },
    /// A monitor failed.
    MonitorFailed {
        /// Application.
        app: String,
        /// What failed.
        reason: String,
    },
}

/// The NIC check's period when link notifications are not available.
const LINK_POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// The NIC check's period besides the link notifications: a backstop only. A notification
/// lost to a full socket is not silent (the next read fails with ENOBUFS, which rtnetlink
/// passes on as an overrun message: a change, so the links are checked at once); one the
/// kernel could not even allocate (memory exhausted) is found by this check. Every check is a
/// netlink socket and a dump, once per 2 s before (issue 12).
const LINK_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Latest monitor results per application: (what, result, when).
type Results =
    std::rc::Rc<std::cell::RefCell<BTreeMap<String, BTreeMap<Check, (String, Instant)>>>>;

/// What a result in [`Results`] is of: clstat shows monitors and resources apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    /// One of the application's monitors, or the NIC check (`links`), as clstat names it.
    Monitor(String),
    /// A resource's own monitor, by resource id.
    Resource(String),
}

/// The applications of this node.
pub struct AppControl {
    results: Results,
    ctx: Context,
    /// The manager's clock, and what the takeover guard's probes found silent.
    silence: crate::guardctl::SilenceLog,
    runners: BTreeMap<String, Runner>,
    monitors: BTreeMap<String, Vec<JoinHandle<()>>>,
    /// Start sequences still running: a stop must not run beside one.
    starts: BTreeMap<String, JoinHandle<()>>,
    events: mpsc::Sender<AppEvent>,
    /// DRBD's view of the replicated volumes.
    storage: crate::storagectl::StorageControl,
    /// Whether every peer acknowledged the newest announcement.
    delivery: std::rc::Rc<std::cell::RefCell<Delivery>>,
}

/// The newest announcement sent and whether every peer has acknowledged it: only one that
/// did not reach a peer is sent again (an older one arriving late says nothing of the newest).
#[derive(Debug, Default)]
struct Delivery {
    seq: u64,
    delivered: bool,
}

/// How long a connected node waits, after its guard let it take over a silent peer, before
/// starting the peer's applications: the time the peer, if it is in fact the one cut off, needs
/// to notice, decide and stop its copy (cl-core `timing`, docs/safety.md). A fenced peer is
/// taken over without it.
pub fn takeover_delay(ctx: &Context) -> std::time::Duration {
    crate::guardctl::safety_timing(ctx).takeover_delay()
}

/// The built applications under this node's root.
pub fn built_apps(ctx: &Context) -> Vec<AppConfig> {
    let Ok(entries) = std::fs::read_dir(ctx.paths.built_dir()) else { return Vec::new() };
    let mut apps: Vec<AppConfig> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with("app-")
                && e.file_name().to_string_lossy().ends_with(".json")
        })
        .filter_map(|e| {
            let built: Built<AppConfig> =
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some(built.config)
        })
        .collect();
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    apps
}

impl AppControl {
    /// The applications of this node, all stopped.
    pub fn new(
        ctx: Context,
        silence: crate::guardctl::SilenceLog,
        events: mpsc::Sender<AppEvent>,
    ) -> AppControl {
        let configs = built_apps(&ctx);
        let storage = crate::storagectl::StorageControl::new(&configs);
        let runners =
            configs.into_iter().map(|a| (a.name.clone(), Runner::new(ctx.clone(), a))).collect();
        AppControl {
            results: Results::default(),
            ctx,
            silence,
            runners,
            monitors: BTreeMap::new(),
            starts: BTreeMap::new(),
            events,
            storage,
            delivery: Default::default(),
        }
    }

    /// What the engine needs to know about each application, from its built configuration.
    pub fn policies(&self) -> Vec<AppPolicy> {
        self.runners
            .values()
            .map(|runner| {
                let a = runner.config();
                let budgets = a
                    .monitors
                    .iter()
                    .map(|m| (m.restarts, m.window))
                    .chain(a.resources.iter().map(|r| (r.restarts, r.window)));
                let (restarts, window) = AppPolicy::strictest_budget(budgets);
                AppPolicy {
                    name: a.name.clone(),
                    nodes: a.nodes.clone(),
                    autostart: a.autostart,
                    failback: match a.failback {
                        cl_config::appconf::Failback::Auto => Failback::Auto,
                        cl_config::appconf::Failback::Manual => Failback::Manual,
                    },
                    restarts,
                    window,
                    replicated: a.replication.is_some(),
                }
            })
            .collect()
    }

    /// Bring the replicated volumes up and follow DRBD's events (into `events`).
    pub fn start_storage(&mut self, events: mpsc::Sender<crate::storagectl::StorageEvent>) {
        self.storage.start(events);
    }

    /// A DRBD event: the data verdicts it changes, for the engine.
    pub fn on_storage(&mut self, event: crate::storagectl::StorageEvent) -> Vec<NodeInput> {
        self.storage.on_event(event)
    }

    /// Alarms about replicated volumes (split brain, a lost disk, frozen I/O).
    pub fn storage_alarms(&self) -> Vec<String> {
        self.storage.alarms(&self.ctx.local)
    }

    fn now(&self) -> Time {
        self.silence.now()
    }

    /// After a cldaemon restart: the applications whose resources are active here (the engine
    /// hears them as adopted).
    pub async fn adopt_running(&self) -> Vec<String> {
        let mut adopted = Vec::new();
        for (name, runner) in &self.runners {
            if runner.is_active().await {
                info!(app = %name, "{name} is active here: adopting it");
                adopted.push(name.clone());
            }
        }
        adopted
    }

    /// A partition healed: announce the addresses of `app` again (gratuitous ARP / ND).
    pub fn reannounce(&self, app: &str) {
        if let Some(runner) = self.runners.get(app) {
            runner.reannounce();
        }
    }

    /// Run the start sequence of `app` in a task; [`AppEvent::Started`] reports the end.
    pub fn start(&mut self, app: String) {
        let Some(runner) = self.runners.get(&app).cloned() else { return };
        info!(%app, "starting {app}");
        let events = self.events.clone();
        let name = app.clone();
        // The guard's probe results as they stand now: an address it found silent a
        // moment ago is not probed again (cl-core `dad`).
        let (known, now) = (self.silence.snapshot(), self.silence.now());
        let task = tokio::task::spawn_local(async move {
            let result = runner.start(&known, now).await;
            let _ = events.send(AppEvent::Started { app, result }).await;
        });
        self.starts.insert(name, task);
    }

    /// Run the stop sequence of `app` in a task (within the stop margin when `urgent`);
    /// [`AppEvent::Stopped`] reports the end.
    pub fn stop(&mut self, app: String, reason: String, urgent: bool) {
        for task in self.monitors.remove(&app).unwrap_or_default() {
            task.abort();
        }
        let Some(runner) = self.runners.get(&app).cloned() else { return };
        // A node that gave up must have released everything within the stop margin:
        // the survivor's takeover delay counts on it (docs/safety.md).
        let deadline = urgent.then(|| crate::guardctl::safety_timing(&self.ctx).stop_margin);
        match deadline {
            Some(d) => {
                warn!(%app, "stopping {app} within {} ms: {reason}", d.as_millis())
            }
            None => info!(%app, "stopping {app}: {reason}"),
        }
        let events = self.events.clone();
        // A start still running could add the address or mount after the stop:
        // an urgent stop cuts it short, any other waits for it; then the stop
        // releases whatever it acquired.
        let start = self.starts.remove(&app).filter(|t| !t.is_finished());
        tokio::task::spawn_local(async move {
            if let Some(start) = start {
                if deadline.is_some() {
                    start.abort();
                }
                let _ = start.await;
            }
            let result = runner.stop(deadline).await;
            let _ = events.send(AppEvent::Stopped { app, result }).await;
        });
    }

    /// Send this node's announcement to every peer (in the background). Peers answer each one,
    /// so a failure is known: [`announce_undelivered`](Self::announce_undelivered) says whether
    /// the newest must be sent again.
    pub fn announce(&self, announcement: Announcement) {
        let ctx = self.ctx.clone();
        let seq = announcement.seq;
        *self.delivery.borrow_mut() = Delivery { seq, delivered: false };
        let delivery = self.delivery.clone();
        tokio::task::spawn_local(async move {
            let request = PeerRequest::Apps {
                announcement: serde_json::to_value(&announcement).unwrap_or_default(),
            };
            let mut delivered = true;
            for peer in ctx.peers() {
                let addresses = ctx.manager_addresses(&peer);
                delivered &= crate::transport::peer_request(
                    &ctx.key,
                    ctx.name(),
                    &ctx.local,
                    &addresses,
                    &request,
                    std::time::Duration::from_millis(500),
                )
                .await
                .is_ok();
            }
            let mut newest = delivery.borrow_mut();
            if newest.seq == seq {
                newest.delivered = delivered;
            }
        });
    }

    /// The newest announcement has not reached every peer (yet): the housekeeping sends it again.
    pub fn announce_undelivered(&self) -> bool {
        !self.delivery.borrow().delivered
    }

    /// A resource task finished: what the engine must hear. `apps` is the engine's view.
    pub fn on_event(&mut self, event: AppEvent, apps: &Apps) -> NodeInput {
        match event {
            AppEvent::Started { app, result } => {
                self.starts.remove(&app);
                let still_wanted = apps.state(&app) == Some(AppState::Starting);
                match &result {
                    Ok(()) if !still_wanted => {
                        info!(%app, "{app} started, but it is being stopped")
                    }
                    Ok(()) => info!(%app, "{app} is running"),
                    Err(reason) => error!(%app, "{app} failed to start: {reason}"),
                }
                let (ok, reason) = split(result);
                NodeInput::StartFinished { app, ok, reason }
            }
            AppEvent::Stopped { app, result } => {
                match &result {
                    Ok(()) => info!(%app, "{app} is stopped"),
                    Err(reason) => {
                        error!(%app, "{app} could not be stopped cleanly: {reason}; it stays blocked here until cleared")
                    }
                }
                let (ok, reason) = split(result);
                NodeInput::StopFinished { app, ok, reason }
            }
            AppEvent::MonitorFailed { app, reason } => {
                // The engine counts it only against a running application.
                warn!(%app, "monitor of {app} failed: {reason}");
                NodeInput::MonitorFailed { app, reason }
            }
        }
    }

    /// Watch `app`, running here, with its monitors, its resources' own monitors and the NIC
    /// check; a failure arrives as [`AppEvent::MonitorFailed`].
    pub fn start_monitors(&mut self, app: &str) {
        let Some(runner) = self.runners.get(app) else { return };
        self.results.borrow_mut().remove(app);
        let mut tasks = Vec::new();
        for (index, monitor) in runner.config().monitors.iter().enumerate() {
            let runner = runner.clone();
            let events = self.events.clone();
            let results = self.results.clone();
            let interval = monitor.interval;
            let what = describe(&monitor.kind);
            let app = app.to_string();
            tasks.push(tokio::task::spawn_local(async move {
                let mut tick = cl_sys::ticker::Periodic::after(interval);
                loop {
                    tick.tick().await;
                    let outcome = runner.check(index).await;
                    let shown = match &outcome {
                        Some(Err(reason)) => format!("failed: {reason}"),
                        _ => "ok".to_string(),
                    };
                    results
                        .borrow_mut()
                        .entry(app.clone())
                        .or_default()
                        .insert(Check::Monitor(what.clone()), (shown, Instant::now()));
                    if let Some(Err(reason)) = outcome {
                        let _ =
                            events.send(AppEvent::MonitorFailed { app: app.clone(), reason }).await;
                        return;
                    }
                }
            }));
        }
        // Each resource's own monitor (OCF monitor, LSB status) at its interval; "not
        // running" (OCF 7, LSB 3) and every other failure count like a failed monitor.
        for (index, resource) in runner.config().resources.iter().enumerate() {
            let runner = runner.clone();
            let events = self.events.clone();
            let results = self.results.clone();
            let interval = resource.monitor_interval;
            let what = format!("resource {}", resource.id);
            let check = Check::Resource(resource.id.clone());
            let app = app.to_string();
            tasks.push(tokio::task::spawn_local(async move {
                let mut tick = cl_sys::ticker::Periodic::after(interval);
                loop {
                    tick.tick().await;
                    let Some(health) = runner.check_resource(index).await else { return };
                    results
                        .borrow_mut()
                        .entry(app.clone())
                        .or_default()
                        .insert(check.clone(), (health.shown(), Instant::now()));
                    if health != crate::agents::Health::Running {
                        let reason = format!("{what}: {}", health.shown());
                        let _ =
                            events.send(AppEvent::MonitorFailed { app: app.clone(), reason }).await;
                        return;
                    }
                }
            }));
        }
        // The NIC check: a VIP whose interface loses its link is unreachable, whatever the
        // application's own monitors say.
        if !runner.config().vips.is_empty() {
            let runner = runner.clone();
            let events = self.events.clone();
            let results = self.results.clone();
            let app = app.to_string();
            tasks.push(tokio::task::spawn_local(async move {
                // Checked when the kernel says a link changed, and every LINK_RECHECK anyway
                // (a notification lost to a full socket); every LINK_POLL without them.
                let mut changes = cl_drivers::vip::LinkEvents::open()
                    .map_err(|e| warn!(%app, "link changes are polled: {e}"))
                    .ok();
                // Armed only while notifications come: a timerfd wakes the process at every
                // expiry, read or not.
                let mut recheck =
                    changes.is_some().then(|| cl_sys::ticker::Periodic::after(LINK_RECHECK));
                loop {
                    let outcome = runner.check_links().await;
                    let shown = match &outcome {
                        Ok(()) => "ok".to_string(),
                        Err(reason) => format!("failed: {reason}"),
                    };
                    results
                        .borrow_mut()
                        .entry(app.clone())
                        .or_default()
                        .insert(Check::Monitor("links".into()), (shown, Instant::now()));
                    if let Err(reason) = outcome {
                        let _ =
                            events.send(AppEvent::MonitorFailed { app: app.clone(), reason }).await;
                        return;
                    }
                    let (Some(watch), Some(clock)) = (changes.as_mut(), recheck.as_mut()) else {
                        tokio::time::sleep(LINK_POLL).await;
                        continue;
                    };
                    tokio::select! {
                        alive = watch.changed() => if !alive { (changes, recheck) = (None, None) },
                        _ = clock.tick() => {}
                    }
                }
            }));
        }
        // Periodic announcements, when the application asks for them.
        if let Some(every) = runner.config().announce_every {
            let runner = runner.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let mut tick = cl_sys::ticker::Periodic::after(every);
                loop {
                    tick.tick().await;
                    runner.reannounce();
                }
            }));
        }
        self.monitors.insert(app.to_string(), tasks);
    }

    /// Where each application runs, for clstat, from the engine's view `apps`.
    pub fn status(&self, apps: &Apps) -> Vec<ApplicationStatus> {
        apps.names()
            .into_iter()
            .map(|name| {
                let view = apps.view(&name);
                let active = view.iter().find(|(_, s)| s.may_be_active());
                let (state, node) = match active {
                    Some((node, state)) => (state_view(*state), Some(node.clone())),
                    None if !view.is_empty()
                        && view.iter().all(|(_, s)| *s == AppState::Failed) =>
                    {
                        (ApplicationState::Failed, None)
                    }
                    None => (ApplicationState::Stopped, None),
                };
                let failure = apps.last_failure(&name);
                // The core keeps monotonic time; operators want the wall-clock moment.
                let failure_at = failure.as_ref().map(|(at, _)| {
                    let ago = self.now().since(*at);
                    let when = std::time::SystemTime::now()
                        .checked_sub(ago)
                        .unwrap_or(std::time::UNIX_EPOCH);
                    cl_drivers::script::rfc3339_utc(when)
                });
                let failure = failure.map(|(_, reason)| reason);
                ApplicationStatus {
                    name: name.clone(),
                    state,
                    node,
                    restarts: apps.failures(&name) as u32,
                    last_failure: failure,
                    last_failure_at: failure_at,
                    vips: self
                        .runners
                        .get(&name)
                        .map(|r| {
                            r.config()
                                .vips
                                .iter()
                                .map(|v| format!("{}/{}", v.address, v.prefix))
                                .collect()
                        })
                        .unwrap_or_default(),
                    resources: self.resource_status(&name),
                    volumes: self.storage.status(&name),
                    data_blocked: self.data_blocked(apps, &name),
                    monitors: self
                        .results
                        .borrow()
                        .get(&name)
                        .map(|m| {
                            m.iter()
                                .filter_map(|(check, found)| match check {
                                    Check::Monitor(name) => Some((name, found)),
                                    Check::Resource(_) => None,
                                })
                                .map(|(check, (result, at))| MonitorStatus {
                                    check: check.clone(),
                                    result: result.clone(),
                                    age_ms: at.elapsed().as_millis() as u64,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The nodes that may not promote the data of `app`, this one first.
    fn data_blocked(&self, apps: &Apps, app: &str) -> Vec<DataBlocked> {
        let here = apps
            .data_blocked(app)
            .map(|why| DataBlocked { node: self.ctx.local.clone(), reason: why.clone() });
        here.into_iter()
            .chain(
                apps.peer_data_blocked(app)
                    .into_iter()
                    .map(|(node, reason)| DataBlocked { node, reason }),
            )
            .collect()
    }

    /// The resources of `app` in start order, with their latest monitor results.
    fn resource_status(&self, app: &str) -> Vec<ResourceStatus> {
        let Some(runner) = self.runners.get(app) else { return Vec::new() };
        let results = self.results.borrow();
        let latest = results.get(app);
        runner
            .config()
            .resources
            .iter()
            .map(|r| {
                let found = latest.and_then(|m| m.get(&Check::Resource(r.id.clone())));
                ResourceStatus {
                    id: r.id.clone(),
                    kind: r.kind.to_string(),
                    result: found.map(|(result, _)| result.clone()),
                    age_ms: found.map(|(_, at)| at.elapsed().as_millis() as u64),
                }
            })
            .collect()
    }

    /// Stop every application active here and wait for it (clhalt on this node).
    pub async fn stop_all_here(&mut self, apps: &Apps) {
        for (app, tasks) in std::mem::take(&mut self.monitors) {
            for task in tasks {
                task.abort();
            }
            let _ = app;
        }
        for (name, runner) in &self.runners {
            if apps.state(name).is_some_and(|s| s.may_be_active()) {
                info!(app = %name, "stopping {name}: the cluster is halted on this node");
                if let Err(e) = runner.stop(None).await {
                    error!(app = %name, "{name} could not be stopped cleanly: {e}");
                }
            }
        }
    }
}

fn split(result: Result<(), String>) -> (bool, String) {
    match result {
        Ok(()) => (true, String::new()),
        Err(reason) => (false, reason),
    }
}

fn state_view(state: AppState) -> ApplicationState {
    match state {
        AppState::Stopped => ApplicationState::Stopped,
        AppState::Starting => ApplicationState::Starting,
        AppState::Running => ApplicationState::Running,
        AppState::Stopping => ApplicationState::Stopping,
        AppState::Failed => ApplicationState::Failed,
        AppState::Stuck => ApplicationState::Stuck,
    }
}

/// How a monitor shows in clstat.
fn describe(kind: &cl_config::appconf::MonitorKind) -> String {
    use cl_config::appconf::MonitorKind;
    match kind {
        MonitorKind::Process { name } => format!("process {name}"),
        MonitorKind::Tcp { address: Some(a), port } => format!("tcp {a}:{port}"),
        MonitorKind::Tcp { address: None, port } => format!("tcp {port}"),
        MonitorKind::Command { path } => format!("command {}", path.display()),
    }
}
