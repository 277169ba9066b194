//! `clarbd-<cluster>`: the lease arbitrator, run on a third host that is not a cluster node.
//!
//! It reads the cluster's `clconf.xml` (for the key, the node names, `<arbitrator>` address,
//! port and lease), listens on UDP, and answers each authenticated [`ArbRequest`] with an
//! [`ArbReply`] decided by [`cl_core::arbiter::Arbiter`]. Every grant, denial, release and
//! expiry is logged to `/var/log/cluster/clarbd.log`; frames that fail authentication are
//! logged too (at most one line per reason every [`DROP_LOG_EVERY`], then a count).
//!
//! It keeps no state on disk: after a (re)start it grants nothing for one lease (see
//! `cl_core::arbiter`), so a lease granted before the restart has run out before another node
//! can get one.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use cl_config::clconf::KeySource;
use cl_config::{load_cluster, ClusterConfig, FileKind, Host, Severity};
use cl_core::arbiter::{ArbEvent, Arbiter};
use cl_core::Time;
use cl_paths::secure::{self, read_configured, Trust};
use cl_paths::Paths;
use cl_sys::warn_limited;
use cl_wire::arb::{ArbReply, ArbRequest, ARBITRATOR_SENDER};
use cl_wire::{ClusterKey, Kind, Receiver, Sender, MAX_FRAME};
use tracing::{info, warn};

/// Set in the environment of a clarbd that already runs under its `clarbd-<cluster>` name.
const NAMED_ENV: &str = "LINUXHA_CLARBD_NAMED";

/// At most one "dropped frame" log line per reason this often.
pub const DROP_LOG_EVERY: Duration = cl_sys::ratelimit::INTERVAL;

/// How clarbd was asked to run.
#[derive(Debug, Clone)]
pub struct ArbdOptions {
    /// The host's file layout (`--root`).
    pub paths: Paths,
    /// The cluster's clconf.xml as written on a node (default `/etc/cluster/clconf.xml`),
    /// resolved under the root.
    pub config: Option<PathBuf>,
    /// Listen here instead of `<arbitrator address port>`.
    pub listen: Option<SocketAddr>,
    /// Stay attached to the terminal and log to stderr as well as the log file.
    pub foreground: bool,
    /// The cluster the caller expects (from the `clarbd-<cluster>` name or `--cluster`).
    pub cluster: Option<String>,
}

/// What clarbd needs from clconf.xml.
#[derive(Debug, Clone)]
pub struct ArbdConfig {
    /// Cluster name.
    pub cluster: String,
    /// The cluster key.
    pub key: ClusterKey,
    /// The nodes that may ask.
    pub nodes: Vec<String>,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Lease length.
    pub lease: Duration,
}

/// The arbitrator host runs no scripts or fence agents: only directories (a key path that is
/// a directory) are worth refusing; a missing key file is reported when it is read.
struct ArbHost;

impl Host for ArbHost {
    fn file_kind(&self, path: &Path) -> FileKind {
        if path.is_dir() {
            FileKind::Directory
        } else {
            FileKind::Executable
        }
    }
}

