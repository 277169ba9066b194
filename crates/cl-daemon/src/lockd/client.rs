//! cllockd's local clients: one connection per request, holding the lock while it is open.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use cl_core::locks::{Begin, Decision, Holder, Lost, PeerAnswer};
use cl_wire::lock::{
    check_name, clean_owner, format_time, LockRequest, LockResponse, PeerHold, PeerLockReply,
    PeerLockRequest,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{locked, unix_now, Lockd, MAX_LINE, MAX_WAIT, RETRY};

/// How a client's acquire ended.
enum Acquired {
    Granted { token: u64, since: u64 },
    Refused(LockResponse),
    ClientGone,
}

impl Lockd {
    /// Tell the clients of lost locks.
    pub(super) fn lose(&self, lost: Vec<Lost>) {
        for l in lost {
            let reason =
                format!("{} gave it to {} since {}", self.peer, l.by, format_time(l.since));
            warn!(lock = %l.name, "lock {} lost: {reason}", l.name);
            if let Some(client) = locked(&self.holders).remove(&l.token) {
                let _ = client.send(reason);
            }
        }
        self.changed.notify_waiters();
    }

    /// One attempt at `name` for a client: granted (alone or not), or what to tell it.
    async fn try_once(
        self: &Arc<Self>,
        name: &str,
        owner: &str,
        token: u64,
        since: u64,
    ) -> Result<(), LockResponse> {
        let held =
            |h: Holder| LockResponse::Held { name: name.to_string(), by: h.by, since: h.since };
        if let Begin::Busy(holder) =
            self.table().begin_acquire(name, token, owner, since, self.now())
        {
            return Err(held(holder));
        }
        let hold = PeerHold { name: name.into(), token, owner: owner.into(), since, alone: false };
        let mut why = None;
        let answer = match self.ask_peer(&PeerLockRequest::Reserve { hold }).await {
            Ok(PeerLockReply::Reserved) => PeerAnswer::Reserved,
            Ok(PeerLockReply::Refused { by, since }) => PeerAnswer::Refused(Holder { by, since }),
            Ok(other) => {
                why = Some(format!("it answered {other:?}"));
                PeerAnswer::Unreachable
            }
            Err(e) => {
                why = Some(format!("{e:#}"));
                PeerAnswer::Unreachable
            }
        };
        let unreachable = answer == PeerAnswer::Unreachable;
        let peer_down = unreachable && self.peer_down().await;
        let decision = self.table().finish_acquire(name, token, answer, peer_down, self.now());
        if unreachable && !matches!(decision, Decision::Granted { .. }) {
            // The Reserve may have arrived after all: take it back.
            self.release_on_peer(name, token);
        }
        match decision {
            Decision::Granted { alone } => {
                self.held.notify_one();
                if alone {
                    warn!(lock = name, "granted {name} to {owner} without {} ({} counts as down and has been silent for a lease)", self.peer, self.peer);
                } else {
                    info!(lock = name, "granted {name} to {owner}");
                }
                Ok(())
            }
            Decision::Busy(holder) => Err(held(holder)),
            Decision::ReleasePeer(holder) => {
                self.release_on_peer(name, token);
                Err(holder.map(held).unwrap_or_else(|| LockResponse::Error {
                    message: format!("{name} changed hands while it was being granted; try again"),
                }))
            }
            Decision::Unavailable => {
                let peer = &self.peer;
                let why = why.unwrap_or_default();
                let left = self.table().silence_left(self.now());
                let message = if peer_down && !left.is_zero() {
                    format!("{peer}'s cllockd cannot be reached ({why}); {peer} is down, but locks it may hold last until it has been silent for a lease: try again in {} s", left.as_secs().max(1))
                } else {
                    format!("{peer}'s cllockd cannot be reached ({why}) and {peer} is not down in this node's view, so no lock can be granted safely")
                };
                Err(LockResponse::Error { message })
            }
        }
    }

    /// Try for `name` until granted or `wait` has passed (or the client goes away).
    async fn acquire<R: AsyncReadExt + Unpin>(
        self: &Arc<Self>,
        name: &str,
        owner: &str,
        wait: Duration,
        client: &mut R,
    ) -> Acquired {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let token = self.fresh();
            let since = unix_now();
            let last = match self.try_once(name, owner, token, since).await {
                Ok(()) => return Acquired::Granted { token, since },
                Err(response) => response,
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Acquired::Refused(last);
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline.min(now + RETRY)) => {}
                _ = closed(client) => return Acquired::ClientGone,
            }
        }
    }

    /// Serve one local client: read its request, then answer, or hold the lock it was granted.
    pub(super) async fn serve_client(
        self: Arc<Self>,
        stream: UnixStream,
        conn: crate::serve::Conn,
    ) {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read.take(MAX_LINE));
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        match crate::serve::within(&conn, Duration::from_secs(10), "a lock request", read).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return,
        }
        let response = match serde_json::from_str::<LockRequest>(line.trim()) {
            Err(e) => {
                conn.rejected("unreadable request", &format!("unreadable lock request: {e}"));
                LockResponse::Error { message: format!("unreadable request: {e}") }
            }
            Ok(LockRequest::Acquire { name, owner, wait }) => match check_name(&name) {
                Err(message) => LockResponse::Error { message },
                Ok(()) => {
                    let owner = clean_owner(&owner);
                    let wait = Duration::from_secs(wait);
                    match self.acquire(&name, &owner, wait, &mut reader).await {
                        Acquired::Refused(response) => response,
                        Acquired::ClientGone => return,
                        Acquired::Granted { token, since } => {
                            self.hold(&name, &owner, token, since, &mut reader, &mut write).await;
                            return;
                        }
                    }
                }
            },
        };
        let _ = write_line(&mut write, &response).await;
    }

    /// The client holds `name`: until it closes the connection or the lock is lost.
    async fn hold<R: AsyncReadExt + Unpin, W: AsyncWriteExt + Unpin>(
        self: &Arc<Self>,
        name: &str,
        owner: &str,
        token: u64,
        since: u64,
        client: &mut R,
        write: &mut W,
    ) {
        let (lost_tx, lost_rx) = oneshot::channel();
        locked(&self.holders).insert(token, lost_tx);
        let granted = LockResponse::Granted { name: name.to_string(), since };
        let lost = if write_line(write, &granted).await.is_ok() {
            tokio::select! {
                reason = lost_rx => reason.ok(),
                _ = closed(client) => None,
            }
        } else {
            None
        };
        locked(&self.holders).remove(&token);
        match lost {
            Some(reason) => {
                let lost = LockResponse::Lost { name: name.to_string(), reason };
                let _ = write_line(write, &lost).await;
            }
            None => {
                if self.table().release_local(name, token) {
                    info!(lock = name, "{owner} released {name}");
                    self.release_on_peer(name, token);
                }
                self.changed.notify_waiters();
            }
        }
    }
}

async fn write_line<W: AsyncWriteExt + Unpin>(
    write: &mut W,
    response: &LockResponse,
) -> Result<()> {
    let mut text = serde_json::to_string(response)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    Ok(())
}

/// Resolves when the client closes its end (anything it sends is ignored).
async fn closed<R: AsyncReadExt + Unpin>(client: &mut R) {
    let mut buf = [0u8; 256];
    loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
