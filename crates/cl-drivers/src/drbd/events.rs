//! The parser of `drbdsetup events2` (DRBD 8.4 kernel, drbd-utils 9.x), keeping each resource's
//! [`VolumeState`].
//!
//! A line is `[<timestamp>] <verb> <object> key:value…` with verb `exists`, `create`, `change`,
//! `destroy`, `call` or `response`, and object `resource`, `connection`, `device`,
//! `peer-device` or `helper`. `exists -` ends the initial dump. A `change` line carries only
//! the keys that changed. Seen on DRBD 8.4.11 (see testdata/):
//! - `drbdadm disconnect` (and a split brain) ends with `connection:StandAlone`, then
//!   `destroy peer-device` and `destroy connection`: the resource stays, StandAlone.
//! - `drbdadm down` destroys the device, then the resource.
//! - Helpers: `call helper name:r0 … helper:fence-peer` and `response helper … status:N`.
//!   After an unresolved split brain: `connection:Connected`, `call helper … helper:split-brain`,
//!   then StandAlone. `initial-split-brain` is called for every split brain, resolved or not,
//!   so only `split-brain` marks the volume. 8.4.11 also calls `unfence-peer` on the resync
//!   source after a resync.
//! - No statistics are emitted during a resync: sample [`super::Drbd::snapshot`] for progress.
//!
//! One volume per resource: lines about other volumes than 0 are ignored. Lines are treated as
//! untrusted: anything unknown is ignored, nothing panics.

use std::collections::BTreeMap;

use cl_core::storage::{ConnectionState, DiskState, ReplicationState, Role, VolumeState};

/// What one line changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event2 {
    /// The state of this resource changed (or was first reported).
    Changed(String),
    /// This resource was taken down: it is no longer known.
    Removed(String),
    /// The initial dump (`exists` lines) is complete: the states now are a full snapshot.
    InitialDone,
    /// DRBD called a handler (`status: None`), or it returned (`status: Some(exit status)`).
    Helper {
        /// The resource.
        name: String,
        /// The handler (`fence-peer`, `split-brain`, `after-resync-target`, …).
        helper: String,
        /// `None` for the call, the exit status for the response.
        status: Option<i32>,
    },
    /// Nothing this parser keeps (another volume, an unknown object, a malformed line).
    Ignored,
}

/// The state of every resource, kept from the lines of `drbdsetup events2`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events2 {
    volumes: BTreeMap<String, VolumeState>,
    initial_done: bool,
}

impl Events2 {
    /// No resources known yet.
    pub fn new() -> Events2 {
        Events2::default()
    }

    /// Every known resource's state, by resource name.
    pub fn volumes(&self) -> &BTreeMap<String, VolumeState> {
        &self.volumes
    }

    /// The states, taken.
    pub fn into_volumes(self) -> BTreeMap<String, VolumeState> {
        self.volumes
    }

    /// One resource's state.
    pub fn get(&self, name: &str) -> Option<&VolumeState> {
        self.volumes.get(name)
    }

    /// Whether `exists -` was seen (the states are complete).
    pub fn initial_done(&self) -> bool {
        self.initial_done
    }

    /// Takes one line (with or without its newline) and says what changed.
    pub fn handle_line(&mut self, line: &str) -> Event2 {
        let mut words = line.split_whitespace().peekable();
        // An optional timestamp first (`--timestamps`): it starts with a digit, verbs do not.
        if words.peek().is_some_and(|w| w.starts_with(|c: char| c.is_ascii_digit())) {
            words.next();
        }
        let (Some(verb), Some(object)) = (words.next(), words.next()) else {
            return Event2::Ignored;
        };
        if verb == "exists" && object == "-" {
            self.initial_done = true;
            return Event2::InitialDone;
        }
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for word in words {
            if let Some((k, v)) = word.split_once(':') {
                // The first occurrence wins: a repeated key is not DRBD's doing.
                fields.entry(k).or_insert(v);
            }
        }
        let Some(name) = fields.get("name").copied().filter(|n| !n.is_empty()) else {
            return Event2::Ignored;
        };
        let name = name.to_string();
        match (verb, object) {
            ("call" | "response", "helper") => self.helper(name, verb, &fields),
            ("exists" | "create" | "change" | "destroy", _) => {
                self.object(name, verb == "destroy", object, &fields)
            }
            _ => Event2::Ignored,
        }
    }

