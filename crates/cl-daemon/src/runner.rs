//! Running one application's resources on this node: the start and stop sequences and the
//! monitors (ARCHITECTURE.md §4). The decision core says *when*; this says *how*.
//!
//! Start: filesystems (fsck, mount) → VIPs (probe, add, announce) → resources (OCF agents, LSB
//! init scripts) in the listed order → start script. Stop: stop script → resources in reverse
//! order, then every process left in the application's cgroup is killed → VIPs removed →
//! filesystems unmounted (busy: holders killed; never a lazy unmount). Every step has a time
//! limit; every step is logged to `/var/log/cluster/<app>.log` and cldaemon.log.

use std::path::PathBuf;
use std::time::Duration;

use cl_config::appconf::{AppConfig, MonitorKind};
use cl_core::dad::SilentAddresses;
use cl_core::Time;
use cl_drivers::fs::FsSpec;
use cl_drivers::monitor::{Check, MonitorResult};
use cl_drivers::script::AppCgroup;
use cl_drivers::vip::{Announce, Probe, ProbeOutcome, Vip};
use tracing::{error, info, warn};

use crate::agents::{self, Health};
use crate::context::Context;

/// Time limits for filesystem work.
const FS_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a promotion is tried while DRBD refuses it only because it has not yet
/// recorded its fence-peer handler's answer (the cluster declared the peer gone before DRBD
/// noticed: `DrbdError::peer_not_outdated`): up to 10 s of pauses, beyond DRBD's own detection
/// with the default `ping-int` 2 s / `ping-timeout` 0.5 s and with the lab guests' 5 s / 2 s.
const PROMOTE_ATTEMPTS: u32 = 11;
/// The pause between those tries.
const PROMOTE_PAUSE: Duration = Duration::from_secs(1);

/// One application on this node.
#[derive(Clone)]
pub struct Runner {
    ctx: Context,
    app: AppConfig,
}

impl Runner {
    /// The runner of `app` for this node.
    pub fn new(ctx: Context, app: AppConfig) -> Runner {
        Runner { ctx, app }
    }

    /// The application's name.
    pub fn name(&self) -> &str {
        &self.app.name
    }

    /// Its configuration.
    pub fn config(&self) -> &AppConfig {
        &self.app
    }

    fn log_file(&self) -> PathBuf {
        self.ctx.paths.log_dir().join(format!("{}.log", self.app.name))
    }

