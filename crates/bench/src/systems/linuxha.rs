//! linuxha: the example cluster (two heartbeat networks, ext as known connection) with one
//! application `svc`: the VIP, the benchmark's service as start script, a TCP monitor.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cl_lab::Lab;
use cl_wire::msg::{ApplicationState, ClusterState, ClusterStatus, LocalStateView, NodeState};

use super::{argv, must, Programs, System, MONITOR_INTERVAL_S, NODES, PORT, VIP};

/// The example cluster configuration; the heartbeat profile is replaced per variant.
const CLCONF: &str = include_str!("../../../../examples/cluster1/etc/cluster/clconf.xml");
/// The application's name.
pub const APP: &str = "svc";
/// The lab's fence agent as installed on each node (a link to the linuxha binary).
const FENCE_AGENT: &str = "/usr/sbin/fence_linuxha_lab";

/// What protects a takeover besides the heartbeats and the known connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Nothing more: the takeover delay alone.
    None,
    /// A lease from clarbd on ext (the known connection's host).
    Arbitrator,
    /// Each node has the lab's fence agent (`fence_linuxha_lab`: it powers a lab node off).
    Fence,
}

/// Where clarbd listens: ext, the known connection.
const ARBITRATOR: &str = r#"<arbitrator address="10.10.0.1" port="9905"/>"#;

/// linuxha with the default or the fast heartbeat profile, and a protection.
pub struct Linuxha {
    fast: bool,
    protection: Protection,
}

impl Linuxha {
    /// The default (`fast = false`) or fast heartbeat profile, without protection.
    pub fn new(fast: bool) -> Linuxha {
        Linuxha::protected(fast, Protection::None)
    }

    /// The default or fast profile with `protection`.
    pub fn protected(fast: bool, protection: Protection) -> Linuxha {
        Linuxha { fast, protection }
    }