    fn helper(&mut self, name: String, verb: &str, fields: &BTreeMap<&str, &str>) -> Event2 {
        let Some(helper) = fields.get("helper").map(|h| h.to_string()) else {
            return Event2::Ignored;
        };
        if fields.get("volume").is_some_and(|v| *v != "0") {
            return Event2::Ignored;
        }
        let status = if verb == "response" {
            match fields.get("status").and_then(|s| s.parse::<i32>().ok()) {
                Some(status) => Some(status),
                None => return Event2::Ignored,
            }
        } else {
            None
        };
        if verb == "call" && helper == "split-brain" {
            if let Some(v) = self.volumes.get_mut(&name) {
                v.split_brain = true;
            }
        }
        Event2::Helper { name, helper, status }
    }

    fn object(
        &mut self,
        name: String,
        destroy: bool,
        object: &str,
        fields: &BTreeMap<&str, &str>,
    ) -> Event2 {
        let volume_zero = fields.get("volume").is_none_or(|v| *v == "0");
        match object {
            "resource" if destroy => {
                return match self.volumes.remove(&name) {
                    Some(_) => Event2::Removed(name),
                    None => Event2::Ignored,
                };
            }
            "resource" | "connection" => {}
            "device" | "peer-device" if volume_zero => {}
            _ => return Event2::Ignored,
        }
        // A line about a part of a resource that was never reported creates it (a reader that
        // started late, or lines out of order): better a partial state than none.
        let v = self.volumes.entry(name.clone()).or_default();
        let get = |k: &str| fields.get(k).copied();
        match (object, destroy) {
            ("resource", _) => {
                if let Some(role) = get("role") {
                    v.role = Role::parse(role);
                }
                if let Some(s) = get("suspended") {
                    // 8.4: no, user, no-data, fencing (and combinations).
                    v.suspended = s != "no";
                }
            }
            ("connection", false) => {
                if let Some(c) = get("connection") {
                    v.connection = ConnectionState::parse(c);
                    if v.connection == ConnectionState::Connected {
                        // A new connection handshake: a split brain is either found again
                        // (the helper is called after this line) or gone.
                        v.split_brain = false;
                    }
                }
                if let Some(role) = get("role") {
                    v.peer_role = Role::parse(role);
                }
            }
            ("connection", true) => {
                // After `disconnect` or a split brain: the resource is StandAlone.
                v.connection = ConnectionState::StandAlone;
                v.peer_role = Role::Unknown;
            }
            ("device", false) => {
                if let Some(d) = get("disk") {
                    v.disk = DiskState::parse(d);
                }
                if let Some(size) = get("size").and_then(|s| s.parse().ok()) {
                    v.size_kib = size;
                }
            }
            ("device", true) => {
                v.disk = DiskState::Unknown;
                v.size_kib = 0;
            }
            ("peer-device", false) => {
                if let Some(r) = get("replication") {
                    v.replication = ReplicationState::parse(r);
                }
                if let Some(d) = get("peer-disk") {
                    v.peer_disk = DiskState::parse(d);
                }
                if let Some(oos) = get("out-of-sync").and_then(|s| s.parse().ok()) {
                    v.out_of_sync_kib = oos;
                }
            }
            ("peer-device", true) => {
                v.replication = ReplicationState::Off;
                v.peer_disk = DiskState::DUnknown;
            }
            _ => {}
        }
        Event2::Changed(name)
    }
}

