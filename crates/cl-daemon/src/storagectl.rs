//! The replicated-storage side of cldaemon: DRBD's event stream (`drbdsetup events2`) read in
//! the background, each volume's state kept here, and turned into the applications machine's
//! inputs through cl-core's rules (`storage::app_promotable`, `storage::on_disk_failure`).
//! Nothing here decides: it reads DRBD, reports, and runs `drbdadm` when asked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cl_config::appconf::AppConfig;
use cl_config::replication::DiskFailurePolicy;
use cl_core::node::NodeInput;
use cl_core::storage::{self, DiskFailureAction, ResyncProgress, VolumeState};
use cl_drivers::drbd::events::{Event2 as Event, Events2};
use cl_wire::msg::VolumeStatus;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// How often a resync's progress is sampled (DRBD 8.4 sends no statistics events by itself).
const RESYNC_SAMPLE: Duration = Duration::from_secs(1);

/// What the reader task hands to the main loop.
#[derive(Debug)]
pub enum StorageEvent {
    /// One line of `drbdsetup events2`.
    Line(String),
    /// The event stream ended (drbdsetup exited); it is restarted, and the states start over.
    Restarted,
}

/// One replicated volume of an application.
#[derive(Debug, Clone)]
struct Volume {
    app: String,
    device: String,
    mountpoint: String,
}

/// DRBD's view of this node's replicated volumes.
pub struct StorageControl {
    volumes: BTreeMap<String, Volume>,
    /// Applications with replicated data, with their volumes' resources in order.
    apps: BTreeMap<String, (Vec<String>, DiskFailurePolicy)>,
    parser: Events2,
    /// Earlier out-of-sync sample per resource, for the resync rate.
    samples: BTreeMap<String, (Instant, u64)>,
    progress: BTreeMap<String, ResyncProgress>,
    /// Resources whose local disk failure was already acted on.
    disk_failed: BTreeMap<String, bool>,
    /// The reader task, killed with this.
    reader: Option<tokio::task::JoinHandle<()>>,
    /// Tells the reader to sample statistics (only while a resync runs).
    resyncing: Arc<AtomicBool>,
}