impl ArbdConfig {
    /// Read clconf.xml as `opts` say; the local host need not be a node of the cluster.
    pub fn load(opts: &ArbdOptions) -> Result<ArbdConfig> {
        let written =
            opts.config.clone().unwrap_or_else(|| PathBuf::from("/etc/cluster/clconf.xml"));
        let (file, bytes) = read_configured(&opts.paths, &written, secure::XML_CAP, Trust::Config)?;
        let loaded = load_cluster(&file.display().to_string(), &bytes, &ArbHost);
        let Some(config) = loaded.config else {
            let errors: Vec<String> = loaded
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.to_string())
                .collect();
            bail!("{} is not valid:\n{}", file.display(), errors.join("\n"));
        };
        if let Some(asked) = &opts.cluster {
            if asked != &config.name {
                bail!("{} is for cluster `{}`, not `{asked}`", file.display(), config.name);
            }
        }
        let key = read_key(&opts.paths, &config)?;
        // The nodes derive a lease that is not configured from the heartbeat profile; so does
        // clarbd, from the same clconf.xml, so both count the same length.
        let hb = &config.heartbeat;
        let floor = cl_core::timing::SafetyTiming::new(hb.interval, hb.timeout).lease_floor();
        let lease = config.arbitrator.and_then(|a| a.lease).unwrap_or(floor);
        let listen = match (opts.listen, config.arbitrator) {
            (Some(listen), _) => listen,
            (None, Some(arb)) => arb.address,
            (None, None) => bail!(
                "{} has no <arbitrator> in <global>; add one (or give --listen ADDRESS:PORT)",
                file.display()
            ),
        };
        Ok(ArbdConfig {
            cluster: config.name.clone(),
            key,
            nodes: config.nodes.iter().map(|n| n.name.clone()).collect(),
            listen,
            lease,
        })
    }
}

fn read_key(paths: &Paths, config: &ClusterConfig) -> Result<ClusterKey> {
    match &config.key {
        KeySource::Inline(hex) => {
            ClusterKey::from_hex(hex).map_err(|e| anyhow!("cluster key: {e}"))
        }
        KeySource::File(path) => {
            let (resolved, bytes) = read_configured(paths, path, secure::KEY_CAP, Trust::Secret)
                .context("cannot read the cluster key")?;
            ClusterKey::from_hex(&String::from_utf8_lossy(&bytes))
                .map_err(|e| anyhow!("cluster key {}: {e}", resolved.display()))
        }
    }
}

/// The pid file of clarbd for `cluster`.
pub fn pid_file(paths: &Paths, cluster: &str) -> PathBuf {
    paths.run_dir().join(format!("{}.pid", crate::Daemon::Clarbd.process_name(cluster)))
}

/// The log file of clarbd.
pub fn log_file(paths: &Paths) -> PathBuf {
    paths.log_dir().join("clarbd.log")
}

/// Run clarbd: check the configuration, take the name `clarbd-<cluster>`, bind the socket,
/// detach unless `foreground` (returning once the socket is bound), and serve until SIGTERM.
pub fn start(opts: ArbdOptions) -> Result<()> {
    let config = ArbdConfig::load(&opts)?;
    let argv0 = crate::Daemon::Clarbd.process_name(&config.cluster);
    if std::env::var_os(NAMED_ENV).is_none() {
        // Re-execute under the name operators look for in `ps -ef`; the new process reads the
        // configuration again (it may have changed in between: it is checked again anyway).
        let mut args: Vec<String> = Vec::new();
        if let Some(config) = &opts.config {
            args.extend(["--config".into(), config.display().to_string()]);
        }
        if let Some(listen) = opts.listen {
            args.extend(["--listen".into(), listen.to_string()]);
        }
        if opts.foreground {
            args.push("--foreground".into());
        }
        let error = std::process::Command::new("/proc/self/exe")
            .arg0(&argv0)
            .args(&args)
            .env(NAMED_ENV, "1")
            .env(cl_paths::ROOT_ENV, opts.paths.root())
            .exec();
        bail!("cannot start {argv0}: {error}");
    }
    let lock = refuse_second_instance(&opts.paths, &config.cluster)?;
    // Bound before detaching, so that an address in use or not configured here is reported to
    // whoever started clarbd, with a non-zero exit.
    let socket = std::net::UdpSocket::bind(config.listen)
        .with_context(|| format!("cannot listen on UDP {}", config.listen))?;
    socket.set_nonblocking(true)?;
    if !opts.foreground {
        cl_sys::process::daemonize().context("cannot detach")?;
    }
    crate::epoch::init(&opts.paths);
    let pid_path = pid_file(&opts.paths, &config.cluster);
    cl_sys::process::write_pid_file(&pid_path, std::process::id())
        .with_context(|| format!("cannot write {}", pid_path.display()))?;
    cl_sys::logging::init_file_logging(&log_file(&opts.paths), crate::Daemon::Clarbd.name())?;
    info!(
        pid = std::process::id(),
        listen = %config.listen,
        lease_ms = config.lease.as_millis() as u64,
        nodes = %config.nodes.join(","),
        key = %config.key.fingerprint(),
        "{argv0} starting; no lease is granted for the first {:?} (restart quiet period)",
        config.lease
    );
    crate::serve::raise_open_files();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            }
        };
        serve(config, socket, shutdown).await
    });
    match &result {
        Ok(()) => info!("{argv0} stopped"),
        Err(e) => tracing::error!("exiting: {e:#}"),
    }
    let _ = std::fs::remove_file(&pid_path);
    drop(lock);
    result
}

