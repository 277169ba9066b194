//! DRBD, the replication of each application's data (ARCHITECTURE.md §4b): the resource file
//! ([`conf`]), the event stream ([`events`]), the commands ([`adm`]) and what DRBD hands its
//! handlers ([`handler`]).
//!
//! Target: the DRBD 8.4 kernel driver (Debian 12's stock kernel has 8.4.11) driven by
//! drbd-utils 9.x, whose `drbdadm`/`drbdsetup` dispatch to their 8.4 backends. One resource per
//! replicated volume, one volume (0) per resource. The drivers do what they are told and report
//! DRBD's answers as types; the decisions (what may be promoted, what the fence-peer handler
//! answers) are cl-core's (`cl_core::storage`).

pub mod adm;
pub mod conf;
pub mod events;
pub mod handler;

pub use adm::{
    drbd_version, kernel_has_drbd, outdate_answer, Drbd, Events2Reader, Events2Stopper, UpOutcome,
};
pub use conf::{render, AfterSplitBrain, ConfError, Fencing, NodeEndpoint, ResourceSpec};
pub use events::{Event2, Events2};
pub use handler::{handler_env, HandlerContext};

use cl_core::storage::DiskState;

use crate::tool::CommandFailure;

/// Why a DRBD operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrbdError {
    /// A command failed: its command line, how it ended, its stderr.
    #[error(transparent)]
    Command(#[from] CommandFailure),
    /// The resource is not in DRBD's configuration on this node.
    #[error("DRBD resource {resource} is not defined in /etc/drbd.conf (or the files it includes) for this host: {failure}")]
    NotDefined {
        /// The resource.
        resource: String,
        /// The command that said so.
        failure: CommandFailure,
    },
    /// Not a resource name this driver passes to the tools.
    #[error("{0:?} is not a valid DRBD resource name (1–128 letters, digits, `.`, `_`, `-`, not starting with `-`)")]
    BadName(String),
    /// [`Drbd::create_md`] found metadata already: creating new metadata would throw away the
    /// copy's generation identifiers (which say whose data is newer).
    #[error("DRBD resource {resource}: its backing device already holds DRBD metadata; refusing to create new metadata over it (wipe it deliberately with `drbdadm wipe-md {resource}` if this copy must be discarded)")]
    MetadataExists {
        /// The resource.
        resource: String,
    },
    /// `drbdadm outdate` succeeded but the disk is not Outdated (connected to the peer, so DRBD
    /// negotiated the disk state and did nothing).
    #[error(
        "DRBD resource {resource}: outdate left the disk {disk} (still connected to the peer?)"
    )]
    NotOutdated {
        /// The resource.
        resource: String,
        /// The disk state read back.
        disk: DiskState,
    },
    /// A command's output was not what DRBD prints.
    #[error("`{command}`: unexpected output: {problem}")]
    Output {
        /// The command line.
        command: String,
        /// What was wrong with it.
        problem: String,
    },
}

impl DrbdError {
    /// DRBD refused to promote because the peer's copy was not known to be Outdated (state
    /// change error -7, "peer is not outdated"): the promotion began while DRBD still counted
    /// the dead peer as connected, and the fence-peer handler answered only as that connection
    /// broke. The same promotion may succeed once the handler's answer is recorded.
    pub fn peer_not_outdated(&self) -> bool {
        matches!(self, DrbdError::Command(failure) if failure.stderr.contains("(-7)"))
    }
}

/// Refuses names the tools could misread (options, spaces, shell characters).
pub(crate) fn check_resource_name(res: &str) -> Result<(), DrbdError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if res.is_empty() || res.len() > 128 || res.starts_with('-') || !res.chars().all(ok) {
        return Err(DrbdError::BadName(res.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
