//! The application's VIP as a client on the public network sees it: an ARP sampler on `ext`
//! asks who has the VIP every 10 ms through a whole failover (a killed node, an isolated node
//! and its heal) and checks that never two MACs answer; an IPv6 VIP moves with the
//! application and the client's neighbour entry follows; a VIP already held by a foreign host
//! refuses the start; a hanging stop script is killed and the application still stops.

mod cluster;
use cluster::{ApplicationState, NodeState};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cl_lab::Lab;
use cluster::{
    app_failure, app_running_on, app_state, ms_between, node_state, signal, text, Cluster, APP, VIP,
};

const PYTHON: &str = "/usr/bin/python3";

/// An ARP sampler on ext: every 10 ms an ARP request for the VIP from ext's own address; each
/// reply addressed to ext is an "R <wall time> <mac>" line, each other ARP frame whose sender
/// is the VIP (gratuitous ARPs) a "G <time> <op> <mac>" line, each request sent a "Q <time>".
const ARP_SAMPLER: &str = r#"
import socket,struct,sys,time,select
ifc,vip,src=sys.argv[1],sys.argv[2],sys.argv[3]
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(0x0806))
s.bind((ifc,0x0806))
me=s.getsockname()[4]
vb=socket.inet_aton(vip);sb=socket.inet_aton(src)
req=b'\xff'*6+me+b'\x08\x06'+struct.pack('!HHBBH',1,0x0800,6,4,1)+me+sb+b'\x00'*6+vb
nxt=time.monotonic()
while True:
    s.send(req)
    print('Q %.6f'%time.time(),flush=True)
    nxt+=0.01
    while True:
        left=nxt-time.monotonic()
        if left<=0: break
        r,_,_=select.select([s],[],[],left)
        if not r: continue
        p=s.recv(128)
        if len(p)<42 or p[12:14]!=b'\x08\x06' or p[28:32]!=vb: continue
        op=struct.unpack('!H',p[20:22])[0]
        mac=p[22:28].hex(':')
        if op==2 and p[38:42]==sb: print('R %.6f %s'%(time.time(),mac),flush=True)
        else: print('G %.6f %d %s'%(time.time(),op,mac),flush=True)
    if nxt<time.monotonic(): nxt=time.monotonic()
"#;

/// One line of the sampler.
#[derive(Clone, Debug)]
struct Event {
    kind: char,
    at: SystemTime,
    mac: String,
}

struct ArpSampler {
    child: Child,
    events: Arc<Mutex<Vec<Event>>>,
    reader: Option<JoinHandle<()>>,
}

impl ArpSampler {
    /// Start sampling who answers ARP for `vip` on ext's eth0.
    fn start(c: &Cluster, vip: &str) -> ArpSampler {
        let src = c.lab.addr("ext", 0).expect("ext's address").to_string();
        let mut cmd =
            c.lab.exec("ext", &[PYTHON, "-c", ARP_SAMPLER, "eth0", vip, &src]).expect("exec");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("the sampler starts");
        let stdout = child.stdout.take().expect("stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut words = line.split_whitespace();
                let kind = words.next().and_then(|w| w.chars().next()).unwrap_or('?');
                let Some(secs) = words.next().and_then(|w| w.parse::<f64>().ok()) else {
                    continue;
                };
                let mac = words.last().unwrap_or("").to_string();
                let at = UNIX_EPOCH + Duration::from_secs_f64(secs);
                sink.lock().expect("events").push(Event { kind, at, mac });
            }
        });
        let sampler = ArpSampler { child, events, reader: Some(reader) };
        // Wait for the first request to be sent: the socket is open.
        let t = Instant::now();
        while !sampler.events().iter().any(|e| e.kind == 'Q') {
            assert!(t.elapsed() < Duration::from_secs(5), "the ARP sampler on ext sends nothing");
            std::thread::sleep(Duration::from_millis(20));
        }
        sampler
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events").clone()
    }

    /// Stop it; every event it reported.
    fn stop(mut self) -> Vec<Event> {
        self.kill();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.events()
    }

    fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
    }
}

