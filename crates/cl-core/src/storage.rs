//! Replicated storage (DRBD): the state of each replicated volume as DRBD reports it, and the
//! rules that decide whether this node's copy may be promoted, what DRBD's `fence-peer` handler
//! answers, and which alarms an administrator must see.
//!
//! DRBD itself keeps the data and the generation identifiers that say which copy is newer; the
//! shell reads its event stream (`drbdsetup events2`) and reports each volume's state here. The
//! rules are deliberately conservative: a copy is promotable only when DRBD calls it `UpToDate`
//! and no split brain is pending. A `Consistent` copy (a node that restarted while its peer was
//! away) may be older than the peer's, so it is never promoted automatically: that is how the
//! classic sequence "A fails, B runs and writes, B fails, A comes back alone" ends with A
//! refusing to start rather than serving stale data.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A DRBD role (of this node, or of the peer as this node sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Role {
    /// Writable, the filesystem may be mounted.
    Primary,
    /// Receives replication, not writable.
    Secondary,
    /// Not known (the peer is not connected, or the resource is not up).
    #[default]
    Unknown,
}

/// A DRBD disk state (DRBD 8.4 / 9 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DiskState {
    /// No local disk attached.
    Diskless,
    /// Being attached.
    Attaching,
    /// Being detached.
    Detaching,
    /// An I/O error detached it.
    Failed,
    /// Handshake in progress.
    Negotiating,
    /// Partly written (a resync target, or never synchronised).
    Inconsistent,
    /// Known to be older than the peer's copy (fenced by the peer).
    Outdated,
    /// The peer's disk, not known (not connected).
    #[serde(rename = "DUnknown")]
    DUnknown,
    /// Consistent, but whether it is the newest copy is not known (no peer to compare with).
    Consistent,
    /// The newest copy.
    UpToDate,
    /// The resource is not up, or nothing was reported yet.
    #[default]
    Unknown,
}

/// The connection to the peer (events2 `connection:`; 8.4's extra names map to the closest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ConnectionState {
    /// Not trying to connect (after `disconnect`, or after a split brain was detected).
    StandAlone,
    /// Trying to reach the peer (8.4: WFConnection, Unconnected, …).
    Connecting,
    /// Connected.
    Connected,
    /// Going down.
    Disconnecting,
    /// Lost: timeout, broken pipe, network failure (transient before Connecting).
    NetworkFailure,
    /// A protocol error.
    ProtocolError,
    /// Not reported yet.
    #[default]
    Unknown,
}

/// The replication state towards the peer (events2 `replication:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ReplicationState {
    /// No replication (not connected).
    #[default]
    Off,
    /// Replicating every write.
    Established,
    /// Resync: this node sends.
    SyncSource,
    /// Resync: this node receives (its disk is Inconsistent until done).
    SyncTarget,
    /// Resync paused, this node sends.
    PausedSyncSource,
    /// Resync paused, this node receives.
    PausedSyncTarget,
    /// Preparing a resync (bitmap exchange, UUIDs).
    Starting,
    /// Online verify.
    Verifying,
    /// Congestion mode (Ahead/Behind).
    AheadBehind,
}

impl Role {
    /// From DRBD's name.
    pub fn parse(s: &str) -> Role {
        match s {
            "Primary" => Role::Primary,
            "Secondary" => Role::Secondary,
            _ => Role::Unknown,
        }
    }
}

impl DiskState {
    /// From DRBD's name.
    pub fn parse(s: &str) -> DiskState {
        match s {
            "Diskless" => DiskState::Diskless,
            "Attaching" => DiskState::Attaching,
            "Detaching" => DiskState::Detaching,
            "Failed" => DiskState::Failed,
            "Negotiating" => DiskState::Negotiating,
            "Inconsistent" => DiskState::Inconsistent,
            "Outdated" => DiskState::Outdated,
            "DUnknown" => DiskState::DUnknown,
            "Consistent" => DiskState::Consistent,
            "UpToDate" => DiskState::UpToDate,
            _ => DiskState::Unknown,
        }
    }
}

impl ConnectionState {
    /// From DRBD's name (9's events2 names and 8.4's `cs:` names).
    pub fn parse(s: &str) -> ConnectionState {
        match s {
            "StandAlone" => ConnectionState::StandAlone,
            "Connecting" | "WFConnection" | "Unconnected" | "WFReportParams" => {
                ConnectionState::Connecting
            }
            "Connected" => ConnectionState::Connected,
            "Disconnecting" | "TearDown" => ConnectionState::Disconnecting,
            "Timeout" | "BrokenPipe" | "NetworkFailure" => ConnectionState::NetworkFailure,
            "ProtocolError" => ConnectionState::ProtocolError,
            _ => ConnectionState::Unknown,
        }
    }
}

