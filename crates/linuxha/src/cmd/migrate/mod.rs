//! `linuxha migrate`: the "Required clconf.xml / appconf.xml changes" of the Linuxha.net 1.0 →
//! 1.1 migration guide, done for the administrator.
//!
//! It reads `/etc/cluster/clconf.xml` and every `/etc/cluster/<app>/appconf.xml` under the
//! root, computes the edits ([`cl_config::migrate`]), shows a summary and a unified diff per
//! file, and after `--yes` or "yes" on a terminal keeps each original as `<file>.1.0` (never
//! overwriting an earlier backup) and writes the new file atomically with the old file's mode.
//! A file that is not well-formed stops everything before anything is written.

mod gateway;

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cl_config::migrate::{self, Change, Gateway, Migration, DEFAULT_KEY_FILE};
use cl_config::Diagnostic;
use cl_paths::Paths;

use crate::cli::MigrateArgs;
use crate::fail::{Failure, Outcome};
use crate::site;

/// The command's name in messages.
const COMMAND: &str = "linuxha migrate";

/// Suffix of the backup of a migrated file (`clconf.xml.1.0`).
const BACKUP_SUFFIX: &str = "1.0";

/// Most numbered backups tried (`clconf.xml.1.0.2` …) before giving up.
const MAX_BACKUPS: u32 = 1000;

/// One configuration file and what migration makes of it.
struct Planned {
    /// Where it is on this machine (under the root).
    path: PathBuf,
    /// Its contents now.
    before: String,
    /// Its contents after migration, and the changes.
    after: Migration,
}

/// Run `linuxha migrate`.
pub fn migrate(paths: &Paths, args: &MigrateArgs) -> Outcome<()> {
    let gateway = match args.gateway {
        Some(address) => Gateway::Found(address),
        None => gateway::detect(),
    };
    let plans = plan(paths, &gateway)?;
    let changed: Vec<&Planned> = plans.iter().filter(|p| !p.after.is_unchanged()).collect();
    if changed.is_empty() {
        println!(
            "{COMMAND}: {} already in the Linuxha.net 1.1 form; there is nothing to migrate",
            if plans.len() == 1 {
                format!("{} is", plans[0].path.display())
            } else {
                format!(
                    "{} and its {} are",
                    paths.clconf().display(),
                    site::plural(plans.len() - 1, "application")
                )
            }
        );
        return Ok(());
    }
    let new_key = new_key_file(paths, &changed)?;
    show(&changed, new_key.as_deref());
    if args.dry_run {
        println!("{COMMAND}: dry run; nothing was changed");
        return Ok(());
    }
    confirm(args)?;
    if let Some(key) = &new_key {
        crate::cmd::build::write_new_key(COMMAND, key)?;
        println!("{COMMAND}: wrote a new 256-bit cluster key to {}", key.display());
    }
    for planned in &changed {
        let backup = write(planned)?;
        println!(
            "{COMMAND}: migrated {} (the 1.0 file is kept as {})",
            planned.path.display(),
            backup.display()
        );
    }
    next_steps(paths, &changed, new_key.is_some());
    Ok(())
}

/// Read and migrate every file; any file that cannot be read or parsed stops it all.
fn plan(paths: &Paths, gateway: &Gateway) -> Outcome<Vec<Planned>> {
    let mut plans = Vec::new();
    let mut problems: Vec<Diagnostic> = Vec::new();
    let clconf = paths.clconf();
    let bytes = site::read_file(COMMAND, paths, &clconf)?;
    match migrate::migrate_cluster(&clconf.display().to_string(), &bytes, gateway) {
        Ok(after) => plans.push(Planned { path: clconf, before: text(&bytes), after }),
        Err(found) => problems.extend(found),
    }
    for app in applications(paths) {
        let path = paths.appconf(&app);
        let bytes = site::read_file(COMMAND, paths, &path)?;
        match migrate::migrate_app(&path.display().to_string(), &bytes) {
            Ok(after) => plans.push(Planned { path, before: text(&bytes), after }),
            Err(found) => problems.extend(found),
        }
    }
    let errors: Vec<&Diagnostic> =
        problems.iter().filter(|d| d.severity == cl_config::Severity::Error).collect();
    if errors.is_empty() {
        return Ok(plans);
    }
    for diagnostic in &errors {
        eprintln!("{diagnostic}");
    }
    Err(Failure::config(format!(
        "{COMMAND}: {} in the configuration files; fix {} first; nothing was changed",
        site::plural(errors.len(), "error"),
        if errors.len() == 1 { "it" } else { "them" }
    )))
}

/// The files parsed fine, so they are UTF-8; lossy only to avoid a second error path.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The applications: directories under /etc/cluster with an appconf.xml, sorted.
fn applications(paths: &Paths) -> Vec<String> {
    let Ok(entries) = fs::read_dir(paths.etc()) else { return Vec::new() };
    let mut apps: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| !name.starts_with('.'))
        .filter(|name| paths.appconf(name).is_file())
        .collect();
    apps.sort();
    apps
}

/// The key file to create: the migration adds `<key file>` and no such file exists yet.
fn new_key_file(paths: &Paths, changed: &[&Planned]) -> Outcome<Option<PathBuf>> {
    let adds_key = changed
        .iter()
        .flat_map(|p| &p.after.changes)
        .any(|c| matches!(c, Change::AddedKeyFile { .. }));
    if !adds_key {
        return Ok(None);
    }
    let resolved =
        paths.confine(Path::new(DEFAULT_KEY_FILE)).map_err(|e| site::file_failure(COMMAND, e))?;
    Ok((!resolved.exists()).then_some(resolved))
}

