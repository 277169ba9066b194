//! One run of one notifier: environment, JSON on stdin, bounded output to the log, a time
//! limit after which its whole process group is killed.

use std::fmt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tracing::info;

/// The most of a notifier's stdout, and of its stderr, copied to the log per run.
pub const OUTPUT_LIMIT: u64 = 4096;
/// How long the output of a notifier that ended is still read.
const OUTPUT_WAIT: Duration = Duration::from_secs(1);

/// Why a notifier run failed.
#[derive(Debug)]
pub enum Failure {
    /// It was not run: untrusted, missing, or it could not be started.
    NotRun(String),
    /// It ended unsuccessfully.
    Exited(ExitStatus),
    /// It overran its time limit; its process group was killed.
    TimedOut(Duration),
}

impl Failure {
    /// The class of the failure, for the rate limit of the log (one line per class).
    pub fn class(&self) -> &'static str {
        match self {
            Failure::NotRun(_) => "not run",
            Failure::Exited(_) => "failed",
            Failure::TimedOut(_) => "timed out",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotRun(why) => write!(f, "not run: {why}"),
            Failure::Exited(status) => write!(f, "{status}"),
            Failure::TimedOut(limit) => {
                write!(
                    f,
                    "still running after {} ms: its process group was killed",
                    limit.as_millis()
                )
            }
        }
    }
}

/// Run `program` with `vars` added to the environment and `stdin` on its standard input.
pub async fn run(
    program: &Path,
    vars: &[(&'static str, String)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<(), Failure> {
    let mut command = Command::new(program);
    command
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child =
        command.spawn().map_err(|e| Failure::NotRun(format!("cannot start it: {e}")))?;
    let group = child.id().map(|pid| pid as i32);
    let shown = program.display().to_string();
    if let Some(mut input) = child.stdin.take() {
        let document = stdin.to_vec();
        // A notifier that does not read its input must not hold the run up: written aside,
        // and a closed pipe is no failure.
        tokio::spawn(async move {
            let _ = input.write_all(&document).await;
        });
    }
    let out = child.stdout.take().map(|o| tokio::spawn(bounded(o)));
    let err = child.stderr.take().map(|e| tokio::spawn(bounded(e)));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    if waited.is_err() {
        if let Some(group) = group {
            // SAFETY: kill(2) on the process group our own unreaped child leads (it was made
            // its leader by process_group(0)); the pid cannot have been reused before the wait.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = child.wait().await;
    }
    for (stream, task) in [("stdout", out), ("stderr", err)] {
        let Some(mut task) = task else { continue };
        // A process that left the group may hold the pipe open: not waited for long.
        match tokio::time::timeout(OUTPUT_WAIT, &mut task).await {
            Ok(Ok(text)) if !text.trim().is_empty() => {
                info!(program = %shown, "notifier {shown} {stream}: {}", text.trim_end())
            }
            Ok(_) => {}
            Err(_) => task.abort(),
        }
    }
    match waited {
        Err(_) => Err(Failure::TimedOut(timeout)),
        Ok(Err(e)) => Err(Failure::NotRun(format!("waiting for it: {e}"))),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(Failure::Exited(status)),
    }
}

/// The first [`OUTPUT_LIMIT`] bytes of a stream; the rest is read and thrown away, so that the
/// notifier never blocks on a full pipe.
async fn bounded(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let _ = (&mut stream).take(OUTPUT_LIMIT).read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
    String::from_utf8_lossy(&kept).into_owned()
}