impl ReplicationState {
    /// From DRBD's name.
    pub fn parse(s: &str) -> ReplicationState {
        match s {
            "Established" | "Connected" => ReplicationState::Established,
            "SyncSource" => ReplicationState::SyncSource,
            "SyncTarget" => ReplicationState::SyncTarget,
            "PausedSyncS" => ReplicationState::PausedSyncSource,
            "PausedSyncT" => ReplicationState::PausedSyncTarget,
            "StartingSyncS" | "StartingSyncT" | "WFBitMapS" | "WFBitMapT" | "WFSyncUUID" => {
                ReplicationState::Starting
            }
            "VerifyS" | "VerifyT" => ReplicationState::Verifying,
            "Ahead" | "Behind" => ReplicationState::AheadBehind,
            _ => ReplicationState::Off,
        }
    }

    /// A resync is under way (or paused) in either direction.
    pub fn resyncing(self) -> bool {
        matches!(
            self,
            ReplicationState::SyncSource
                | ReplicationState::SyncTarget
                | ReplicationState::PausedSyncSource
                | ReplicationState::PausedSyncTarget
                | ReplicationState::Starting
        )
    }
}

macro_rules! display_as_debug {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
display_as_debug!(Role, DiskState, ConnectionState, ReplicationState);

/// One replicated volume (one DRBD resource with one volume) as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VolumeState {
    /// This node's role.
    pub role: Role,
    /// The peer's role.
    pub peer_role: Role,
    /// This node's disk.
    pub disk: DiskState,
    /// The peer's disk.
    pub peer_disk: DiskState,
    /// The connection to the peer.
    pub connection: ConnectionState,
    /// The replication towards the peer.
    pub replication: ReplicationState,
    /// I/O is suspended (frozen while the fence-peer handler runs, or after it failed).
    pub suspended: bool,
    /// Size of the replicated device, KiB.
    pub size_kib: u64,
    /// Data not yet in sync with the peer, KiB.
    pub out_of_sync_kib: u64,
    /// DRBD found a split brain (both sides wrote while apart) and did not resolve it.
    pub split_brain: bool,
}

/// Why this node's copy of a volume may not be promoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotPromotable {
    /// The resource is not up here, or DRBD reported nothing yet.
    NotUp,
    /// No local disk (detached after an I/O error, or never attached).
    NoDisk,
    /// The copy is being written by a resync, or was never synchronised.
    Inconsistent {
        /// A resync towards this node is under way.
        resyncing: bool,
    },
    /// The peer marked this copy older than its own.
    Outdated,
    /// Consistent, but the peer (possibly newer) is not connected to compare with.
    MaybeStale,
    /// Both copies were written while apart: the administrator must choose one.
    SplitBrain,
    /// Replication is switched off (StandAlone: after a split brain, or a manual disconnect):
    /// whether the peer wrote meanwhile cannot be known.
    StandAlone,
}

impl fmt::Display for NotPromotable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotPromotable::NotUp => "the replicated volume is not up on this node",
            NotPromotable::NoDisk => "this node has no local disk for it (diskless)",
            NotPromotable::Inconsistent { resyncing: true } => {
                "this node's copy is being resynchronised (Inconsistent until the resync ends)"
            }
            NotPromotable::Inconsistent { resyncing: false } => {
                "this node's copy is Inconsistent (never synchronised, or a resync was cut short)"
            }
            NotPromotable::Outdated => "this node's copy is Outdated: the peer has newer data",
            NotPromotable::MaybeStale => {
                "this node's copy may be stale: it is Consistent but the peer, which may hold newer data, is not connected"
            }
            NotPromotable::SplitBrain => {
                "split brain: both copies were written while apart; choose the copy to keep"
            }
            NotPromotable::StandAlone => {
                "replication is switched off (StandAlone, after a split brain or a manual disconnect): the peer may have written meanwhile; reconnect (drbdadm connect) or resolve the split brain"
            }
        })
    }
}

