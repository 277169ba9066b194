//! Request/response transports: authenticated frames between nodes' cldaemons over TCP, and
//! JSON lines over the admin Unix socket.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use cl_wire::msg::{AdminRequest, AdminResponse, PeerReply, PeerRequest};
use cl_wire::{frame_len, ClusterKey, Kind, Sender, MAX_FRAME};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

/// Read one whole frame from a stream (length from the header, capped at MAX_FRAME).
pub async fn read_frame<R: AsyncReadExt + Unpin>(stream: &mut R) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        match frame_len(&buf) {
            Ok(Some(len)) if buf.len() >= len => {
                buf.truncate(len);
                return Ok(buf);
            }
            Ok(_) => {}
            Err(e) => bail!("bad frame: {e}"),
        }
        if buf.len() > MAX_FRAME {
            bail!("frame too large");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed mid-frame");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Send one request to a peer's cldaemon and wait for its reply, trying each address in turn.
pub async fn peer_request(
    key: &ClusterKey,
    cluster: &str,
    local: &str,
    addresses: &[SocketAddr],
    request: &PeerRequest,
    timeout: Duration,
) -> Result<PeerReply> {
    // Every address's failure is reported: the last one alone hid why the first failed.
    let mut errors = Vec::new();
    for address in addresses {
        match tokio::time::timeout(
            timeout,
            peer_request_one(key, cluster, local, *address, request),
        )
        .await
        {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(e)) => errors.push(format!("{address}: {e:#}")),
            Err(_) => {
                errors.push(format!("{address}: no answer within {} ms", timeout.as_millis()))
            }
        }
    }
    match errors.as_slice() {
        [] => Err(anyhow!("no address")),
        _ => Err(anyhow!("{}", errors.join("; "))),
    }
}

async fn peer_request_one(
    key: &ClusterKey,
    cluster: &str,
    local: &str,
    address: SocketAddr,
    request: &PeerRequest,
) -> Result<PeerReply> {
    let mut stream = TcpStream::connect(address).await.context("connect")?;
    let sender = request_sender(key, cluster, local)?;
    let (_, reply) = crate::exchange::request::<_, _, PeerReply>(
        &mut stream,
        &sender,
        key,
        cluster,
        Kind::NodeManager,
        request,
    )
    .await?;
    Ok(reply)
}

/// One sender per process and cluster: every request carries the same epoch (taken once) and
/// the next sequence number. Requests run concurrently on separate connections and may arrive
/// out of order; the receiver's window accepts that within one epoch, whereas a fresh epoch per
/// request made a later-created request that arrived first reject the earlier one as a replay
/// (seen on slow guests).
fn request_sender(key: &ClusterKey, cluster: &str, local: &str) -> Result<Arc<Mutex<Sender>>> {
    type Senders = std::collections::BTreeMap<(String, String), Arc<Mutex<Sender>>>;
    static SENDERS: std::sync::OnceLock<Mutex<Senders>> = std::sync::OnceLock::new();
    let senders = SENDERS.get_or_init(Default::default);
    let mut senders = senders.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let slot = (cluster.to_string(), local.to_string());
    if let Some(sender) = senders.get(&slot) {
        let mut sealing = sender.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The key may have changed (clbuild --genkey, then a reload): same run, new key.
        sealing.rekey(key.clone());
        drop(sealing);
        return Ok(sender.clone());
    }
    let sender =
        Arc::new(Mutex::new(Sender::new(key.clone(), cluster, local, crate::epoch::next()?)));
    senders.insert(slot, sender.clone());
    Ok(sender)
}

/// Send one request to the local cldaemon's admin socket and read its response.
pub async fn admin_request(
    socket: &Path,
    request: &AdminRequest,
    timeout: Duration,
) -> Result<AdminResponse> {
    let work = async {
        let stream = UnixStream::connect(socket).await?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        write.write_all(line.as_bytes()).await?;
        let mut reader = BufReader::new(read);
        let mut answer = String::new();
        reader.read_line(&mut answer).await?;
        let response: AdminResponse =
            serde_json::from_str(answer.trim()).context("bad answer from cldaemon")?;
        anyhow::Ok(response)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow!("cldaemon did not answer within {} s", timeout.as_secs()))?
}