    /// clconf.xml for this variant; `lab` names the lab for the fence devices.
    fn clconf(&self, lab: &str) -> String {
        let profile = if self.fast { "fast" } else { "default" };
        let heartbeat = format!(r#"<heartbeat profile="{profile}"/>"#);
        let global = match self.protection {
            Protection::Arbitrator => format!("{heartbeat}\n    {ARBITRATOR}"),
            _ => heartbeat,
        };
        let mut xml = CLCONF.replace(r#"<heartbeat profile="default"/>"#, &global);
        if self.protection == Protection::Fence {
            for node in NODES {
                let open = format!("<node name=\"{node}\">");
                let device = format!(
                    "{open}\n    <fence agent=\"{FENCE_AGENT}\" timeout=\"10s\" retry=\"1s\" poweroff=\"100ms\">\n      <option name=\"lab\" value=\"{lab}\"/>\n      <option name=\"plug\" value=\"{node}\"/>\n    </fence>"
                );
                xml = xml.replace(&open, &device);
            }
        }
        xml
    }

    fn appconf() -> String {
        // window="1s": every monitor failure restarts in place, so ten repetitions of scenario
        // c measure the same thing (with the default window the third one fails over).
        format!(
            r#"<?xml version="1.0"?>
<appconf>
  <global>
    <name>{APP}</name>
    <nodes>node1 node2</nodes>
    <autostart>yes</autostart>
    <failback>manual</failback>
  </global>
  <networks>
    <network net="public" ip="{VIP}" prefix="24"/>
  </networks>
  <application>
    <startscript timeout="10s">/etc/cluster/{APP}/start</startscript>
    <stopscript timeout="10s">/etc/cluster/{APP}/stop</stopscript>
  </application>
  <monitors>
    <tcp port="{PORT}" interval="{MONITOR_INTERVAL_S}s" timeout="500ms" restarts="3" window="1s"/>
  </monitors>
</appconf>
"#
        )
    }

    fn run(&self, lab: &Lab, node: &str, programs: &Programs, args: &[&str]) -> Result<String> {
        let mut words = vec![programs.linuxha.to_string_lossy().into_owned()];
        words.extend(argv(args));
        must(lab, node, &words)
    }

    /// The node's `clstat --json`; `None` when it does not answer with one.
    fn status(lab: &Lab, node: &str, programs: &Programs) -> Option<ClusterStatus> {
        let exe = programs.linuxha.to_string_lossy().into_owned();
        lab.run(node, &[exe.as_str(), "clstat", "--json"])
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
    }
}

/// Writes `text` to `path` with `mode`, creating the directory.
fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `(node, running)` of the application in a clstat snapshot, and whether both nodes are up.
fn placement(status: Option<&ClusterStatus>) -> (Option<String>, bool) {
    let Some(status) = status else { return (None, false) };
    let app = status
        .applications
        .iter()
        .find(|a| a.name == APP && a.state == ApplicationState::Running)
        .and_then(|a| a.node.clone());
    let up = status.state == ClusterState::Formed
        && status.local_state == LocalStateView::Connected
        && NODES
            .iter()
            .all(|n| status.nodes.iter().any(|x| x.name == *n && x.state == NodeState::Up));
    (app, up)
}

impl System for Linuxha {
    fn id(&self) -> &'static str {
        match (self.protection, self.fast) {
            (Protection::None, false) => "linuxha",
            (Protection::None, true) => "linuxha-fast",
            (Protection::Arbitrator, false) => "linuxha-arbitrator",
            (Protection::Arbitrator, true) => "linuxha-arbitrator-fast",
            (Protection::Fence, false) => "linuxha-fence",
            (Protection::Fence, true) => "linuxha-fence-fast",
        }
    }

    fn label(&self) -> String {
        let profile = if self.fast {
            "linuxha fast profile (20 ms / 100 ms)"
        } else {
            "linuxha default profile (200 ms / 1 s)"
        };
        match self.protection {
            Protection::None => profile.into(),
            Protection::Arbitrator => format!("{profile}, clarbd lease on ext"),
            Protection::Fence => format!("{profile}, lab fence agent"),
        }
    }

    fn start(&mut self, lab: &mut Lab, programs: &Programs) -> Result<()> {
        let bench = programs.bench.to_string_lossy().into_owned();
        let clconf = self.clconf(lab.name());
        for node in NODES {
            let etc = lab.root(node)?.join("etc/cluster");
            write(&etc.join("clconf.xml"), &clconf, 0o644)?;
            if self.protection == Protection::Fence {
                let agent = lab.root(node)?.join(FENCE_AGENT.trim_start_matches('/'));
                if let Some(dir) = agent.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let _ = std::fs::remove_file(&agent);
                std::os::unix::fs::symlink(&programs.linuxha, &agent)
                    .with_context(|| format!("linking {}", agent.display()))?;
            }
            write(&etc.join(APP).join("appconf.xml"), &Self::appconf(), 0o644)?;
            write(
                &etc.join(APP).join("start"),
                &format!(
                    "#!/bin/sh\nsetsid {bench} serve --port {PORT} >/dev/null 2>&1 </dev/null &\nexit 0\n"
                ),
                0o755,
            )?;
            write(&etc.join(APP).join("stop"), "#!/bin/sh\nexit 0\n", 0o755)?;
        }
        self.run(lab, "node1", programs, &["clbuild", "--genkey"])?;
        let key = std::fs::read(lab.root("node1")?.join("etc/cluster/cluster.key"))?;
        write(
            &lab.root("node2")?.join("etc/cluster/cluster.key"),
            &String::from_utf8_lossy(&key),
            0o600,
        )?;
        for node in NODES {
            self.run(lab, node, programs, &["clbuild", "--verbose"])?;
            self.run(lab, node, programs, &["clbuildapp", "--build", "--application", APP])?;
        }
        if self.protection == Protection::Arbitrator {
            self.start_arbitrator(lab, programs, &clconf, &key)?;
        }
        for node in NODES {
            self.run(lab, node, programs, &["cldaemon"])?;
        }
        self.run(lab, "node1", programs, &["clform", "--verbose"])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.healthy_with(lab, programs)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = Self::status(lab, "node1", programs);
        let shown = serde_json::to_string(&status).unwrap_or_default();
        bail!("linuxha did not start {APP}: {shown}")
    }

    fn healthy(&self, lab: &Lab, programs: &Programs) -> Result<bool> {
        self.healthy_with(lab, programs)
    }

    fn fences(&self) -> bool {
        self.protection == Protection::Fence
    }

    fn after_power_on(&mut self, lab: &Lab, node: &str, programs: &Programs) -> Result<()> {
        // The node was formed before it was fenced: cldaemon finds its formed marker and
        // rejoins, as after a reboot.
        self.run(lab, node, programs, &["cldaemon"]).map(|_| ())
    }

    fn switch(&mut self, lab: &Lab, from: &str, to: &str, programs: &Programs) -> Result<()> {
        self.run(lab, from, programs, &["clswitchapp", "--application", APP, "--node", to])?;
        Ok(())
    }

    fn status_command(&self, programs: &Programs) -> Option<Vec<String>> {
        Some(vec![programs.linuxha.to_string_lossy().into_owned(), "clstat".into()])
    }

    fn describe(&self, lab: &Lab, programs: &Programs) -> String {
        NODES
            .iter()
            .map(|n| {
                let exe = programs.linuxha.to_string_lossy().into_owned();
                let out = lab
                    .run(n, &[exe.as_str(), "clstat"])
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_else(|e| e.to_string());
                format!("[{n}] clstat:\n{out}")
            })
            .collect()
    }
}

impl Linuxha {
    /// clarbd on ext with the cluster's clconf.xml and key; it detaches, and the lab's end
    /// kills it with everything else on ext.
    fn start_arbitrator(
        &self,
        lab: &Lab,
        programs: &Programs,
        clconf: &str,
        key: &[u8],
    ) -> Result<()> {
        let root = lab.root("ext")?;
        let etc = root.join("etc/cluster");
        write(&etc.join("clconf.xml"), clconf, 0o644)?;
        write(&etc.join("cluster.key"), &String::from_utf8_lossy(key), 0o600)?;
        let root = root.to_string_lossy().into_owned();
        self.run(lab, "ext", programs, &["--root", &root, "clarbd"])?;
        Ok(())
    }