impl StorageControl {
    /// The replicated volumes of `apps`; nothing is read until [`StorageControl::start`].
    pub fn new(apps: &[AppConfig]) -> StorageControl {
        let mut volumes = BTreeMap::new();
        let mut replicated = BTreeMap::new();
        for app in apps {
            let Some(replication) = &app.replication else { continue };
            let mut resources = Vec::new();
            for v in &replication.volumes {
                volumes.insert(
                    v.resource.clone(),
                    Volume {
                        app: app.name.clone(),
                        device: v.filesystem.device.display().to_string(),
                        mountpoint: v.filesystem.mountpoint.display().to_string(),
                    },
                );
                resources.push(v.resource.clone());
            }
            replicated.insert(app.name.clone(), (resources, replication.on_disk_failure));
        }
        StorageControl {
            volumes,
            apps: replicated,
            parser: Events2::new(),
            samples: BTreeMap::new(),
            progress: BTreeMap::new(),
            disk_failed: BTreeMap::new(),
            reader: None,
            resyncing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether any application has replicated data.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// Bring every replicated resource up (Secondary: replication runs whichever node runs the
    /// application) and start reading DRBD's events into `events`.
    pub fn start(&mut self, events: mpsc::Sender<StorageEvent>) {
        if self.is_empty() {
            return;
        }
        let resources: Vec<String> = self.volumes.keys().cloned().collect();
        let resyncing = self.resyncing.clone();
        self.reader = Some(tokio::task::spawn_local(async move {
            for resource in resources {
                let res = resource.clone();
                match tokio::task::spawn_blocking(move || cl_drivers::drbd::Drbd::system().up(&res))
                    .await
                {
                    Ok(Ok(_)) => info!(%resource, "DRBD resource {resource} is up"),
                    Ok(Err(e)) => {
                        error!(%resource, "cannot bring DRBD resource {resource} up: {e}")
                    }
                    Err(e) => error!(%resource, "bringing {resource} up: {e}"),
                }
            }
            read_events(events, resyncing).await;
        }));
    }

    /// Feed one event line; returns the inputs for the applications machine.
    pub fn on_event(&mut self, event: StorageEvent) -> Vec<NodeInput> {
        let inputs = self.feed(event);
        self.resyncing.store(self.resyncing(), Ordering::Relaxed);
        inputs
    }

    fn feed(&mut self, event: StorageEvent) -> Vec<NodeInput> {
        match event {
            StorageEvent::Restarted => {
                self.parser = Events2::new();
                self.samples.clear();
                self.progress.clear();
                Vec::new()
            }
            StorageEvent::Line(line) => match self.parser.handle_line(&line) {
                Event::Changed(resource) | Event::Removed(resource) => self.changed(&resource),
                Event::InitialDone => {
                    let apps: Vec<String> = self.apps.keys().cloned().collect();
                    apps.iter().map(|app| self.verdict(app)).collect()
                }
                Event::Helper { name, helper, status } => {
                    match status {
                        None => {
                            info!(resource = %name, "DRBD calls its {helper} handler for {name}")
                        }
                        Some(code) => {
                            info!(resource = %name, "DRBD's {helper} handler for {name} returned {code}")
                        }
                    }
                    self.changed(&name)
                }
                Event::Ignored => Vec::new(),
            },
        }
    }

    fn changed(&mut self, resource: &str) -> Vec<NodeInput> {
        let Some(volume) = self.volumes.get(resource).cloned() else { return Vec::new() };
        let state = self.parser.volumes().get(resource).cloned();
        self.sample(resource, state.as_ref());
        // The initial dump reports a resource one object at a time (resource, connection,
        // device, peer device): a verdict taken half-way would see the role without the disk
        // and could stop a running application after a cldaemon restart. Every verdict is
        // taken once the dump is complete (Event2::InitialDone).
        if !self.parser.initial_done() {
            return Vec::new();
        }
        let mut inputs = vec![self.verdict(&volume.app)];
        if let Some(state) = &state {
            let move_policy = self
                .apps
                .get(&volume.app)
                .is_some_and(|(_, policy)| *policy == DiskFailurePolicy::Move);
            let action = storage::on_disk_failure(state, move_policy);
            let already = self.disk_failed.get(resource).copied().unwrap_or(false);
            match action {
                DiskFailureAction::Nothing => {
                    self.disk_failed.remove(resource);
                }
                _ if already => {}
                DiskFailureAction::KeepRunning => {
                    self.disk_failed.insert(resource.to_string(), true);
                    error!(app = %volume.app, "the local disk under {resource} failed: {} runs on the peer's copy (diskless); move it and replace the disk", volume.app);
                }
                DiskFailureAction::Move => {
                    self.disk_failed.insert(resource.to_string(), true);
                    error!(app = %volume.app, "the local disk under {resource} failed: moving {} to the peer (on_disk_failure=move)", volume.app);
                    inputs.push(NodeInput::DataLost {
                        app: volume.app.clone(),
                        reason: format!("the local disk under {resource} failed"),
                    });
                }
            }
        }
        inputs
    }

    /// The data verdict of `app` from its volumes' states.
    fn verdict(&self, app: &str) -> NodeInput {
        let resources = self.apps.get(app).map(|(r, _)| r.clone()).unwrap_or_default();
        let volumes = self.parser.volumes();
        let blocked =
            storage::app_promotable(resources.iter().map(|r| (r.as_str(), volumes.get(r))))
                .err()
                .map(|(resource, why)| {
                    warn!(%app, "{app} may not start here: {resource}: {why}");
                    why
                });
        NodeInput::Data { app: app.to_string(), blocked }
    }

    fn sample(&mut self, resource: &str, state: Option<&VolumeState>) {
        let Some(state) = state.filter(|s| s.replication.resyncing()) else {
            self.samples.remove(resource);
            self.progress.remove(resource);
            return;
        };
        let now = Instant::now();
        let (then, earlier) =
            *self.samples.entry(resource.to_string()).or_insert((now, state.out_of_sync_kib));
        let elapsed = now.duration_since(then);
        if elapsed >= RESYNC_SAMPLE || !self.progress.contains_key(resource) {
            let progress = storage::resync_progress(
                state.size_kib,
                state.out_of_sync_kib,
                earlier,
                elapsed.as_millis() as u64,
            );
            self.progress.insert(resource.to_string(), progress);
            self.samples.insert(resource.to_string(), (now, state.out_of_sync_kib));
        }
    }

    /// A resync runs on some volume: statistics are sampled once a second meanwhile.
    pub fn resyncing(&self) -> bool {
        self.parser.volumes().values().any(|s| s.replication.resyncing())
    }

    /// The volumes of `app` for clstat.
    pub fn status(&self, app: &str) -> Vec<VolumeStatus> {
        let Some((resources, _)) = self.apps.get(app) else { return Vec::new() };
        resources
            .iter()
            .filter_map(|r| {
                let volume = self.volumes.get(r)?;
                Some(VolumeStatus {
                    resource: r.clone(),
                    device: volume.device.clone(),
                    mountpoint: volume.mountpoint.clone(),
                    state: self.parser.volumes().get(r).cloned(),
                    resync: self.progress.get(r).copied(),
                })
            })
            .collect()
    }

    /// Alarms about the volumes, for clstat.
    pub fn alarms(&self, local: &str) -> Vec<String> {
        self.volumes
            .iter()
            .filter_map(|(r, v)| {
                self.parser.volumes().get(r).map(|s| storage::volume_alarms(&v.app, r, s, local))
            })
            .flatten()
            .collect()
    }

    /// Whether `resource` is Primary here (an application's data is in use).
    pub fn is_primary(&self, resource: &str) -> bool {
        self.parser
            .volumes()
            .get(resource)
            .is_some_and(|s| s.role == cl_core::storage::Role::Primary)
    }
}

impl Drop for StorageControl {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

/// Read `drbdsetup events2` for ever (restarting it when it exits), plus, while a resync
/// runs, a statistics snapshot once a second, whose lines carry the out-of-sync amounts.
async fn read_events(events: mpsc::Sender<StorageEvent>, resyncing: Arc<AtomicBool>) {
    loop {
        let child = tokio::process::Command::new("drbdsetup")
            .args(["events2", "--timestamps", "--statistics", "all"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                error!("cannot run drbdsetup events2: {e}; replicated volumes stay unknown");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let Some(stdout) = child.stdout.take() else { return };
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut stats = tokio::time::interval(RESYNC_SAMPLE);
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if events.send(StorageEvent::Line(line)).await.is_err() {
                            return;
                        }
                    }
                    _ => break,
                },
                _ = stats.tick(), if resyncing.load(Ordering::Relaxed) => {
                    // `--now` prints the current state as `exists` lines: the parser takes
                    // them as changes, with fresh statistics.
                    if let Ok(out) = tokio::process::Command::new("drbdsetup")
                        .args(["events2", "--now", "--statistics", "all"])
                        .output()
                        .await
                    {
                        for line in String::from_utf8_lossy(&out.stdout).lines() {
                            let resyncing = line.contains("replication:Sync")
                                || line.contains("replication:PausedSync");
                            if resyncing
                                && events.send(StorageEvent::Line(line.to_string())).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            }
        }
        warn!("drbdsetup events2 ended; restarting it");
        let _ = child.kill().await;
        if events.send(StorageEvent::Restarted).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A peer's storage request: an outdate for its fence-peer handler (logged loudly), or the
/// work of `clbuildapp --vgbuild` and `clsplitbrain` run by [`crate::storageops`].
pub async fn handle_peer_op(
    paths: &cl_paths::Paths,
    from: &str,
    op: cl_wire::msg::StorageOp,
) -> cl_wire::msg::PeerReply {
    use cl_wire::msg::{PeerReply, StorageOp, StorageReply};
    let what = op.describe();
    let resource = match &op {
        StorageOp::Outdate { resource } => Some(resource.clone()),
        _ => None,
    };
    let exec = crate::storageops::Executor::system(paths);
    let reply = match tokio::task::spawn_blocking(move || exec.execute(op)).await {
        Ok(reply) => reply,
        Err(e) => StorageReply::Failed { error: format!("{what}: {e}") },
    };
    match (&reply, resource) {
        (StorageReply::Outdate { outcome, detail }, Some(resource)) => {
            if *outcome == cl_core::storage::OutdateReply::Failed {
                error!(peer = %from, %resource, "cannot outdate {resource} for {from}: {detail}");
            } else {
                warn!(peer = %from, %resource, "{from} lost its replication link for {resource} and writes on: this node's copy is marked {outcome:?}");
            }
        }
        (StorageReply::Failed { error }, _) => warn!(peer = %from, "{from} asked: {error}"),
        (StorageReply::Done { detail }, _) => info!(peer = %from, "{from} asked: {what}: {detail}"),
        _ => {}
    }
    PeerReply::Storage(reply)
}
