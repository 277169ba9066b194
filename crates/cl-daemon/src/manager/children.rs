//! The cluster daemons cldaemon starts and looks after while the cluster is formed.

use std::time::{Duration, Instant};

use anyhow::Result;
use cl_wire::Daemon;
use tracing::{error, info, warn};

use super::Manager;
use cl_core::membership::KnownPace;

/// A cluster daemon this cldaemon looks after.
pub(super) enum Child {
    /// Started by this cldaemon.
    Own(std::process::Child),
    /// Left running by a previous cldaemon (after a crash): watched by pid.
    Adopted(u32),
}

impl Child {
    pub(super) fn pid(&self) -> u32 {
        match self {
            Child::Own(c) => c.id(),
            Child::Adopted(pid) => *pid,
        }
    }

    pub(super) fn exited(&mut self) -> bool {
        match self {
            Child::Own(c) => !matches!(c.try_wait(), Ok(None)),
            Child::Adopted(pid) => !cl_sys::process::process_alive(*pid),
        }
    }

    pub(super) fn stop(&mut self) {
        // SAFETY: kill(2) with a pid we started or adopted (checked by name) and a valid signal.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !self.exited() {
            // SAFETY: as above.
            unsafe {
                libc::kill(self.pid() as i32, libc::SIGKILL);
            }
        }
        if let Child::Own(c) = self {
            let _ = c.wait();
        }
    }
}

impl Manager {
    pub(super) fn ensure_child(&mut self, daemon: Daemon) -> Result<()> {
        if self.children.get_mut(&daemon).is_some_and(|c| !c.exited()) {
            return Ok(());
        }
        let argv0 = daemon.process_name(self.ctx.name());
        // A previous cldaemon may have left this daemon running: adopt it rather than start a
        // second one (that is what keeps a cldaemon restart invisible to the peers).
        if let Some(pid) = cl_sys::process::read_pid_file(&self.ctx.pid_file(daemon)) {
            if cl_sys::process::process_alive(pid) && process_named(pid, &argv0) {
                info!(%daemon, pid, "adopting the running {argv0}");
                if self.config_changed {
                    // It runs on the previous configuration: SIGHUP makes it read the new one.
                    info!(%daemon, pid, "asking {argv0} to reload the configuration");
                    // SAFETY: kill(2) on a pid we just checked is our daemon, with a valid signal.
                    unsafe {
                        libc::kill(pid as i32, libc::SIGHUP);
                    }
                }
                self.children.insert(daemon, Child::Adopted(pid));
                return Ok(());
            }
        }
        let child = crate::spawn_daemon(&self.ctx, &argv0)?;
        let _ = cl_sys::process::write_pid_file(&self.ctx.pid_file(daemon), child.id());
        info!(%daemon, pid = child.id(), "started {argv0}");
        self.children.insert(daemon, Child::Own(child));
        Ok(())
    }

    /// Tell clnetd how often to ping the known connections (the core's
    /// [`cl_core::membership::Action::PingPace`]): the pace file, then SIGWINCH to read it.
    /// SIGWINCH because its default action is to be ignored: a clnetd that has not set its
    /// handler yet (it reads the file right after), or one from before paces (adopted at an
    /// upgrade: it pings fast always), is not killed by it.
    pub(super) fn set_ping_pace(&mut self, pace: KnownPace) {
        let path = crate::netd::pace_file(&self.ctx);
        if let Err(e) = cl_paths::write_atomic(&path, crate::netd::pace_text(pace).as_bytes()) {
            // Without the file clnetd pings fast, which never leaves a verdict without a reply.
            warn!("cannot write {}: {e:#}; clnetd pings fast", path.display());
            let _ = std::fs::remove_file(&path);
        }
        let Some(child) = self.children.get_mut(&Daemon::Clnetd) else { return };
        if child.exited() {
            return; // its successor reads the file when it starts
        }
        // SAFETY: kill(2) on a pid we started or adopted (checked by name) that has not
        // exited, with a signal whose default action is to be ignored.
        unsafe {
            libc::kill(child.pid() as i32, libc::SIGWINCH);
        }
    }

    /// Whether a daemon adopted from an earlier cldaemon is watched (by pid, not SIGCHLD).
    pub(super) fn has_adopted(&self) -> bool {
        self.children.values().any(|c| matches!(c, Child::Adopted(_)))
    }

    pub(super) fn supervise(&mut self) {
        if !self.formed {
            return;
        }
        let dead: Vec<Daemon> = self
            .children
            .iter_mut()
            .filter_map(|(name, child)| child.exited().then_some(*name))
            .collect();
        for daemon in dead {
            warn!(%daemon, "{daemon}-{} died; restarting it", self.ctx.name());
            self.children.remove(&daemon);
            if let Err(e) = self.ensure_child(daemon) {
                error!(%daemon, "cannot restart: {e:#}");
            }
        }
    }

    pub(super) fn stop_children(&mut self) {
        for (daemon, mut child) in std::mem::take(&mut self.children) {
            info!(%daemon, pid = child.pid(), "stopping");
            child.stop();
            let _ = std::fs::remove_file(self.ctx.pid_file(daemon));
        }
    }
}

fn process_named(pid: u32, argv0: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).next() == Some(argv0.as_bytes()))
        .unwrap_or(false)
}
