//! A linuxha cluster with replicated storage on VM nodes: the configuration an administrator
//! would write (clconf.xml, the key, appconf.xml and scripts of one application on one LVM
//! volume group), built with the real commands — clbuild, clbuildapp --vgbuild, clbuildapp
//! --build, clform — inside the guests. Used by the replication tests, the demo and the
//! benchmark, so they all run exactly what a user runs.
//!
//! The application `webdata` serves its replicated volume over HTTP (busybox httpd, port 80)
//! on the VIP 10.10.0.110; `GET /cgi-bin/append?N` appends record `N` to `records` on the volume
//! and answers `ok N` only after the record is on disk (fsync): a client that saw `ok N` holds
//! an acknowledged write.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cl_wire::msg::{ApplicationState, ClusterStatus};

use super::{VmLab, VmLabSpec};

/// The application's name.
pub const APP: &str = "webdata";
/// Its service address (on the lab's public network).
pub const VIP: &str = "10.10.0.110";
/// Where its replicated volume is mounted.
pub const MOUNTPOINT: &str = "/webdata/www";
/// The DRBD resource of its volume.
pub const RESOURCE: &str = "webdata-www";
/// The replicated device.
pub const DEVICE: &str = "/dev/drbd0";
/// The volume group each guest gets at first boot.
pub const VG: &str = "datavg";

/// How the cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Size of the replicated logical volume, MiB.
    pub volume_mib: u64,
    /// Heartbeat interval and timeout. TCG guests see round trips of hundreds of milliseconds
    /// when busy, so the lab's default is slower than a real LAN's.
    pub heartbeat: (Duration, Duration),
    /// `on_disk_failure` of the application (`detach` or `move`).
    pub on_disk_failure: &'static str,
    /// Fence each node through the lab's BMC (fence_linuxha_vm).
    pub fencing: bool,
    /// Build the storage and the application (clbuildapp --vgbuild, --build); else stop after
    /// configuring (the caller runs them).
    pub build: bool,
    /// Form the cluster at the end (else stop after building).
    pub form: bool,
}

impl Default for ClusterSpec {
    fn default() -> ClusterSpec {
        ClusterSpec {
            volume_mib: 64,
            heartbeat: (Duration::from_millis(500), Duration::from_secs(4)),
            on_disk_failure: "detach",
            fencing: false,
            build: true,
            form: true,
        }
    }
}

/// The cluster and its lab.
pub struct ReplicatedCluster {
    /// The VM lab (dropped: everything removed).
    pub lab: VmLab,
    /// How it was set up.
    pub spec: ClusterSpec,
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// clconf.xml of the two-node lab cluster `vmc`.
pub fn clconf(spec: &ClusterSpec) -> String {
    let fence = |node: &str| {
        if spec.fencing {
            format!(
                "\n    <fence agent=\"/usr/sbin/fence_linuxha_vm\" timeout=\"60s\" retry=\"2s\"><option name=\"plug\" value=\"{node}\"/></fence>"
            )
        } else {
            String::new()
        }
    };
    let node = |name: &str, i: u8| {
        format!(
            "  <node name=\"{name}\">\n    <network name=\"public\" interface=\"eth0\" address=\"10.10.0.1{i}\" prefix=\"24\" heartbeat=\"yes\"/>\n    <network name=\"private\" interface=\"eth1\" address=\"10.20.0.1{i}\" prefix=\"24\" heartbeat=\"yes\"/>{}\n  </node>\n",
            fence(name)
        )
    };
    format!(
        "<?xml version=\"1.0\"?>\n<linuxha>\n  <global>\n    <name>vmc</name>\n    <key file=\"/etc/cluster/cluster.key\"/>\n    <cldaemon_port>9901</cldaemon_port>\n    <cllockd_port>9902</cllockd_port>\n    <clnetd_port>9903</clnetd_port>\n    <clhbd_port>9904</clhbd_port>\n    <heartbeat interval=\"{}\" timeout=\"{}\"/>\n  </global>\n{}{}  <net_known_connections>\n  10.10.0.1\n  </net_known_connections>\n</linuxha>\n",
        millis(spec.heartbeat.0),
        millis(spec.heartbeat.1),
        node("node1", 1),
        node("node2", 2)
    )
}

/// appconf.xml of `webdata`.
pub fn appconf(spec: &ClusterSpec) -> String {
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
  <storage>
    <!-- DRBD's own failure detection, slowed down like the heartbeat for TCG guests. -->
    <replication net="private" on_disk_failure="{}" ping_int="5s" connect_int="5s" timeout="4s" ping_timeout="2s"/>
    <vg name="{VG}">
      <lv name="www" size="{}M" type="ext4" mountpoint="{MOUNTPOINT}"/>
    </vg>
  </storage>
  <application>
    <startscript timeout="30s">/etc/cluster/{APP}/start</startscript>
    <stopscript timeout="30s">/etc/cluster/{APP}/stop</stopscript>
  </application>
  <monitors>
    <tcp port="80" interval="2s" timeout="2s" restarts="2"/>
  </monitors>
</appconf>
"#,
        spec.on_disk_failure, spec.volume_mib
    )
}