    /// The application's cgroup, below cldaemon's own (so whatever contains the node — a
    /// lab node's cgroup, a systemd unit — contains its applications too), one per cluster
    /// and application.
    fn cgroup(&self) -> Result<AppCgroup, String> {
        let parent = own_cgroup().map(|c| c.join(format!("linuxha-{}", self.ctx.name())));
        let parent = parent.ok_or_else(|| {
            "cannot find this process's cgroup v2 (is cgroup2 mounted?)".to_string()
        })?;
        std::fs::create_dir_all(&parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        AppCgroup::new(&parent, &self.app.name)
            .map_err(|e| format!("cannot create the cgroup of {}: {e}", self.app.name))
    }

    fn vips(&self) -> Vec<Vip> {
        self.app
            .vips
            .iter()
            .filter_map(|v| {
                let interface = v.interfaces.get(&self.ctx.local)?;
                Some(Vip { address: v.address, prefix: v.prefix, interface: interface.clone() })
            })
            .collect()
    }

    /// The replicated volumes' DRBD resources, in start order.
    fn replicated(&self) -> Vec<String> {
        self.app
            .replication
            .iter()
            .flat_map(|r| r.volumes.iter().map(|v| v.resource.clone()))
            .collect()
    }

    fn filesystems(&self) -> Vec<FsSpec> {
        let replicated = self.app.replication.iter().flat_map(|r| r.volumes.iter());
        self.app
            .filesystems
            .iter()
            .chain(replicated.map(|v| &v.filesystem))
            .map(|f| FsSpec {
                device: self.ctx.paths.resolve(&f.device),
                mountpoint: self.ctx.paths.resolve(&f.mountpoint),
                fstype: f.fstype.clone(),
                options: f.options.clone(),
                fsck: f.fsck,
            })
            .collect()
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = crate::child_env(&self.ctx);
        env.push(("LINUXHA_APPLICATION".into(), self.app.name.clone()));
        env.push(("LINUXHA_CLUSTER".into(), self.ctx.name().to_string()));
        env
    }

    /// Run the start sequence. On error the caller stops the application, which undoes
    /// whatever was done (every stop step is idempotent). `known` is what the takeover guard's
    /// probes found silent, as of `now`: an address it probed within a heartbeat timeout is not
    /// probed again (cl-core `dad`).
    pub async fn start(&self, known: &SilentAddresses, now: Time) -> Result<(), String> {
        let app = &self.app.name;
        let heartbeat = &self.ctx.cluster().heartbeat;
        let plan = cl_core::dad::probe_plan(heartbeat.interval);
        // `now` was read when the start was ordered; the age of a silence is judged when each
        // address is reached, which is later.
        let entered = std::time::Instant::now();
        // The split-brain guard comes first, before anything touches shared data: if anyone
        // answers for one of our addresses, another node may still run the application, and
        // its filesystem must not be checked or mounted here either.
        let mut to_add = Vec::new();
        for vip in self.vips() {
            if cl_drivers::vip::is_present(&vip).await.map_err(|e| e.to_string())? {
                continue;
            }
            let now = now + entered.elapsed();
            if !cl_core::dad::must_probe(known, vip.address, now, heartbeat.timeout) {
                let age = known.silent_at(vip.address).map(|t| now.since(t)).unwrap_or_default();
                info!(%app, "VIP {}: not probed again, the takeover guard found it silent {} ms ago", vip.address, age.as_millis());
                to_add.push(vip);
                continue;
            }
            let how = Probe { count: plan.count, interval: plan.interval };
            let began = std::time::Instant::now();
            let outcome =
                cl_drivers::vip::probe_with(&vip, how).await.map_err(|e| e.to_string())?;
            info!(%app, "VIP {} probed in {} ms ({} probes {} ms apart)", vip.address, began.elapsed().as_millis(), how.count, how.interval.as_millis());
            match outcome {
                ProbeOutcome::Free => to_add.push(vip),
                ProbeOutcome::InUse { by_mac } => {
                    return Err(format!(
                        "VIP {} is already answered by {} on {}: refusing to start (another node may still run {app})",
                        vip.address,
                        by_mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
                        vip.interface
                    ));
                }
            }
        }
        // Replicated data: Primary here before anything reads or writes it. DRBD refuses a copy
        // that is not UpToDate, and its fence-peer handler asks the cluster about a peer that
        // is not connected (cl-core `storage`).
        for resource in self.replicated() {
            let res = resource.clone();
            tokio::task::spawn_blocking(move || {
                let drbd = cl_drivers::drbd::adm::Drbd::system();
                drbd.up(&res)?;
                drbd.primary_retrying(&res, PROMOTE_ATTEMPTS, PROMOTE_PAUSE)
            })
            .await
            .map_err(|e| format!("promoting {resource}: {e}"))?
            .map_err(|e| format!("cannot make {resource} Primary here: {e}"))?;
            info!(%app, "DRBD resource {resource} is Primary here");
        }
        for spec in self.filesystems() {
            let spec2 = spec.clone();
            let checked =
                tokio::task::spawn_blocking(move || cl_drivers::fs::check(&spec2, FS_TIMEOUT))
                    .await
                    .map_err(|e| format!("fsck of {}: {e}", spec.device.display()))?;
            match checked {
                Ok(outcome) => info!(%app, "fsck {}: {outcome:?}", spec.device.display()),
                Err(e) => return Err(format!("{e}")),
            }
            let spec2 = spec.clone();
            tokio::task::spawn_blocking(move || cl_drivers::fs::mount(&spec2, FS_TIMEOUT))
                .await
                .map_err(|e| format!("mount of {}: {e}", spec.device.display()))?
                .map_err(|e| format!("{e}"))?;
            info!(%app, "mounted {} on {}", spec.device.display(), spec.mountpoint.display());
        }
        for vip in self.vips() {
            if to_add.contains(&vip) {
                cl_drivers::vip::add(&vip).await.map_err(|e| e.to_string())?;
            }
            self.announce(vip.clone());
            info!(%app, "VIP {}/{} up on {}; announcing it", vip.address, vip.prefix, vip.interface);
        }
        let cgroup = self.cgroup()?;
        let env = self.env();
        for resource in &self.app.resources {
            agents::run_action(
                &self.ctx.paths,
                &self.ctx.local,
                resource,
                "start",
                &cgroup,
                &self.log_file(),
                &env,
            )
            .await?;
            info!(%app, "{} started", agents::describe(resource));
        }
        let Some(start) = &self.app.start else { return Ok(()) };
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let script = trusted_program(&self.ctx.paths, &start.path)?;
        let outcome = cl_drivers::script::run_script(
            &script,
            &["start"],
            &env,
            &cgroup,
            &self.log_file(),
            start.timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        if !outcome.success() {
            return Err(format!("start script {} {outcome}", script.display()));
        }
        info!(%app, "start script finished");
        Ok(())
    }

    /// Run the stop sequence; an error means something may still be held here. With a
    /// `deadline`, the stop script and resource stops get what is left of it minus the time
    /// the hard part needs (kill, remove the addresses, unmount), and are cut short after
    /// ([`cl_core::timing::urgent_stop_budget`]).
    pub async fn stop(&self, deadline: Option<Duration>) -> Result<(), String> {
        let app = &self.app.name;
        let cgroup = self.cgroup()?;
        let graceful = self.stop_gracefully(&cgroup);
        // A failed resource stop still gets everything else released; it is reported after.
        let (graceful, kill_grace) = match deadline {
            None => (graceful.await, cl_drivers::script::STOP_KILL_GRACE),
            Some(deadline) => {
                let cl_core::timing::UrgentStopBudget { graceful: budget, kill_grace } =
                    cl_core::timing::urgent_stop_budget(deadline);
                let result = match tokio::time::timeout(budget, graceful).await {
                    Ok(result) => result,
                    Err(_) => {
                        warn!(%app, "stop scripts still running after {} ms: killing everything", budget.as_millis());
                        // Killing the cgroup, removing our VIPs and unmounting release what
                        // linuxha holds; a resource agent's own holdings (an IPaddr2 address)
                        // are only released by its stop, which was cut short.
                        if self.app.resources.is_empty() {
                            Ok(())
                        } else {
                            Err(format!(
                                "the resources' stop was cut short after {} ms: they may still be held",
                                budget.as_millis()
                            ))
                        }
                    }
                };
                (result, kill_grace)
            }
        };
        self.release(&cgroup, kill_grace).await?;
        graceful
    }

    /// The stop script and every resource's stop, in reverse order.
    async fn stop_gracefully(&self, cgroup: &cl_drivers::script::AppCgroup) -> Result<(), String> {
        let app = &self.app.name;
        let env = self.env();
        if let Some(stop) = &self.app.stop {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let ran = match trusted_program(&self.ctx.paths, &stop.path) {
                Ok(script) => cl_drivers::script::run_script(
                    &script,
                    &[],
                    &env,
                    cgroup,
                    &self.log_file(),
                    stop.timeout,
                )
                .await
                .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match ran {
                Ok(outcome) if !outcome.success() => {
                    warn!(%app, "stop script {outcome}; killing what is left")
                }
                Err(e) => warn!(%app, "stop script: {e}; killing what is left"),
                _ => {}
            }
        }
        // Every resource gets its stop even when one fails; the first failure is the answer
        // (the application is then stuck here: a resource may still be held).
        let mut failed = None;
        for resource in self.app.resources.iter().rev() {
            let stopped = agents::run_action(
                &self.ctx.paths,
                &self.ctx.local,
                resource,
                "stop",
                cgroup,
                &self.log_file(),
                &env,
            )
            .await;
            match stopped {
                Ok(()) => info!(%app, "{} stopped", agents::describe(resource)),
                Err(e) => {
                    error!(%app, "{e}");
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Kill what is left of the application, remove its addresses, unmount its filesystems.
    async fn release(
        &self,
        cgroup: &cl_drivers::script::AppCgroup,
        kill_grace: Duration,
    ) -> Result<(), String> {
        let app = &self.app.name;
        let killed = cgroup.kill_all(kill_grace).await;
        match &killed {
            Ok(killed) if !killed.is_empty() => {
                warn!(%app, "killed processes left after the stop script: {:?}", killed.pids())
            }
            Ok(_) => {}
            Err(e) => return Err(format!("processes of {app} could not be killed: {e}")),
        }
        for vip in self.vips() {
            cl_drivers::vip::remove(&vip)
                .await
                .map_err(|e| format!("cannot remove VIP {}: {e}", vip.address))?;
            info!(%app, "VIP {} removed", vip.address);
        }
        for spec in self.filesystems().into_iter().rev() {
            let spec2 = spec.clone();
            let outcome =
                tokio::task::spawn_blocking(move || cl_drivers::fs::unmount(&spec2, FS_TIMEOUT))
                    .await
                    .map_err(|e| format!("unmount of {}: {e}", spec.mountpoint.display()))?
                    .map_err(|e| format!("{e}"))?;
            if !outcome.killed.is_empty() {
                warn!(%app, "killed holders of {}: {:?}", spec.mountpoint.display(), outcome.killed);
            }
            if outcome.was_mounted {
                info!(%app, "unmounted {}", spec.mountpoint.display());
            }
        }
        // Unmounted: the peer may now be made Primary.
        for resource in self.replicated().into_iter().rev() {
            let res = resource.clone();
            tokio::task::spawn_blocking(move || {
                cl_drivers::drbd::adm::Drbd::system().secondary(&res)
            })
            .await
            .map_err(|e| format!("demoting {resource}: {e}"))?
            .map_err(|e| format!("cannot make {resource} Secondary: {e}"))?;
            info!(%app, "DRBD resource {resource} is Secondary here");
        }
        Ok(())
    }

    /// Announce the application's VIPs again (after a partition heals, clients and switches
    /// may still point at the other node).
    pub fn reannounce(&self) {
        for vip in self.vips() {
            self.announce(vip);
        }
    }

    /// Gratuitous ARPs / unsolicited NAs for `vip` in the background, one at a time, each only
    /// while the address is still ours: an announcement after a stop removed it would pull
    /// clients back to this node and make the other node's probe see a conflict.
    fn announce(&self, vip: Vip) {
        let app = self.app.name.clone();
        tokio::task::spawn_local(async move {
            let plan = Announce::default();
            for _ in 0..plan.count {
                if !cl_drivers::vip::is_present(&vip).await.unwrap_or(false) {
                    return;
                }
                let once = Announce { count: 1, ..plan };
                if let Err(e) = once.send(&vip).await {
                    warn!(%app, "cannot announce VIP {}: {e}", vip.address);
                    return;
                }
                tokio::time::sleep(plan.interval).await;
            }
        });
    }

    /// A NIC check: the interface of every VIP still has its link. `Err` names the first
    /// interface without carrier (a pulled cable, a dead switch port).
    pub async fn check_links(&self) -> Result<(), String> {
        for vip in self.vips() {
            match cl_drivers::vip::link_info(&vip.interface).await {
                Ok(info) if info.up && info.carrier => {}
                Ok(_) => {
                    return Err(format!(
                        "interface {} lost its link (no carrier): VIP {} is unreachable here",
                        vip.interface, vip.address
                    ))
                }
                Err(e) => return Err(format!("interface {}: {e}", vip.interface)),
            }
        }
        Ok(())
    }

    /// Whether anything of the application is active here: an address, a mount or a process.
    pub async fn is_active(&self) -> bool {
        let replicated = self.replicated();
        if !replicated.is_empty() {
            // A Primary copy is in use here (or cannot tell: counts as held).
            let snapshot =
                tokio::task::spawn_blocking(|| cl_drivers::drbd::adm::Drbd::system().snapshot())
                    .await;
            match snapshot {
                Ok(Ok(volumes)) => {
                    if replicated.iter().any(|r| {
                        volumes.get(r).is_some_and(|v| v.role == cl_core::storage::Role::Primary)
                    }) {
                        return true;
                    }
                }
                _ => return true,
            }
        }
        for vip in self.vips() {
            // Cannot tell counts as held: adopting what is not there is repaired by the
            // monitors, missing what is there could start a second copy elsewhere.
            if cl_drivers::vip::is_present(&vip).await.unwrap_or(true) {
                return true;
            }
        }
        for spec in self.filesystems() {
            if cl_drivers::fs::is_mounted(&spec).unwrap_or(true) {
                return true;
            }
        }
        if self.cgroup().ok().is_some_and(|c| c.is_empty().map(|empty| !empty).unwrap_or(false)) {
            return true;
        }
        for resource in &self.app.resources {
            let env = self.env();
            let health =
                agents::monitor(&self.ctx.paths, &self.ctx.local, resource, true, &env).await;
            if health == Health::Running {
                return true;
            }
        }
        false
    }

    /// Run the monitor of resource `index` once (None: no such resource).
    pub async fn check_resource(&self, index: usize) -> Option<Health> {
        let resource = self.app.resources.get(index)?;
        let env = self.env();
        Some(agents::monitor(&self.ctx.paths, &self.ctx.local, resource, false, &env).await)
    }

    /// Run one monitor once.
    pub async fn check(&self, index: usize) -> Option<Result<(), String>> {
        let monitor = self.app.monitors.get(index)?;
        let check = match &monitor.kind {
            MonitorKind::Process { name } => Check::Process { name: name.clone() },
            MonitorKind::Tcp { address, port } => {
                let address = address.or_else(|| self.app.vips.first().map(|v| v.address))?;
                Check::Tcp { address, port: *port }
            }
            MonitorKind::Command { path } => match trusted_program(&self.ctx.paths, path) {
                Ok(path) => Check::Command { path },
                Err(e) => return Some(Err(e)),
            },
        };
        // Only a process check looks in the application's cgroup; finding (and creating) it
        // reads /proc and makes directories, not worth doing every second for the others.
        let cgroup = match check {
            Check::Process { .. } => self.cgroup().ok(),
            _ => None,
        };
        let result = cl_drivers::monitor::check(&check, cgroup.as_ref(), monitor.timeout).await;
        Some(match result {
            MonitorResult::Ok => Ok(()),
            MonitorResult::Failed(reason) => Err(reason),
            MonitorResult::TimedOut => {
                Err(format!("monitor {index} timed out after {:?}", monitor.timeout))
            }
        })
    }
}

/// This process's cgroup v2 directory: the cgroup2 mount point plus the `0::` path of
/// /proc/self/cgroup.
/// A configured script or program that is about to run as root: under the root, and owned by
/// root and not writable by others (unless `LINUXHA_STRICT_MODES=no`), else why not.
pub(crate) fn trusted_program(
    paths: &cl_paths::Paths,
    configured: &std::path::Path,
) -> Result<PathBuf, String> {
    let resolved = paths.confine_program(configured).map_err(|e| e.to_string())?;
    cl_paths::secure::check_strict(&resolved, paths.root(), cl_paths::secure::Trust::Config)
        .map_err(|e| format!("not run: {e}"))?;
    Ok(resolved)
}

fn own_cgroup() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let root = mounts.lines().find_map(|l| {
        let mut fields = l.split_whitespace();
        let (_, mountpoint, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(mountpoint))
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(root.join(path.trim_start_matches('/')))
}
