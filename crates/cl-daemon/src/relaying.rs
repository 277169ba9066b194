//! The shell of cl_core::relay for clhbd and clnetd: their clock, shared with cldaemon, and
//! the socket they (and cllockd, the listeners' reports) pass events to cldaemon through.

use std::time::Duration;

use cl_core::time::Time;
use cl_wire::msg::LocalEvent;

use crate::context::Context;

/// Now on CLOCK_MONOTONIC as the relay's time (shared with cldaemon, which converts back).
pub fn now() -> Time {
    Time::ZERO + cl_sys::clock::monotonic()
}

/// The monotonic stamp of a relayed observation.
pub fn stamp(at: Time) -> Duration {
    at.since_origin()
}

/// How long ago, on CLOCK_MONOTONIC, another daemon made an observation it stamped `at`.
pub fn age(at: Duration) -> Duration {
    cl_sys::clock::monotonic().saturating_sub(at)
}

/// The datagram socket daemons report to cldaemon through. It is not registered with the
/// runtime's epoll: a registered socket wakes its process again each time cldaemon reads a
/// datagram (the write-space edge), for nothing. A full queue (cldaemon busy) is waited out in
/// short sleeps instead. It is connected to cldaemon's event socket at the first send and
/// stays so: a send by path looked the path up in the kernel every time (a sixth of clnetd's
/// CPU, issue 12). When cldaemon restarts, its new socket is a new peer: the send to the old
/// one fails, and the next attempt connects anew.
pub struct EventSender {
    connected: std::sync::Mutex<Option<(std::path::PathBuf, std::os::unix::net::UnixDatagram)>>,
}

/// How long a report waits for room in cldaemon's queue before it is dropped (cldaemon stuck:
/// its supervision, not this report, is what matters then).
const EVENT_SEND_PATIENCE: Duration = Duration::from_millis(200);

impl EventSender {
    async fn send_to(&self, bytes: &[u8], path: &std::path::Path) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + EVENT_SEND_PATIENCE;
        loop {
            match self.try_send(bytes, path) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                sent => return sent,
            }
        }
    }

    /// One attempt: on the connected socket, or on one connected anew if there is none yet,
    /// it is connected elsewhere, or its peer is gone (cldaemon restarted).
    fn try_send(&self, bytes: &[u8], path: &std::path::Path) -> std::io::Result<()> {
        use std::io::ErrorKind;
        let mut slot = self.connected.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((to, socket)) = slot.as_ref().filter(|(to, _)| to == path) {
            match socket.send(bytes) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(e),
                // The peer is gone: connect to whatever listens at the path now.
                Err(_) => {
                    tracing::debug!("event socket {} went away; connecting anew", to.display())
                }
            }
        }
        *slot = None;
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        socket.connect(path)?;
        let sent = socket.send(bytes).map(drop);
        *slot = Some((path.to_path_buf(), socket));
        sent
    }
}

/// Send a local event to cldaemon; a missing cldaemon is not an error (it may be restarting).
/// True when it was handed to cldaemon's socket.
pub async fn notify(socket: &EventSender, ctx: &Context, event: &LocalEvent) -> bool {
    match serde_json::to_vec(event) {
        Ok(bytes) => socket.send_to(&bytes, &ctx.event_socket()).await.is_ok(),
        Err(_) => false,
    }
}

/// The socket daemons report through (connected at its first send).
pub fn event_sender() -> EventSender {
    EventSender { connected: std::sync::Mutex::new(None) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_reach_a_restarted_cldaemon_on_a_new_connection() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let events = event_sender();
            // No cldaemon yet: the report is lost, and that is not an error of the sender.
            assert!(events.send_to(b"early", &path).await.is_err());
            let mut buf = [0u8; 16];
            for round in ["first", "second"] {
                let cldaemon = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
                cldaemon.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
                for _ in 0..2 {
                    events.send_to(round.as_bytes(), &path).await.expect("sent");
                    let n = cldaemon.recv(&mut buf).expect("received");
                    assert_eq!(&buf[..n], round.as_bytes());
                }
                // cldaemon restarts: its socket goes, and a new one is bound at the path.
                drop(cldaemon);
                std::fs::remove_file(&path).expect("unlink");
            }
        });
    }
}
