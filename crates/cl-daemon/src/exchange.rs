//! One request and its reply between nodes over a fresh TCP connection, fresh both ways.
//!
//! ```text
//!   client                                    server
//!   Hello{nonce c}            ───────────►    (window check only)
//!                             ◄───────────    Hello{nonce s}, echo c
//!   request, echo s           ───────────►    must echo s: else Unfresh
//!                             ◄───────────    reply, echo c
//!   reply must echo c
//! ```
//!
//! Both nonces are random and new for this connection, so a request or reply recorded on any
//! earlier connection, before or after any restart of either side, echoes another nonce and is
//! refused ([`cl_wire::fresh`]). The replay windows still apply as well.

use std::sync::Mutex;

use anyhow::{anyhow, Context as _, Result};
use cl_wire::{ClusterKey, Header, Hello, Kind, ReceiveError, Receiver, Sender};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::epoch;
use crate::transport::read_frame;

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Send `request` on channel `kind` over `stream` (just connected) and return the reply.
///
/// `sender` seals this process's frames; the reply is checked with a receiver of its own, as
/// it must come from the node that answered the hello.
pub async fn request<S, Q, R>(
    stream: &mut S,
    sender: &Mutex<Sender>,
    key: &ClusterKey,
    cluster: &str,
    kind: Kind,
    request: &Q,
) -> Result<(Header, R)>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Q: Serialize + ?Sized,
    R: DeserializeOwned,
{
    let nonce = epoch::nonce()?;
    let hello = locked(sender)
        .seal(kind, &Hello { nonce })
        .map_err(|e| anyhow!("cannot encode the hello: {e}"))?;
    stream.write_all(&hello).await.context("send the hello")?;
    let frame = read_frame(stream).await.context("read the peer's hello")?;
    let mut receiver = Receiver::new(key.clone(), cluster);
    let (server, hello) = receiver
        .try_receive_fresh::<Hello>(&frame, |echo| echo == nonce)
        .map_err(|e| rejected("hello", e))?;
    let frame = locked(sender)
        .seal_echoing(kind, request, hello.nonce)
        .map_err(|e| anyhow!("cannot encode the request: {e}"))?;
    stream.write_all(&frame).await.context("send the request")?;
    let frame = read_frame(stream).await.context("read the reply")?;
    let (header, reply) = receiver
        .try_receive_fresh::<R>(&frame, |echo| echo == nonce)
        .map_err(|e| rejected("reply", e))?;
    if header.sender != server.sender {
        return Err(anyhow!(
            "the reply came from {}, the hello from {}",
            header.sender,
            server.sender
        ));
    }
    Ok((header, reply))
}

fn rejected(what: &str, e: ReceiveError) -> anyhow::Error {
    anyhow!("{what} rejected: {e} (is the cluster key the same on every node?)")
}

/// A request received by [`accept`]: answer it with [`reply`].
#[derive(Debug)]
pub struct Incoming<Q> {
    /// The request frame's header (its sender is the client node).
    pub header: Header,
    /// The request.
    pub request: Q,
    /// The client's nonce, echoed in the reply.
    client_nonce: u64,
}

/// Why [`accept`] did not produce a request.
#[derive(Debug)]
pub enum AcceptError {
    /// The connection failed or the peer sent no complete frame.
    Io(anyhow::Error),
    /// A frame was refused (counted by `receiver`).
    Rejected(ReceiveError),
    /// The request came from another node than the hello.
    SenderMismatch {
        /// The hello's sender.
        hello: String,
        /// The request's sender.
        request: String,
    },
}

impl std::fmt::Display for AcceptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcceptError::Io(e) => write!(f, "{e:#}"),
            AcceptError::Rejected(e) => write!(f, "{e}"),
            AcceptError::SenderMismatch { hello, request } => {
                write!(f, "the hello came from {hello}, the request from {request}")
            }
        }
    }
}

/// Serve the start of one exchange on `stream` (just accepted): the hellos, then a request
/// that must echo this connection's nonce.
pub async fn accept<S, Q>(
    stream: &mut S,
    receiver: &Mutex<Receiver>,
    sender: &Mutex<Sender>,
    kind: Kind,
) -> Result<Incoming<Q>, AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Q: DeserializeOwned,
{
    let frame = read_frame(stream).await.map_err(AcceptError::Io)?;
    let (client, hello) =
        locked(receiver).try_receive::<Hello>(&frame).map_err(AcceptError::Rejected)?;
    let nonce = epoch::nonce().map_err(AcceptError::Io)?;
    let frame = locked(sender)
        .seal_echoing(kind, &Hello { nonce }, hello.nonce)
        .map_err(|e| AcceptError::Io(anyhow!("cannot encode the hello: {e}")))?;
    stream.write_all(&frame).await.map_err(|e| AcceptError::Io(e.into()))?;
    let frame = read_frame(stream).await.map_err(AcceptError::Io)?;
    let (header, request) = locked(receiver)
        .try_receive_fresh::<Q>(&frame, |echo| echo == nonce)
        .map_err(AcceptError::Rejected)?;
    if header.sender != client.sender {
        return Err(AcceptError::SenderMismatch { hello: client.sender, request: header.sender });
    }
    Ok(Incoming { header, request, client_nonce: hello.nonce })
}

