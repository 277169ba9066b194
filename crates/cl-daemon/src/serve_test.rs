//! The accept loop under pressure: bounds, slow clients, and running out of file descriptors.

use super::*;
use std::io::{Read, Write};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long the test handler waits for a request line.
const DEADLINE: Duration = Duration::from_millis(500);

/// Serve `listener` with a handler that answers `ping` with `pong` (or closes after DEADLINE).
fn start<L: Accept<Stream = S>, S>(listener: L, stats: Arc<Listener>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    tokio::spawn(serve(listener, stats, |stream: S, _peer, conn: Conn| async move {
        let (read, mut write) = tokio::io::split(stream);
        let mut reader = BufReader::new(read);
        let mut line = String::new();
        match within(&conn, DEADLINE, "a request", reader.read_line(&mut line)).await {
            Some(Ok(_)) if line.trim() == "ping" => {
                let _ = write.write_all(b"pong\n").await;
            }
            Some(_) => conn.rejected("garbage", "not ping"),
            None => {}
        }
    }));
}

/// A blocking client: `ping`, and the answer ("" when closed without one).
fn ping(address: SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(b"ping\n").expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// Poll `pred` every 20 ms for up to 5 s.
async fn eventually(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pred() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn connections_over_the_per_address_bound_are_refused_and_serving_goes_on() {
    runtime().block_on(async {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = tcp.local_addr().expect("address");
        let stats = Listener::new(Daemon::Cllockd, "peers", Limits { per_address: 2, total: 100 });
        start(tcp, stats.clone());

        // Two idle connections fill the bound; the third is closed at once, unanswered.
        let held: Vec<std::net::TcpStream> =
            (0..2).map(|_| std::net::TcpStream::connect(address).expect("connect")).collect();
        eventually("two open", || stats.open() == 2).await;
        let refused = tokio::task::spawn_blocking(move || ping(address)).await.expect("join");
        assert_eq!(refused, "", "refused without an answer");
        assert_eq!(stats.counters().refused_per_address, 1);
        let trouble = stats.trouble(Instant::now()).expect("in trouble");
        assert!(trouble.contains("refusing connections from 127.0.0.1"), "{trouble}");

        // The idle ones are closed after the deadline, counted; then it serves again.
        eventually("idle connections closed", || stats.open() == 0).await;
        assert_eq!(stats.counters().timeouts, 2);
        drop(held);
        let answer = tokio::task::spawn_blocking(move || ping(address)).await.expect("join");
        assert_eq!(answer, "pong\n");
        let counters = stats.counters();
        assert_eq!((counters.accepted, counters.accept_errors), (3, 0), "{counters:?}");
    });
}

#[test]
fn a_slowloris_is_closed_after_the_deadline() {
    runtime().block_on(async {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = tcp.local_addr().expect("address");
        let stats = Listener::new(Daemon::Cllockd, "peers", PEER_LIMITS);
        start(tcp, stats.clone());
        let started = Instant::now();
        let closed_after = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).expect("connect");
            // One byte every 100 ms, never a whole line: writes fail once the server closed.
            for _ in 0..100 {
                if stream.write_all(b"p").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            started.elapsed()
        })
        .await
        .expect("join");
        assert!(closed_after < Duration::from_secs(5), "closed after {closed_after:?}");
        eventually("timeout counted", || stats.counters().timeouts == 1).await;
        assert_eq!(stats.open(), 0);
    });
}

#[test]
fn a_unix_socket_has_a_total_bound() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let unix = UnixListener::bind(&path).expect("bind");
        let stats = Listener::new(Daemon::Cllockd, "clients", Limits { per_address: 1, total: 3 });
        start(unix, stats.clone());
        let held: Vec<std::os::unix::net::UnixStream> = (0..3)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).expect("connect"))
            .collect();
        eventually("three open", || stats.open() == 3).await;
        let socket = path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut fourth = std::os::unix::net::UnixStream::connect(socket).expect("connect");
            fourth.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            fourth.read(&mut [0u8; 8]).map_err(|e| e.to_string())
        });
        assert_eq!(read.await.expect("join"), Ok(0), "closed at once, not timed out");
        assert_eq!(stats.counters().refused_total, 1);
        assert_eq!(stats.counters().refused_per_address, 0, "no addresses on Unix sockets");
        assert!(stats.trouble(Instant::now()).expect("trouble").contains("bound of 3"));
        drop(held);
        eventually("closed", || stats.open() == 0).await;
    });
}

/// Set in the environment of the child process that runs out of file descriptors.
const EMFILE_CHILD: &str = "CL_SERVE_TEST_EMFILE_CHILD";

/// Re-run this test binary for [`emfile_child`] alone: it lowers its own open-files limit,
/// which must not disturb the other tests of this process.
#[test]
fn the_accept_loop_survives_running_out_of_file_descriptors() {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", "serve::tests::emfile_child", "--nocapture", "--test-threads=1"])
        .env(EMFILE_CHILD, "1")
        .output()
        .expect("child runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("EMFILE CHILD DONE"), "the child ran: {text}");
}

/// The child's part (a no-op unless [`EMFILE_CHILD`] is set): fill the descriptor table so
/// that accept fails with EMFILE, check the listener says so and keeps going, then free the
/// descriptors and check the waiting connection and a new one are served.
#[test]
fn emfile_child() {
    if std::env::var_os(EMFILE_CHILD).is_none() {
        return;
    }
    let limit = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
    // SAFETY: setrlimit reads the struct; this process is the test's own child.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    runtime().block_on(async {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = tcp.local_addr().expect("address");
        let stats = Listener::new(Daemon::Cllockd, "peers", PEER_LIMITS);
        start(tcp, stats.clone());
        // Fill every descriptor, then free one for the client's socket.
        let mut filler = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            filler.push(f);
        }
        filler.pop();
        let client = tokio::task::spawn_blocking(move || ping(address));
        eventually("accept errors counted", || stats.counters().accept_errors >= 3).await;
        let trouble = stats.trouble(Instant::now()).expect("in trouble");
        assert!(trouble.contains("accepting connections fails"), "{trouble}");
        assert!(!client.is_finished(), "the waiting client is not served yet");
        drop(filler);
        assert_eq!(client.await.expect("join"), "pong\n", "the waiting connection is served");
        let again = tokio::task::spawn_blocking(move || ping(address)).await.expect("join");
        assert_eq!(again, "pong\n");
        let errors = stats.counters().accept_errors;
        // 50 ms growing to 1 s: a few per second, not a busy loop.
        assert!(errors < 100, "backed off: {errors} errors");
        println!("EMFILE CHILD DONE after {errors} accept errors");
    });
}

#[test]
fn listeners_are_reported_when_changed_or_due_for_a_refresh_only() {
    let listener = Listener::new(Daemon::Cllockd, "clients", LOCAL_LIMITS);
    let t0 = Instant::now();
    let statuses = vec![listener.status(t0)];
    assert!(report_due(None, &statuses, t0), "the first report goes out at once");
    let sent = (t0, statuses.clone());
    assert!(!report_due(Some(&sent), &statuses, t0 + MONITOR_TICK), "unchanged: nothing to send");
    let conn = listener.admit(None).expect("under the bound");
    let changed = vec![listener.status(t0)];
    assert!(report_due(Some(&sent), &changed, t0 + MONITOR_TICK), "a connection opened");
    drop(conn);
    assert!(report_due(Some(&sent), &statuses, t0 + REPORT_REFRESH), "refreshed before it lapses");
    assert!(REPORT_REFRESH * 2 < REPORT_FRESH, "a lost refresh does not lapse the report");
}
