//! The commands against fake `drbdadm`/`drbdsetup` scripts that answer as DRBD 8.4.11 did on
//! the lab guests (exit statuses and messages recorded there).

use std::time::{Duration, Instant};

use cl_core::storage::{ConnectionState, DiskState, OutdateReply, Role};

use super::adm::{outdate_reply, proc_drbd_version};
use super::*;
use crate::tool::fake::FakeBin;
use crate::tool::Ending;

/// `drbdsetup events2 --now` with r0 up, in the given connection state.
fn events_now(connection: &str) -> String {
    format!(
        "exists resource name:r0 role:Secondary suspended:no write-ordering:flush\n\
         exists connection name:r0 peer-node-id:0 conn-name:peer connection:{connection} role:Unknown congested:no\n\
         exists device name:r0 volume:0 minor:0 disk:UpToDate size:65496 read:0 written:0 al-writes:0 bm-writes:0 upper-pending:0 lower-pending:0 al-suspended:no blocked:no\n\
         exists -\n"
    )
}

/// A fake drbdsetup whose `events2 --now` prints `text`.
fn drbdsetup_now(bin: &FakeBin, text: &str) {
    bin.tool("drbdsetup", &format!("cat <<'EOF'\n{text}EOF"));
}

/// A fake drbdadm that logs its arguments to `calls` and runs `body` (with `$1` the command).
fn drbdadm(bin: &FakeBin, body: &str) {
    let log = bin.0.join("calls");
    bin.tool("drbdadm", &format!("echo \"$*\" >> {}\n{body}", log.display()));
}

