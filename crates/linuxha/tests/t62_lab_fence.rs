//! The lab's fence agent, run the way a node's cldaemon runs it: as `fence_linuxha_lab`
//! inside node2 (node2's network and mount namespaces and cgroup), with fence-agents options
//! on stdin, against node1. Off freezes and cuts node1; on boots it fresh (old processes and
//! VIPs gone, links healed, thawed); status answers 0/2; every action is idempotent.

use std::io::Write as _;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use cl_lab::{Fault, Lab, LabSpec};

/// Runs the agent inside `from` with `stdin`, returning its exit code and output.
fn agent(lab: &Lab, from: &str, agent: &Path, stdin: &str) -> (i32, String) {
    let mut cmd = lab.exec(from, &[agent.as_os_str()]).expect("exec");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn agent");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out: Output = child.wait_with_output().expect("agent output");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn ping(lab: &Lab, from: &str, to: &str) -> bool {
    lab.run(from, &["ping", "-c1", "-W1", to]).map(|o| o.status.success()).unwrap_or(false)
}

fn addresses(lab: &Lab, host: &str) -> String {
    let out = lab.run(host, &["ip", "-o", "addr", "show", "dev", "eth0"]).expect("ip addr");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

#[test]
fn t62_the_lab_fence_agent_powers_a_node_off_and_on_from_inside_the_other_node() {
    if let Err(e) = cl_lab::check_supported() {
        eprintln!("skipping t62: {e}");
        return;
    }
    let mut lab = Lab::up(LabSpec::default()).expect("lab up");
    let name = lab.name().to_string();
    // Installed under node2's root like a fence-agents package would be: a link to linuxha.
    let sbin = lab.root("node2").expect("root").join("usr/sbin");
    std::fs::create_dir_all(&sbin).expect("sbin");
    let fence_agent = sbin.join("fence_linuxha_lab");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_linuxha"), &fence_agent).expect("link");
    let ask = |action: &str| format!("nodename=node1\nlab={name}\nplug=node1\naction={action}\n");

    // node1 runs something and holds a VIP.
    let mut old = lab.exec("node1", &["sleep", "1000"]).expect("exec").spawn().expect("sleep");
    let old_pid = old.id();
    let vip = lab.run("node1", &["ip", "addr", "add", "10.10.0.100/24", "dev", "eth0"]);
    assert!(vip.expect("ip").status.success());
    assert!(ping(&lab, "ext", "10.10.0.100"));

    let (code, out) = agent(&lab, "node2", &fence_agent, &ask("status"));
    assert_eq!(code, 0, "status of a running node: {out}");

    // Off: frozen and cut, seen both by the lab state and from the outside.
    let (code, out) = agent(&lab, "node2", &fence_agent, &ask("off"));
    assert_eq!(code, 0, "off: {out}");
    lab.refresh().expect("refresh");
    assert!(lab.is_frozen("node1").expect("frozen?"), "node1 frozen");
    for net in 0..2 {
        assert!(lab.faults().contains(&Fault::Cut { host: "node1".into(), net }), "net {net} cut");
    }
    assert!(!ping(&lab, "ext", "10.10.0.11") && !ping(&lab, "ext", "10.10.0.100"), "silent");
    assert!(alive(old_pid), "frozen, not killed");
    assert!(!lab.is_frozen("node2").expect("frozen?"), "the fencing node runs on");
    let (code, out) = agent(&lab, "node2", &fence_agent, &ask("status"));
    assert_eq!(code, 2, "status of a fenced node: {out}");
    let (code, out) = agent(&lab, "node2", &fence_agent, &ask("off"));
    assert_eq!(code, 0, "off again is fine: {out}");

    // On: a fresh boot. The old process and the VIP are gone, the lab's address stays.
    let (code, out) = agent(&lab, "node2", &fence_agent, &ask("on"));
    assert_eq!(code, 0, "on: {out}");
    let _ = old.wait();
    assert!(!alive(old_pid), "old process killed");
    lab.refresh().expect("refresh");
    assert!(!lab.is_frozen("node1").expect("frozen?"));
    assert!(lab.faults().is_empty(), "links healed: {:?}", lab.faults());
    let addrs = addresses(&lab, "node1");
    assert!(addrs.contains("10.10.0.11/24") && !addrs.contains("10.10.0.100"), "{addrs}");
    let reachable = (0..50).any(|_| {
        ping(&lab, "ext", "10.10.0.11") || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(reachable, "node1 answers again");
    let (code, out) = agent(&lab, "node2", &fence_agent, &ask("status"));
    assert_eq!(code, 0, "status after on: {out}");

    // On when on already leaves the node alone.
    let mut new = lab.exec("node1", &["sleep", "1000"]).expect("exec").spawn().expect("sleep");
    let (code, out) = agent(&lab, "node2", &fence_agent, &ask("on"));
    assert_eq!(code, 0, "on again: {out}");
    assert!(alive(new.id()), "a running node is not rebooted by on");

    // Reboot: off then on, through `port=` as the target this time.
    let (code, out) =
        agent(&lab, "node2", &fence_agent, &format!("lab={name}\nport=node1\naction=reboot\n"));
    assert_eq!(code, 0, "reboot: {out}");
    let _ = new.wait();
    lab.refresh().expect("refresh");
    assert!(!lab.is_frozen("node1").expect("frozen?") && lab.faults().is_empty());

    // Errors: exit 1 with a message.
    let (code, out) = agent(&lab, "node2", &fence_agent, &format!("lab={name}\naction=off\n"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("plug="), "{out}");
    let (code, out) =
        agent(&lab, "node2", &fence_agent, &format!("lab={name}\nplug=ext\naction=off\n"));
    assert_eq!(code, 1, "{out}");
}