impl Drop for ArpSampler {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the sampler saw between two times.
#[derive(Debug)]
struct Analysis {
    requests: usize,
    replies: usize,
    /// Reply MACs in the order they answered, runs collapsed (`[mac1, mac2]`: one change).
    owners: Vec<String>,
    /// Requests answered by two different MACs (replies between it and the next request).
    both_answered: Vec<String>,
    /// The longest time without a reply, and when it began.
    gap: Duration,
    gap_from: Option<SystemTime>,
    /// The longest time between two requests sent (the sampler's own stalls).
    stall: Duration,
    gratuitous: Vec<String>,
}

fn analyse(events: &[Event], from: SystemTime, to: SystemTime) -> Analysis {
    let inside: Vec<&Event> = events.iter().filter(|e| e.at >= from && e.at <= to).collect();
    let mut a = Analysis {
        requests: 0,
        replies: 0,
        owners: Vec::new(),
        both_answered: Vec::new(),
        gap: Duration::ZERO,
        gap_from: None,
        stall: Duration::ZERO,
        gratuitous: Vec::new(),
    };
    let mut last_reply = from;
    let mut last_request: Option<SystemTime> = None;
    let mut this_request: Vec<String> = Vec::new();
    let since = |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default();
    for e in &inside {
        match e.kind {
            'Q' => {
                a.requests += 1;
                if let Some(prev) = last_request {
                    a.stall = a.stall.max(since(prev, e.at));
                }
                last_request = Some(e.at);
                this_request.clear();
            }
            'R' => {
                a.replies += 1;
                if since(last_reply, e.at) > a.gap {
                    a.gap = since(last_reply, e.at);
                    a.gap_from = Some(last_reply);
                }
                last_reply = e.at;
                if a.owners.last() != Some(&e.mac) {
                    a.owners.push(e.mac.clone());
                }
                if !this_request.contains(&e.mac) {
                    this_request.push(e.mac.clone());
                    if this_request.len() > 1 {
                        a.both_answered
                            .push(format!("{:?}: {this_request:?}", ms_between(from, e.at)));
                    }
                }
            }
            'G' => a.gratuitous.push(format!("{} ms {}", ms_between(from, e.at), e.mac)),
            _ => {}
        }
    }
    if since(last_reply, to) > a.gap {
        a.gap = since(last_reply, to);
        a.gap_from = Some(last_reply);
    }
    a
}

/// `http://<host>/` (a VIP, `[v6]` for IPv6) from ext: the page (trimmed), or why not.
fn fetch_url(c: &Cluster, host: &str, timeout: Duration) -> Result<String, String> {
    const SCRIPT: &str = "import sys,urllib.request\n\
        try:\n    print(urllib.request.urlopen(sys.argv[1],timeout=float(sys.argv[2])).read().decode().strip())\n\
        except Exception as e:\n    print(e)\n    sys.exit(1)\n";
    let url = format!("http://{host}/");
    let secs = format!("{:.3}", timeout.as_secs_f64());
    let out = c.lab.run("ext", &[PYTHON, "-c", SCRIPT, &url, &secs]).expect("python3 runs");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(said)
    } else {
        Err(format!("{said}{}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `ip -n <netns of host> args…`, insisting it succeeds; its stdout.
fn ip(lab: &Lab, host: &str, args: &[&str]) -> String {
    let netns = lab.netns(host).expect("netns").to_string();
    let out = std::process::Command::new("ip")
        .arg("-n")
        .arg(&netns)
        .args(args)
        .output()
        .expect("ip runs");
    assert!(out.status.success(), "ip -n {netns} {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// node2's clstat and the tails of node2's logs: diagnostics while node1 is frozen (nothing
/// can be run on a frozen host).
fn node2_diagnostics(c: &Cluster) -> String {
    let mut out =
        format!("===== node2: clstat --verbose\n{}\n", text(&c.run("node2", &["clstat"])));
    for log in ["cldaemon", APP] {
        let all = c.log("node2", log);
        let lines: Vec<&str> = all.lines().collect();
        let tail = lines.get(lines.len().saturating_sub(30)..).unwrap_or(&[]);
        out += &format!("----- node2: {log}.log\n{}\n", tail.join("\n"));
    }
    out
}

#[test]
fn killed_active_node_freeze_and_cut_fails_over_and_never_two_owners() {
    let Some(mut c) = Cluster::apache_on_node1("t53_killed_active_node") else { return };
    c.wait_served_by("node1", Duration::from_secs(10));
    c.let_announcements_end();
    let (mac1, mac2) = (c.mac("node1"), c.mac("node2"));
    let sampler = ArpSampler::start(&c, VIP);
    std::thread::sleep(Duration::from_millis(500));
    let from2 = c.log("node2", "cldaemon").len();

    let killed_at = SystemTime::now();
    let t = Instant::now();
    c.lab.freeze("node1").expect("freeze node1");
    c.lab.cut("node1", None).expect("cut node1");
    let mut last = Err(String::new());
    let served_after = loop {
        if last.as_deref() == Ok("served by node2") {
            break t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "ext not served by node2 within 20 s of killing node1 (last {last:?})\n{}",
            node2_diagnostics(&c)
        );
        last = c.fetch(Duration::from_millis(300));
    };
    let status = c.wait_for("node2", "apache running on node2", Duration::from_secs(5), |s| {
        app_running_on(s, "node2") && node_state(s, "node1") == Some(NodeState::Down)
    });
    assert!(c.has_vip("node2"), "node2 holds the VIP: {status:#?}");
    std::thread::sleep(Duration::from_secs(1));
    let events = sampler.stop();
    let end = SystemTime::now();

    let before = analyse(&events, killed_at - Duration::from_millis(400), killed_at);
    assert!(
        before.replies > 0 && before.owners == [mac1.clone()],
        "before the kill only node1 ({mac1}) answers: {before:?}"
    );
    let after = analyse(&events, killed_at, end);
    let down = c.log_line("node2", "cldaemon", from2, "node node1 is down");
    let starting = c.log_line("node2", "cldaemon", from2, "starting apache");
    let running = c.log_line("node2", "cldaemon", from2, "apache is running");
    let ms =
        |l: &Option<(SystemTime, String)>| l.as_ref().map(|(at, _)| ms_between(killed_at, *at));
    eprintln!(
        "freeze+cut of node1 → node2: node1 down {:?} ms, starting {:?} ms, running {:?} ms; \
         ext served by node2 after {} ms; ARP: {} requests, {} replies, owners {:?}, no answer \
         for {} ms from {:?} ms (sampler stall max {} ms); gratuitous {:?}",
        ms(&down),
        ms(&starting),
        ms(&running),
        served_after.as_millis(),
        after.requests,
        after.replies,
        after.owners,
        after.gap.as_millis(),
        after.gap_from.map(|g| ms_between(killed_at, g)),
        after.stall.as_millis(),
        after.gratuitous
    );
    assert!(after.both_answered.is_empty(), "two MACs answered one request: {after:?}");
    assert!(
        after.owners == [mac1.clone(), mac2.clone()] || after.owners == [mac2.clone()],
        "the VIP went from node1 ({mac1}) to node2 ({mac2}) once, never back: {:?}",
        after.owners
    );
}

#[test]
fn isolation_then_heal_one_owner_no_gap() {
    let Some(mut c) = Cluster::apache_on_node1("t53_isolation_then_heal") else { return };
    c.wait_served_by("node1", Duration::from_secs(10));
    c.let_announcements_end();
    let (mac1, mac2) = (c.mac("node1"), c.mac("node2"));
    let sampler = ArpSampler::start(&c, VIP);
    std::thread::sleep(Duration::from_millis(300));

    let cut_at = SystemTime::now();
    c.lab.cut("node1", None).expect("cut node1");
    c.wait_for("node2", "apache running on node2", Duration::from_secs(15), |s| {
        app_running_on(s, "node2")
    });
    let t = Instant::now();
    while c.has_vip("node1") {
        assert!(t.elapsed() < Duration::from_secs(10), "isolated node1 keeps the VIP");
        std::thread::sleep(Duration::from_millis(50));
    }
    let served = c.wait_served_by("node2", Duration::from_secs(10));
    c.assert_released("node1", "node1 is isolated");
    let failover = analyse(&sampler.events(), cut_at, SystemTime::now());

    let heal_at = SystemTime::now();
    let from1 = c.log("node1", "cldaemon").len();
    c.lab.heal("node1").expect("heal node1");
    c.wait_all_up();
    c.wait_app_everywhere("apache running on node2", |s| app_running_on(s, "node2"));
    let rejoined = ms_between(heal_at, SystemTime::now());
    assert_eq!(fetch_url(&c, VIP, Duration::from_secs(2)).as_deref(), Ok("served by node2"));
    // Sample on past the rejoin and the re-announcements.
    std::thread::sleep(Duration::from_secs(2));
    c.assert_released("node1", "after the heal");
    assert!(c.has_vip("node2"), "node2 keeps the VIP after the heal");
    let events = sampler.stop();
    let healed = analyse(&events, heal_at, SystemTime::now());
    let all = analyse(&events, cut_at, SystemTime::now());
    eprintln!(
        "cut → ARP owners {:?}, no answer for {} ms from {:?} ms; ext served by node2 {} ms after \
         node1 lost the VIP; heal → all up and apache on node2 everywhere after {rejoined} ms; \
         after the heal: {} requests, {} replies, owners {:?}, longest without an answer {} ms \
         (sampler stall max {} ms), gratuitous {:?}",
        failover.owners,
        failover.gap.as_millis(),
        failover.gap_from.map(|g| ms_between(cut_at, g)),
        served.as_millis(),
        healed.requests,
        healed.replies,
        healed.owners,
        healed.gap.as_millis(),
        healed.stall.as_millis(),
        healed.gratuitous
    );
    assert!(all.both_answered.is_empty(), "two MACs answered one request: {all:?}");
    assert!(
        all.owners == [mac1.clone(), mac2.clone()] || all.owners == [mac2.clone()],
        "node1 ({mac1}) then node2 ({mac2}), never back: {all:?}"
    );
    assert!(
        healed.owners.len() == 1 && healed.owners[0] == mac2,
        "after the heal only node2 ({mac2}) answers: {healed:?}"
    );
    // One request every 10 ms: an answer missing for 100 ms (and the sampler not stalled that
    // long itself) is a gap.
    assert!(
        healed.gap < Duration::from_millis(100).max(healed.stall + Duration::from_millis(30)),
        "after the heal ARP for {VIP} went unanswered for {:?} from {:?} ms after the heal: {healed:?}\n{}",
        healed.gap,
        healed.gap_from.map(|g| ms_between(heal_at, g)),
        c.app_diagnostics()
    );
    let log1 = c.log_since("node1", "cldaemon", from1);
    assert!(!log1.contains("starting apache"), "node1 started nothing after the heal:\n{log1}");
    for node in ["node1", "node2"] {
        let (_, s) = c.status(node);
        let owners: Vec<&str> = s
            .applications
            .iter()
            .filter(|a| a.name == APP)
            .filter_map(|a| a.node.as_deref())
            .collect();
        assert_eq!(owners, ["node2"], "{node}: exactly one owner of apache: {s:#?}");
    }
}

/// The IPv6 network of the lab (added by the test: the lab itself is IPv4 only).
const V6_VIP: &str = "fd00:10::100";

fn v6_address(host: &str) -> &'static str {
    match host {
        "node1" => "fd00:10::11",
        "node2" => "fd00:10::12",
        _ => "fd00:10::1",
    }
}

/// ext's neighbour entry for the IPv6 VIP (`lladdr … STATE`, "" when none).
fn v6_neigh(c: &Cluster) -> String {
    ip(&c.lab, "ext", &["-6", "neigh", "show", V6_VIP]).trim().to_string()
}

#[test]
fn ipv6_vip_moves_with_the_application() {
    let prepare = |lab: &Lab| {
        for host in ["node1", "node2", "ext"] {
            let _ = ip(lab, host, &["link", "set", "lo", "up"]);
            let netns = lab.netns(host).expect("netns").to_string();
            // The lab may create its namespaces with IPv6 off.
            let _ = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &netns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.eth0.disable_ipv6=0",
                ])
                .output();
            let addr = format!("{}/64", v6_address(host));
            ip(lab, host, &["addr", "add", &addr, "dev", "eth0", "nodad"]);
        }
    };
    let edit = |_: &str, etc: &Path| {
        let clconf = etc.join("clconf.xml");
        let mut conf = std::fs::read_to_string(&clconf).expect("clconf");
        for (node, n) in [("node1", "11"), ("node2", "12")] {
            let private = format!(
                r#"<network name="private" interface="eth1" address="10.20.0.{n}" prefix="24" heartbeat="yes"/>"#
            );
            assert!(conf.contains(&private), "{node}'s private network in clconf.xml");
            let public6 = format!(
                "{private}\n    <network name=\"public6\" interface=\"eth0\" address=\"{}\" prefix=\"64\" heartbeat=\"no\"/>",
                v6_address(node)
            );
            conf = conf.replace(&private, &public6);
        }
        std::fs::write(&clconf, conf).expect("write clconf");
        let appconf = etc.join("apache/appconf.xml");
        let app = std::fs::read_to_string(&appconf).expect("appconf");
        let vip4 = r#"<network net="public" ip="10.10.0.100" prefix="24"/>"#;
        assert!(app.contains(vip4));
        let app = app.replace(
            vip4,
            &format!("{vip4}\n    <network net=\"public6\" ip=\"{V6_VIP}\" prefix=\"64\"/>"),
        );
        std::fs::write(&appconf, app).expect("write appconf");
        let start = etc.join("apache/start");
        let script = std::fs::read_to_string(&start).expect("start script");
        assert!(script.contains("--bind 0.0.0.0"));
        std::fs::write(&start, script.replace("--bind 0.0.0.0", "--bind ::")).expect("write");
    };
    let Some(c) = Cluster::with_apache_prepared("t53_ipv6_vip", prepare, edit) else { return };
    c.form();
    c.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
    let (mac1, mac2) = (c.mac("node1"), c.mac("node2"));
    let v6_host = format!("[{V6_VIP}]");
    let t = Instant::now();
    let first = loop {
        let got = fetch_url(&c, &v6_host, Duration::from_millis(500));
        if got.as_deref() == Ok("served by node1") || t.elapsed() > Duration::from_secs(10) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        first.as_deref(),
        Ok("served by node1"),
        "ext reaches [{V6_VIP}] on node1\nnode1 addresses: {}\n{}",
        ip(&c.lab, "node1", &["-6", "addr", "show", "dev", "eth0"]),
        c.app_diagnostics()
    );
    let log1 = c.log("node1", "cldaemon");
    assert!(log1.contains(&format!("VIP {V6_VIP}/64 up on eth0")), "node1 logs the v6 VIP");
    let neigh = v6_neigh(&c);
    assert!(neigh.contains(&mac1), "ext's neighbour entry is node1's {mac1}: {neigh:?}");

    c.let_announcements_end();
    let t = Instant::now();
    c.must("node1", &["clswitchapp", "--application", APP, "--node", "node2"]);
    let switched = t.elapsed();
    let node1_v6 = ip(&c.lab, "node1", &["-6", "-o", "addr", "show", "dev", "eth0"]);
    assert!(!node1_v6.contains(V6_VIP), "node1 removed the v6 VIP: {node1_v6}");
    let node2_v6 = ip(&c.lab, "node2", &["-6", "-o", "addr", "show", "dev", "eth0"]);
    assert!(node2_v6.contains(V6_VIP), "node2 holds the v6 VIP: {node2_v6}");
    // No flush: the unsolicited neighbour advertisements (override flag) must move the entry.
    let t = Instant::now();
    let mut neigh = v6_neigh(&c);
    while !neigh.contains(&mac2) && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
        neigh = v6_neigh(&c);
    }
    let neigh_after = t.elapsed();
    // The start script forks the server, which binds a moment after clswitchapp returned: a
    // refused connection came from node2's kernel (node1 would drop a packet for an address it
    // no longer has), so only timeouts mean the client still goes to the wrong node.
    let t = Instant::now();
    let mut answers = Vec::new();
    let served = loop {
        let got = fetch_url(&c, &v6_host, Duration::from_secs(1));
        if got.as_deref() == Ok("served by node2") {
            break t.elapsed();
        }
        answers.push(format!("{:?}: {got:?}", t.elapsed()));
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "ext not served by node2 over [{V6_VIP}] within 3 s of the switch: {answers:?}\n{}",
            c.app_diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "clswitchapp took {switched:?}; ext's neighbour entry for {V6_VIP} {neigh:?} \
         {neigh_after:?} after; ext served over [{V6_VIP}] by node2 {served:?} after the \
         switch returned (before: {answers:?})"
    );
    assert!(
        neigh.contains(&mac2),
        "ext's neighbour entry for {V6_VIP} still not node2's {mac2} 2 s after the switch: \
         {neigh:?}\n{}",
        c.app_diagnostics()
    );
    assert!(
        !answers.iter().any(|a| a.contains("timed out")),
        "a request to [{V6_VIP}] after the switch went unanswered (wrong node?): {answers:?}"
    );
    assert!(served < Duration::from_secs(1), "served over IPv6 at once: {served:?} {answers:?}");
    assert_eq!(fetch_url(&c, VIP, Duration::from_secs(2)).as_deref(), Ok("served by node2"));
}

#[test]
fn vip_held_by_a_foreign_host_refuses_the_start() {
    let Some(c) = Cluster::with_apache("t53_foreign_vip", |_, _| {}) else { return };
    let mac_ext = c.mac("ext");
    ip(&c.lab, "ext", &["addr", "add", &format!("{VIP}/24"), "dev", "eth0"]);
    c.form();
    for node in ["node1", "node2"] {
        c.wait_for(node, "apache failed", Duration::from_secs(15), |s| {
            app_state(s) == (Some(ApplicationState::Failed), None)
        });
    }
    for node in ["node1", "node2"] {
        let (_, s) = c.status(node);
        let failure = app_failure(&s);
        assert!(
            failure.contains(&format!("VIP {VIP} is already answered by {mac_ext}")),
            "{node}: the failure names the VIP and ext's MAC {mac_ext}: {failure:?}\n{s:#?}"
        );
        c.assert_released(node, "apache refused everywhere");
    }
    eprintln!("after clform: {:?}", app_failure(&c.status("node1").1));
    for node in ["node1", "node2"] {
        let log = c.log(node, APP);
        assert!(!log.contains("apache/start"), "{node}: the start script never ran:\n{log}");
    }

    let out = c.run("node1", &["clstartapp", "--application", APP]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "clstartapp refused: {}", text(&out));
    assert!(
        stderr.contains(&format!("VIP {VIP} is already answered by {mac_ext}")),
        "clstartapp says why: {}",
        text(&out)
    );
    eprintln!("clstartapp while ext holds the VIP: {}", stderr.trim());
    for node in ["node1", "node2"] {
        c.assert_released(node, "after the refused clstartapp");
    }

    ip(&c.lab, "ext", &["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
    let t = Instant::now();
    c.must("node1", &["clstartapp", "--application", APP]);
    let (_, s) = c.status("node1");
    let (state, node) = app_state(&s);
    assert_eq!(state, Some(ApplicationState::Running), "after clstartapp: {s:#?}");
    let node = node.expect("apache runs on a node");
    c.wait_served_by(&node, Duration::from_secs(10));
    eprintln!("clstartapp after ext released the VIP: running on {node}, served {:?}", t.elapsed());
}

#[test]
fn hanging_stop_script_is_killed_and_the_application_stops() {
    let edit = |node: &str, etc: &Path| {
        let appconf = etc.join("apache/appconf.xml");
        let app = std::fs::read_to_string(&appconf).expect("appconf");
        let stop = r#"<stopscript timeout="30s">"#;
        assert!(app.contains(stop));
        std::fs::write(&appconf, app.replace(stop, r#"<stopscript timeout="2s">"#))
            .expect("write appconf");
        if node == "node1" {
            std::fs::write(etc.join("apache/stop"), "#!/bin/sh\necho hanging\nsleep 300\n")
                .expect("write stop");
        }
    };
    let Some(c) = Cluster::with_apache("t53_hanging_stop", edit) else { return };
    c.form();
    c.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
    c.wait_served_by("node1", Duration::from_secs(10));
    let python = c.wait_app_process("node1", "python3");
    c.let_announcements_end();
    let from1 = c.log("node1", "cldaemon").len();
    let from_app = c.log("node1", APP).len();

    let t = Instant::now();
    let mut argv = vec!["timeout", "30", cluster::EXE];
    argv.extend(["clhaltapp", "--application", APP, "--verbose"]);
    let out = c.lab.run("node1", &argv).expect("clhaltapp runs");
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "clhaltapp: {}\n{}", text(&out), c.app_diagnostics());
    assert!(took < Duration::from_secs(15), "clhaltapp returned after {took:?}");
    c.wait_app_everywhere("apache stopped", |s| {
        app_state(s) == (Some(ApplicationState::Stopped), None)
    });
    cluster::wait_exited(python);
    c.assert_released("node1", "clhaltapp with a hanging stop script");
    c.assert_released("node2", "clhaltapp");
    assert!(c.fetch(Duration::from_millis(500)).is_err(), "nobody serves the VIP after clhaltapp");
    let log1 = c.log_since("node1", "cldaemon", from1);
    let app_log = c.log_since("node1", APP, from_app);
    eprintln!(
        "clhaltapp with stop script `sleep 300` (timeout 2s) returned after {took:?}\n\
         cldaemon.log:\n{log1}\napache.log:\n{app_log}"
    );
    assert!(log1.contains("stop script timed out"), "cldaemon.log names the timeout:\n{log1}");
    assert!(log1.contains("apache is stopped"), "cldaemon.log: stopped:\n{log1}");
    assert!(app_log.contains("timed out"), "apache.log names the timeout:\n{app_log}");
    let sleeps: Vec<u32> = c
        .lab
        .pids("node1")
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
        .collect();
    assert!(sleeps.is_empty(), "the hanging stop script's sleep was killed: {sleeps:?}");
}