fn calls(bin: &FakeBin) -> Vec<String> {
    std::fs::read_to_string(bin.0.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn up_brings_a_down_resource_up_and_adjusts_an_up_one() {
    let bin = FakeBin::new("drbd-up");
    drbdadm(&bin, "exit 0");
    drbdsetup_now(&bin, "exists -\n");
    let drbd = Drbd::new(bin.tools());
    assert_eq!(drbd.up("r0").expect("up"), UpOutcome::BroughtUp);
    drbdsetup_now(&bin, &events_now("Connecting"));
    assert_eq!(drbd.up("r0").expect("adjust"), UpOutcome::Adjusted);
    assert_eq!(calls(&bin), ["up r0", "adjust r0"]);
}

#[test]
fn a_failed_up_is_taken_down_again() {
    let bin = FakeBin::new("drbd-up-fail");
    drbdadm(&bin, "[ \"$1\" = up ] && { echo 'No valid meta data found' >&2; exit 1; }; exit 0");
    drbdsetup_now(&bin, "exists -\n");
    let err = Drbd::new(bin.tools()).up("r0").expect_err("no metadata");
    assert_eq!(err.to_string(), "`drbdadm up r0` exited with status 1: No valid meta data found");
    assert_eq!(calls(&bin), ["up r0", "down r0"]);
}

#[test]
fn outdate_answers_are_mapped_and_read_back() {
    let bin = FakeBin::new("drbd-outdate");
    let drbd = Drbd::new(bin.tools());
    // A disconnected Primary: drbdsetup's SS_NO_UP_TO_DATE_DISK.
    drbdadm(&bin, "[ \"$1\" = outdate ] && exit 17; exit 0");
    assert_eq!(drbd.outdate("r0").expect("answer"), OutdateReply::Primary);
    // An Inconsistent disk: SS_LOWER_THAN_OUTDATED.
    drbdadm(&bin, "[ \"$1\" = outdate ] && exit 5; exit 0");
    assert_eq!(drbd.outdate("r0").expect("answer"), OutdateReply::Inconsistent);
    // Done: the disk reads Outdated (up: "Outdated/DUnknown"; down: drbdmeta's "Outdated").
    drbdadm(&bin, "[ \"$1\" = dstate ] && echo Outdated/DUnknown; exit 0");
    assert_eq!(drbd.outdate("r0").expect("answer"), OutdateReply::Outdated);
    drbdadm(&bin, "[ \"$1\" = dstate ] && echo Outdated; exit 0");
    assert_eq!(drbd.outdate("r0").expect("answer"), OutdateReply::Outdated);
    // Connected: status 0 but nothing happened; that is no answer to give the peer.
    drbdadm(&bin, "[ \"$1\" = dstate ] && echo UpToDate/UpToDate; exit 0");
    let result = drbd.outdate("r0");
    assert!(
        matches!(result, Err(DrbdError::NotOutdated { disk: DiskState::UpToDate, .. })),
        "{result:?}"
    );
    assert_eq!(outdate_answer(&result), OutdateReply::Failed);
    // Anything else fails.
    drbdadm(&bin, "echo \"'r0' not defined in your config (for this host).\" >&2; exit 1");
    let result = drbd.outdate("r0");
    assert_eq!(outdate_answer(&result), OutdateReply::Failed);
    assert!(result.expect_err("failed").to_string().contains("not defined"));
    assert_eq!(outdate_reply(DiskState::Outdated), Some(OutdateReply::Outdated));
    assert_eq!(outdate_reply(DiskState::Consistent), None);
}

#[test]
fn metadata_is_probed_with_get_gi() {
    let bin = FakeBin::new("drbd-md");
    let drbd = Drbd::new(bin.tools());
    drbdadm(
        &bin,
        "echo 0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:1:0:1:0",
    );
    assert!(drbd.has_metadata("r0").expect("probe"));
    drbdadm(&bin, "exit 1");
    assert!(!drbd.has_metadata("r0").expect("probe"));
    drbdadm(&bin, "echo 'open(/dev/nonexist) failed: No such file or directory' >&2; exit 20");
    let err = drbd.has_metadata("r0").expect_err("no device");
    assert!(err.to_string().contains("open(/dev/nonexist)"), "{err}");
    drbdadm(&bin, "echo \"'r9' not defined in your config (for this host).\" >&2; exit 1");
    assert!(matches!(drbd.has_metadata("r9"), Err(DrbdError::NotDefined { .. })));
}

#[test]
fn create_md_never_writes_over_metadata() {
    let bin = FakeBin::new("drbd-create-md");
    let drbd = Drbd::new(bin.tools());
    drbdadm(&bin, "exit 0");
    let err = drbd.create_md("r0").expect_err("has metadata");
    assert!(matches!(err, DrbdError::MetadataExists { .. }), "{err}");
    assert_eq!(calls(&bin), ["get-gi r0"], "create-md never ran");
    drbdadm(&bin, "[ \"$1\" = get-gi ] && exit 1; exit 0");
    drbd.create_md("r0").expect("created");
    assert_eq!(calls(&bin)[1..], ["get-gi r0", "create-md r0"]);
}

#[test]
fn connect_and_disconnect_are_idempotent() {
    let bin = FakeBin::new("drbd-connect");
    let drbd = Drbd::new(bin.tools());
    // 8.4: connect of a connected resource.
    drbdadm(&bin, "echo 'r0: Failure: (102) Local address(port) already in use.' >&2; exit 10");
    drbdsetup_now(&bin, &events_now("Connected"));
    drbd.connect("r0").expect("already connected");
    // …and a real failure while StandAlone.
    drbdsetup_now(&bin, &events_now("StandAlone"));
    assert!(drbd.connect("r0").is_err());
    // 8.4: disconnect of a StandAlone resource.
    drbdadm(&bin, "echo 'unknown connection' >&2; exit 10");
    drbd.disconnect("r0").expect("already StandAlone");
    drbdsetup_now(&bin, &events_now("Connected"));
    assert!(drbd.disconnect("r0").is_err());
}

#[test]
fn the_split_brain_victim_disconnects_then_discards() {
    let bin = FakeBin::new("drbd-discard");
    drbdadm(&bin, "exit 0");
    drbdsetup_now(&bin, &events_now("StandAlone"));
    Drbd::new(bin.tools()).connect_discard_my_data("r0").expect("ok");
    assert_eq!(calls(&bin), ["disconnect r0", "-- --discard-my-data connect r0"]);
}

#[test]
fn the_plain_commands() {
    let bin = FakeBin::new("drbd-plain");
    drbdadm(&bin, "exit 0");
    let drbd = Drbd::new(bin.tools());
    drbd.down("r0").expect("down");
    drbd.primary("r0").expect("primary");
    drbd.primary_force("r0").expect("primary --force");
    drbd.secondary("r0").expect("secondary");
    drbd.resume_io("r0").expect("resume-io");
    assert_eq!(
        calls(&bin),
        ["down r0", "primary r0", "primary --force r0", "secondary r0", "resume-io r0"]
    );
    drbdadm(&bin, "echo '0: State change failed: (-2) Need access to UpToDate data' >&2; exit 17");
    let err = drbd.primary("r0").expect_err("refused");
    let DrbdError::Command(failure) = &err else { panic!("{err:?}") };
    assert_eq!(failure.code(), Some(17));
    assert_eq!(failure.command, "drbdadm primary r0");
    assert!(failure.stderr.contains("Need access to UpToDate data"));
}

#[test]
fn a_promotion_that_raced_the_fence_peer_handler_is_tried_again_and_nothing_else_is() {
    // As on the lab guests: the first `primary` began while DRBD still counted the powered-off
    // peer as connected and failed with -7; the second, after the handler's answer, succeeds.
    let bin = FakeBin::new("drbd-primary-retry");
    let marker = bin.0.join("tried");
    drbdadm(
        &bin,
        &format!(
            "[ -e {m} ] && exit 0; touch {m}; echo '0: State change failed: (-7) Refusing to be Primary while peer is not outdated' >&2; exit 11",
            m = marker.display()
        ),
    );
    let drbd = Drbd::new(bin.tools());
    drbd.primary_retrying("r0", 3, Duration::from_millis(1)).expect("second try");
    assert_eq!(calls(&bin), ["primary r0", "primary r0"]);
    // Other refusals are final at once, and the tries are bounded.
    drbdadm(&bin, "echo '0: State change failed: (-2) Need access to UpToDate data' >&2; exit 17");
    let err = drbd.primary_retrying("r0", 3, Duration::from_millis(1)).expect_err("stale");
    assert!(!err.peer_not_outdated());
    assert_eq!(calls(&bin).len(), 3);
    drbdadm(&bin, "echo '0: State change failed: (-7) Refusing to be Primary while peer is not outdated' >&2; exit 11");
    let err = drbd.primary_retrying("r0", 3, Duration::from_millis(1)).expect_err("never outdated");
    assert!(err.peer_not_outdated());
    assert_eq!(calls(&bin).len(), 6, "three tries, then the refusal");
}

#[test]
fn names_that_could_be_options_are_refused_before_running_anything() {
    let bin = FakeBin::new("drbd-names");
    drbdadm(&bin, "exit 0");
    let drbd = Drbd::new(bin.tools());
    for bad in ["", "--force", "a b", "r0;reboot", "../x"] {
        assert!(matches!(drbd.primary(bad), Err(DrbdError::BadName(_))), "{bad:?}");
    }
    assert!(calls(&bin).is_empty());
}

#[test]
fn snapshot_and_a_cut_short_dump() {
    let bin = FakeBin::new("drbd-snapshot");
    drbdsetup_now(&bin, &events_now("Connecting"));
    let drbd = Drbd::new(bin.tools());
    let states = drbd.snapshot().expect("snapshot");
    assert_eq!(states["r0"].connection, ConnectionState::Connecting);
    assert_eq!(states["r0"].role, Role::Secondary);
    drbdsetup_now(&bin, "exists resource name:r0 role:Secondary\n");
    assert!(matches!(drbd.snapshot(), Err(DrbdError::Output { .. })));
    bin.tool("drbdsetup", "echo 'Could not connect to drbd' >&2; exit 20");
    assert!(matches!(drbd.snapshot(), Err(DrbdError::Command(_))));
}

#[test]
fn a_hanging_command_is_killed_at_its_deadline() {
    let bin = FakeBin::new("drbd-hang");
    drbdadm(&bin, "sleep 30");
    let mut tools = bin.tools();
    tools.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = Drbd::new(tools).secondary("r0").expect_err("hangs");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&err, DrbdError::Command(f) if matches!(f.ending, Ending::TimedOut(_))),
        "{err}"
    );
}

