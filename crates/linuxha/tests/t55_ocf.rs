//! OCF resource agents and LSB init scripts as application resources, with the real
//! `resource-agents` package (scripts/test.sh installs it): the example `ocfweb` (Dummy +
//! IPaddr2 + a start script) restarts when its Dummy agent's monitor says "not running" (7)
//! and fails over on the second time; an LSB init script application starts, moves and stops;
//! clbuildapp rejects a missing required parameter and an unknown agent at their place.

mod cluster;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cluster::{app_entry, text, Cluster};
use cluster::{ApplicationState, ClusterStatus};

/// The example application made of resource agents.
const OCF_APP: &str = "ocfweb";
/// Its address, managed by IPaddr2.
const OCF_VIP: &str = "10.10.0.150";
/// Dummy's state file under a node's root (HA_RSCTMP is per node).
const DUMMY_STATE: &str = "run/resource-agents/Dummy-ocfweb-state.state";

/// The real agents must be there; scripts/test.sh installs them.
fn require_agents() {
    assert!(
        Path::new("/usr/lib/ocf/resource.d/heartbeat/IPaddr2").exists(),
        "the resource-agents package is not installed: apt-get install -y resource-agents (scripts/test.sh does)"
    );
}

/// `(state, node)` of `app` in a status (`(None, None)` when absent).
fn state_of(status: &ClusterStatus, app: &str) -> (Option<ApplicationState>, Option<String>) {
    let Some(entry) = app_entry(status, app) else { return (None, None) };
    (Some(entry.state), entry.node.clone())
}

fn running_on(status: &ClusterStatus, app: &str, node: &str) -> bool {
    state_of(status, app) == (Some(ApplicationState::Running), Some(node.to_string()))
}

