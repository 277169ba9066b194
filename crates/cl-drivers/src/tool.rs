//! Running the storage tools (drbdadm, drbdsetup, lvm, blkid) with a deadline, and the error that
//! names the command line, how it ended and its stderr.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ocf::run_captured;
use crate::script::ScriptOutcome;

/// Most characters of a tool's stderr kept in an error.
const STDERR_LIMIT: usize = 2000;

/// How a command that did not succeed ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It exited with this status.
    Exited(i32),
    /// It was killed by this signal (not by us).
    Signalled(i32),
    /// It overran its time limit; its process group was killed.
    TimedOut(Duration),
    /// It could not be started (not installed, not executable).
    NotStarted(String),
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Exited(code) => write!(f, "exited with status {code}"),
            Ending::Signalled(sig) => write!(f, "was killed by signal {sig}"),
            Ending::TimedOut(after) => write!(f, "did not finish within {after:?} and was killed"),
            Ending::NotStarted(why) => write!(f, "could not be started: {why}"),
        }
    }
}

/// A command that did not succeed: its command line, how it ended, its stderr (trimmed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{command}` {ending}{}", show_stderr(.stderr))]
pub struct CommandFailure {
    /// The command line as run (program and arguments, space-separated).
    pub command: String,
    /// How it ended.
    pub ending: Ending,
    /// Its standard error, trimmed (the end of it, when long).
    pub stderr: String,
}

impl CommandFailure {
    /// The exit status, when it exited.
    pub fn code(&self) -> Option<i32> {
        match self.ending {
            Ending::Exited(code) => Some(code),
            _ => None,
        }
    }
}

fn show_stderr(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// What a command that ran to its end printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ran {
    /// The command line, for errors.
    pub command: String,
    /// Exit status.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error, trimmed.
    pub stderr: String,
}

impl Ran {
    /// This run as a failure (for an exit status the caller does not accept).
    pub fn failure(&self) -> CommandFailure {
        CommandFailure {
            command: self.command.clone(),
            ending: Ending::Exited(self.code),
            stderr: self.stderr.clone(),
        }
    }

    /// Ok(stdout) on exit status 0, the failure otherwise.
    pub fn ok(self) -> Result<String, CommandFailure> {
        if self.code == 0 {
            Ok(self.stdout)
        } else {
            Err(self.failure())
        }
    }
}

/// Where the tools are looked for, and how long one may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// Look for the tools only in this directory (tests put fakes there); `None`: PATH and the
    /// sbin directories a daemon's PATH may lack.
    pub bin_dir: Option<PathBuf>,
    /// Time limit of one command.
    pub timeout: Duration,
}

impl Tools {
    /// The system's tools, with this time limit per command.
    pub fn system(timeout: Duration) -> Tools {
        Tools { bin_dir: None, timeout }
    }

    /// The path of tool `name` (the bare name when it is found nowhere: running it then fails
    /// with "not found", naming it).
    pub fn path(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => find_tool(name).unwrap_or_else(|| PathBuf::from(name)),
        }
    }

    /// Runs `name args…` to its end (or its deadline) with `LC_ALL=C`, stdin /dev/null, as the
    /// leader of its own process group (killed as a group at the deadline). Any exit status is
    /// `Ok`; not starting, a signal or the deadline is the failure.
    pub(crate) fn run(&self, name: &str, args: &[&str]) -> Result<Ran, CommandFailure> {
        let path = self.path(name);
        let command = command_line(name, args);
        let env = vec![
            ("LC_ALL".to_string(), "C".to_string()),
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin".into(),
            ),
        ];
        let fail =
            |ending| CommandFailure { command: command.clone(), ending, stderr: String::new() };
        let captured = run_captured(&path, args, &env, self.timeout)
            .map_err(|e| fail(Ending::NotStarted(format!("{}: {e}", path.display()))))?;
        let stderr = shorten(captured.stderr.trim());
        match captured.outcome {
            ScriptOutcome::Exited(code) => {
                Ok(Ran { command, code, stdout: captured.stdout, stderr })
            }
            ScriptOutcome::Signalled(sig) => {
                Err(CommandFailure { command, ending: Ending::Signalled(sig), stderr })
            }
            ScriptOutcome::TimedOut => {
                Err(CommandFailure { command, ending: Ending::TimedOut(self.timeout), stderr })
            }
        }
    }
}

/// `name arg arg…`, arguments with spaces or quotes shown quoted.
pub(crate) fn command_line(name: &str, args: &[&str]) -> String {
    let mut line = name.to_string();
    for arg in args {
        line.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            line.push('\'');
            line.push_str(&arg.replace('\'', "'\\''"));
            line.push('\'');
        } else {
            line.push_str(arg);
        }
    }
    line
}

/// Keeps the end of a long stderr (the reason is usually last).
fn shorten(text: &str) -> String {
    let n = text.chars().count();
    if n <= STDERR_LIMIT {
        return text.to_string();
    }
    let tail: String = text.chars().skip(n - STDERR_LIMIT).collect();
    format!("[…] {tail}")
}

/// `name` in PATH, or in the sbin directories a daemon's PATH may lack.
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
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
pub(crate) mod fake {
    //! Fake tools for tests: shell scripts in a temporary directory.

    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::Tools;

    /// A temporary directory of fake tools, removed on drop.
    pub struct FakeBin(pub PathBuf);

    impl FakeBin {
        /// A fresh directory named after the test.
        pub fn new(name: &str) -> FakeBin {
            let dir =
                std::env::temp_dir().join(format!("cl-storage-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            FakeBin(dir)
        }

        /// Writes tool `name` as a shell script with this body.
        pub fn tool(&self, name: &str, body: &str) -> &FakeBin {
            let path = self.0.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write tool");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            self
        }

        /// Tools from this directory.
        pub fn tools(&self) -> Tools {
            Tools { bin_dir: Some(self.0.clone()), timeout: Duration::from_secs(10) }
        }
    }

    impl Drop for FakeBin {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeBin;
    use super::*;

    #[test]
    fn any_exit_status_is_reported_with_stdout_and_trimmed_stderr() {
        let bin = FakeBin::new("tool-exit");
        bin.tool("t", "echo out; echo '  err  ' >&2; exit 3");
        let ran = bin.tools().run("t", &["a b", "c"]).expect("ran");
        assert_eq!((ran.code, ran.stdout.as_str(), ran.stderr.as_str()), (3, "out\n", "err"));
        assert_eq!(ran.command, "t 'a b' c");
        let err = ran.ok().expect_err("status 3");
        assert_eq!(err.code(), Some(3));
        assert_eq!(err.to_string(), "`t 'a b' c` exited with status 3: err");
    }

    #[test]
    fn a_missing_tool_and_a_hanging_tool_are_failures() {
        let bin = FakeBin::new("tool-missing");
        let err = bin.tools().run("nothere", &[]).expect_err("missing");
        assert!(matches!(err.ending, Ending::NotStarted(_)), "{err}");
        bin.tool("hang", "echo started >&2; sleep 30");
        let mut tools = bin.tools();
        tools.timeout = Duration::from_millis(300);
        let err = tools.run("hang", &[]).expect_err("hangs");
        assert!(matches!(err.ending, Ending::TimedOut(_)), "{err}");
        assert!(err.stderr.contains("started"), "{err}");
    }

    #[test]
    fn long_stderr_keeps_its_end() {
        let text = format!("{}the reason", "x".repeat(5000));
        let s = shorten(&text);
        assert!(s.ends_with("the reason") && s.chars().count() < STDERR_LIMIT + 10);
    }
}