    fn healthy_with(&self, lab: &Lab, programs: &Programs) -> Result<bool> {
        let mut seen = Vec::new();
        for node in NODES {
            let (app, up) = placement(Self::status(lab, node, programs).as_ref());
            if !up {
                return Ok(false);
            }
            seen.push(app);
        }
        Ok(seen[0].is_some() && seen[0] == seen[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_change_only_the_heartbeat() {
        let fast = Linuxha::new(true).clconf("lab1");
        assert!(fast.contains(r#"<heartbeat profile="fast"/>"#));
        assert_eq!(Linuxha::new(false).clconf("lab1"), CLCONF);
        assert!(Linuxha::appconf().contains(r#"<tcp port="80" interval="1s""#));
    }

    #[test]
    fn protections_add_the_arbitrator_or_one_fence_device_per_node() {
        let arb = Linuxha::protected(true, Protection::Arbitrator);
        assert_eq!(arb.id(), "linuxha-arbitrator-fast");
        let xml = arb.clconf("lab1");
        assert!(xml.contains(ARBITRATOR) && !xml.contains("<fence"), "{xml}");
        let fence = Linuxha::protected(false, Protection::Fence);
        assert_eq!(fence.id(), "linuxha-fence");
        let xml = fence.clconf("lab7");
        assert_eq!(xml.matches("<fence agent=").count(), 2, "{xml}");
        assert!(xml.contains(r#"<option name="lab" value="lab7"/>"#), "{xml}");
        assert!(xml.contains(r#"<option name="plug" value="node2"/>"#), "{xml}");
        // The lab's agent powers a node off at once: the fence race unit is short.
        assert_eq!(xml.matches(r#"poweroff="100ms""#).count(), 2, "{xml}");
    }
}
