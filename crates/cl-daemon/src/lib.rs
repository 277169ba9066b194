//! The linuxha daemons: `cldaemon` (node manager), `clhbd`/`clhbd2` (heartbeats), `clnetd`
//! (known connections; later VIPs and links) and `cllockd` (locks). Each runs as its own
//! process named `<daemon>-<cluster>` (as Linuxha.net's did), from the one `linuxha` binary.
//!
//! These are thin IO shells: what to conclude from a heartbeat or a silent router is decided
//! by `cl-core`; frames are built and checked by `cl-wire`; sockets, clocks and processes live
//! here. Daemons on a node talk over Unix sockets in `run/cluster/`; nodes talk over UDP
//! (heartbeats) and TCP (node manager), every frame authenticated with the cluster key.

pub mod agents;
pub mod appctl;
pub mod arbclient;
pub mod arbd;
pub mod context;
pub mod epoch;
pub mod exchange;
pub mod guard_summary;
pub mod guardctl;
pub mod heartbeat;
pub mod lockclient;
pub mod lockd;
pub mod manager;
pub mod metrics;
pub mod netd;
pub mod notify;
pub mod relaying;
pub mod runner;
pub mod serve;
pub mod storagectl;
pub mod storageops;
pub mod sync;
pub mod transport;
pub(crate) mod watched;

use std::os::unix::process::CommandExt;

use anyhow::{bail, Context as _, Result};
use cl_paths::Paths;

pub use cl_wire::Daemon;
pub use context::Context;

/// Set in the environment of a cldaemon that is already detached and named.
const READY_ENV: &str = "LINUXHA_DAEMON_READY";
/// Set when cldaemon restarts itself on a newly installed configuration.
pub const CONFIG_CHANGED_ENV: &str = "LINUXHA_CONFIG_CHANGED";

/// The environment every cluster daemon is started with: the node's root and name.
pub fn child_env(ctx: &Context) -> Vec<(String, String)> {
    vec![
        (cl_paths::ROOT_ENV.to_string(), ctx.paths.root().display().to_string()),
        (cl_paths::NODE_ENV.to_string(), ctx.local.clone()),
    ]
}

/// Run `daemon` for the cluster built under `paths`. cldaemon detaches unless `foreground`;
/// the others are started by cldaemon (or clhbd) and always stay in the foreground.
pub fn start(daemon: Daemon, paths: Paths, foreground: bool, cluster: Option<&str>) -> Result<()> {
    let ctx = Context::load(paths)?;
    if let Some(asked) = cluster {
        if asked != ctx.name() {
            bail!("this node's built configuration is for cluster `{}`, not `{asked}`", ctx.name());
        }
    }
    match daemon {
        Daemon::Cldaemon => return start_manager(ctx, foreground),
        Daemon::Clarbd => {
            bail!("clarbd runs on the arbitrator's host: start it with `linuxha clarbd`")
        }
        _ => {}
    }
    cl_sys::logging::init_file_logging(&ctx.log_file(daemon), daemon.name())?;
    tracing::info!(pid = std::process::id(), "{}-{} starting", daemon.name(), ctx.name());
    serve::raise_open_files();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        trim_start_up_pages();
        match daemon {
            Daemon::Clhbd => heartbeat::run_receiver(ctx).await,
            Daemon::Clhbd2 => heartbeat::run_sender(ctx).await,
            Daemon::Clnetd => netd::run(ctx).await,
            Daemon::Cllockd => lockd::run(ctx).await,
            Daemon::Cldaemon | Daemon::Clarbd => Ok(()),
        }
    });
    if let Err(e) = &result {
        tracing::error!("exiting: {e:#}");
    }
    result
}

/// Once the daemon's loop runs, and every 10 minutes after, drop the mapped pages of the binary
/// and libc it no longer runs (argument parsing, configuration, logging set-up): its RSS then
/// shows what it still uses. The pages stay in the page cache (`cl_sys::trim`).
fn trim_start_up_pages() {
    cl_sys::trim::spawn_periodic(TRIM_AFTER_START, TRIM_EVERY);
}

/// Start-up (configuration, sockets, first exchanges with the peer) is over by then.
const TRIM_AFTER_START: std::time::Duration = std::time::Duration::from_secs(10);
/// Pages of rare paths (a failover, a reload) touched since are dropped again this often.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

