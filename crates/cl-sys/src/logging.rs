//! Process-wide `tracing` setup: one line per event, to a file or to stderr.
//!
//! Line format (no ANSI colours, so files stay greppable):
//! `2026-05-01T10:00:00.123456Z  INFO clhbd-cluster1: span{app=web}: message key=value`
//! The time is RFC 3339 in UTC. Newlines inside a message are followed by a tab, so text from
//! scripts or peers can never start a line that looks like a separate log entry.
//!
//! The level defaults to INFO and can be changed with `LINUXHA_LOG`
//! (`error`, `warn`, `info`, `debug`, `trace`, `off`).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Environment variable that overrides the default INFO level.
pub const LOG_LEVEL_ENV: &str = "LINUXHA_LOG";

/// Permissions of a newly created log file: root writes, the admin group may read.
const LOG_FILE_MODE: u32 = 0o640;

/// Formats events as `time level daemon: spans: message fields`.
#[derive(Debug, Clone)]
struct DaemonFormat {
    daemon: Arc<str>,
}

impl<S, N> FormatEvent<S, N> for DaemonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Build the line first so that embedded newlines can be neutralised in one place.
        let mut line = String::with_capacity(160);
        let mut w = Writer::new(&mut line);
        SystemTime.format_time(&mut w)?;
        write!(w, " {:>5} {}: ", event.metadata().level(), self.daemon)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                w.write_str(span.name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(w, "{{{fields}}}")?;
                    }
                }
                w.write_str(": ")?;
            }
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        let line = line.trim_end_matches(['\n', '\r']);
        writer.write_str(&line.replace('\n', "\n\t"))?;
        writer.write_char('\n')
    }
}

/// Reads the level from `LINUXHA_LOG`, falling back to INFO when unset or unparsable.
fn level_from_env() -> LevelFilter {
    std::env::var(LOG_LEVEL_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(LevelFilter::INFO)
}

/// Builds the subscriber for `daemon` writing to `writer` and makes it the global default.
fn install<W>(writer: W, daemon: &str) -> anyhow::Result<()>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(level_from_env())
        .event_format(DaemonFormat { daemon: Arc::from(daemon) })
        .with_writer(writer)
        .try_init()
        .map_err(|e| anyhow!("cannot install the logger: {e}"))
}

/// Appends this process's log lines to `path` (creating parent directories and the file).
///
/// Fails, without panicking, if a global subscriber is already installed.
pub fn init_file_logging(path: &Path, daemon: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create log directory {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .open(path)
        .with_context(|| format!("cannot open log file {}", path.display()))?;
    // O_APPEND plus one write per event keeps lines whole even when a second process (say, a
    // restarted daemon overlapping its predecessor) appends to the same file; no lock needed.
    install(Arc::new(file), daemon).with_context(|| format!("cannot log to {}", path.display()))
}

/// Logs to stderr in the same format, for running a daemon in the foreground.
///
/// Does nothing if a global subscriber is already installed.
pub fn init_stderr_logging(daemon: &str) {
    // Ignored on purpose: the only failure is "already installed", and then logging works.
    let _ = install(std::io::stderr, daemon);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Collects formatted output in memory.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("not poisoned").clone()).expect("utf-8")
        }
    }

    /// Formats events emitted by `f` with a thread-local subscriber (no global state).
    fn capture(f: impl FnOnce()) -> String {
        let out = Capture::default();
        let sink = out.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(LevelFilter::TRACE)
            .event_format(DaemonFormat { daemon: Arc::from("clhbd-test") })
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(sub, f);
        out.text()
    }

    #[test]
    fn line_has_time_level_daemon_spans_message_and_fields() {
        let text = capture(|| {
            let _s = tracing::info_span!("app", app = "web").entered();
            tracing::warn!(node = "node2", "peer lost");
        });
        let line = text.strip_suffix('\n').expect("newline-terminated");
        assert!(!line.contains('\n'), "{text:?}");
        let (time, rest) = line.split_once(' ').expect("time first");
        // RFC 3339 UTC: 2026-05-01T10:00:00.123456Z
        assert!(time.len() >= 20 && time.ends_with('Z'), "{time}");
        assert_eq!(time.as_bytes()[4], b'-');
        assert_eq!(time.as_bytes()[10], b'T');
        assert_eq!(rest, " WARN clhbd-test: app{app=\"web\"}: peer lost node=\"node2\"");
        assert!(!text.contains('\x1b'), "no ANSI escapes");
    }

    #[test]
    fn embedded_newlines_cannot_forge_lines() {
        let text = capture(|| tracing::info!("one\n2026-01-01T00:00:00Z ERROR forged"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        assert!(lines[1].starts_with('\t'), "{text:?}");
    }

    #[test]
    fn file_logging_creates_dirs_and_refuses_second_init() {
        // The only test that installs the global subscriber: one per process.
        let dir = std::env::temp_dir().join(format!("cl-sys-log-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("nested/clhbd.log");
        init_file_logging(&path, "clhbd-cluster1").expect("first init");
        tracing::info!(link = "eth1", "heartbeat up");
        let second = init_file_logging(&path, "clhbd-cluster1");
        assert!(second.is_err(), "a second global logger is refused");
        init_stderr_logging("ignored"); // must not panic either
        let text = fs::read_to_string(&path).expect("log written");
        assert!(text.contains(" INFO clhbd-cluster1: heartbeat up link=\"eth1\"\n"), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }
}
