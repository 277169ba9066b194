//! The nodes' side of the lease arbitrator: one authenticated UDP request to `clarbd`, one
//! reply matched by its `seq`. Retrying, and when to renew, are the caller's decisions (the
//! takeover guard in `cl-core`).
//!
//! **Counting the lease.** clarbd starts a granted lease when it *handles* the request, which is
//! after this node sent it. So the lease is safe to rely on until `sent_at + remaining_ms`
//! ([`ArbAnswer::lease_until`]): that instant is never later than the arbitrator's own expiry
//! (clock rates differ by far less than the margin between a renewal and the lease).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cl_wire::arb::{ArbOp, ArbReply, ArbRequest, ARBITRATOR_SENDER};
use cl_wire::{ClusterKey, Kind, Receiver, Sender, MAX_FRAME};

use crate::context::Context;

/// A client of one cluster's clarbd, for one node.
pub struct ArbClient {
    socket: tokio::net::UdpSocket,
    server: SocketAddr,
    node: String,
    sender: Sender,
    receiver: Receiver,
    next_seq: u64,
    /// clarbd's epoch as last heard (0: not yet): requests echo it to prove they are fresh.
    server_epoch: u64,
}

/// A reply and when its request was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArbAnswer {
    /// What clarbd answered.
    pub reply: ArbReply,
    /// When the request that got this reply was sent (the last attempt's send time).
    pub sent_at: Instant,
}

impl ArbAnswer {
    /// Until when this node may rely on holding the lease: `None` unless it was granted an
    /// Acquire/Renew (or a Query says it holds the lease).
    pub fn lease_until(&self) -> Option<Instant> {
        (self.reply.granted && self.reply.holder.is_some())
            .then(|| self.sent_at + Duration::from_millis(self.reply.remaining_ms))
    }
}

/// Why a request got no usable answer.
#[derive(Debug)]
pub enum ArbClientError {
    /// No authentic reply to this request within the timeout.
    Timeout {
        /// The arbitrator asked.
        server: SocketAddr,
        /// How long we waited.
        waited: Duration,
    },
    /// clarbd refused the request itself (not a node of the cluster, sender mismatch).
    Refused {
        /// clarbd's explanation.
        message: String,
    },
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for ArbClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArbClientError::Timeout { server, waited } => {
                write!(f, "no answer from the arbitrator {server} within {} ms", waited.as_millis())
            }
            ArbClientError::Refused { message } => write!(f, "the arbitrator refused: {message}"),
            ArbClientError::Io(e) => write!(f, "arbitrator socket: {e}"),
        }
    }
}

impl std::error::Error for ArbClientError {}

impl From<io::Error> for ArbClientError {
    fn from(e: io::Error) -> Self {
        ArbClientError::Io(e)
    }
}

impl ArbClient {
    /// A client for `node` of `cluster`, talking to clarbd at `server` from an ephemeral UDP
    /// port (on `bind`'s address when given). Must be called inside a tokio runtime.
    pub async fn new(
        key: ClusterKey,
        cluster: &str,
        node: &str,
        server: SocketAddr,
        bind: Option<SocketAddr>,
    ) -> io::Result<ArbClient> {
        let bind = bind.unwrap_or_else(|| match server {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        });
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        Ok(ArbClient {
            socket,
            server,
            node: node.to_string(),
            // A new epoch per client, from the counter: clarbd refuses frames from an older one,
            // and every reply must echo it, so no reply to an earlier client can answer this one.
            sender: Sender::new(
                key.clone(),
                cluster,
                node,
                crate::epoch::next().map_err(|e| io::Error::other(format!("{e:#}")))?,
            ),
            receiver: Receiver::new(key, cluster),
            next_seq: 1,
            server_epoch: 0,
        })
    }

    /// A client for this node from its built configuration; `None` when no `<arbitrator>` is
    /// configured.
    pub async fn from_context(ctx: &Context) -> Option<io::Result<ArbClient>> {
        let arb = ctx.cluster().arbitrator?;
        Some(ArbClient::new(ctx.key.clone(), ctx.name(), &ctx.local, arb.address, None).await)
    }

    /// The arbitrator's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Send `op` once and wait up to `timeout` for its reply. Replies to earlier requests
    /// (late ones, after a timeout), frames from other addresses and anything unauthentic are
    /// ignored.
    pub async fn request(
        &mut self,
        op: ArbOp,
        timeout: Duration,
    ) -> Result<ArbAnswer, ArbClientError> {
        let sent_at = Instant::now();
        let deadline = sent_at + timeout;
        // At most twice: the first answer may only tell this client clarbd's current epoch.
        for _attempt in 0..2 {
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            let request = ArbRequest { node: self.node.clone(), op, seq };
            let frame = self
                .sender
                .seal_echoing(Kind::Arbitrator, &request, self.server_epoch)
                .map_err(|e| ArbClientError::Io(io::Error::other(e.to_string())))?;
            self.socket.send_to(&frame, self.server).await?;
            let reply = self.wait_reply(seq, deadline, timeout).await?;
            if reply.stale {
                continue;
            }
            if let Some(message) = reply.error.clone() {
                return Err(ArbClientError::Refused { message });
            }
            return Ok(ArbAnswer { reply, sent_at });
        }
        Err(ArbClientError::Refused {
            message: "clarbd asked twice for its current epoch to be echoed".into(),
        })
    }

    /// Wait until `deadline` for the reply to request `seq`: authentic, from the server, and
    /// echoing this client's epoch. Its epoch becomes the one the next request echoes.
    async fn wait_reply(
        &mut self,
        seq: u64,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<ArbReply, ArbClientError> {
        let mut buf = vec![0u8; MAX_FRAME];
        let own_epoch = self.sender.epoch();
        loop {
            let received =
                tokio::time::timeout_at(deadline.into(), self.socket.recv_from(&mut buf)).await;
            let (len, from) = match received {
                Err(_) => {
                    return Err(ArbClientError::Timeout { server: self.server, waited: timeout })
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Ok(r) => r?,
            };
            if from != self.server {
                continue;
            }
            let Ok((header, reply)) =
                self.receiver.try_receive_fresh::<ArbReply>(&buf[..len], |echo| echo == own_epoch)
            else {
                continue;
            };
            if header.kind != Kind::Arbitrator
                || header.sender != ARBITRATOR_SENDER
                || reply.seq != seq
            {
                continue;
            }
            self.server_epoch = header.epoch;
            return Ok(reply);
        }
    }

    /// Frames received and dropped so far (a rising `bad_mac` means the keys differ).
    pub fn counters(&self) -> &cl_wire::Counters {
        self.receiver.counters()
    }
}
