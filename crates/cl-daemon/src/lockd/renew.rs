//! cllockd's background work: renewing local holds with the peer, and reporting frame counters.

use std::sync::Arc;

use cl_wire::lock::{PeerLockReply, PeerLockRequest};
use cl_wire::msg::LocalEvent;
use cl_wire::Daemon;
use tracing::{info, warn};

use super::{locked, Lockd, COUNTERS_REFRESH};

/// How long a cllockd that holds nothing waits for a grant before it looks again anyway.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

impl Lockd {
    /// Every renew interval, tell the peer what is held here; lose what it holds instead.
    /// While nothing is held nothing wakes (issue 12: the idle footprint): a grant starts the
    /// renewals, the first one interval later, as on a running clock at the latest.
    pub(super) async fn renew_loop(self: Arc<Self>) {
        let interval = self.table().renew_interval();
        // The clock exists only while something is held: an armed timerfd wakes the process at
        // every expiry, read or not.
        let mut tick: Option<cl_sys::ticker::Periodic> = None;
        let mut failing = false;
        loop {
            if self.table().renewals().is_empty() {
                tick = None;
                // A hold made some other way than a grant is still renewed within IDLE_CHECK.
                let _ = tokio::time::timeout(IDLE_CHECK, self.held.notified()).await;
                continue;
            }
            tick.get_or_insert_with(|| cl_sys::ticker::Periodic::after(interval)).tick().await;
            let holds = self.table().renewals();
            if holds.is_empty() {
                continue;
            }
            match self.ask_peer(&PeerLockRequest::Renew { holds: holds.clone() }).await {
                Ok(PeerLockReply::Renewed { conflicts }) => {
                    if failing {
                        info!("renewing locks with {} works again", self.peer);
                        failing = false;
                    }
                    let lost = self.table().renewed(&conflicts);
                    self.lose(lost);
                }
                Ok(other) => warn!("unexpected answer to a renewal from {}: {other:?}", self.peer),
                Err(e) => {
                    if !failing {
                        warn!(
                            "cannot renew {} lock(s) with {}: {e:#}; they stay held here, and {} frees them after {:?} unless it hears from this node",
                            holds.len(),
                            self.peer,
                            self.peer,
                            self.table().lease()
                        );
                        failing = true;
                    }
                }
            }
        }
    }

    /// Send the counters of the peer's frames to cldaemon (clstat --verbose) when they changed,
    /// at most once a second (idle, nothing is sent and nothing wakes), and once a minute
    /// anyway, so that a cldaemon restarted without a new configuration has them again soon.
    pub(super) async fn report_counters(self: Arc<Self>) {
        let events = crate::relaying::event_sender();
        let mut last = None;
        loop {
            let counters = *locked(&self.requests).counters();
            if last != Some(counters) {
                let event = LocalEvent::Counters { daemon: Daemon::Cllockd, counters };
                crate::relaying::notify(&events, &self.ctx, &event).await;
                last = Some(counters);
            }
            tokio::select! {
                _ = self.frames.notified() => {}
                _ = tokio::time::sleep(COUNTERS_REFRESH) => last = None,
            }
            tokio::time::sleep(crate::heartbeat::COUNTERS_EVERY).await;
        }
    }
}