/// Answer `incoming` with `reply`, echoing the client's nonce.
pub async fn reply<S, Q, R>(
    stream: &mut S,
    sender: &Mutex<Sender>,
    incoming: &Incoming<Q>,
    reply: &R,
) -> Result<()>
where
    S: AsyncWrite + Unpin,
    R: Serialize + ?Sized,
{
    let frame = locked(sender)
        .seal_echoing(incoming.header.kind, reply, incoming.client_nonce)
        .map_err(|e| anyhow!("cannot encode the reply: {e}"))?;
    stream.write_all(&frame).await.context("send the reply")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClusterKey {
        ClusterKey::from_bytes(&[0x33; 32]).expect("valid key")
    }

    fn sender(node: &str, epoch: u64) -> Mutex<Sender> {
        Mutex::new(Sender::new(key(), "alpha", node, epoch))
    }

    /// A server that answers every request with its length, on a duplex pipe.
    async fn serve_one(
        mut stream: tokio::io::DuplexStream,
        receiver: &Mutex<Receiver>,
        sender: &Mutex<Sender>,
    ) -> Result<String, String> {
        let incoming = accept::<_, String>(&mut stream, receiver, sender, Kind::NodeManager)
            .await
            .map_err(|e| e.to_string())?;
        let answer = format!("{} from {}", incoming.request.len(), incoming.header.sender);
        reply(&mut stream, sender, &incoming, &answer).await.map_err(|e| e.to_string())?;
        Ok(incoming.request)
    }

    #[tokio::test]
    async fn a_request_and_its_reply() {
        let server_rx = Mutex::new(Receiver::new(key(), "alpha"));
        let server_tx = sender("node2", 20);
        let client_tx = sender("node1", 10);
        let (mut client, server) = tokio::io::duplex(65536);
        let key = key();
        let (served, answered) = tokio::join!(
            serve_one(server, &server_rx, &server_tx),
            request::<_, _, String>(
                &mut client,
                &client_tx,
                &key,
                "alpha",
                Kind::NodeManager,
                "hello there"
            ),
        );
        assert_eq!(served.expect("served"), "hello there");
        let (header, answer) = answered.expect("answered");
        assert_eq!(answer, "11 from node1");
        assert_eq!(header.sender, "node2");
    }

    /// Record every frame of one exchange, then replay the client's side to a restarted server
    /// (empty window) on a new connection: the request echoes the old connection's nonce.
    #[tokio::test]
    async fn a_recorded_request_is_refused_by_a_restarted_server() {
        let client_tx = sender("node1", 10);
        let server_tx = sender("node2", 20);
        // What a client sends on a connection whose server hello carried nonce 5.
        let hello = locked(&client_tx).seal(Kind::NodeManager, &Hello { nonce: 77 }).expect("seal");
        let request =
            locked(&client_tx).seal_echoing(Kind::NodeManager, "stop app", 5).expect("seal");
        let restarted = Mutex::new(Receiver::new(key(), "alpha"));
        let (mut attacker, server) = tokio::io::duplex(65536);
        let serving = tokio::spawn(async move {
            let result = serve_one(server, &restarted, &server_tx).await;
            (result, locked(&restarted).counters().unfresh)
        });
        attacker.write_all(&hello).await.expect("write");
        let _server_hello = read_frame(&mut attacker).await.expect("hello answered");
        attacker.write_all(&request).await.expect("write");
        let (result, unfresh) = serving.await.expect("joined");
        let err = result.expect_err("refused");
        assert!(err.contains("echoes 5"), "{err}");
        assert_eq!(unfresh, 1);
    }

    /// A reply recorded on an earlier connection does not answer a new request.
    #[tokio::test]
    async fn a_recorded_reply_is_refused_by_the_client() {
        let server_tx = sender("node2", 20);
        let client_tx = sender("node1", 10);
        let (mut client, mut fake_server) = tokio::io::duplex(65536);
        let fake = tokio::spawn(async move {
            let frame = read_frame(&mut fake_server).await.expect("client hello");
            let mut rx = Receiver::new(key(), "alpha");
            let (_, hello): (_, Hello) = rx.try_receive(&frame).expect("hello");
            // A fresh server hello (it may even be genuine), then an old reply: it echoes 999.
            let answer = locked(&server_tx)
                .seal_echoing(Kind::NodeManager, &Hello { nonce: 3 }, hello.nonce)
                .expect("seal");
            fake_server.write_all(&answer).await.expect("write");
            let _request = read_frame(&mut fake_server).await.expect("request");
            let old = locked(&server_tx).seal_echoing(Kind::NodeManager, "ok", 999).expect("seal");
            fake_server.write_all(&old).await.expect("write");
        });
        let got = request::<_, _, String>(
            &mut client,
            &client_tx,
            &key(),
            "alpha",
            Kind::NodeManager,
            "start app",
        )
        .await;
        fake.await.expect("joined");
        let err = format!("{:#}", got.expect_err("refused"));
        assert!(err.contains("reply rejected") && err.contains("echoes 999"), "{err}");
    }
}