/// The start script: the CGI that appends acknowledged records, then busybox httpd.
const START: &str = r#"#!/bin/sh
# Serve the replicated volume; /cgi-bin/append?N appends record N and answers only once it is
# on disk. busybox httpd detaches; linuxha tracks it through the application's cgroup.
set -e
cd /webdata/www
mkdir -p cgi-bin
cat > cgi-bin/append <<'CGI'
#!/bin/sh
n=$(echo "$QUERY_STRING" | tr -cd 0-9)
echo "$n" >> /webdata/www/records
sync
printf 'Content-Type: text/plain\r\n\r\nok %s\n' "$n"
CGI
chmod 755 cgi-bin/append
[ -e index.html ] || echo "webdata, first started on $(uname -n)" > index.html
busybox httpd -p 80 -h /webdata/www
"#;

/// The stop script: linuxha kills what is left in the application's cgroup.
const STOP: &str = "#!/bin/sh\nexit 0\n";

impl ReplicatedCluster {
    /// Boot two guests and build the cluster with the real commands (about a minute under TCG).
    pub fn up(binary_dir: &std::path::Path, spec: ClusterSpec) -> Result<ReplicatedCluster> {
        let mut lab_spec = VmLabSpec::new(binary_dir);
        lab_spec.vg = Some(VG.to_string());
        let lab = VmLab::up(lab_spec)?;
        let cluster = ReplicatedCluster { lab, spec };
        cluster.configure()?;
        if !cluster.spec.build {
            return Ok(cluster);
        }
        cluster.build()?;
        if cluster.spec.form {
            cluster.form()?;
        }
        Ok(cluster)
    }

    fn configure(&self) -> Result<()> {
        let clconf = clconf(&self.spec);
        let appconf = appconf(&self.spec);
        for node in ["node1", "node2"] {
            let lab = &self.lab;
            lab.write_file(node, "/etc/cluster/clconf.xml", clconf.as_bytes(), 0o644)?;
            lab.write_file(
                node,
                &format!("/etc/cluster/{APP}/appconf.xml"),
                appconf.as_bytes(),
                0o644,
            )?;
            lab.write_file(node, &format!("/etc/cluster/{APP}/start"), START.as_bytes(), 0o755)?;
            lab.write_file(node, &format!("/etc/cluster/{APP}/stop"), STOP.as_bytes(), 0o755)?;
        }
        self.lab.sh("node1", "clbuild --genkey >/dev/null")?;
        let key = self.lab.read_file("node1", "/etc/cluster/cluster.key")?;
        self.lab.write_file("node2", "/etc/cluster/cluster.key", &key, 0o600)?;
        for node in ["node1", "node2"] {
            self.lab.sh(node, "clbuild >/dev/null 2>&1 && cldaemon")?;
        }
        Ok(())
    }

    /// clbuildapp --vgbuild (both nodes' storage, initial sync) and --build on node1.
    pub fn build(&self) -> Result<()> {
        let out =
            self.run("node1", &format!("clbuildapp --vgbuild --yes --application {APP}"), 300)?;
        if out.rc != 0 {
            bail!("clbuildapp --vgbuild failed ({}):\n{}", out.rc, out.stdout);
        }
        let out = self.run("node1", &format!("clbuildapp --build --application {APP}"), 60)?;
        if out.rc != 0 {
            bail!("clbuildapp --build failed ({}):\n{}", out.rc, out.stdout);
        }
        Ok(())
    }

    /// clform on node1, then wait until the application runs on node1.
    pub fn form(&self) -> Result<()> {
        let out = self.run("node1", "clform --verbose", 120)?;
        if out.rc != 0 {
            bail!("clform failed ({}):\n{}\n{}", out.rc, out.stdout, self.diagnostics());
        }
        self.wait_running_on("node1", Duration::from_secs(90))
    }