/// Answer requests on `socket` until `shutdown` completes (its value names the reason).
pub async fn serve(
    config: ArbdConfig,
    socket: tokio::net::UdpSocket,
    shutdown: impl std::future::Future<Output = &'static str>,
) -> Result<()> {
    let origin = Instant::now();
    let now = || Time::from_millis(origin.elapsed().as_millis() as u64);
    let mut arbiter = Arbiter::new(now(), config.lease, config.nodes.clone());
    let mut receiver = Receiver::new(config.key.clone(), &config.cluster);
    // This run's epoch is also its challenge: requests must echo it (cl_wire::fresh).
    let mut sender =
        Sender::new(config.key.clone(), &config.cluster, ARBITRATOR_SENDER, crate::epoch::next()?);
    let challenge = sender.epoch();
    let mut summaries = tokio::time::interval(Duration::from_secs(1));
    let mut buf = vec![0u8; MAX_FRAME];
    tokio::pin!(shutdown);
    loop {
        let wake = arbiter.poll_timeout().map(|t| origin + t.since_origin());
        let expiry = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            reason = &mut shutdown => {
                info!("{reason}: stopping");
                return Ok(());
            }
            _ = summaries.tick() => cl_sys::ratelimit::log_summaries(Instant::now()),
            () = expiry => {
                if let Some(event) = arbiter.handle_timeout(now()) {
                    log_event(&event, config.lease);
                }
            }
            received = socket.recv_from(&mut buf) => {
                let (len, from) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        warn_limited!("clarbd requests", "receive error", "receiving failed: {e}");
                        continue;
                    }
                };
                let Some((reply, client_epoch)) = handle_datagram(
                    &buf[..len], from, now(), &mut arbiter, &mut receiver, config.lease, challenge,
                ) else {
                    continue;
                };
                match sender.seal_echoing(Kind::Arbitrator, &reply, client_epoch) {
                    Ok(frame) => {
                        if let Err(e) = socket.send_to(&frame, from).await {
                            warn!(peer = %from, "cannot answer: {e}");
                        }
                    }
                    Err(e) => warn!(peer = %from, "cannot seal the answer: {e}"),
                }
            }
        }
    }
}

