//! Running the filesystem checker, bounded by a deadline.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::mountinfo::DeviceId;
use super::{CheckOutcome, FsError, FsSpec};

/// Why xfs is not checked before mounting.
const XFS_SKIPPED: &str = "xfs is not checked before mounting: it replays its log at mount, and \
    `xfs_repair -n` on a filesystem with a dirty log (the normal state after the peer crashed) \
    reports corruption that the log replay would fix; fsck.xfs does nothing either";

/// Output kept in errors and outcomes, in characters.
const OUTPUT_LIMIT: usize = 4000;

/// Runs the checker for `spec.fstype` on `dev`, killing it at `deadline`.
pub(crate) fn run(
    spec: &FsSpec,
    dev: &DeviceId,
    deadline: Instant,
    timeout: Duration,
) -> Result<CheckOutcome, FsError> {
    let (tool, flag) = match spec.fstype.as_str() {
        "ext2" | "ext3" | "ext4" => ("e2fsck".to_owned(), "-p"),
        "xfs" => return Ok(CheckOutcome::Skipped { reason: XFS_SKIPPED.into() }),
        "btrfs" => {
            return Ok(CheckOutcome::Skipped {
                reason: "btrfs is not checked before mounting (btrfs check is not a boot-time \
                         check; btrfs verifies checksums as it reads)"
                    .into(),
            })
        }
        other => {
            let name = format!("fsck.{other}");
            if find_tool(&name).is_none() {
                return Ok(CheckOutcome::Skipped { reason: format!("no {name} found") });
            }
            (name, "-a")
        }
    };
    let tool_err =
        |source| FsError::Tool { device: spec.device.clone(), tool: tool.clone(), source };
    let path = find_tool(&tool).ok_or_else(|| {
        tool_err(std::io::Error::new(std::io::ErrorKind::NotFound, "not found in PATH or sbin"))
    })?;
    let mut child = Command::new(path)
        .arg(flag)
        .arg(&dev.path)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(tool_err)?;
    let pgid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let readers = [
        child.stdout.take().map(|r| reader(Box::new(r))),
        child.stderr.take().map(|r| reader(Box::new(r))),
    ];
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                kill_group(pgid);
                let _ = child.wait();
                return Err(tool_err(e));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            kill_group(pgid);
            let _ = child.wait();
            return Err(FsError::Timeout {
                op: "fsck",
                device: spec.device.clone(),
                mountpoint: spec.mountpoint.clone(),
                after: timeout,
            });
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    };
    // Anything it left running in its group would keep the pipes open.
    kill_group(pgid);
    let mut output = String::new();
    for r in readers.into_iter().flatten() {
        let text = r.join().unwrap_or_default();
        let text = text.trim();
        if !text.is_empty() {
            if !output.is_empty() {
                output.push('\n');
            }
            output.push_str(text);
        }
    }
    let output = shorten(&output);
    let tool_line = format!("{tool} {flag}");
    match status.code() {
        Some(0) => Ok(CheckOutcome::Clean),
        Some(1) => Ok(CheckOutcome::Repaired { output }),
        Some(2) | Some(3) => Ok(CheckOutcome::RepairedRebootAdvised { output }),
        code => Err(FsError::FsckFailed {
            device: spec.device.clone(),
            mountpoint: spec.mountpoint.clone(),
            tool: tool_line,
            code,
            signal: status.signal(),
            output,
        }),
    }
}

/// What fsck(8) exit bits ≥ 4 mean.
pub(crate) fn exit_meaning(code: i32) -> &'static str {
    if code & 4 != 0 {
        " (errors left uncorrected)"
    } else if code & 8 != 0 {
        " (operational error)"
    } else if code & 16 != 0 {
        " (usage or syntax error)"
    } else if code & 32 != 0 {
        " (cancelled)"
    } else {
        ""
    }
}

fn reader(mut r: Box<dyn Read + Send>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) takes no pointers; a negative pid addresses the process group, which is
    // the checker's own (process_group(0)).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Keeps the start and the end of a long output.
fn shorten(text: &str) -> String {
    let n = text.chars().count();
    if n <= OUTPUT_LIMIT {
        return text.to_owned();
    }
    let head: String = text.chars().take(OUTPUT_LIMIT / 3).collect();
    let tail: String = text.chars().skip(n - OUTPUT_LIMIT * 2 / 3).collect();
    format!("{head}\n[… {} characters left out …]\n{tail}", n - OUTPUT_LIMIT)
}

/// `name` in PATH, or in the sbin directories a daemon's PATH may lack.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let fixed = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];
    std::env::split_paths(&path)
        .chain(fixed.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_is_shortened_in_the_middle() {
        let text: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        let s = shorten(&text);
        assert!(s.starts_with("line 0\n") && s.trim_end().ends_with("line 1999"));
        assert!(s.chars().count() < OUTPUT_LIMIT + 100);
        assert_eq!(shorten("short"), "short");
    }

    #[test]
    fn exit_codes_explained() {
        assert_eq!(exit_meaning(4), " (errors left uncorrected)");
        assert_eq!(exit_meaning(8), " (operational error)");
        assert_eq!(exit_meaning(12), " (errors left uncorrected)");
    }
}
