//! clarbd on loopback, as a real detached process under its `clarbd-<cluster>` name, with real
//! clients (`cl_daemon::arbclient::ArbClient`): one node gets the lease, the other is denied
//! until the holder stops renewing and the lease runs out; a client with the wrong key gets no
//! answer and is logged; SIGTERM stops clarbd cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cl_daemon::arbclient::{ArbClient, ArbClientError};
use cl_wire::arb::ArbOp;
use cl_wire::ClusterKey;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const LEASE: Duration = Duration::from_secs(3);
/// Generous: the CI machine may be loaded.
const ANSWER: Duration = Duration::from_secs(2);

fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr").port()
}

fn write_config(root: &Path, port: u16) {
    let dir = root.join("etc/cluster");
    std::fs::create_dir_all(&dir).expect("etc");
    std::fs::write(dir.join("cluster.key"), format!("{KEY}\n")).expect("key");
    // The key must be private (clarbd refuses a key others can read).
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.join("cluster.key"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod key");
    let xml = format!(
        r#"<linuxha>
  <global>
    <name>arbtest</name>
    <key file="/etc/cluster/cluster.key"/>
    <cldaemon_port>9901</cldaemon_port>
    <cllockd_port>9902</cllockd_port>
    <clnetd_port>9903</clnetd_port>
    <clhbd_port>9904</clhbd_port>
    <arbitrator address="127.0.0.1" port="{port}" lease="3s"/>
  </global>
  <node name="node1">
    <network name="public" interface="eth0" address="10.10.0.11" prefix="24"/>
  </node>
  <node name="node2">
    <network name="public" interface="eth0" address="10.10.0.12" prefix="24"/>
  </node>
  <net_known_connections>10.10.0.1</net_known_connections>
</linuxha>
"#
    );
    std::fs::write(dir.join("clconf.xml"), xml).expect("clconf");
}

/// Stops clarbd by pid when the test ends, however it ends.
struct Running {
    pid: i32,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of the clarbd this test started.
        unsafe { libc_kill(self.pid, 9) };
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log(root: &Path) -> String {
    std::fs::read_to_string(root.join("var/log/cluster/clarbd.log")).unwrap_or_default()
}

fn start_clarbd(root: &Path) -> Running {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_linuxha"))
        .args(["clarbd"])
        .env("LINUXHA_ROOT", root)
        .env_remove("LINUXHA_NODE")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "clarbd: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pid_file: PathBuf = root.join("run/cluster/clarbd-arbtest.pid");
    let pid = wait_for("the pid file", Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse::<i32>().ok()
    });
    Running { pid }
}

#[test]
fn one_node_holds_the_lease_until_it_stops_renewing() {
    let dir = tempfile::Builder::new().prefix("linuxha-t61-").tempdir().expect("temp");
    let root = dir.path().to_path_buf();
    let port = free_udp_port();
    write_config(&root, port);
    let clarbd = start_clarbd(&root);
    // The clients' epochs come from this root's counter, not the host's /var/lib/cluster.
    cl_daemon::epoch::init(&cl_paths::Paths::new(&root));

    // Shows in ps as clarbd-<cluster>, detached (its parent is no longer us).
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", clarbd.pid)).expect("cmdline");
    assert!(cmdline.starts_with(b"clarbd-arbtest\0"), "{:?}", String::from_utf8_lossy(&cmdline));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    runtime.block_on(async {
        let server: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
        let key = ClusterKey::from_hex(KEY).expect("key");
        let mut node1 =
            ArbClient::new(key.clone(), "arbtest", "node1", server, None).await.expect("client 1");
        let mut node2 =
            ArbClient::new(key.clone(), "arbtest", "node2", server, None).await.expect("client 2");

        // The restart quiet period: nothing is granted for one lease after start.
        let first = node1.request(ArbOp::Acquire, ANSWER).await.expect("answer");
        assert!(!first.reply.granted && first.reply.holder.is_none(), "{first:?}");
        assert!(first.reply.remaining_ms <= LEASE.as_millis() as u64, "{first:?}");
        let started = Instant::now();
        let granted = loop {
            let answer = node1.request(ArbOp::Acquire, ANSWER).await.expect("answer");
            if answer.reply.granted {
                break answer;
            }
            assert!(started.elapsed() < LEASE + Duration::from_secs(5), "never granted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(granted.reply.holder.as_deref(), Some("node1"));
        assert_eq!(granted.reply.lease_ms, 3000);
        let until = granted.lease_until().expect("holds");
        assert!(until <= granted.sent_at + LEASE, "lease counted from the send time");

        // node2 is denied and told who holds it; node1 keeps renewing for two leases.
        let renewing_since = Instant::now();
        while renewing_since.elapsed() < LEASE * 2 {
            let denied = node2.request(ArbOp::Acquire, ANSWER).await.expect("answer");
            assert!(!denied.reply.granted, "{denied:?}");
            assert_eq!(denied.reply.holder.as_deref(), Some("node1"));
            assert!(denied.reply.remaining_ms <= 3000);
            let renewed = node1.request(ArbOp::Renew, ANSWER).await.expect("answer");
            assert!(renewed.reply.granted, "{renewed:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // node1 stops renewing: node2 gets the lease once it has run out, not before.
        let last_renewal = Instant::now();
        let renewed = node1.request(ArbOp::Renew, ANSWER).await.expect("answer");
        assert!(renewed.reply.granted);
        let taken = loop {
            let answer = node2.request(ArbOp::Acquire, ANSWER).await.expect("answer");
            if answer.reply.granted {
                break Instant::now();
            }
            assert!(last_renewal.elapsed() < LEASE + Duration::from_secs(10), "never taken over");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let after = taken.duration_since(last_renewal);
        assert!(after >= LEASE - Duration::from_millis(50), "taken over after only {after:?}");
        let late = node1.request(ArbOp::Renew, ANSWER).await.expect("answer");
        assert!(!late.reply.granted && late.reply.holder.as_deref() == Some("node2"), "{late:?}");
        assert!(late.lease_until().is_none());

        // Release by the holder frees it at once.
        let released = node2.request(ArbOp::Release, ANSWER).await.expect("answer");
        assert!(released.reply.granted && released.reply.holder.is_none(), "{released:?}");
        let query = node1.request(ArbOp::Query, ANSWER).await.expect("answer");
        assert!(!query.reply.granted && query.reply.holder.is_none(), "{query:?}");

        // A client with another key gets no answer at all, and clarbd logs it.
        let wrong = ClusterKey::from_hex(&"ab".repeat(32)).expect("key");
        let mut intruder =
            ArbClient::new(wrong, "arbtest", "node2", server, None).await.expect("client");
        let err = intruder.request(ArbOp::Acquire, Duration::from_millis(800)).await;
        assert!(matches!(err, Err(ArbClientError::Timeout { .. })), "{err:?}");
        // With the key but not a node of the cluster: refused, with the reason.
        let mut stranger =
            ArbClient::new(key, "arbtest", "node3", server, None).await.expect("client");
        match stranger.request(ArbOp::Acquire, ANSWER).await {
            Err(ArbClientError::Refused { message }) => {
                assert!(message.contains("node3"), "{message}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // node1 was unaffected by the intruders.
        assert!(node1.request(ArbOp::Acquire, ANSWER).await.expect("answer").reply.granted);
    });

    let text = wait_for("the log lines", Duration::from_secs(5), || {
        let text = log(&root);
        text.contains("rejected: `node3`").then_some(text)
    });
    for expected in [
        "clarbd-arbtest starting",
        "restart quiet period",
        "granted the lease for 3s node=node1",
        "denied the lease: node1 holds it for another",
        "the lease expired without renewal node=node1",
        "granted the lease for 3s node=node2",
        "released the lease node=node2",
        "rejected a frame",
    ] {
        assert!(text.contains(expected), "log lacks {expected:?}:\n{text}");
    }
    assert!(text.lines().all(|l| l.starts_with("20")), "timestamped:\n{text}");

    // SIGTERM: a clean exit, the pid file removed.
    // SAFETY: kill(2) on the pid of the clarbd this test started.
    unsafe { libc_kill(clarbd.pid, 15) };
    wait_for("clarbd to exit", Duration::from_secs(10), || (!alive(clarbd.pid)).then_some(()));
    assert!(!root.join("run/cluster/clarbd-arbtest.pid").exists());
    assert!(log(&root).contains("SIGTERM: stopping"), "{}", log(&root));
}

/// A release recorded while node1 held the lease, replayed after clarbd restarted and node1
/// acquired it again, would free a lease node1 still relies on and let node2 take it: two
/// holders. It echoes the previous clarbd run's epoch, so clarbd does nothing with it.
#[test]
fn a_release_recorded_before_clarbd_restarted_frees_nothing() {
    use cl_wire::arb::{ArbReply, ArbRequest};
    use cl_wire::{Kind, Receiver, Sender};

    let dir = tempfile::Builder::new().prefix("linuxha-t61-").tempdir().expect("temp");
    let root = dir.path().to_path_buf();
    let port = free_udp_port();
    write_config(&root, port);
    cl_daemon::epoch::init(&cl_paths::Paths::new(&root));
    let server: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
    let key = ClusterKey::from_hex(KEY).expect("key");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");

    // node1 as the attacker sees it: its frames, sealed by its own sender, all recorded.
    let mut node1 =
        Sender::new(key.clone(), "arbtest", "node1", cl_daemon::epoch::next().expect("epoch"));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(ANSWER)).expect("timeout");
    let mut replies = Receiver::new(key.clone(), "arbtest");
    let mut ask = |op: ArbOp, seq: u64, echo: u64| -> (Vec<u8>, u64, ArbReply) {
        let request = ArbRequest { node: "node1".into(), op, seq };
        let frame = node1.seal_echoing(Kind::Arbitrator, &request, echo).expect("seal");
        socket.send_to(&frame, server).expect("send");
        let mut buf = vec![0u8; cl_wire::MAX_FRAME];
        loop {
            let (len, _) = socket.recv_from(&mut buf).expect("an answer");
            if let Ok((header, reply)) = replies.try_receive::<ArbReply>(&buf[..len]) {
                if reply.seq == seq {
                    return (frame, header.epoch, reply);
                }
            }
        }
    };

    let first = start_clarbd(&root);
    // Learn clarbd's epoch, wait out the quiet period, take the lease, release it: recorded.
    let (_, epoch1, hello) = ask(ArbOp::Query, 1, 0);
    assert!(hello.stale, "a request echoing nothing is not acted on: {hello:?}");
    let mut seq = 2;
    wait_for("node1 granted", LEASE + Duration::from_secs(5), || {
        seq += 1;
        let (_, _, reply) = ask(ArbOp::Acquire, seq, epoch1);
        reply.granted.then_some(())
    });
    seq += 1;
    let (recorded_release, _, released) = ask(ArbOp::Release, seq, epoch1);
    assert!(released.granted, "{released:?}");

    // clarbd restarts; node1, the same client run (its cldaemon did not restart), holds the
    // lease again: it learns the new epoch from a stale answer, then acquires.
    // SAFETY: kill(2) on the pid of the clarbd this test started.
    unsafe { libc_kill(first.pid, 15) };
    wait_for("clarbd to exit", Duration::from_secs(10), || (!alive(first.pid)).then_some(()));
    let second = start_clarbd(&root);
    seq += 1;
    let (_, epoch2, told) = ask(ArbOp::Acquire, seq, epoch1);
    assert!(told.stale && epoch2 != epoch1, "{told:?}");
    // Few frames in between, so the recorded one stays within the replay window's 64: only
    // its echo can give it away.
    std::thread::sleep(LEASE + Duration::from_millis(300));
    wait_for("node1 granted again", LEASE + Duration::from_secs(5), || {
        seq += 1;
        let (_, _, reply) = ask(ArbOp::Acquire, seq, epoch2);
        reply.granted.then_some(())
    });
    // The recorded release, replayed: new to the restarted window, but stale, so not acted on.
    socket.send_to(&recorded_release, server).expect("replay");
    let mut buf = vec![0u8; cl_wire::MAX_FRAME];
    let (len, _) = socket.recv_from(&mut buf).expect("an answer to the replay");
    let mut fresh = Receiver::new(key.clone(), "arbtest");
    let (_, answer): (_, ArbReply) = fresh.try_receive(&buf[..len]).expect("authentic");
    assert!(answer.stale && !answer.granted, "{answer:?}");
    runtime.block_on(async {
        let mut other =
            ArbClient::new(key.clone(), "arbtest", "node2", server, None).await.expect("client");
        let denied = other.request(ArbOp::Acquire, ANSWER).await.expect("answer");
        assert!(!denied.reply.granted, "node2 must not get a lease node1 holds: {denied:?}");
        assert_eq!(denied.reply.holder.as_deref(), Some("node1"));
    });
    // SAFETY: kill(2) on the pid of the clarbd this test started.
    unsafe { libc_kill(second.pid, 15) };
    wait_for("clarbd to exit", Duration::from_secs(10), || (!alive(second.pid)).then_some(()));
}

#[test]
fn clarbd_refuses_a_configuration_without_an_arbitrator() {
    let dir = tempfile::Builder::new().prefix("linuxha-t61-").tempdir().expect("temp");
    let root = dir.path().to_path_buf();
    write_config(&root, 9905);
    let path = root.join("etc/cluster/clconf.xml");
    let xml = std::fs::read_to_string(&path).expect("read");
    let without: String =
        xml.lines().filter(|l| !l.contains("<arbitrator")).collect::<Vec<_>>().join("\n");
    std::fs::write(&path, without).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_linuxha"))
        .args(["clarbd", "--foreground"])
        .env("LINUXHA_ROOT", &root)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no <arbitrator>") && stderr.contains("--listen"), "{stderr}");
}
