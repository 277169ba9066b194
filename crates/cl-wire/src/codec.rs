//! Frame layout, [`encode`] and [`decode`].
//!
//! One frame, all integers big-endian (version 2):
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+---------------+---------------+
//! |   magic 'L'   |   magic 'H'   |  version (1)  |     kind      |
//! +---------------+---------------+---------------+---------------+
//! |  cluster len  |  cluster name (cluster len bytes, UTF-8)     ...
//! +---------------+-----------------------------------------------+
//! |  sender len   |  sender node name (sender len bytes, UTF-8)  ...
//! +---------------+-----------------------------------------------+
//! |        epoch (u64): the sender's run, from a persisted counter    |
//! |                                                                 |
//! +-----------------------------------------------------------------+
//! |                  seq (u64): per epoch, from 0                   |
//! |                                                                 |
//! +-----------------------------------------------------------------+
//! |   echo (u64): a challenge of the receiver's current run, or 0   |
//! |                                                                 |
//! +-----------------------------------------------------------------+
//! |                  body length (u32)                              |
//! +-----------------------------------------------------------------+
//! |                  body (serde_json, body length bytes)          ...
//! +-----------------------------------------------------------------+
//! |        HMAC-SHA256 tag (32 bytes) over every byte above        ...
//! +-----------------------------------------------------------------+
//! ```
//!
//! echo proves freshness across restarts (docs/cluster.md, "Replay protection"): the sender
//! copies into it a value the receiver issued during its current run (the receiver's epoch, or
//! a per-connection nonce), so a frame recorded before the receiver restarted is recognised
//! even though the receiver's replay window was lost with its memory. Version 1 had no echo.
//!
//! kind is the channel: 1 heartbeat, 2 node manager, 3 lock, 4 admin peer (see [`Kind`]). A whole
//! frame is at most [`MAX_FRAME`] bytes and at least [`MIN_FRAME`] (the fixed fields and the tag).
//! [`encode`] writes names of 1 to 255 bytes.
//!
//! [`decode`] checks in this order, cheapest and least trusting first:
//! 1. size: more than [`MAX_FRAME`] is refused before any other work ([`DecodeError::Oversized`]);
//! 2. truncation: shorter than [`MIN_FRAME`] ([`DecodeError::Truncated`]);
//! 3. magic and version;
//! 4. the length fields must cover the bytes exactly (shorter: truncated; longer: garbled). This
//!    comes after magic and version because lengths only mean something in a version-2 frame;
//! 5. the MAC, in constant time, BEFORE anything in the frame is interpreted: until the tag
//!    checks out, the bytes may come from anyone and must not steer the parser or the caller;
//! 6. the cluster name, then the kind and sender, then the body JSON.
//!
//! There is deliberately no way to read a header without checking the MAC. [`frame_len`] reads
//! only the length fields, to split a TCP byte stream into frames.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::key::{ClusterKey, TAG_LEN};

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"LH";
/// The protocol version this crate writes and reads (2: with the echo field).
pub const VERSION: u8 = 2;
/// Largest frame in bytes, tag included; bigger input is refused unread.
pub const MAX_FRAME: usize = 64 * 1024;
/// Fewest bytes the layout allows: every fixed field, empty names and body, and the tag.
pub const MIN_FRAME: usize = FIXED_HEAD + 1 + 1 + 8 + 8 + 8 + 4 + TAG_LEN;

/// Magic, version and kind.
const FIXED_HEAD: usize = MAGIC.len() + 1 + 1;

/// The channel a frame belongs to; each channel has its own message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Heartbeats between clhbd daemons (UDP).
    Heartbeat = 1,
    /// Peer requests and config sync between cldaemon node managers (TCP).
    NodeManager = 2,
    /// Cluster lock traffic between cllockd daemons (TCP).
    Lock = 3,
    /// Admin commands forwarded to the peer node.
    AdminPeer = 4,
    /// Lease requests from the nodes to clarbd on a third host, and its replies (UDP).
    Arbitrator = 5,
}

impl Kind {
    /// The kind for a wire byte, if it names one.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Heartbeat),
            2 => Some(Kind::NodeManager),
            3 => Some(Kind::Lock),
            4 => Some(Kind::AdminPeer),
            5 => Some(Kind::Arbitrator),
            _ => None,
        }
    }

    /// The wire byte for this kind.
    pub fn as_byte(self) -> u8 {
        self as u8
    }
}

/// Everything in a frame except the body and the tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Header {
    /// The channel.
    pub kind: Kind,
    /// Cluster name; a receiver drops frames for any other cluster.
    pub cluster: String,
    /// Name of the sending node.
    pub sender: String,
    /// Sender's epoch: changes (grows) each time the sending daemon starts.
    pub epoch: u64,
    /// Sequence number within the epoch, from 0.
    pub seq: u64,
    /// A challenge of the receiver's current run that the sender echoes (0: none known yet);
    /// see the module documentation.
    pub echo: u64,
}

