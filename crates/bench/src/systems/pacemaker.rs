//! Pacemaker on Corosync: two nodes on knet with both lab networks as links, a group of
//! `ocf:heartbeat:IPaddr2` (the VIP) and `ocf:heartbeat:anything` (the service) with the common
//! monitor interval, fencing off (the lab has no fence device), `two_node` quorum.
//!
//! Each node needs its own `/run`, `/dev/shm` (libqb IPC), `/var/lib/pacemaker` (the CIB),
//! `/var/lib/corosync` and `/etc/corosync`: private tmpfs mounts in the node's mount namespace
//! (cl-lab `private_dirs`), or the second instance finds the first one's files and refuses.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cl_lab::Lab;

use super::{
    argv, must, reap, spawn_logged, Programs, System, MONITOR_INTERVAL_S, NODES, PORT, VIP,
};

/// Directories each node gets a private copy of.
const PRIVATE: [&str; 5] =
    ["/run", "/dev/shm", "/var/lib/pacemaker", "/var/lib/corosync", "/etc/corosync"];
/// The resource group.
const GROUP: &str = "grp";

/// Pacemaker + Corosync with totem `token` 3000 ms (default) or 1000 ms.
pub struct Pacemaker {
    fast: bool,
    children: Vec<Child>,
}

impl Pacemaker {
    /// The default (`fast = false`, token 3000) or token 1000 variant.
    pub fn new(fast: bool) -> Pacemaker {
        Pacemaker { fast, children: Vec::new() }
    }

    fn token(&self) -> u32 {
        if self.fast {
            1000
        } else {
            3000
        }
    }

    /// corosync.conf, the same on both nodes.
    pub fn corosync_conf(&self, lab: &Lab) -> Result<String> {
        let mut nodes = String::new();
        for (i, node) in NODES.iter().enumerate() {
            nodes += &format!(
                "  node {{\n    name: {node}\n    nodeid: {}\n    ring0_addr: {}\n    ring1_addr: {}\n  }}\n",
                i + 1,
                lab.addr(node, 0)?,
                lab.addr(node, 1)?
            );
        }
        Ok(format!(
            "totem {{\n  version: 2\n  cluster_name: bench\n  transport: knet\n  token: {}\n  crypto_cipher: none\n  crypto_hash: none\n}}\nnodelist {{\n{nodes}}}\nquorum {{\n  provider: corosync_votequorum\n  two_node: 1\n}}\nlogging {{\n  to_logfile: yes\n  logfile: /run/corosync.log\n  to_stderr: no\n  to_syslog: no\n  timestamp: on\n}}\n",
            self.token()
        ))
    }

    /// The resources: VIP then service, in one group so they move together.
    pub fn resources(bench: &str) -> String {
        let mon = format!("{MONITOR_INTERVAL_S}s");
        format!(
            r#"<group id="{GROUP}"><primitive id="vip" class="ocf" provider="heartbeat" type="IPaddr2"><instance_attributes id="vip-ia"><nvpair id="vip-ip" name="ip" value="{VIP}"/><nvpair id="vip-cidr" name="cidr_netmask" value="24"/><nvpair id="vip-nic" name="nic" value="eth0"/></instance_attributes><operations><op id="vip-mon" name="monitor" interval="{mon}" timeout="10s"/></operations></primitive><primitive id="svc" class="ocf" provider="heartbeat" type="anything"><instance_attributes id="svc-ia"><nvpair id="svc-bin" name="binfile" value="{bench}"/><nvpair id="svc-opts" name="cmdline_options" value="serve --port {PORT}"/></instance_attributes><operations><op id="svc-mon" name="monitor" interval="{mon}" timeout="10s"/></operations></primitive></group>"#
        )
    }

    fn log(lab: &Lab, node: &str, name: &str) -> Result<PathBuf> {
        Ok(lab.root(node)?.join(name))
    }

