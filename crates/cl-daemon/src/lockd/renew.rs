//! cllockd's background work: renewing local holds with the peer, and reporting frame counters.

use std::sync::Arc;

use cl_wire::lock::{PeerLockReply, PeerLockRequest};
use cl_wire::msg::LocalEvent;
use cl_wire::Daemon;
use tracing::{info, warn};

use super::{locked, Lockd, COUNTERS_REFRESH};

impl Lockd {
    /// Every renew interval, tell the peer what is held here; lose what it holds instead.
    pub(super) async fn renew_loop(self: Arc<Self>) {
        let interval = self.table().renew_interval();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
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
        let Ok(events) = crate::heartbeat::event_sender() else { return };
        let mut last = None;
        loop {
            let counters = *locked(&self.requests).counters();
            if last != Some(counters) {
                let event = LocalEvent::Counters { daemon: Daemon::Cllockd, counters };
                crate::heartbeat::notify(&events, &self.ctx, &event).await;
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