    /// An HTTP GET of `path` on the VIP from the lab's `ext` host (a client outside the
    /// cluster): the body, or None when nothing answered within 2 s.
    pub fn get(&self, path: &str) -> Option<String> {
        let netns = self.lab.lab().netns("ext").ok()?;
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", netns, "curl", "-sf", "-m", "2"])
            .arg(format!("http://{VIP}{path}"))
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Append record `n` through the application; true once it acknowledged (on disk).
    pub fn append(&self, n: u64) -> bool {
        self.get(&format!("/cgi-bin/append?{n}")).is_some_and(|b| b.trim() == format!("ok {n}"))
    }

    /// The records the application serves now.
    pub fn records(&self) -> Option<Vec<u64>> {
        let body = self.get("/records")?;
        Some(body.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// What an engineer needs when a scenario fails: each running node's clstat (verbose),
    /// DRBD state and the end of its cldaemon, clhbd and clhbd2 logs.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for node in ["node1", "node2"] {
            if !self.lab.is_running(node).unwrap_or(false) {
                out += &format!("==== {node}: powered off\n");
                continue;
            }
            // clstat --verbose has the heartbeat counters (frames accepted, unfresh, bad);
            // the heartbeat daemons' logs say whether they started and what they dropped.
            let script = "clstat --verbose 2>&1; cat /proc/drbd; grep -v 'rejected a request' /var/log/cluster/cldaemon.log | tail -40; for d in clhbd clhbd2; do echo \"-- $d.log\"; tail -15 /var/log/cluster/$d.log; done";
            let text =
                self.run(node, script, 30).map(|o| o.stdout).unwrap_or_else(|e| e.to_string());
            out += &format!("==== {node}\n{text}\n");
        }
        out
    }

    /// Run a shell command on a node (output and exit code, whatever it is).
    pub fn run(&self, node: &str, script: &str, timeout_secs: u64) -> Result<super::Output> {
        self.lab.exec(node, script, Duration::from_secs(timeout_secs))
    }

    /// The cluster's status as `node` sees it (`clstat --json`).
    pub fn status(&self, node: &str) -> Result<ClusterStatus> {
        let out = self.run(node, "clstat --json", 30)?;
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("clstat --json on {node} ({}): {}", out.rc, out.stdout))
    }

    /// Where `webdata` runs according to `node`, if it runs.
    pub fn running_on(&self, node: &str) -> Result<Option<String>> {
        let status = self.status(node)?;
        Ok(status
            .applications
            .into_iter()
            .find(|a| a.name == APP && a.state == ApplicationState::Running)
            .and_then(|a| a.node))
    }

    /// Wait until `node` reports `webdata` running on itself.
    pub fn wait_running_on(&self, node: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.running_on(node).ok().flatten().as_deref() == Some(node) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let clstat = self.run(node, "clstat", 30).map(|o| o.stdout).unwrap_or_default();
                bail!("{APP} is not running on {node} after {timeout:?}:\n{clstat}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// DRBD's view of the volume on `node` (`/proc/drbd`'s line for minor 0).
    pub fn drbd_state(&self, node: &str) -> Result<String> {
        Ok(self.run(node, "sed -n 's/^ *0: //p' /proc/drbd", 30)?.stdout.trim().to_string())
    }

    /// Wait until `node`'s DRBD line matches every one of `needles`.
    pub fn wait_drbd(&self, node: &str, needles: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.drbd_state(node).unwrap_or_default();
            if needles.iter().all(|n| state.contains(n)) {
                return Ok(state);
            }
            if Instant::now() > deadline {
                bail!("DRBD on {node} is `{state}` after {timeout:?}, waiting for {needles:?}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Checksum of the volume's data area on `node`: the DRBD device where it is Primary, the
    /// backing logical volume (first `size` bytes: internal metadata follows) elsewhere.
    pub fn checksum(&self, node: &str) -> Result<String> {
        let script = format!(
            "size=$(blockdev --getsize64 {DEVICE} 2>/dev/null || echo 0); \
             if grep -q 'ro:Primary' /proc/drbd; then src={DEVICE}; else src=/dev/{VG}/www; fi; \
             [ \"$size\" -gt 0 ] || size=$(( $(cat /sys/block/drbd0/size) * 512 )); \
             head -c \"$size\" $src | md5sum | cut -d' ' -f1"
        );
        let out = self.run(node, &script, 120)?;
        if out.rc != 0 {
            bail!("checksum on {node} failed: {}", out.stdout);
        }
        Ok(out.stdout.trim().to_string())
    }
}