#[test]
fn the_events2_reader_yields_lines_and_is_stopped() {
    let bin = FakeBin::new("drbd-events2");
    // Like the real one: an initial dump, then it keeps running.
    bin.tool(
        "drbdsetup",
        "echo \"args: $*\"\necho 'exists -'\nprintf 'bad \\377 utf8\\n'\necho 'oops' >&2\nexec sleep 30",
    );
    let mut reader = Drbd::new(bin.tools()).events2().expect("spawned");
    assert_eq!(
        reader.next_line().expect("read").as_deref(),
        Some("args: events2 --timestamps --statistics all")
    );
    assert_eq!(reader.next_line().expect("read").as_deref(), Some("exists -"));
    assert_eq!(reader.next_line().expect("read").as_deref(), Some("bad \u{fffd} utf8"));
    let stopper = reader.stopper();
    let pid = reader.pid();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        stopper.stop();
    });
    let started = Instant::now();
    assert_eq!(reader.next_line().expect("read"), None, "ends when stopped");
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = t.join();
    assert_eq!(reader.stderr_tail(), "oops");
    drop(reader);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty(), "reaped: {stat}");
}

#[test]
fn dropping_the_reader_kills_drbdsetup() {
    let bin = FakeBin::new("drbd-events2-drop");
    bin.tool("drbdsetup", "exec sleep 30");
    let reader = Drbd::new(bin.tools()).events2().expect("spawned");
    let pid = reader.pid();
    drop(reader);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty(), "killed and reaped: {stat}");
}

#[test]
fn versions() {
    let proc_drbd = "version: 8.4.11 (api:1/proto:86-101)\nsrcversion: F73C670A7EC572DB9CF3E5B \n";
    assert_eq!(proc_drbd_version(proc_drbd).as_deref(), Some("8.4.11"));
    assert_eq!(proc_drbd_version("garbage"), None);
    assert_eq!(proc_drbd_version("version: x;rm"), None);
    let bin = FakeBin::new("drbd-version");
    drbdadm(
        &bin,
        "echo 'DRBDADM_API_VERSION=1'; echo 'DRBD_KERNEL_VERSION_CODE=0x08040b'; echo 'DRBDADM_VERSION=9.22.0'",
    );
    assert_eq!(Drbd::new(bin.tools()).utils_version().expect("version"), "9.22.0");
}
