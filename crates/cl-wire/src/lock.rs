//! Cluster lock messages: between the two nodes' cllockd daemons (inside authenticated frames of
//! kind [`crate::Kind::Lock`]) and between a local client (`cllock`, the application commands)
//! and its node's cllockd (one JSON line each way over the root-only Unix socket
//! `run/cluster/cllockd-<cluster>.sock`).
//!
//! The protocol itself (who asks whom, leases, tie-break, what happens when the peer is silent)
//! is described in `cl_daemon::lockd`.

use serde::{Deserialize, Serialize};

/// The lock table's own types, carried as they are.
pub use cl_core::locks::{Conflict, PeerHold};

/// Longest lock name, in bytes.
pub const MAX_NAME: usize = 128;
/// Longest owner description, in bytes (longer ones are cut).
pub const MAX_OWNER: usize = 200;

/// A request from a local client to its cllockd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum LockRequest {
    /// Take the lock `name`, waiting up to `wait` seconds for it. The connection stays open
    /// while the lock is held; closing it (or the client dying) releases the lock.
    Acquire {
        /// Lock name ([`check_name`]).
        name: String,
        /// Who asks, for whoever finds the lock taken: `<command> on <node> (pid N)`.
        owner: String,
        /// Seconds to wait for a lock that is held elsewhere (0: answer at once).
        wait: u64,
    },
}

/// cllockd's answers on the local socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum LockResponse {
    /// The lock is held by this connection from now until it closes.
    Granted {
        /// Lock name.
        name: String,
        /// When it was granted (seconds since 1970, UTC).
        since: u64,
    },
    /// The lock is held by someone else (after waiting as long as asked).
    Held {
        /// Lock name.
        name: String,
        /// The holder, as it described itself.
        by: String,
        /// Since when (seconds since 1970, UTC).
        since: u64,
    },
    /// A held lock was lost: the peer gave it to another holder (see `cl_daemon::lockd`).
    /// Sent on the holding connection, which cllockd then closes.
    Lost {
        /// Lock name.
        name: String,
        /// One sentence.
        reason: String,
    },
    /// Not granted, and not because someone holds it (the peer is unreachable, bad name…).
    Error {
        /// One sentence.
        message: String,
    },
}

/// A request from one cllockd to the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum PeerLockRequest {
    /// Reserve `hold.name` for my client: answered [`PeerLockReply::Reserved`] or
    /// [`PeerLockReply::Refused`].
    Reserve {
        /// What I want to grant.
        hold: PeerHold,
    },
    /// My grant `token` of `name` ended (or my request for it was abandoned): drop the
    /// reservation.
    Release {
        /// Lock name.
        name: String,
        /// The grant's token.
        token: u64,
    },
    /// These locks are still held here: extend their reservations (or make them again).
    Renew {
        /// Every lock held on the sending node.
        holds: Vec<PeerHold>,
    },
    /// My cllockd is stopping: nothing is held or pending here any more.
    Bye,
}

/// A [`PeerLockRequest`] with the id its reply must echo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLockMsg {
    /// Unique per request of the sending cllockd run.
    pub id: u64,
    /// The request.
    pub request: PeerLockRequest,
}

/// The answer to a [`PeerLockRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum PeerLockReply {
    /// Reserved for the asking node's grant.
    Reserved,
    /// Not reserved: held (or about to be) on the answering node.
    Refused {
        /// The holder.
        by: String,
        /// Since when.
        since: u64,
    },
    /// Noted (Release, Bye).
    Ok,
    /// Renewed, except for these holds, which the asking node has lost.
    Renewed {
        /// Holds that lost a conflict.
        conflicts: Vec<Conflict>,
    },
}

/// A [`PeerLockReply`] with the id of the request it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLockAnswer {
    /// The request's id.
    pub id: u64,
    /// The reply.
    pub reply: PeerLockReply,
}

/// Check a lock name: 1 to [`MAX_NAME`] bytes, no whitespace or control characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a lock name cannot be empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("a lock name is at most {MAX_NAME} bytes"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "lock name `{}` has spaces or control characters",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// An owner description made safe to store and show: control characters become spaces, and
/// it is cut to [`MAX_OWNER`] bytes.
pub fn clean_owner(owner: &str) -> String {
    let mut out = String::with_capacity(owner.len().min(MAX_OWNER));
    for c in owner.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > MAX_OWNER {
            break;
        }
        out.push(c);
    }
    if out.trim().is_empty() {
        "an unnamed client".into()
    } else {
        out
    }
}

/// Seconds since 1970 as an RFC 3339 UTC time, as in the logs: `2026-05-01T10:00:03Z`.
pub fn format_time(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm), in u64/i64 arithmetic.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_time(1_777_629_603), "2026-05-01T10:00:03Z");
        assert_eq!(format_time(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn names_and_owners_are_checked() {
        assert!(check_name("app:apache").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME + 1)).is_err());
        assert_eq!(clean_owner("cllock\non node1"), "cllock on node1");
        assert_eq!(clean_owner(""), "an unnamed client");
        assert_eq!(clean_owner(&"é".repeat(200)).len(), MAX_OWNER);
    }

    #[test]
    fn messages_have_stable_json() {
        let request = LockRequest::Acquire { name: "n".into(), owner: "o".into(), wait: 3 };
        assert_eq!(
            serde_json::to_string(&request).expect("json"),
            r#"{"request":"acquire","name":"n","owner":"o","wait":3}"#
        );
        let reply = LockResponse::Held { name: "n".into(), by: "o".into(), since: 5 };
        assert_eq!(
            serde_json::to_string(&reply).expect("json"),
            r#"{"reply":"held","name":"n","by":"o","since":5}"#
        );
        let msg = PeerLockMsg { id: 1, request: PeerLockRequest::Bye };
        let back: PeerLockMsg =
            serde_json::from_str(&serde_json::to_string(&msg).expect("json")).expect("parsed");
        assert_eq!(back, msg);
    }
}
