//! cllockd's side of the peer protocol: asking the peer's cllockd, and answering it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use cl_wire::lock::{
    check_name, clean_owner, PeerLockAnswer, PeerLockMsg, PeerLockReply, PeerLockRequest,
};
use cl_wire::msg::{AdminRequest, AdminResponse, LocalStateView, NodeState};
use cl_wire::Kind;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::{Lockd, PEER_TIMEOUT};
use crate::transport::admin_request;

impl Lockd {
    fn peer_addresses(&self) -> Vec<SocketAddr> {
        let port = self.ctx.cluster().ports.cllockd;
        self.ctx
            .cluster()
            .node(&self.peer)
            .map(|n| n.networks.iter().map(|net| SocketAddr::new(net.address, port)).collect())
            .unwrap_or_default()
    }

    /// Send one request to the peer's cllockd and wait for its answer, trying each address.
    pub(super) async fn ask_peer(&self, request: &PeerLockRequest) -> Result<PeerLockReply> {
        let id = self.fresh();
        let msg = PeerLockMsg { id, request: request.clone() };
        let addresses = self.peer_addresses();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = anyhow!("{} has no address", self.peer);
        for i in 0..addresses.len() {
            let index = (first + i) % addresses.len();
            let address = addresses[index];
            // A fresh exchange per attempt: a frame that reached the peer late is not a replay.
            let attempt = async {
                let mut stream = TcpStream::connect(address).await.context("connect")?;
                crate::exchange::request::<_, _, PeerLockAnswer>(
                    &mut stream,
                    &self.sender,
                    &self.ctx.key,
                    self.ctx.name(),
                    Kind::Lock,
                    &msg,
                )
                .await
            };
            match tokio::time::timeout(PEER_TIMEOUT, attempt).await {
                Ok(Ok((header, answer))) if header.sender == self.peer && answer.id == id => {
                    self.preferred.store(index, Ordering::Relaxed);
                    self.table().heard_peer(self.now());
                    return Ok(answer.reply);
                }
                Ok(Ok((header, _))) => {
                    last_error =
                        anyhow!("{address}: an answer from {} to another request", header.sender)
                }
                Ok(Err(e)) => last_error = e.context(address.to_string()),
                Err(_) => last_error = anyhow!("{address}: no answer within {PEER_TIMEOUT:?}"),
            }
        }
        Err(last_error)
    }

    /// Tell the peer, in the background, that grant (or request) `token` of `name` ended.
    pub(super) fn release_on_peer(self: &Arc<Self>, name: &str, token: u64) {
        let this = self.clone();
        let request = PeerLockRequest::Release { name: name.to_string(), token };
        tokio::spawn(async move {
            if let Err(e) = this.ask_peer(&request).await {
                debug!("could not tell {} about a release: {e:#}", this.peer);
            }
        });
    }

    /// Does cldaemon count the peer out (down or never heard) with this node connected?
    pub(super) async fn peer_down(&self) -> bool {
        let socket = self.ctx.admin_socket();
        match admin_request(&socket, &AdminRequest::Status, Duration::from_secs(1)).await {
            Ok(AdminResponse::Status(status)) => {
                status.local_state == LocalStateView::Connected
                    && status.nodes.iter().any(|n| {
                        n.name == self.peer
                            && matches!(n.state, NodeState::Down | NodeState::Joining)
                    })
            }
            _ => false,
        }
    }

    /// Serve one request from the peer's cllockd: check the frame, apply it, answer.
    pub(super) async fn serve_peer(
        self: Arc<Self>,
        mut stream: TcpStream,
        from: SocketAddr,
        conn: crate::serve::Conn,
    ) {
        let accept = crate::exchange::accept::<_, PeerLockMsg>(
            &mut stream,
            &self.requests,
            &self.sender,
            Kind::Lock,
        );
        let accepted = crate::serve::within(&conn, PEER_TIMEOUT * 2, "a request", accept).await;
        self.frames.notify_one();
        let incoming = match accepted {
            Some(Ok(incoming)) if incoming.header.sender == self.peer => incoming,
            Some(Ok(incoming)) => {
                return conn.rejected(
                    "wrong sender",
                    &format!(
                        "a lock request from {from} claims to come from {}, not {}",
                        incoming.header.sender, self.peer
                    ),
                )
            }
            None => return,
            Some(Err(e)) => {
                return conn.rejected(
                    &crate::serve::accept_reason(&e),
                    &format!(
                    "lock request from {from}: {e} (is the cluster key the same on both nodes?)"
                ),
                )
            }
        };
        let reply = self.on_peer_request(incoming.request.request.clone());
        let answer = PeerLockAnswer { id: incoming.request.id, reply };
        let _ = crate::exchange::reply(&mut stream, &self.sender, &incoming, &answer).await;
    }

    /// What the peer's request does to the table, and the answer.
    fn on_peer_request(&self, request: PeerLockRequest) -> PeerLockReply {
        let now = self.now();
        let mut table = self.table();
        table.heard_peer(now);
        match request {
            PeerLockRequest::Reserve { mut hold } => {
                hold.owner = clean_owner(&hold.owner);
                if let Err(why) = check_name(&hold.name) {
                    return PeerLockReply::Refused {
                        by: format!("nobody ({why})"),
                        since: hold.since,
                    };
                }
                match table.peer_reserve(&hold, now) {
                    Ok(()) => {
                        info!(lock = %hold.name, "reserved {} for {} ({})", hold.name, hold.owner, self.peer);
                        PeerLockReply::Reserved
                    }
                    Err(holder) => PeerLockReply::Refused { by: holder.by, since: holder.since },
                }
            }
            PeerLockRequest::Release { name, token } => {
                table.peer_release(&name, token, now);
                drop(table);
                debug!(lock = %name, "{} released {name}", self.peer);
                self.changed.notify_waiters();
                PeerLockReply::Ok
            }
            PeerLockRequest::Renew { mut holds } => {
                for hold in &mut holds {
                    hold.owner = clean_owner(&hold.owner);
                }
                holds.retain(|h| check_name(&h.name).is_ok());
                let (conflicts, lost) = table.peer_renew(&holds, now);
                drop(table);
                for c in &conflicts {
                    warn!(lock = %c.name, "{} renewed {} which {} holds here: it loses", self.peer, c.name, c.by);
                }
                self.lose(lost);
                PeerLockReply::Renewed { conflicts }
            }
            PeerLockRequest::Bye => {
                table.peer_bye(now);
                drop(table);
                info!("{}'s cllockd stopped: its locks are free", self.peer);
                self.changed.notify_waiters();
                PeerLockReply::Ok
            }
        }
    }

    /// Tell the peer this cllockd stops (best effort, one attempt per address).
    pub(super) async fn bye(&self) {
        if let Err(e) = self.ask_peer(&PeerLockRequest::Bye).await {
            debug!("could not tell {} that this cllockd stops: {e:#}", self.peer);
        }
    }
}