/// Parses a whole `drbdsetup events2 --now` output into the states (for snapshots and tests).
pub fn parse_snapshot(text: &str) -> (BTreeMap<String, VolumeState>, bool) {
    let mut events = Events2::new();
    for line in text.lines() {
        events.handle_line(line);
    }
    let done = events.initial_done();
    (events.into_volumes(), done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The brief's fixture: an initial dump, then `primary --force` and the initial sync.
    const INITIAL_SYNC: &str = "\
exists resource name:r0 role:Secondary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connecting role:Unknown congested:no
exists device name:r0 volume:0 minor:0 disk:Inconsistent size:65496 read:0 written:0 al-writes:8 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:yes blocked:no
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Off peer-disk:DUnknown resync-suspended:no received:0 sent:0 out-of-sync:65496 pending:0 unacked:0
exists -
2026-12-06T19:42:05.328098+00:00 change resource name:r0 role:Primary
2026-12-06T19:42:05.328098+00:00 change device name:r0 volume:0 minor:0 disk:UpToDate size:65496 read:0 written:0 al-writes:8 bm-writes:0 upper-pending:0 lower-pending:0
2026-12-06T19:42:05.346106+00:00 change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:WFBitMapS received:0 sent:0 out-of-sync:65496 pending:0 unacked:0
2026-12-06T19:42:05.350621+00:00 call helper name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 helper:before-resync-source
2026-12-06T19:42:05.448099+00:00 response helper name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 helper:before-resync-source status:0
2026-12-06T19:42:05.449538+00:00 change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:SyncSource received:0 sent:0 out-of-sync:65496 pending:0 unacked:0
2026-12-06T19:42:07.351686+00:00 change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Established peer-disk:UpToDate received:0 sent:65496 out-of-sync:0 pending:0 unacked:0
";

    /// Recorded on DRBD 8.4.11 guests: vm1 Primary; link cut (fence-peer), reconnect and resync
    /// (unfence-peer), link cut, vm2 forced Primary, both write, link up: split brain.
    const VM1: &str = include_str!("testdata/events2-vm1-fence-splitbrain.log");
    /// The same run seen from vm2 (Secondary, resync target, then forced Primary).
    const VM2: &str = include_str!("testdata/events2-vm2-fence-splitbrain.log");

    fn feed(events: &mut Events2, text: &str) -> Vec<Event2> {
        text.lines().map(|l| events.handle_line(l)).collect()
    }

    #[test]
    fn the_initial_dump_then_the_initial_sync() {
        let mut ev = Events2::new();
        let out = feed(&mut ev, INITIAL_SYNC);
        assert_eq!(out[..4], vec![Event2::Changed("r0".into()); 4][..]);
        assert_eq!(out[4], Event2::InitialDone);
        assert!(ev.initial_done());
        assert_eq!(
            out[8],
            Event2::Helper {
                name: "r0".into(),
                helper: "before-resync-source".into(),
                status: None
            }
        );
        assert_eq!(
            out[9],
            Event2::Helper {
                name: "r0".into(),
                helper: "before-resync-source".into(),
                status: Some(0)
            }
        );
        let v = ev.get("r0").expect("r0");
        assert_eq!(
            *v,
            VolumeState {
                role: Role::Primary,
                peer_role: Role::Unknown,
                disk: DiskState::UpToDate,
                peer_disk: DiskState::UpToDate,
                connection: ConnectionState::Connecting,
                replication: ReplicationState::Established,
                suspended: false,
                size_kib: 65496,
                out_of_sync_kib: 0,
                split_brain: false,
            }
        );
    }

    #[test]
    fn the_state_during_the_initial_dump_and_the_resync() {
        let mut ev = Events2::new();
        let lines: Vec<&str> = INITIAL_SYNC.lines().collect();
        for l in &lines[..5] {
            ev.handle_line(l);
        }
        let v = ev.get("r0").expect("r0").clone();
        assert_eq!((v.disk, v.peer_disk), (DiskState::Inconsistent, DiskState::DUnknown));
        assert_eq!((v.size_kib, v.out_of_sync_kib), (65496, 65496));
        for l in &lines[5..11] {
            ev.handle_line(l);
        }
        let v = ev.get("r0").expect("r0");
        assert_eq!(v.replication, ReplicationState::SyncSource);
        assert!(v.replication.resyncing());
    }

    #[test]
    fn connection_loss_then_reconnect() {
        let mut ev = Events2::new();
        feed(&mut ev, INITIAL_SYNC);
        ev.handle_line("change connection name:r0 connection:Connected role:Secondary");
        assert_eq!(ev.get("r0").map(|v| v.peer_role), Some(Role::Secondary));
        let out = ev.handle_line("change connection name:r0 connection:Connecting role:Unknown");
        assert_eq!(out, Event2::Changed("r0".into()));
        ev.handle_line(
            "change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Off peer-disk:DUnknown",
        );
        let v = ev.get("r0").expect("r0");
        assert_eq!(v.connection, ConnectionState::Connecting);
        assert_eq!((v.peer_role, v.peer_disk), (Role::Unknown, DiskState::DUnknown));
        assert_eq!(v.replication, ReplicationState::Off);
        // 8.4's transient names.
        ev.handle_line("change connection name:r0 connection:NetworkFailure role:Unknown");
        assert_eq!(ev.get("r0").map(|v| v.connection), Some(ConnectionState::NetworkFailure));
        ev.handle_line("change connection name:r0 connection:Unconnected");
        assert_eq!(ev.get("r0").map(|v| v.connection), Some(ConnectionState::Connecting));
    }

    #[test]
    fn a_recorded_fence_resync_and_split_brain_on_the_primary() {
        let mut ev = Events2::new();
        let out = feed(&mut ev, VM1);
        let helpers: Vec<(String, Option<i32>)> = out
            .iter()
            .filter_map(|e| match e {
                Event2::Helper { helper, status, .. } => Some((helper.clone(), *status)),
                _ => None,
            })
            .collect();
        let calls: Vec<&str> =
            helpers.iter().filter(|h| h.1.is_none()).map(|h| h.0.as_str()).collect();
        assert_eq!(
            calls,
            [
                "fence-peer",
                "before-resync-source",
                "unfence-peer",
                "fence-peer",
                "initial-split-brain",
                "split-brain",
                "fence-peer"
            ]
        );
        let v = ev.get("r0").expect("r0");
        assert!(v.split_brain);
        assert_eq!(v.connection, ConnectionState::StandAlone);
        assert_eq!((v.role, v.disk), (Role::Primary, DiskState::UpToDate));
        assert_eq!((v.peer_role, v.peer_disk), (Role::Unknown, DiskState::DUnknown));
        // Resolution: the next connection clears the mark.
        ev.handle_line(
            "change connection name:r0 peer-node-id:0 conn-name:peer connection:Connected",
        );
        assert!(!ev.get("r0").expect("r0").split_brain);
    }

    #[test]
    fn a_recorded_resync_target_then_split_brain_on_the_other_node() {
        let mut ev = Events2::new();
        let lines: Vec<&str> = VM2.lines().collect();
        // Up to the end of the resync towards vm2: its disk went Outdated → Inconsistent → UpToDate.
        let end_of_resync = lines
            .iter()
            .position(|l| l.contains("helper:after-resync-target status:0"))
            .expect("after-resync-target in the recording");
        let mut seen_target = false;
        for l in &lines[..end_of_resync] {
            ev.handle_line(l);
            seen_target |= ev.get("r0").is_some_and(|v| {
                v.replication == ReplicationState::SyncTarget && v.disk == DiskState::Inconsistent
            });
        }
        assert!(seen_target);
        for l in &lines[end_of_resync..] {
            ev.handle_line(l);
        }
        let v = ev.get("r0").expect("r0");
        assert!(v.split_brain);
        assert_eq!((v.role, v.connection), (Role::Primary, ConnectionState::StandAlone));
    }

    #[test]
    fn split_brain_helper_then_standalone_then_down() {
        let mut ev = Events2::new();
        feed(&mut ev, INITIAL_SYNC);
        let out = ev.handle_line(
            "call helper name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 helper:split-brain",
        );
        assert_eq!(
            out,
            Event2::Helper { name: "r0".into(), helper: "split-brain".into(), status: None }
        );
        ev.handle_line(
            "change connection name:r0 peer-node-id:0 conn-name:peer connection:StandAlone",
        );
        ev.handle_line("destroy peer-device name:r0 peer-node-id:0 conn-name:peer volume:0");
        ev.handle_line("destroy connection name:r0 peer-node-id:0 conn-name:peer");
        let v = ev.get("r0").expect("r0");
        assert!(v.split_brain && v.connection == ConnectionState::StandAlone);
        assert_eq!(v.replication, ReplicationState::Off);
        // initial-split-brain alone (an automatically resolved one) marks nothing.
        let mut other = Events2::new();
        feed(&mut other, INITIAL_SYNC);
        other.handle_line("call helper name:r0 volume:0 minor:0 helper:initial-split-brain");
        assert!(!other.get("r0").expect("r0").split_brain);
        // Down: the device, then the resource.
        assert_eq!(
            ev.handle_line("destroy device name:r0 volume:0 minor:0"),
            Event2::Changed("r0".into())
        );
        assert_eq!(ev.get("r0").map(|v| v.disk), Some(DiskState::Unknown));
        assert_eq!(ev.handle_line("destroy resource name:r0"), Event2::Removed("r0".into()));
        assert!(ev.get("r0").is_none());
        assert_eq!(ev.handle_line("destroy resource name:r0"), Event2::Ignored);
    }

    #[test]
    fn suspension_and_other_volumes() {
        let mut ev = Events2::new();
        feed(&mut ev, INITIAL_SYNC);
        ev.handle_line("change resource name:r0 suspended:fencing");
        assert!(ev.get("r0").expect("r0").suspended);
        ev.handle_line("change resource name:r0 suspended:no");
        assert!(!ev.get("r0").expect("r0").suspended);
        let out = ev.handle_line("change device name:r0 volume:1 minor:7 disk:Failed");
        assert_eq!(out, Event2::Ignored);
        assert_eq!(ev.get("r0").map(|v| v.disk), Some(DiskState::UpToDate));
        // A second resource is kept apart.
        ev.handle_line("create resource name:r1 role:Secondary suspended:no");
        ev.handle_line("create device name:r1 volume:0 minor:1 disk:Diskless size:0");
        assert_eq!(ev.volumes().len(), 2);
        assert_eq!(ev.get("r1").map(|v| v.disk), Some(DiskState::Diskless));
    }

    #[test]
    fn garbage_never_panics_and_is_ignored() {
        let mut ev = Events2::new();
        feed(&mut ev, INITIAL_SYNC);
        let before = ev.clone();
        for line in [
            "",
            "   ",
            "exists",
            "change",
            "2026-12-06T19:42:05 change",
            "change resource",
            "change resource role:Primary",
            "change resource name: role:Primary",
            "frobnicate resource name:r0 role:Primary",
            "change widget name:r0 disk:Failed",
            "response helper name:r0 helper:fence-peer status:abc",
            "call helper name:r0",
            "change peer-device name:r0 volume:x replication:SyncTarget",
            "\u{0}\u{fffd}\u{7f} name:r0 :: ::: name:::",
            "change device name:r0 volume:0 size:-5 size:18446744073709551616",
        ] {
            let out = ev.handle_line(line);
            assert!(matches!(out, Event2::Ignored | Event2::Changed(_)), "{line:?} gave {out:?}");
        }
        assert_eq!(ev.get("r0"), before.get("r0"), "nothing changed");
        // Unknown values map to the unknown states, without panicking.
        ev.handle_line("change device name:r0 volume:0 disk:Frobbed");
        assert_eq!(ev.get("r0").map(|v| v.disk), Some(DiskState::Unknown));
        // Huge lines are fine.
        let long = format!("change resource name:{} role:Primary", "x".repeat(100_000));
        assert!(matches!(ev.handle_line(&long), Event2::Changed(_)));
    }

    #[test]
    fn a_snapshot_is_parsed_whole() {
        let dump: String = INITIAL_SYNC.lines().take(5).map(|l| format!("{l}\n")).collect();
        let (states, done) = parse_snapshot(&dump);
        assert!(done);
        assert_eq!(states.len(), 1);
        assert_eq!(states["r0"].out_of_sync_kib, 65496);
        let (_, done) = parse_snapshot("exists resource name:r0 role:Secondary\n");
        assert!(!done, "cut short");
    }
}