    /// `crm_mon` XML on `node`, if it answers.
    fn crm_mon_xml(lab: &Lab, node: &str) -> Option<String> {
        let out = lab.run(node, &["crm_mon", "-1", "--output-as=xml"]).ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// From crm_mon's XML: both nodes online, and the node every group member runs on (each on
/// exactly one node, all the same), if so.
pub fn placement(xml: &str) -> (bool, Option<String>) {
    let Ok(doc) = roxmltree::Document::parse(xml) else { return (false, None) };
    let online = NODES.iter().all(|n| {
        doc.descendants().any(|e| {
            e.has_tag_name("node")
                && e.attribute("name") == Some(n)
                && e.attribute("online") == Some("true")
                && e.parent().is_some_and(|p| p.has_tag_name("nodes"))
        })
    });
    let mut on: Option<String> = None;
    for id in ["vip", "svc"] {
        let Some(r) =
            doc.descendants().find(|e| e.has_tag_name("resource") && e.attribute("id") == Some(id))
        else {
            return (online, None);
        };
        if r.attribute("role") != Some("Started") || r.attribute("nodes_running_on") != Some("1") {
            return (online, None);
        }
        let node = r.children().find(|c| c.has_tag_name("node")).and_then(|c| c.attribute("name"));
        match (&on, node) {
            (_, None) => return (online, None),
            (None, Some(n)) => on = Some(n.to_string()),
            (Some(prev), Some(n)) if prev != n => return (online, None),
            _ => {}
        }
    }
    (online, on)
}

impl Drop for Pacemaker {
    fn drop(&mut self) {
        reap(&mut self.children);
    }
}

impl System for Pacemaker {
    fn id(&self) -> &'static str {
        if self.fast {
            "pacemaker-fast"
        } else {
            "pacemaker"
        }
    }

    fn label(&self) -> String {
        format!("Pacemaker+Corosync token {}", self.token())
    }

    fn start(&mut self, lab: &mut Lab, programs: &Programs) -> Result<()> {
        let conf = self.corosync_conf(lab)?;
        for node in NODES {
            lab.private_dirs(node, &PRIVATE)?;
            must(
                lab,
                node,
                &argv(&[
                    "sh",
                    "-c",
                    "chmod 1777 /dev/shm && install -d -o hacluster -g haclient -m 0750 \
                     /var/lib/pacemaker/cib /var/lib/pacemaker/pengine \
                     /var/lib/pacemaker/blackbox /var/lib/pacemaker/cores",
                ]),
            )?;
            std::fs::write(lab.host_path(node, Path::new("/etc/corosync/corosync.conf"))?, &conf)?;
        }
        for node in NODES {
            let log = Self::log(lab, node, "corosync.out")?;
            self.children.push(spawn_logged(lab, node, &argv(&["corosync", "-f"]), &log)?);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = lab.run("node1", &["corosync-quorumtool", "-s"])?;
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("Quorate:          Yes") && text.contains("node2") {
                break;
            }
            if Instant::now() > deadline {
                bail!("corosync did not form: {text}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for node in NODES {
            let log = Self::log(lab, node, "pacemaker.out")?;
            let mut cmd = lab.exec(node, &["pacemakerd"])?;
            let file = std::fs::File::options().create(true).append(true).open(&log)?;
            cmd.env("PCMK_logfile", "/run/pacemaker.log")
                .env("PCMK_logfacility", "none")
                .stdin(std::process::Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file);
            self.children.push(cmd.spawn().context("starting pacemakerd")?);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let online = Self::crm_mon_xml(lab, "node1").map(|x| placement(&x).0);
            if online == Some(true) {
                break;
            }
            if Instant::now() > deadline {
                bail!("pacemaker did not come up on both nodes");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let bench = programs.bench.to_string_lossy().into_owned();
        for args in [
            vec![
                "crm_attribute",
                "--type",
                "crm_config",
                "--name",
                "stonith-enabled",
                "--update",
                "false",
            ],
            vec![
                "crm_attribute",
                "--type",
                "rsc_defaults",
                "--name",
                "resource-stickiness",
                "--update",
                "100",
            ],
        ] {
            must(lab, "node1", &argv(&args))?;
        }
        let resources = Self::resources(&bench);
        must(
            lab,
            "node1",
            &argv(&["cibadmin", "--create", "--scope", "resources", "--xml-text", &resources]),
        )?;
        let pref = format!(r#"<rsc_location id="pref" rsc="{GROUP}" node="node1" score="50"/>"#);
        must(
            lab,
            "node1",
            &argv(&["cibadmin", "--create", "--scope", "constraints", "--xml-text", &pref]),
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.healthy(lab, programs)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("pacemaker did not start the group: {}", self.describe(lab, programs))
    }

    fn healthy(&self, lab: &Lab, _programs: &Programs) -> Result<bool> {
        let mut seen = Vec::new();
        for node in NODES {
            let Some(xml) = Self::crm_mon_xml(lab, node) else { return Ok(false) };
            let (online, on) = placement(&xml);
            if !online || on.is_none() {
                return Ok(false);
            }
            seen.push(on);
        }
        Ok(seen[0] == seen[1] && super::vip_holders(lab)?.len() == 1)
    }

    fn switch(&mut self, lab: &Lab, from: &str, to: &str, _programs: &Programs) -> Result<()> {
        must(lab, from, &argv(&["crm_resource", "--move", "--resource", GROUP, "--node", to]))?;
        Ok(())
    }

    fn after_switch(&mut self, lab: &Lab, from: &str, _to: &str) -> Result<()> {
        must(lab, from, &argv(&["crm_resource", "--clear", "--resource", GROUP]))?;
        Ok(())
    }

    fn status_command(&self, _programs: &Programs) -> Option<Vec<String>> {
        Some(argv(&["crm_mon", "-1"]))
    }

    fn describe(&self, lab: &Lab, _programs: &Programs) -> String {
        NODES
            .iter()
            .map(|n| {
                let out = lab
                    .run(n, &["crm_mon", "-1"])
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                format!("[{n}] crm_mon -1:\n{out}")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_from_crm_mon() {
        let xml = r#"<pacemaker-result api-version="2.2" request="crm_mon">
  <nodes>
    <node name="node1" id="1" online="true" standby="false"/>
    <node name="node2" id="2" online="true" standby="false"/>
  </nodes>
  <resources>
    <group id="grp" number_resources="2">
      <resource id="vip" resource_agent="ocf:heartbeat:IPaddr2" role="Started" nodes_running_on="1"><node name="node1" id="1" cached="true"/></resource>
      <resource id="svc" resource_agent="ocf:heartbeat:anything" role="Started" nodes_running_on="1"><node name="node1" id="1" cached="true"/></resource>
    </group>
  </resources>
</pacemaker-result>"#;
        assert_eq!(placement(xml), (true, Some("node1".into())));
        let offline = xml.replacen(
            r#"name="node2" id="2" online="true""#,
            r#"name="node2" id="2" online="false""#,
            1,
        );
        assert_eq!(placement(&offline), (false, Some("node1".into())));
        let split = xml.replacen(
            r#"nodes_running_on="1"><node name="node1""#,
            r#"nodes_running_on="1"><node name="node2""#,
            1,
        );
        assert_eq!(placement(&split), (true, None));
        assert_eq!(placement("not xml"), (false, None));
    }
}