/// Why a frame could not be built. Only the sender's own data can cause these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A cluster or sender name is empty or longer than its one-byte length field allows.
    #[error("the {field} name is {len} bytes; it must be 1 to 255 bytes")]
    NameLength {
        /// `"cluster"` or `"sender"`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The frame would exceed [`MAX_FRAME`].
    #[error("the frame would be {len} bytes, more than the {MAX_FRAME}-byte limit; send less per message")]
    TooLarge {
        /// Size the frame would have had.
        len: usize,
    },
    /// serde_json refused the body (for example a map with non-string keys).
    #[error("cannot serialise the message body: {0}")]
    Body(String),
}

/// Why received bytes were dropped before the replay check. Each can happen on any network
/// input, so callers count them (see [`crate::Counters`]) rather than treat them as faults.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// More than [`MAX_FRAME`] bytes.
    #[error("frame is larger than the {MAX_FRAME}-byte limit")]
    Oversized,
    /// Fewer bytes than the fixed fields, or than the frame's own length fields need.
    #[error("frame is truncated: fewer bytes than its layout needs")]
    Truncated,
    /// Does not start with `LH`: not a linuxha frame (or a port shared with something else).
    #[error("frame does not start with the linuxha magic `LH`")]
    BadMagic,
    /// A protocol version this node does not speak (a peer running other software).
    #[error("frame has protocol version {0}; this node speaks version {VERSION}")]
    UnsupportedVersion(u8),
    /// The tag does not match: another key (check the key file on both nodes), or tampering.
    #[error("frame failed authentication: the cluster key differs or the frame was altered")]
    BadMac,
    /// Authentic, but for another cluster that shares this key.
    #[error("frame is for another cluster that uses the same key")]
    WrongCluster,
    /// Bytes after the frame, or an authentic frame whose contents do not parse.
    #[error("frame is garbled: {0}")]
    Garbled(String),
}

/// Serialise `body` as JSON and seal it with `header` into one authenticated frame.
pub fn encode<M: Serialize + ?Sized>(
    key: &ClusterKey,
    header: &Header,
    body: &M,
) -> Result<Vec<u8>, EncodeError> {
    let body = serde_json::to_vec(body).map_err(|e| EncodeError::Body(e.to_string()))?;
    seal(key, header.kind.as_byte(), header, &body)
}

/// Build a frame from raw parts; `kind` is a byte so tests can craft unknown kinds.
pub(crate) fn seal(
    key: &ClusterKey,
    kind: u8,
    header: &Header,
    body: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let cluster_len = name_len("cluster", &header.cluster)?;
    let sender_len = name_len("sender", &header.sender)?;
    let len = MIN_FRAME + header.cluster.len() + header.sender.len() + body.len();
    // The u32 conversion cannot fail once the frame fits in MAX_FRAME; checked anyway.
    let body_len = match u32::try_from(body.len()) {
        Ok(body_len) if len <= MAX_FRAME => body_len,
        _ => return Err(EncodeError::TooLarge { len }),
    };
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&MAGIC);
    frame.push(VERSION);
    frame.push(kind);
    frame.push(cluster_len);
    frame.extend_from_slice(header.cluster.as_bytes());
    frame.push(sender_len);
    frame.extend_from_slice(header.sender.as_bytes());
    frame.extend_from_slice(&header.epoch.to_be_bytes());
    frame.extend_from_slice(&header.seq.to_be_bytes());
    frame.extend_from_slice(&header.echo.to_be_bytes());
    frame.extend_from_slice(&body_len.to_be_bytes());
    frame.extend_from_slice(body);
    let tag = key.sign(&frame);
    frame.extend_from_slice(&tag);
    Ok(frame)
}

fn name_len(field: &'static str, name: &str) -> Result<u8, EncodeError> {
    match u8::try_from(name.len()) {
        Ok(len) if len > 0 => Ok(len),
        _ => Err(EncodeError::NameLength { field, len: name.len() }),
    }
}