fn start_manager(ctx: Context, foreground: bool) -> Result<()> {
    let argv0 = Daemon::Cldaemon.process_name(ctx.name());
    if std::env::var_os(READY_ENV).is_none() {
        refuse_second_instance(&ctx)?;
        if !foreground {
            return launch_detached(&ctx, &argv0);
        }
        // Re-execute under the name operators look for in `ps -ef`.
        let exe = std::env::current_exe().context("cannot find the linuxha binary")?;
        let error = std::process::Command::new(exe)
            .arg0(&argv0)
            .env(READY_ENV, "1")
            .env_remove(CONFIG_CHANGED_ENV)
            .envs(child_env(&ctx))
            .exec();
        bail!("cannot start {argv0}: {error}");
    }
    let lock = refuse_second_instance(&ctx)?;
    let _ = cl_sys::process::write_pid_file(&ctx.pid_file(Daemon::Cldaemon), std::process::id());
    cl_sys::logging::init_file_logging(&ctx.log_file(Daemon::Cldaemon), Daemon::Cldaemon.name())?;
    tracing::info!(pid = std::process::id(), node = %ctx.local, version = ctx.built.version, key = %ctx.key.fingerprint(), "{argv0} starting");
    serve::raise_open_files();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // A LocalSet: resource work (netlink, raw sockets, pidfds) runs in tasks that stay on
    // this thread, which is also what keeps them in this node's namespaces.
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async {
        trim_start_up_pages();
        manager::run(ctx.clone()).await
    });
    if let Err(e) = &result {
        tracing::error!("exiting: {e:#}");
    }
    let _ = std::fs::remove_file(ctx.pid_file(Daemon::Cldaemon));
    drop(lock);
    result
}

/// Start cldaemon in the background (its own session, PPID 1 once we exit) and return only
/// when it answers on its admin socket, so whatever runs next (clform, a peer's request) finds
/// it ready — the contract of a `Type=forking` service.
fn launch_detached(ctx: &Context, argv0: &str) -> Result<()> {
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg0(argv0)
        .env(READY_ENV, "1")
        .env_remove(CONFIG_CHANGED_ENV)
        .envs(child_env(ctx))
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().with_context(|| format!("cannot start {argv0}"))?;
    let log = ctx.log_file(Daemon::Cldaemon);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{argv0} stopped at once ({status}); see {}", log.display());
        }
        if admin_answers(&ctx.admin_socket()) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{argv0} did not become ready within 15 s; see {}", log.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether a cldaemon answers a status request on `socket`.
fn admin_answers(socket: &std::path::Path) -> bool {
    use std::io::{BufRead, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
    let Ok(mut line) = serde_json::to_string(&cl_wire::msg::AdminRequest::Status) else {
        return false;
    };
    line.push('\n');
    if stream.write_all(line.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer).is_ok() && answer.contains("status")
}

/// Hold an exclusive lock for this cluster's cldaemon; a second one is refused with the pid.
fn refuse_second_instance(ctx: &Context) -> Result<std::fs::File> {
    single_instance(&ctx.paths, Daemon::Cldaemon, ctx.name(), "node")
}

/// Hold `run/cluster/<daemon>-<cluster>.lock` exclusively for as long as the returned file
/// lives; if another process holds it, fail naming the pid in its pid file.
pub fn single_instance(
    paths: &cl_paths::Paths,
    daemon: Daemon,
    cluster: &str,
    host_kind: &str,
) -> Result<std::fs::File> {
    let run_dir = paths.run_dir();
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let path = run_dir.join(format!("{daemon}-{cluster}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let locked = cl_sys::process::flock_exclusive(&file, false)
        .with_context(|| format!("cannot lock {}", path.display()))?;
    if !locked {
        let pid_file = run_dir.join(format!("{daemon}-{cluster}.pid"));
        let pid = cl_sys::process::read_pid_file(&pid_file)
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        bail!("{daemon} for cluster `{cluster}` is already running on this {host_kind}{pid}");
    }
    Ok(file)
}

/// Replace this cldaemon with a fresh one (same pid, same name) so it reads the configuration
/// just installed. Its cluster daemons, if any, are adopted by the new one.
pub fn reexec(ctx: &Context) {
    let argv0 = Daemon::Cldaemon.process_name(ctx.name());
    tracing::info!("restarting to use the new configuration");
    match std::env::current_exe() {
        Ok(exe) => {
            let error = std::process::Command::new(exe)
                .arg0(&argv0)
                .env(READY_ENV, "1")
                .env(CONFIG_CHANGED_ENV, "1")
                .envs(child_env(ctx))
                .exec();
            tracing::error!("cannot restart: {error}");
        }
        Err(e) => tracing::error!("cannot restart: {e}"),
    }
}

/// Start the daemon binary under the name `argv0` (e.g. `clhbd-cluster1`), with the node's
/// root and name in its environment.
pub fn spawn_daemon(ctx: &Context, argv0: &str) -> Result<std::process::Child> {
    spawn_daemon_with(ctx, argv0, &[])
}

/// [`spawn_daemon`] with `extra` environment variables for the child.
pub fn spawn_daemon_with(
    ctx: &Context,
    argv0: &str,
    extra: &[(&str, &str)],
) -> Result<std::process::Child> {
    // The running binary itself, even if its file was replaced meanwhile (an upgrade):
    // daemons of one node always speak the same version.
    let exe = std::path::PathBuf::from("/proc/self/exe");
    let env = child_env(ctx);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra);
    cl_sys::process::spawn_named(&exe, argv0, &[], &env)
        .with_context(|| format!("cannot start {argv0}"))
}