/// The latest monitor result of each resource of `app`, by id.
fn resource_results(status: &ClusterStatus, app: &str) -> Vec<(String, String)> {
    app_entry(status, app)
        .map(|a| {
            a.resources
                .iter()
                .map(|r| (r.id.clone(), r.result.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn has_address(c: &Cluster, node: &str, address: &str) -> bool {
    c.addresses(node).iter().any(|a| a.split('/').next() == Some(address))
}

/// Ask `http://10.10.0.150:8080/` from ext until `served by <node>` answers.
fn wait_served_by(c: &Cluster, node: &str, timeout: Duration) -> Duration {
    const SCRIPT: &str = "import sys,urllib.request\n\
        try:\n    print(urllib.request.urlopen(sys.argv[1],timeout=0.5).read().decode().strip())\n\
        except Exception as e:\n    print(e)\n    sys.exit(1)\n";
    let url = format!("http://{OCF_VIP}:8080/");
    let want = format!("served by {node}");
    let start = Instant::now();
    loop {
        let out = c.lab.run("ext", &["python3", "-c", SCRIPT, &url]).expect("python3 runs");
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if said == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "ext: not {want:?} within {timeout:?} (last answer {said:?})\n{}",
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn state_file(c: &Cluster, node: &str) -> PathBuf {
    c.lab.root(node).expect("node root").join(DUMMY_STATE)
}

#[test]
fn ocf_agents_monitor_restarts_then_fails_over_with_the_agents_vip() {
    require_agents();
    let Some(c) = Cluster::configured("ocf_dummy_ipaddr2") else { return };
    for node in ["node1", "node2"] {
        let built = c.must(node, &["clbuildapp", "--build", "--verbose", "--application", OCF_APP]);
        assert!(built.contains("2 resources"), "{built}");
    }
    for node in ["node1", "node2"] {
        c.start_cldaemon(node);
    }
    let t = Instant::now();
    c.form();
    for node in ["node1", "node2"] {
        c.wait_for(node, "ocfweb running on node1", Duration::from_secs(15), |s| {
            running_on(s, OCF_APP, "node1")
        });
    }
    let served = wait_served_by(&c, "node1", Duration::from_secs(15));
    eprintln!("clform → ext served through the IPaddr2 address in {:?} ({served:?})", t.elapsed());
    assert!(has_address(&c, "node1", OCF_VIP) && !has_address(&c, "node2", OCF_VIP));
    assert!(state_file(&c, "node1").exists(), "Dummy's state file is under node1's root");
    assert!(!state_file(&c, "node2").exists(), "node2 has no Dummy state");
    // clstat shows each resource with its agent's latest monitor result.
    let status = c.wait_for("node1", "both resources monitored", Duration::from_secs(10), |s| {
        let results = resource_results(s, OCF_APP);
        results.len() == 2 && results.iter().all(|(_, r)| r == "running")
    });
    let ids: Vec<String> =
        resource_results(&status, OCF_APP).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["ocfweb-state", "ocfweb-ip"]);
    let shown = c.must("node1", &["clstat"]);
    assert!(
        shown.contains("resource ocfweb-ip (ocf:heartbeat:IPaddr2): running"),
        "clstat shows the resources:\n{shown}"
    );

    // Stopped behind linuxha's back: Dummy's monitor answers 7 (not running) → restart here
    // (restarts="1"), and the agent's start brings the state file back.
    let from1 = c.log("node1", "cldaemon").len();
    let t = Instant::now();
    std::fs::remove_file(state_file(&c, "node1")).expect("remove the state file");
    let status = c.wait_for("node1", "restarted on node1", Duration::from_secs(15), |s| {
        app_entry(s, OCF_APP).map(|a| a.restarts) == Some(1) && running_on(s, OCF_APP, "node1")
    });
    let failure = app_entry(&status, OCF_APP)
        .and_then(|a| a.last_failure.as_deref())
        .unwrap_or("")
        .to_string();
    assert!(
        failure.contains("restarting (1 of 1)") && failure.contains("exit 7 (not running)"),
        "the failure names the agent's answer: {failure:?}"
    );
    assert!(state_file(&c, "node1").exists(), "Dummy started again on node1");
    wait_served_by(&c, "node1", Duration::from_secs(15));
    eprintln!("state file removed → restarted on node1 and served again after {:?}", t.elapsed());
    let log1 = c.log_since("node1", "cldaemon", from1);
    assert!(log1.contains("resource ocfweb-state (ocf:heartbeat:Dummy) stopped"), "{log1}");
    assert!(log1.contains("resource ocfweb-ip (ocf:heartbeat:IPaddr2) started"), "{log1}");

    // The second time within the window: failed here, node2 takes it, address and all.
    let t = Instant::now();
    std::fs::remove_file(state_file(&c, "node1")).expect("remove the state file again");
    for node in ["node1", "node2"] {
        c.wait_for(node, "ocfweb running on node2", Duration::from_secs(15), |s| {
            running_on(s, OCF_APP, "node2")
        });
    }
    wait_served_by(&c, "node2", Duration::from_secs(15));
    eprintln!("second removal → failed over, ext served by node2 after {:?}", t.elapsed());
    assert!(has_address(&c, "node2", OCF_VIP), "IPaddr2 brought the address up on node2");
    assert!(!has_address(&c, "node1", OCF_VIP), "IPaddr2's stop removed it from node1");
    assert!(state_file(&c, "node2").exists() && !state_file(&c, "node1").exists());
}

/// A small LSB init script: a `sleep` whose pid is kept in `$LINUXHA_ROOT/run/lsbsvc.pid`.
const INIT_SCRIPT: &str = r#"#!/bin/sh
pidfile="${LINUXHA_ROOT:-}/run/lsbsvc.pid"
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
case "$1" in
start)  running && exit 0
        mkdir -p "$(dirname "$pidfile")"
        setsid sleep 3600 >/dev/null 2>&1 </dev/null &
        echo $! > "$pidfile"; exit 0 ;;
stop)   running && kill "$(cat "$pidfile")"
        rm -f "$pidfile"; exit 0 ;;
status) running && exit 0
        [ -f "$pidfile" ] && exit 1
        exit 3 ;;
*)      echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
"#;

const LSB_APPCONF: &str = r#"<?xml version="1.0"?>
<appconf>
  <global>
    <name>lsbapp</name>
    <nodes>node1 node2</nodes>
  </global>
  <resources>
    <resource type="lsb:lsbsvc" monitor_interval="1s" monitor_timeout="5s"/>
  </resources>
</appconf>
"#;

/// The service's pid on `node`, when its pid file names a live process.
fn service_pid(c: &Cluster, node: &str) -> Option<u32> {
    let file = c.lab.root(node).ok()?.join("run/lsbsvc.pid");
    let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with(['Z', 'X'])))
        .unwrap_or(false)
}