/// Decide about one datagram; the reply to send back, if any, and the client epoch it echoes.
#[allow(clippy::too_many_arguments)]
fn handle_datagram(
    bytes: &[u8],
    from: SocketAddr,
    now: Time,
    arbiter: &mut Arbiter,
    receiver: &mut Receiver,
    lease: Duration,
    challenge: u64,
) -> Option<(ArbReply, u64)> {
    let (header, request): (_, ArbRequest) = match receiver.try_receive(bytes) {
        Ok(r) => r,
        Err(why) => {
            // A wrong key, another cluster, a replay: never answered (an answer would help an
            // attacker probe), logged with the source address, rate-limited per reason (a
            // per-address table would grow with spoofed sources).
            let reason = crate::serve::reason(&why);
            warn_limited!("clarbd requests", &reason, peer = %from, "rejected a frame: {why} (total dropped {})", receiver.counters().dropped());
            return None;
        }
    };
    let refuse = |error: String| ArbReply {
        seq: request.seq,
        granted: false,
        holder: None,
        lease_ms: lease.as_millis() as u64,
        remaining_ms: 0,
        error: Some(error),
        stale: false,
    };
    let client_epoch = header.epoch;
    if header.kind != Kind::Arbitrator {
        warn_limited!("clarbd requests", "not an arbitrator request", peer = %from, sender = %header.sender, "rejected a {:?} frame: not an arbitrator request", header.kind);
        return None;
    }
    if header.sender != request.node {
        warn_limited!("clarbd requests", "another node", peer = %from, sender = %header.sender, node = %request.node, "rejected: the request names another node than its frame");
        return Some((
            refuse(format!(
                "the request names node `{}` but was sent by `{}`",
                request.node, header.sender
            )),
            client_epoch,
        ));
    }
    if header.echo != challenge {
        // Recorded before this clarbd started (a replay: a release replayed now could free a
        // lease its holder still relies on), or a client that has not heard this run yet. Not
        // acted on; the answer tells a genuine client the epoch to echo.
        receiver.count_unfresh();
        tracing::debug!(peer = %from, node = %request.node, "asked to echo this run's epoch first");
        return Some((
            ArbReply {
                seq: request.seq,
                granted: false,
                holder: None,
                lease_ms: lease.as_millis() as u64,
                remaining_ms: 0,
                error: None,
                stale: true,
            },
            client_epoch,
        ));
    }
    match arbiter.request(now, &request.node, request.op) {
        Ok((grant, events)) => {
            for event in &events {
                log_event(event, lease);
            }
            Some((
                ArbReply {
                    seq: request.seq,
                    granted: grant.granted,
                    holder: grant.holder,
                    lease_ms: grant.lease_ms,
                    remaining_ms: grant.remaining_ms,
                    error: None,
                    stale: false,
                },
                client_epoch,
            ))
        }
        Err(rejected) => {
            warn!(peer = %from, node = %request.node, "rejected: {rejected}");
            Some((refuse(rejected.to_string()), client_epoch))
        }
    }
}

fn log_event(event: &ArbEvent, lease: Duration) {
    match event {
        ArbEvent::Granted { node, renewed: true, .. } => {
            // Renewals come every lease/3 or so: only worth a debug line.
            tracing::debug!(node = %node, "renewed the lease for {lease:?}");
        }
        ArbEvent::Granted { node, renewed: false, took_over_from: Some(from) } => {
            info!(node = %node, "granted the lease for {lease:?} (it had expired on {from})")
        }
        ArbEvent::Granted { node, renewed: false, took_over_from: None } => {
            info!(node = %node, "granted the lease for {lease:?}")
        }
        ArbEvent::Denied { node, holder: Some(holder), remaining } => {
            info!(node = %node, holder = %holder, "denied the lease: {holder} holds it for another {} ms", remaining.as_millis())
        }
        ArbEvent::Denied { node, holder: None, remaining } => {
            info!(node = %node, "denied the lease: restart quiet period, {} ms left", remaining.as_millis())
        }
        ArbEvent::Released { node } => info!(node = %node, "released the lease"),
        ArbEvent::ReleaseDenied { node, holder } => info!(
            node = %node,
            "refused a release: the lease is held by {}",
            holder.as_deref().unwrap_or("nobody")
        ),
        ArbEvent::Queried { node } => tracing::debug!(node = %node, "query"),
        ArbEvent::Expired { node } => info!(node = %node, "the lease expired without renewal"),
    }
}

/// Hold an exclusive lock for this cluster's clarbd; a second one is refused with the pid.
fn refuse_second_instance(paths: &Paths, cluster: &str) -> Result<std::fs::File> {
    crate::single_instance(paths, crate::Daemon::Clarbd, cluster, "host")
}