/// Authenticate and parse one whole frame for cluster `expected_cluster`.
///
/// `bytes` must be exactly one frame (one UDP datagram, or one frame cut from a TCP stream with
/// [`frame_len`]). The replay check is the caller's ([`crate::ReplayWindow`], or
/// [`crate::Receiver`] which does both).
pub fn decode<M: DeserializeOwned>(
    key: &ClusterKey,
    expected_cluster: &str,
    bytes: &[u8],
) -> Result<(Header, M), DecodeError> {
    if bytes.len() > MAX_FRAME {
        return Err(DecodeError::Oversized);
    }
    if bytes.len() < MIN_FRAME {
        return Err(DecodeError::Truncated);
    }
    check_magic_version(bytes)?;
    let layout = Layout::read(bytes).ok_or(DecodeError::Truncated)?;
    let signed_len = layout.body_end;
    let total = signed_len.checked_add(TAG_LEN).ok_or(DecodeError::Truncated)?;
    if total > bytes.len() {
        return Err(DecodeError::Truncated);
    }
    if total < bytes.len() {
        return Err(DecodeError::Garbled(format!(
            "{} bytes after the end of the frame",
            bytes.len() - total
        )));
    }
    let (signed, tag) = bytes.split_at_checked(signed_len).ok_or(DecodeError::Truncated)?;
    if !key.verify(signed, tag) {
        return Err(DecodeError::BadMac);
    }

    // From here on every byte is authentic: it was written by a holder of the cluster key.
    if layout.cluster != expected_cluster.as_bytes() {
        return Err(DecodeError::WrongCluster);
    }
    let kind = Kind::from_byte(layout.kind)
        .ok_or_else(|| DecodeError::Garbled(format!("unknown channel kind {}", layout.kind)))?;
    let sender = match std::str::from_utf8(layout.sender) {
        Ok("") => return Err(DecodeError::Garbled("empty sender name".into())),
        Ok(sender) => sender.to_owned(),
        Err(_) => return Err(DecodeError::Garbled("sender name is not UTF-8".into())),
    };
    let body_bytes = signed.get(layout.body_start..).ok_or(DecodeError::Truncated)?;
    let body = serde_json::from_slice(body_bytes)
        .map_err(|e| DecodeError::Garbled(format!("body from {sender}: {e}")))?;
    let header = Header {
        kind,
        cluster: expected_cluster.to_owned(),
        sender,
        epoch: layout.epoch,
        seq: layout.seq,
        echo: layout.echo,
    };
    Ok((header, body))
}

/// Length of the frame that starts at `prefix`, for cutting frames out of a TCP stream.
///
/// `Ok(None)`: more bytes are needed to know. `Ok(Some(n))`: the frame is the first `n` bytes
/// (which may be more than have arrived). `Err`: the stream is not a linuxha version-2 stream, or
/// announces a frame over [`MAX_FRAME`]; close the connection. Only lengths are read here, and
/// nothing in the frame is trusted until [`decode`] has checked its MAC.
pub fn frame_len(prefix: &[u8]) -> Result<Option<usize>, DecodeError> {
    let magic_seen = prefix.get(..MAGIC.len()).unwrap_or(prefix);
    if !MAGIC.starts_with(magic_seen) {
        return Err(DecodeError::BadMagic);
    }
    match prefix.get(MAGIC.len()) {
        Some(&VERSION) | None => {}
        Some(&other) => return Err(DecodeError::UnsupportedVersion(other)),
    }
    let Some(layout) = Layout::read(prefix) else { return Ok(None) };
    match layout.body_end.checked_add(TAG_LEN) {
        Some(total) if total <= MAX_FRAME => Ok(Some(total)),
        _ => Err(DecodeError::Oversized),
    }
}

fn check_magic_version(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(DecodeError::BadMagic);
    }
    match bytes.get(MAGIC.len()) {
        Some(&VERSION) => Ok(()),
        Some(&other) => Err(DecodeError::UnsupportedVersion(other)),
        None => Err(DecodeError::Truncated),
    }
}

/// Where the fields of a frame lie, read from its length fields. Nothing here is trusted until
/// the MAC over `..body_end` has been verified.
struct Layout<'a> {
    kind: u8,
    cluster: &'a [u8],
    sender: &'a [u8],
    epoch: u64,
    seq: u64,
    echo: u64,
    body_start: usize,
    body_end: usize,
}

impl<'a> Layout<'a> {
    /// Walk the header; `None` when `bytes` ends before the body length field does.
    fn read(bytes: &'a [u8]) -> Option<Self> {
        // Magic and version were checked by the caller; the walk starts at the kind byte.
        let mut cur = Cursor { bytes, pos: MAGIC.len() + 1 };
        let kind = cur.u8()?;
        let cluster_len = cur.u8()?;
        let cluster = cur.take(usize::from(cluster_len))?;
        let sender_len = cur.u8()?;
        let sender = cur.take(usize::from(sender_len))?;
        let epoch = cur.u64()?;
        let seq = cur.u64()?;
        let echo = cur.u64()?;
        let body_len = usize::try_from(cur.u32()?).ok()?;
        let body_start = cur.pos;
        let body_end = body_start.checked_add(body_len)?;
        Some(Layout { kind, cluster, sender, epoch, seq, echo, body_start, body_end })
    }
}

/// A read position that answers `None` instead of panicking at the end of the bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let taken = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(u8::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array::<4>().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array::<8>().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
#[path = "codec_test.rs"]
mod tests;