/// Whether this node's copy may be made Primary (and the application started on it).
///
/// Only `UpToDate` data is promotable: DRBD calls a copy UpToDate when it is connected to an
/// UpToDate peer, when it was UpToDate when the connection was lost, or when the peer was
/// marked Outdated (fenced). A volume that is already Primary here stays promotable so that a
/// restart of the shell does not stop a running application.
pub fn promotable(volume: &VolumeState) -> Result<(), NotPromotable> {
    // After a split brain the copy in use stays in use (it is what clients see); the other
    // waits for the administrator's choice.
    if volume.role != Role::Primary {
        if volume.split_brain {
            return Err(NotPromotable::SplitBrain);
        }
        // Also after a cldaemon restart that missed DRBD's split-brain event.
        if volume.connection == ConnectionState::StandAlone {
            return Err(NotPromotable::StandAlone);
        }
    }
    match volume.disk {
        DiskState::UpToDate => Ok(()),
        // Running diskless on the peer's copy (after a local disk failure, DRBD detaches it:
        // Failed, Detaching, then Diskless): the data is the peer's, current while connected.
        // The events that report it may come in any order, so the peer's disk is not required
        // to read UpToDate in the same instant; a running application must not be stopped by
        // that.
        DiskState::Diskless | DiskState::Failed | DiskState::Detaching
            if volume.role == Role::Primary && volume.connection == ConnectionState::Connected =>
        {
            Ok(())
        }
        DiskState::Unknown => Err(NotPromotable::NotUp),
        DiskState::Diskless | DiskState::Failed | DiskState::Attaching | DiskState::Detaching => {
            Err(NotPromotable::NoDisk)
        }
        DiskState::Inconsistent | DiskState::Negotiating => {
            Err(NotPromotable::Inconsistent { resyncing: volume.replication.resyncing() })
        }
        DiskState::Outdated => Err(NotPromotable::Outdated),
        DiskState::Consistent | DiskState::DUnknown => Err(NotPromotable::MaybeStale),
    }
}

/// The data verdict of a whole application: every volume promotable, or the first reason why not
/// (with the volume's resource name).
pub fn app_promotable<'a>(
    volumes: impl IntoIterator<Item = (&'a str, Option<&'a VolumeState>)>,
) -> Result<(), (String, NotPromotable)> {
    for (resource, state) in volumes {
        match state {
            None => return Err((resource.to_string(), NotPromotable::NotUp)),
            Some(state) => promotable(state).map_err(|why| (resource.to_string(), why))?,
        }
    }
    Ok(())
}

/// What the cluster knows about the peer when DRBD asks to fence it (its `fence-peer` handler
/// runs when this node is, or becomes, Primary without a connection to the peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStanding {
    /// Alive in the membership: its copy can be outdated through the cluster.
    Up,
    /// Declared down, and the takeover guard let this node take its applications over: it holds
    /// nothing (fenced, or the lease or the timing argument proves it stopped).
    Gone {
        /// Powered off by a fence device.
        fenced: bool,
    },
    /// Not decided yet (suspect, or down but the guard still holds the takeover back).
    Undecided,
}

/// What the fence-peer handler must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceStep {
    /// Ask the peer, through the cluster, to mark its copy Outdated.
    AskPeerToOutdate,
    /// Answer DRBD now.
    Answer(FenceAnswer),
    /// Ask again once the membership or the guard has decided.
    Wait,
}

/// The fence-peer handler's answers, as DRBD defines its exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FenceAnswer {
    /// 3: the peer's disk was already Inconsistent.
    PeerInconsistent,
    /// 4: the peer's disk is now Outdated.
    PeerOutdated,
    /// 5: the peer is unreachable and the cluster established it is gone.
    PeerUnreachable,
    /// 6: the peer refused: it is Primary (this node outdates itself).
    PeerIsPrimary,
    /// 7: the peer was fenced (powered off).
    PeerFenced,
    /// Anything else: DRBD keeps I/O frozen (resource-and-stonith) until the administrator acts.
    Failed,
}

impl FenceAnswer {
    /// The handler's exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            FenceAnswer::PeerInconsistent => 3,
            FenceAnswer::PeerOutdated => 4,
            FenceAnswer::PeerUnreachable => 5,
            FenceAnswer::PeerIsPrimary => 6,
            FenceAnswer::PeerFenced => 7,
            FenceAnswer::Failed => 1,
        }
    }
}

/// The fence-peer rule: a peer that is alive is asked to outdate its copy; one that the
/// membership and the takeover guard declared gone needs nothing (its copy stays behind, and
/// DRBD records it as Outdated here); otherwise wait for the cluster to decide. Never answer
/// "gone" for a peer the cluster still considers possibly alive: that would let two copies
/// diverge.
pub fn fence_peer_step(standing: PeerStanding) -> FenceStep {
    match standing {
        PeerStanding::Up => FenceStep::AskPeerToOutdate,
        PeerStanding::Gone { fenced: true } => FenceStep::Answer(FenceAnswer::PeerFenced),
        PeerStanding::Gone { fenced: false } => FenceStep::Answer(FenceAnswer::PeerUnreachable),
        PeerStanding::Undecided => FenceStep::Wait,
    }
}

