//! The example application's life cycle on a two-node lab: clform starts it on the preferred
//! node, clswitchapp moves it, clhaltapp stops it everywhere, clstartapp --node starts it on the
//! chosen node, clhalt refuses while it runs and clhalt --force stops it first. At every step
//! the node that does not run it holds nothing of it: no VIP, no mount, no process.

mod cluster;
use cluster::ApplicationState;

use std::time::{Duration, Instant};

use cluster::{app_running_on, app_state, text, Cluster, APP, CLUSTER, CLUSTER_DAEMONS, VIP};

#[test]
fn apache_lifecycle_form_switch_halt_start_and_clhalt() {
    let Some(c) = Cluster::with_apache("apache_lifecycle", |_, _| {}) else { return };
    let started = Instant::now();

    // clform: autostart on the preferred node.
    c.form();
    c.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
    let took = c.wait_served_by("node1", Duration::from_secs(10));
    eprintln!("clform → ext served by node1: {:?} after the start", started.elapsed());
    eprintln!("  (first answer {took:?} after clstat showed it running)");
    assert!(c.has_vip("node1") && !c.has_vip("node2"), "the VIP is on node1's eth0 only");
    assert!(c.app_mounted("node1"), "node1 mounted {}", c.app_mountpoint("node1").display());
    c.assert_released("node2", "apache runs on node1");
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("own mountinfo");
    let mountpoint = c.app_mountpoint("node1");
    assert!(
        !host_mounts.lines().any(|l| l.split(' ').nth(4) == mountpoint.to_str()),
        "{} is mounted in node1's mount namespace only, not on the host",
        mountpoint.display()
    );
    c.wait_app_process("node1", "python3");
    let log1 = c.log("node1", "cldaemon");
    let steps = [
        "starting apache".to_string(),
        format!(
            "mounted {}",
            c.lab.root("node1").expect("root").join("dev/linuxha/apache").display()
        ),
        format!("VIP {VIP}/24 up on eth0"),
        "start script finished".to_string(),
        "apache is running".to_string(),
    ];
    assert_in_order("node1 cldaemon.log", &log1, &steps);
    assert!(c.log("node1", APP).contains("exited with status 0"), "apache.log has the start");

    unknown_names_are_answered_at_once(&c);

    // clswitchapp: node1 releases everything before node2 starts; when the command returns
    // the move is done. Wait out node1's gratuitous ARPs first (5 over ~1 s after the VIP came
    // up): a switch within that second fails, see `switch_right_after_start_moves_it`.
    c.let_announcements_end();
    let from1 = c.log("node1", "cldaemon").len();
    let from2 = c.log("node2", "cldaemon").len();
    let t = Instant::now();
    c.must("node1", &["clswitchapp", "--application", APP]);
    let switch_took = t.elapsed();
    let (_, status) = c.status("node1");
    assert!(app_running_on(&status, "node2"), "after clswitchapp: {:?}", app_state(&status));
    c.assert_released("node1", "clswitchapp returned");
    assert!(c.has_vip("node2") && c.app_mounted("node2"), "node2 holds VIP and mount");
    let served = c.wait_served_by("node2", Duration::from_secs(10));
    eprintln!("clswitchapp took {switch_took:?}; ext served by node2 {served:?} later");
    let log1 = c.log_since("node1", "cldaemon", from1);
    assert_in_order(
        "node1 cldaemon.log",
        &log1,
        &[
            "stopping apache: moving to node2",
            "killed processes left after the stop script",
            &format!("VIP {VIP} removed"),
            "unmounted",
            "apache is stopped",
        ],
    );
    let stopped = c.log_line("node1", "cldaemon", from1, "apache is stopped").expect("stopped");
    let starting = c.log_line("node2", "cldaemon", from2, "starting apache").expect("starting");
    assert!(
        stopped.0 <= starting.0,
        "node1 stopped before node2 started:\n{}\n{}",
        stopped.1,
        starting.1
    );

    // clhaltapp: stopped everywhere, nothing held anywhere.
    c.must("node2", &["clhaltapp", "--application", APP]);
    c.wait_app_everywhere("apache stopped", |s| {
        app_state(s) == (Some(ApplicationState::Stopped), None)
    });
    c.assert_released("node1", "after clhaltapp");
    c.assert_released("node2", "after clhaltapp");
    assert!(c.fetch(Duration::from_millis(500)).is_err(), "nobody serves after clhaltapp");

    // clstartapp --node node2, asked on node1.
    let out =
        c.must("node1", &["clstartapp", "--application", APP, "--node", "node2", "--verbose"]);
    assert!(out.contains("running on node2"), "clstartapp --verbose follows it: {out}");
    c.wait_app_everywhere("apache running on node2", |s| app_running_on(s, "node2"));
    c.wait_served_by("node2", Duration::from_secs(10));
    c.assert_released("node1", "apache started on node2");

    // clhalt refuses while applications run, and changes nothing.
    let out = c.run("node1", &["clhalt"]);
    assert_eq!(out.status.code(), Some(1), "clhalt refuses: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("apache on node2"), "clhalt names the application: {stderr}");
    assert!(stderr.contains("--force"), "clhalt says how to go on: {stderr}");
    for node in ["node1", "node2"] {
        for daemon in CLUSTER_DAEMONS {
            c.pid_of(node, daemon);
        }
        let (code, status) = c.status(node);
        assert_eq!(code, Some(0), "{node} still formed after the refused clhalt");
        assert!(app_running_on(&status, "node2"), "{node}: {:?}", app_state(&status));
    }
    assert_eq!(c.fetch(Duration::from_secs(2)).as_deref(), Ok("served by node2"));

    // clhalt --force: the application stops first, then the daemons everywhere.
    let from2 = c.log("node2", "cldaemon").len();
    let out = c.must("node1", &["clhalt", "--force", "--verbose"]);
    assert!(out.contains("stopping apache"), "clhalt --force says it stops apache: {out}");
    c.assert_released("node1", "after clhalt --force");
    c.assert_released("node2", "after clhalt --force");
    let stopped = c.log_line("node2", "cldaemon", from2, "apache is stopped");
    let halted = c.log_line("node2", "cldaemon", from2, "halted on this node");
    match (stopped, halted) {
        (Some(s), Some(h)) => {
            assert!(s.0 <= h.0, "apache stopped before the halt:\n{}\n{}", s.1, h.1)
        }
        other => panic!("node2: apache stopped, then halted: {other:?}\n{}", c.app_diagnostics()),
    }
    for node in ["node1", "node2"] {
        let (code, _) = c.status(node);
        assert_eq!(code, Some(3), "{node} not formed after clhalt --force");
        for daemon in CLUSTER_DAEMONS {
            c.wait_pids(node, daemon, "stopped", |p| p.is_empty());
        }
        c.pid_of(node, "cldaemon");
    }
    eprintln!("lifecycle done in {:?}", started.elapsed());
}

/// A switch asked as soon as apache runs: node1 stops it and node2 must start it. node1's
/// gratuitous ARPs for the VIP (sent for ~1 s after it came up) must stop with the VIP, or
/// node2's probe takes them for another owner and refuses to start it.
#[test]
fn switch_right_after_start_moves_it() {
    let Some(c) = Cluster::apache_on_node1("switch_right_after_start") else { return };
    let from2 = c.log("node2", "cldaemon").len();
    let t = Instant::now();
    let mut argv = vec!["timeout", "15", cluster::EXE];
    argv.extend(["clswitchapp", "--application", APP]);
    let out = c.lab.run("node1", &argv).expect("clswitchapp runs");
    let took = t.elapsed();
    let (_, status) = c.status("node2");
    let refused = c.log_line("node2", "cldaemon", from2, "refusing to start");
    assert!(
        out.status.success() && app_running_on(&status, "node2"),
        "bug: clswitchapp right after the start did not move apache ({took:?}): {}\n\
         node2: {:?} {:?}\nnode1's MAC {}; node2 logged: {:?}\n{}",
        text(&out),
        app_state(&status),
        cluster::app_failure(&status),
        c.mac("node1"),
        refused.map(|r| r.1),
        c.app_diagnostics()
    );
    c.wait_served_by("node2", Duration::from_secs(10));
    c.assert_released("node1", "after the switch");
}

/// Each of `steps` appears in `log`, in this order.
fn assert_in_order(name: &str, log: &str, steps: &[impl AsRef<str>]) {
    let mut at = 0;
    for step in steps {
        let step = step.as_ref();
        match log[at..].find(step) {
            Some(i) => at += i + step.len(),
            None => panic!(
                "{name}: no {step:?} after the previous steps {steps:?}:\n{log}",
                steps = steps.iter().map(|s| s.as_ref()).collect::<Vec<_>>()
            ),
        }
    }
}

/// On the formed cluster, an unknown target node or application is answered at once with
/// exit 2 and changes nothing: by the commands from the built configuration, and by cldaemon
/// itself for a client that does not check (an older one, or a race with clbuild).
fn unknown_names_are_answered_at_once(c: &Cluster) {
    use cl_wire::msg::{AdminRequest, AdminResponse, AppCommand};
    for (args, expected) in [
        (
            &["clswitchapp", "--application", APP, "--node", "nosuch"][..],
            "clswitchapp: there is no node `nosuch` in cluster `cluster1` (its nodes: node1, node2)",
        ),
        (&["clstartapp", "--application", "nosuch"], "clstartapp: there is no built application `nosuch` (built applications: apache;"),
        (&["clhaltapp", "--application", "../x"], "clhaltapp: application name `../x` must be"),
        (&["clhalt", "--node", "nosuch"], "clhalt: there is no node `nosuch` in cluster `cluster1`"),
    ] {
        let t = Instant::now();
        let out = c.run("node1", args);
        let took = t.elapsed();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with(expected) && stderr.lines().count() == 1, "{args:?}: {stderr}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
    let socket = cl_daemon::context::admin_socket(
        &cl_paths::Paths::new(c.lab.root("node1").expect("root")),
        CLUSTER,
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let request = AdminRequest::App {
        action: AppCommand::Switch,
        app: APP.into(),
        node: Some("nosuch".into()),
    };
    let t = Instant::now();
    let answer = runtime.block_on(cl_daemon::transport::admin_request(
        &socket,
        &request,
        Duration::from_secs(5),
    ));
    assert!(
        matches!(&answer, Ok(AdminResponse::Failed { message, .. }) if message.contains("no node `nosuch`")),
        "cldaemon answered {answer:?} after {:?}",
        t.elapsed()
    );
    let (_, status) = c.status("node1");
    assert!(app_running_on(&status, "node1"), "still on node1: {:?}", app_state(&status));
}
