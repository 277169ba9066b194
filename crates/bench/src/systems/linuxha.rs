//! linuxha: the example cluster (two heartbeat networks, ext as known connection) with one
//! application `svc`: the VIP, the benchmark's service as start script, a TCP monitor.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cl_lab::Lab;
use serde_json::Value;

use super::{argv, must, Programs, System, MONITOR_INTERVAL_S, NODES, PORT, VIP};

/// The example cluster configuration; the heartbeat profile is replaced per variant.
const CLCONF: &str = include_str!("../../../../examples/cluster1/etc/cluster/clconf.xml");
/// The application's name.
pub const APP: &str = "svc";

/// linuxha with the default or the fast heartbeat profile.
pub struct Linuxha {
    fast: bool,
}

impl Linuxha {
    /// The default (`fast = false`) or fast heartbeat profile.
    pub fn new(fast: bool) -> Linuxha {
        Linuxha { fast }
    }

    fn clconf(&self) -> String {
        let profile = if self.fast { "fast" } else { "default" };
        CLCONF.replace(
            r#"<heartbeat profile="default"/>"#,
            &format!(r#"<heartbeat profile="{profile}"/>"#),
        )
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

    fn status(lab: &Lab, node: &str, programs: &Programs) -> Value {
        let exe = programs.linuxha.to_string_lossy().into_owned();
        lab.run(node, &[exe.as_str(), "clstat", "--json"])
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or(Value::Null)
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

/// `(node, running)` of the application in a clstat JSON, and whether both nodes are up.
fn placement(status: &Value) -> (Option<String>, bool) {
    let app = status["applications"]
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["name"] == APP))
        .filter(|a| a["state"] == "running")
        .and_then(|a| a["node"].as_str())
        .map(String::from);
    let up = status["state"] == "formed"
        && status["local_state"] == "connected"
        && NODES.iter().all(|n| {
            status["nodes"]
                .as_array()
                .and_then(|ns| ns.iter().find(|x| x["name"] == *n))
                .is_some_and(|x| x["state"] == "up")
        });
    (app, up)
}

impl System for Linuxha {
    fn id(&self) -> &'static str {
        if self.fast {
            "linuxha-fast"
        } else {
            "linuxha"
        }
    }

    fn label(&self) -> String {
        if self.fast {
            "linuxha fast profile (20 ms / 100 ms)".into()
        } else {
            "linuxha default profile (200 ms / 1 s)".into()
        }
    }

    fn start(&mut self, lab: &mut Lab, programs: &Programs) -> Result<()> {
        let bench = programs.bench.to_string_lossy().into_owned();
        for node in NODES {
            let etc = lab.root(node)?.join("etc/cluster");
            write(&etc.join("clconf.xml"), &self.clconf(), 0o644)?;
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
        bail!("linuxha did not start {APP}: {}", Self::status(lab, "node1", programs))
    }

    fn healthy(&self, lab: &Lab, programs: &Programs) -> Result<bool> {
        self.healthy_with(lab, programs)
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
    fn healthy_with(&self, lab: &Lab, programs: &Programs) -> Result<bool> {
        let mut seen = Vec::new();
        for node in NODES {
            let (app, up) = placement(&Self::status(lab, node, programs));
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
        let fast = Linuxha::new(true).clconf();
        assert!(fast.contains(r#"<heartbeat profile="fast"/>"#));
        assert_eq!(Linuxha::new(false).clconf(), CLCONF);
        assert!(Linuxha::appconf().contains(r#"<tcp port="80" interval="1s""#));
    }
}