/// The peer's reply to an outdate request, as the handler's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutdateReply {
    /// Its copy is Outdated now (or was already, or Inconsistent).
    Outdated,
    /// Its copy was Inconsistent: nothing to do.
    Inconsistent,
    /// It is Primary there: it refuses.
    Primary,
    /// It could not (the resource is not known there, drbdadm failed).
    Failed,
}

impl OutdateReply {
    /// What the handler answers DRBD.
    pub fn answer(self) -> FenceAnswer {
        match self {
            OutdateReply::Outdated => FenceAnswer::PeerOutdated,
            OutdateReply::Inconsistent => FenceAnswer::PeerInconsistent,
            OutdateReply::Primary => FenceAnswer::PeerIsPrimary,
            OutdateReply::Failed => FenceAnswer::Failed,
        }
    }
}

/// What to do about a failed local disk under a running application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFailureAction {
    /// Keep running diskless on the peer's copy; recommend a move.
    KeepRunning,
    /// Move the application to the peer (its copy is UpToDate).
    Move,
    /// Nothing to do (disk fine, or the application does not run here).
    Nothing,
}

/// The local disk of a volume failed while the application runs here (DRBD detached it):
/// with the `move` policy, and only when the peer's copy is UpToDate and connected, move.
pub fn on_disk_failure(volume: &VolumeState, move_policy: bool) -> DiskFailureAction {
    let failed = matches!(volume.disk, DiskState::Diskless | DiskState::Failed);
    if !failed || volume.role != Role::Primary {
        return DiskFailureAction::Nothing;
    }
    let peer_current =
        volume.connection == ConnectionState::Connected && volume.peer_disk == DiskState::UpToDate;
    if move_policy && peer_current {
        DiskFailureAction::Move
    } else {
        DiskFailureAction::KeepRunning
    }
}

/// Alarms and warnings about one volume, for clstat and the log.
pub fn volume_alarms(app: &str, resource: &str, volume: &VolumeState, local: &str) -> Vec<String> {
    let mut alarms = Vec::new();
    if volume.split_brain {
        alarms.push(format!(
            "{app}: data split brain on {resource}: both copies were written while apart; keep one with `clsplitbrain --application {app} --keep <node>` (the other node's changes since the split are discarded and it is resynchronised)"
        ));
    }
    if volume.role == Role::Primary
        && matches!(volume.disk, DiskState::Diskless | DiskState::Failed)
    {
        alarms.push(format!(
            "{app}: {local} lost its local disk under {resource} and runs diskless on the peer's copy; move the application (clswitchapp --application {app}) and replace the disk"
        ));
    }
    if volume.suspended {
        alarms.push(format!(
            "{app}: I/O on {resource} is frozen until the cluster outdates the peer's copy or confirms the peer gone"
        ));
    }
    alarms
}

/// Resync progress worked out from two samples of the out-of-sync amount.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResyncProgress {
    /// Percent in sync, 0–100.
    pub percent: f64,
    /// KiB per second over the last interval.
    pub rate_kib: u64,
    /// Seconds left at that rate, if it moves.
    pub eta_secs: Option<u64>,
}