/// The summary and the unified diff of every file that changes.
fn show(changed: &[&Planned], new_key: Option<&Path>) {
    for planned in changed {
        println!("{COMMAND}: {}:", planned.path.display());
        for change in &planned.after.changes {
            println!("  - {change}");
        }
    }
    if let Some(key) = new_key {
        println!(
            "{COMMAND}: {}: create a new 256-bit cluster key (mode 0600); copy it to the other node",
            key.display()
        );
    }
    for planned in changed {
        print!("{}", unified_diff(planned));
    }
}

/// `diff -u` of one file, as the migration would change it.
fn unified_diff(planned: &Planned) -> String {
    let name = planned.path.display().to_string();
    similar::TextDiff::from_lines(&planned.before, &planned.after.text)
        .unified_diff()
        .context_radius(3)
        .header(&name, &format!("{name} (1.1)"))
        .to_string()
}

/// `--yes`, or "yes" on a terminal.
fn confirm(args: &MigrateArgs) -> Outcome<()> {
    crate::cmd::vgbuild::confirm(
        COMMAND,
        args.yes,
        "the files above would be changed",
        "Type yes to apply these changes: ",
    )
}

/// Keep the original as a backup, then write the migrated file in its place; the backup's path.
fn write(planned: &Planned) -> Outcome<PathBuf> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        Failure::runtime(format!("{COMMAND}: cannot {what} {}: {e}", path.display()))
    };
    let mode = fs::metadata(&planned.path)
        .map_err(|e| fail("read", &planned.path, e))?
        .permissions()
        .mode()
        & 0o7777;
    let backup = keep_backup(&planned.path, planned.before.as_bytes(), mode)?;
    cl_paths::write_atomic_with_mode(&planned.path, planned.after.text.as_bytes(), mode)
        .map_err(|e| fail("write", &planned.path, e))?;
    Ok(backup)
}

/// Write `contents` to the first of `<file>.1.0`, `<file>.1.0.2`, … that does not exist yet
/// (created exclusively, so no earlier backup is ever overwritten), synced to disk.
fn keep_backup(path: &Path, contents: &[u8], mode: u32) -> Outcome<PathBuf> {
    use std::io::Write;
    for n in 1..=MAX_BACKUPS {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{BACKUP_SUFFIX}"));
        if n > 1 {
            name.push(format!(".{n}"));
        }
        let backup = PathBuf::from(name);
        let created = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&backup);
        let mut file = match created {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Failure::runtime(format!(
                    "{COMMAND}: cannot create the backup {}: {e}; nothing was changed",
                    backup.display()
                )))
            }
        };
        let written = file
            .set_permissions(fs::Permissions::from_mode(mode))
            .and_then(|_| file.write_all(contents))
            .and_then(|_| file.sync_all());
        return match written {
            Ok(()) => Ok(backup),
            Err(e) => {
                let _ = fs::remove_file(&backup);
                Err(Failure::runtime(format!(
                    "{COMMAND}: cannot write the backup {}: {e}; {} was not changed",
                    backup.display(),
                    path.display()
                )))
            }
        };
    }
    Err(Failure::runtime(format!(
        "{COMMAND}: {MAX_BACKUPS} backups of {} exist already; remove old ones first",
        path.display()
    )))
}

/// What the guide has the administrator do next.
fn next_steps(paths: &Paths, changed: &[&Planned], new_key: bool) {
    if new_key {
        println!(
            "{COMMAND}: copy {DEFAULT_KEY_FILE} to the other node before it is migrated (it must hold the same key)"
        );
    }
    if changed.iter().any(|p| p.path == paths.clconf()) {
        println!("{COMMAND}: next, on one node: clbuild --verbose --force");
    }
    for planned in changed.iter().filter(|p| p.path != paths.clconf()) {
        let app = planned
            .path
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "{COMMAND}: then: clbuildapp --force --vgbuild --verbose --application {app}; clbuildapp --force --build --verbose --application {app}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_never_overwrite_an_earlier_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("clconf.xml");
        fs::write(&file, "new").expect("write");
        let first = keep_backup(&file, b"one", 0o600).expect("first");
        let second = keep_backup(&file, b"two", 0o600).expect("second");
        assert_eq!(first, dir.path().join("clconf.xml.1.0"));
        assert_eq!(second, dir.path().join("clconf.xml.1.0.2"));
        assert_eq!(fs::read(&first).expect("read"), b"one");
        assert_eq!(fs::read(&second).expect("read"), b"two");
        let mode = fs::metadata(&second).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_diff_is_unified_with_the_file_names() {
        let planned = Planned {
            path: PathBuf::from("/etc/cluster/apache/appconf.xml"),
            before: "<a>\n<network ip=\"1\" broadcast=\"2\"/>\n</a>\n".into(),
            after: Migration {
                text: "<a>\n<network ip=\"1\"/>\n</a>\n".into(),
                changes: vec![Change::RemovedAttribute { attribute: "broadcast", line: 2 }],
            },
        };
        let diff = unified_diff(&planned);
        assert!(diff.starts_with(
            "--- /etc/cluster/apache/appconf.xml\n+++ /etc/cluster/apache/appconf.xml (1.1)\n@@ -1,3 +1,3 @@\n"
        ), "{diff}");
        assert!(diff.contains("\n-<network ip=\"1\" broadcast=\"2\"/>\n+<network ip=\"1\"/>\n"));
    }
}
