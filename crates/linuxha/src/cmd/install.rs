//! `linuxha install` / `uninstall`: command links, VERSION, directories and the systemd units
//! (their text is in [`crate::units`], shared with the packages).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use cl_paths::Paths;

use crate::cli::{InstallArgs, COMMAND_NAMES};
use crate::fail::{Failure, Outcome};

fn sbin(paths: &Paths, prefix: &Path, command: &str) -> Outcome<PathBuf> {
    paths.confine(&prefix.join("sbin")).map_err(|e| crate::site::file_failure(command, e))
}

fn unit_path(paths: &Paths, name: &str) -> PathBuf {
    paths.root().join("etc/systemd/system").join(name)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Failure {
    move |e| Failure::runtime(format!("install: {what}: {e}"))
}

/// Install: copy the binary to `<prefix>/sbin/linuxha`, link every command name to it, write
/// VERSION, create the log and run directories and the systemd units. Running it again is safe.
pub fn install(paths: &Paths, args: &InstallArgs) -> Outcome<()> {
    let say = |line: String| {
        if args.verbose {
            println!("install: {line}");
        }
    };
    let sbin = sbin(paths, &args.prefix, "install")?;
    fs::create_dir_all(&sbin).map_err(io(format!("cannot create {}", sbin.display())))?;
    let me = std::env::current_exe().map_err(io("cannot find the running binary".into()))?;
    let target = sbin.join("linuxha");
    let same = fs::canonicalize(&me).ok() == fs::canonicalize(&target).ok();
    if !same {
        let bytes = fs::read(&me).map_err(io(format!("cannot read {}", me.display())))?;
        cl_paths::write_atomic(&target, &bytes)
            .map_err(io(format!("cannot write {}", target.display())))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
            .map_err(io(format!("cannot make {} executable", target.display())))?;
        say(format!("installed {}", target.display()));
    }
    link_commands(&sbin, &say)?;
    let version = paths.version_file();
    cl_paths::write_atomic(&version, format!("{}\n", cl_paths::PRODUCT_VERSION).as_bytes())
        .map_err(io(format!("cannot write {}", version.display())))?;
    say(format!("wrote {} ({})", version.display(), cl_paths::PRODUCT_VERSION));
    for dir in [paths.log_dir(), paths.run_dir()] {
        fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    }
    for unit in crate::units::units(&args.prefix.join("sbin")) {
        let path = unit_path(paths, unit.name);
        cl_paths::write_atomic(&path, unit.text.as_bytes())
            .map_err(io(format!("cannot write {}", path.display())))?;
        say(format!("wrote {} (enable it with systemctl enable {})", path.display(), unit.name));
    }
    Ok(())
}

/// Link every command name in `sbin` to `linuxha` (relative links); a link that is already
/// right is kept, a file that is not a link to linuxha is an error.
pub fn link_commands(sbin: &Path, say: &dyn Fn(String)) -> Outcome<()> {
    for name in COMMAND_NAMES {
        let link = sbin.join(name);
        match fs::symlink_metadata(&link) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if fs::read_link(&link).ok().as_deref() == Some(Path::new("linuxha")) {
                    continue;
                }
                fs::remove_file(&link).map_err(io(format!("cannot replace {}", link.display())))?;
            }
            Ok(_) => {
                return Err(Failure::runtime(format!(
                    "install: {} exists and is not a link to linuxha; move it away first",
                    link.display()
                )))
            }
            Err(_) => {}
        }
        symlink("linuxha", &link).map_err(io(format!("cannot create {}", link.display())))?;
        say(format!("linked {}", link.display()));
    }
    Ok(())
}

/// Uninstall: remove the links, the binary copy and the units; keep /etc/cluster.
pub fn uninstall(paths: &Paths, args: &InstallArgs) -> Outcome<()> {
    let sbin = sbin(paths, &args.prefix, "uninstall")?;
    for name in COMMAND_NAMES {
        let link = sbin.join(name);
        if fs::read_link(&link).ok().as_deref() == Some(Path::new("linuxha")) {
            fs::remove_file(&link).map_err(|e| {
                Failure::runtime(format!("uninstall: cannot remove {}: {e}", link.display()))
            })?;
        }
    }
    let units = crate::units::units(&args.prefix.join("sbin"));
    let files = units.iter().map(|unit| unit_path(paths, unit.name));
    for file in std::iter::once(sbin.join("linuxha")).chain(files) {
        match fs::remove_file(&file) {
            Ok(()) => {
                if args.verbose {
                    println!("uninstall: removed {}", file.display());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Failure::runtime(format!(
                    "uninstall: cannot remove {}: {e}",
                    file.display()
                )))
            }
        }
    }
    if args.verbose {
        println!("uninstall: kept {} (configuration is never removed)", paths.etc().display());
    }
    Ok(())
}