/// Progress from the size, the out-of-sync amount now and `elapsed_ms` earlier.
pub fn resync_progress(
    size_kib: u64,
    out_of_sync_kib: u64,
    earlier_out_of_sync_kib: u64,
    elapsed_ms: u64,
) -> ResyncProgress {
    let percent = if size_kib == 0 {
        100.0
    } else {
        100.0 * (size_kib.saturating_sub(out_of_sync_kib)) as f64 / size_kib as f64
    };
    let done = earlier_out_of_sync_kib.saturating_sub(out_of_sync_kib);
    let rate_kib = done.saturating_mul(1000).checked_div(elapsed_ms).unwrap_or(0);
    let eta_secs = (rate_kib > 0).then(|| out_of_sync_kib.div_ceil(rate_kib));
    ResyncProgress { percent, rate_kib, eta_secs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected_secondary() -> VolumeState {
        VolumeState {
            role: Role::Secondary,
            peer_role: Role::Primary,
            disk: DiskState::UpToDate,
            peer_disk: DiskState::UpToDate,
            connection: ConnectionState::Connected,
            replication: ReplicationState::Established,
            size_kib: 1024,
            ..VolumeState::default()
        }
    }

    #[test]
    fn only_up_to_date_data_is_promotable() {
        assert_eq!(promotable(&connected_secondary()), Ok(()));
        for (disk, why) in [
            (DiskState::Consistent, NotPromotable::MaybeStale),
            (DiskState::Outdated, NotPromotable::Outdated),
            (DiskState::Inconsistent, NotPromotable::Inconsistent { resyncing: false }),
            (DiskState::Diskless, NotPromotable::NoDisk),
            (DiskState::Failed, NotPromotable::NoDisk),
            (DiskState::Unknown, NotPromotable::NotUp),
        ] {
            let v = VolumeState {
                disk,
                connection: ConnectionState::Connecting,
                ..connected_secondary()
            };
            assert_eq!(promotable(&v), Err(why), "{disk:?}");
        }
    }

    #[test]
    fn a_resync_target_says_so() {
        let v = VolumeState {
            disk: DiskState::Inconsistent,
            replication: ReplicationState::SyncTarget,
            ..connected_secondary()
        };
        assert_eq!(promotable(&v), Err(NotPromotable::Inconsistent { resyncing: true }));
    }

    #[test]
    fn a_split_brain_blocks_even_up_to_date_data() {
        let v = VolumeState {
            split_brain: true,
            connection: ConnectionState::StandAlone,
            ..connected_secondary()
        };
        assert_eq!(promotable(&v), Err(NotPromotable::SplitBrain));
        let unflagged = VolumeState { split_brain: false, ..v.clone() };
        assert_eq!(promotable(&unflagged), Err(NotPromotable::StandAlone));
        let in_use = VolumeState { role: Role::Primary, ..v };
        assert_eq!(promotable(&in_use), Ok(()), "the copy in use keeps running");
    }

    #[test]
    fn a_diskless_primary_on_a_current_peer_keeps_running() {
        let v = VolumeState {
            role: Role::Primary,
            peer_role: Role::Secondary,
            disk: DiskState::Diskless,
            ..connected_secondary()
        };
        assert_eq!(promotable(&v), Ok(()));
        assert_eq!(on_disk_failure(&v, false), DiskFailureAction::KeepRunning);
        assert_eq!(on_disk_failure(&v, true), DiskFailureAction::Move);
        let alone = VolumeState { connection: ConnectionState::Connecting, ..v };
        assert_eq!(on_disk_failure(&alone, true), DiskFailureAction::KeepRunning);
        assert_eq!(promotable(&alone), Err(NotPromotable::NoDisk));
    }

    #[test]
    fn fence_peer_never_calls_a_live_peer_gone() {
        assert_eq!(fence_peer_step(PeerStanding::Up), FenceStep::AskPeerToOutdate);
        assert_eq!(fence_peer_step(PeerStanding::Undecided), FenceStep::Wait);
        assert_eq!(
            fence_peer_step(PeerStanding::Gone { fenced: true }),
            FenceStep::Answer(FenceAnswer::PeerFenced)
        );
        assert_eq!(FenceAnswer::PeerFenced.exit_code(), 7);
        assert_eq!(OutdateReply::Outdated.answer().exit_code(), 4);
        assert_eq!(OutdateReply::Primary.answer().exit_code(), 6);
    }

    #[test]
    fn names_parse_from_both_drbd_generations() {
        assert_eq!(ConnectionState::parse("WFConnection"), ConnectionState::Connecting);
        assert_eq!(ConnectionState::parse("Connecting"), ConnectionState::Connecting);
        assert_eq!(ReplicationState::parse("PausedSyncT"), ReplicationState::PausedSyncTarget);
        assert_eq!(DiskState::parse("DUnknown"), DiskState::DUnknown);
        assert_eq!(DiskState::parse("bogus"), DiskState::Unknown);
        assert_eq!(Role::parse("Primary"), Role::Primary);
    }

    #[test]
    fn progress_has_rate_and_time_left() {
        let p = resync_progress(1000, 400, 600, 2000);
        assert!((p.percent - 60.0).abs() < 1e-9);
        assert_eq!(p.rate_kib, 100);
        assert_eq!(p.eta_secs, Some(4));
        assert_eq!(resync_progress(1000, 400, 400, 1000).eta_secs, None);
    }

    #[test]
    fn alarms_name_the_resolution() {
        let v = VolumeState { split_brain: true, ..connected_secondary() };
        let alarms = volume_alarms("web", "web-data", &v, "node1");
        assert!(alarms[0].contains("--keep <node>"), "{alarms:?}");
    }
}