#[test]
fn lsb_init_script_application_starts_moves_and_stops() {
    use std::os::unix::fs::PermissionsExt;
    let Some(c) = Cluster::configured_with("lsb_init_script", |_, etc| {
        let app = etc.join("lsbapp");
        std::fs::create_dir_all(&app).expect("app dir");
        std::fs::write(app.join("appconf.xml"), LSB_APPCONF).expect("appconf");
        let init_d = etc.parent().expect("etc").join("init.d");
        std::fs::create_dir_all(&init_d).expect("init.d");
        let script = init_d.join("lsbsvc");
        std::fs::write(&script, INIT_SCRIPT).expect("init script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }) else {
        return;
    };
    for node in ["node1", "node2"] {
        c.must(node, &["clbuildapp", "--build", "--application", "lsbapp"]);
        c.start_cldaemon(node);
    }
    c.form();
    for node in ["node1", "node2"] {
        c.wait_for(node, "lsbapp running on node1", Duration::from_secs(15), |s| {
            running_on(s, "lsbapp", "node1")
        });
    }
    let pid1 = service_pid(&c, "node1").expect("the init script's service runs on node1");
    assert_eq!(service_pid(&c, "node2"), None);
    c.wait_for("node1", "status monitored", Duration::from_secs(10), |s| {
        resource_results(s, "lsbapp") == [("lsbsvc".to_string(), "running".to_string())]
    });

    // Moved: `stop` on node1, then `start` on node2.
    let t = Instant::now();
    c.must("node1", &["clswitchapp", "--application", "lsbapp", "--node", "node2"]);
    c.wait_for("node1", "lsbapp running on node2", Duration::from_secs(15), |s| {
        running_on(s, "lsbapp", "node2")
    });
    let pid2 = service_pid(&c, "node2").expect("the service runs on node2");
    eprintln!("clswitchapp moved the LSB service in {:?}", t.elapsed());
    assert!(!alive(pid1), "the node1 copy ({pid1}) was stopped");
    assert_eq!(service_pid(&c, "node1"), None);

    // Stopped everywhere.
    let out = c.run("node1", &["clhaltapp", "--application", "lsbapp"]);
    assert!(out.status.success(), "{}", text(&out));
    c.wait_for("node2", "lsbapp stopped", Duration::from_secs(15), |s| {
        state_of(s, "lsbapp").0 == Some(ApplicationState::Stopped)
    });
    assert!(!alive(pid2), "the node2 copy ({pid2}) was stopped");
    assert_eq!(service_pid(&c, "node2"), None);
}

#[test]
fn clbuildapp_rejects_a_missing_required_parameter_and_an_unknown_agent() {
    require_agents();
    let node = cluster_node();
    let app = node.file("etc/cluster/broken");
    std::fs::create_dir_all(&app).expect("app dir");
    std::fs::write(
        app.join("appconf.xml"),
        r#"<appconf>
  <global><name>broken</name></global>
  <resources>
    <resource id="vip" type="ocf:heartbeat:IPaddr2">
      <param name="cidr_netmask" value="24"/>
    </resource>
    <resource id="d" type="ocf:heartbeat:Dumy"/>
    <resource id="s" type="ocf:heartbeat:Dummy"><param name="state" value="/nonexistent/dir/s.state"/></resource>
  </resources>
</appconf>
"#,
    )
    .expect("appconf");
    let out = node.run("clbuildapp", &["--build", "--application", "broken"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = app.join("appconf.xml");
    let at = |line_col: &str| format!("{}:{line_col}: error: ", file.display());
    assert!(
        stderr.contains(&format!(
            "{}<resource id=\"vip\" type=\"ocf:heartbeat:IPaddr2\">: missing required parameter `ip`",
            at("4:5")
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}<resource type>: OCF agent `ocf:heartbeat:Dumy` does not exist: /usr/lib/ocf/resource.d/heartbeat/Dumy is missing; did you mean `Dummy`?",
            at("7:28")
        )),
        "{stderr}"
    );
    // The real Dummy's validate-all: its state directory must be writable.
    assert!(
        stderr.contains(&format!("{}<resource id=\"s\" type=\"ocf:heartbeat:Dummy\">: the agent's validate-all rejects it: exit 2 (invalid parameters)", at("8:5"))),
        "{stderr}"
    );
    assert!(!node.file("etc/cluster/.built/app-broken.json").exists(), "nothing built");
}

/// A node root (no lab) with the example cluster built.
fn cluster_node() -> cluster::common::Node {
    let node = cluster::common::Node::with_example("node1");
    for args in [&["--genkey"][..], &["--force"][..]] {
        let out = node.run("clbuild", args);
        assert!(out.status.success(), "{}", text(&out));
    }
    node
}
