//! keepalived (VRRP): one instance on eth0 holding the VIP, the service started on both nodes
//! (keepalived moves addresses, not services), a track_script on the service with the common
//! monitor interval, and a track_file whose value is added to the priority (weight 1) so a
//! planned switch is a priority change that takes effect at once.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use cl_lab::Lab;

use super::{
    argv, reap, spawn_logged, vip_holders, Programs, System, MONITOR_INTERVAL_S, NODES, PORT, VIP,
};

/// Where the configuration, pid files and the priority file live on each node (a private
/// tmpfs /run, so the two keepalived instances do not share pid files).
const RUN: &str = "/run";
/// The priority adjustment file.
const PRIO_FILE: &str = "/run/bench-prio";
/// Adjustment of the node that should hold the VIP (the other has 0).
const PREFERRED: i32 = 10;

/// keepalived with `advert_int 1` (VRRPv2, its default) or VRRPv3 `advert_int 0.1`.
pub struct Keepalived {
    fast: bool,
    children: Vec<Child>,
}

impl Keepalived {
    /// The default (`fast = false`) or the VRRPv3 0.1 s variant.
    pub fn new(fast: bool) -> Keepalived {
        Keepalived { fast, children: Vec::new() }
    }

    /// The configuration of `node`.
    pub fn config(&self, node: &str, bench: &str) -> String {
        let (version, advert) = if self.fast { ("vrrp_version 3\n", "0.1") } else { ("", "1") };
        format!(
            r#"global_defs {{
  router_id {node}
  script_user root
  {version}}}
vrrp_script chk_svc {{
  script "{bench} check --port {PORT}"
  interval {MONITOR_INTERVAL_S}
  timeout 1
  fall 1
  rise 1
}}
vrrp_track_file prio {{
  file "{PRIO_FILE}"
  weight 1
}}
vrrp_instance VI_1 {{
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority 100
  advert_int {advert}
  virtual_ipaddress {{
    {VIP}/24 dev eth0
  }}
  track_script {{
    chk_svc
  }}
  track_file {{
    prio
  }}
}}
"#
        )
    }

    fn log(lab: &Lab, node: &str) -> Result<PathBuf> {
        Ok(lab.root(node)?.join("keepalived.log"))
    }

    fn set_prio(lab: &Lab, node: &str, value: i32) -> Result<()> {
        let path = lab.host_path(node, Path::new(PRIO_FILE))?;
        std::fs::write(path, format!("{value}\n"))?;
        Ok(())
    }

    fn start_service(&mut self, lab: &Lab, node: &str, programs: &Programs) -> Result<()> {
        let bench = programs.bench.to_string_lossy().into_owned();
        let log = lab.root(node)?.join("serve.log");
        let child = spawn_logged(lab, node, &argv(&[&bench, "serve", "--port", "80"]), &log)?;
        self.children.push(child);
        Ok(())
    }

    /// The last state keepalived logged on `node` (`MASTER`, `BACKUP`, `FAULT`).
    fn state(lab: &Lab, node: &str) -> String {
        let log = Self::log(lab, node).and_then(|p| Ok(std::fs::read_to_string(p)?));
        log.unwrap_or_default()
            .lines()
            .rev()
            .find_map(|l| {
                let rest = l.split("Entering ").nth(1)?;
                rest.strip_suffix(" STATE").map(String::from)
            })
            .unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        reap(&mut self.children);
    }
}

impl System for Keepalived {
    fn id(&self) -> &'static str {
        if self.fast {
            "keepalived-fast"
        } else {
            "keepalived"
        }
    }

    fn label(&self) -> String {
        if self.fast {
            "keepalived VRRPv3 advert_int 0.1".into()
        } else {
            "keepalived advert_int 1 (default)".into()
        }
    }

    fn start(&mut self, lab: &mut Lab, programs: &Programs) -> Result<()> {
        let bench = programs.bench.to_string_lossy().into_owned();
        for (i, node) in NODES.iter().enumerate() {
            lab.private_dirs(node, &[RUN])?;
            let conf = lab.host_path(node, &Path::new(RUN).join("keepalived.conf"))?;
            std::fs::write(conf, self.config(node, &bench))?;
            Self::set_prio(lab, node, if i == 0 { PREFERRED } else { 0 })?;
            self.start_service(lab, node, programs)?;
        }
        // Let node1 become master first, so the VIP starts where the other systems have it.
        for node in NODES {
            let log = Self::log(lab, node)?;
            let child = spawn_logged(
                lab,
                node,
                &argv(&[
                    "keepalived",
                    "--dont-fork",
                    "--log-console",
                    "--log-detail",
                    "--vrrp",
                    "--use-file=/run/keepalived.conf",
                    "--pid=/run/keepalived.pid",
                    "--vrrp_pid=/run/keepalived-vrrp.pid",
                ]),
                &log,
            )?;
            self.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.healthy(lab, programs)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("keepalived did not settle: {}", self.describe(lab, programs))
    }

    fn healthy(&self, lab: &Lab, _programs: &Programs) -> Result<bool> {
        let holders = vip_holders(lab)?;
        let [holder] = holders.as_slice() else { return Ok(false) };
        let other = super::other(holder);
        Ok(Self::state(lab, holder) == "MASTER" && Self::state(lab, other) == "BACKUP")
    }

    fn after_service_kill(&mut self, lab: &Lab, node: &str, programs: &Programs) -> Result<()> {
        // keepalived does not restart services: the operator (here: the benchmark) does.
        self.start_service(lab, node, programs)
    }

    fn switch(&mut self, lab: &Lab, from: &str, to: &str, _programs: &Programs) -> Result<()> {
        let _ = from;
        Self::set_prio(lab, to, 2 * PREFERRED)
    }

    fn after_switch(&mut self, lab: &Lab, from: &str, to: &str) -> Result<()> {
        Self::set_prio(lab, to, PREFERRED)?;
        Self::set_prio(lab, from, 0)
    }

    fn describe(&self, lab: &Lab, _programs: &Programs) -> String {
        let holders = vip_holders(lab).unwrap_or_default();
        let states: Vec<String> =
            NODES.iter().map(|n| format!("{n}: {}", Self::state(lab, n))).collect();
        format!("VIP on {holders:?}; states {}", states.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_is_vrrp3_at_a_tenth_of_a_second() {
        let fast = Keepalived::new(true).config("node1", "/b/bench");
        assert!(fast.contains("vrrp_version 3"), "{fast}");
        assert!(fast.contains("advert_int 0.1"), "{fast}");
        assert!(fast.contains(r#"script "/b/bench check --port 80""#), "{fast}");
        let default = Keepalived::new(false).config("node2", "/b/bench");
        assert!(!default.contains("vrrp_version"), "{default}");
        assert!(default.contains("advert_int 1\n"), "{default}");
        assert!(default.contains("router_id node2"), "{default}");
    }
}
