//! `linuxha package-tree DIR`: the files the .deb and .rpm carry besides the binary, laid out
//! as installed (cargo-deb and cargo-generate-rpm pick them up from there, see
//! crates/linuxha/Cargo.toml): the command links, the systemd units, a tmpfiles.d entry for
//! /run/cluster, the manual pages, the bash, zsh and fish completions, /etc/cluster/VERSION
//! and the RPM's scriptlets.
//!
//! `usr/sbin/linuxha` in the tree is a link to the running binary, only so that the command
//! links resolve there (the packagers' globs follow links); the packages take the binary from
//! target/release. cargo-generate-rpm cannot package symbolic links, so the RPM creates the
//! command links in its %post scriptlet (written here from the same list) and removes them
//! in %preun; it cannot package an empty directory either (cargo-generate-rpm 0.21.1), so
//! %post creates /var/log/cluster, as the Debian postinst does.

use std::fs;
use std::path::Path;

use crate::cli::PackageTreeArgs;
use crate::docs;
use crate::fail::{Failure, Outcome};

/// Where the package installs the binary and the links.
const SBIN: &str = "/usr/sbin";

/// Where each shell looks for completions (Debian's zsh directory; the RPM maps it to
/// site-functions).
const COMPLETION_DIRS: [(clap_complete::Shell, &str); 3] = [
    (clap_complete::Shell::Bash, "usr/share/bash-completion/completions"),
    (clap_complete::Shell::Zsh, "usr/share/zsh/vendor-completions"),
    (clap_complete::Shell::Fish, "usr/share/fish/vendor_completions.d"),
];

/// /run is a tmpfs: systemd-tmpfiles creates the run directory at boot.
const TMPFILES: &str = "# linuxha: pid files, locks and sockets of the cluster daemons\n\
                        d /run/cluster 0755 root root -\n\
                        d /var/log/cluster 0755 root root -\n";

/// Write the staging tree under `args.dir`, replacing what an earlier run left there.
pub fn package_tree(args: &PackageTreeArgs) -> Outcome<()> {
    let dir = &args.dir;
    let fail = |what: String| {
        move |e: std::io::Error| Failure::runtime(format!("package-tree: {what}: {e}"))
    };
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(fail(format!("cannot empty {}", dir.display())))?;
    }
    let sbin = dir.join(SBIN.trim_start_matches('/'));
    fs::create_dir_all(&sbin).map_err(fail(format!("cannot create {}", sbin.display())))?;
    crate::cmd::install::link_commands(&sbin, &|_| {})?;
    let me = std::env::current_exe().map_err(fail("cannot find the running binary".into()))?;
    std::os::unix::fs::symlink(&me, sbin.join("linuxha"))
        .map_err(fail(format!("cannot link {}", sbin.join("linuxha").display())))?;
    for (name, text) in rpm_scriptlets() {
        docs::write("package-tree", &dir.join("rpm").join(name), text.as_bytes())?;
    }
    for unit in crate::units::units(Path::new(SBIN)) {
        let path = dir.join("usr/lib/systemd/system").join(unit.name);
        docs::write("package-tree", &path, unit.text.as_bytes())?;
    }
    docs::write("package-tree", &dir.join("usr/lib/tmpfiles.d/linuxha.conf"), TMPFILES.as_bytes())?;
    docs::man::write_pages("package-tree", &dir.join("usr/share/man"), true)?;
    for (shell, sub) in COMPLETION_DIRS {
        docs::completions::write(shell, &dir.join(sub))?;
    }
    let version = format!("{}\n", cl_paths::PRODUCT_VERSION);
    docs::write("package-tree", &dir.join("etc/cluster/VERSION"), version.as_bytes())?;
    if args.verbose {
        println!("package-tree: wrote {}", dir.display());
    }
    Ok(())
}

/// The RPM's %post, %preun and %postun scriptlets: the command links (from the list
/// `linuxha install` links), no systemctl call unless systemd runs, units neither enabled nor
/// restarted (an administrator restarts a node's daemons, one node at a time).
fn rpm_scriptlets() -> [(&'static str, String); 3] {
    let names = crate::cli::COMMAND_NAMES.join(" ");
    let units: Vec<&str> = crate::units::units(Path::new(SBIN)).iter().map(|u| u.name).collect();
    let units = units.join(" ");
    [
        (
            "post_install.sh",
            format!(
                "# linuxha %post: the command links, the log directory; let a running systemd \
                 see the units.\n\
                 for name in {names}; do ln -sfn linuxha {SBIN}/$name; done\n\
                 mkdir -p /var/log/cluster\n\
                 if [ -d /run/systemd/system ]; then systemctl daemon-reload || :; fi\n"
            ),
        ),
        (
            "pre_uninstall.sh",
            format!(
                "# linuxha %preun: on removal ($1 = 0, not on upgrade) stop the daemons, remove \
                 the command links.\n\
                 if [ \"$1\" = 0 ]; then\n\
                 \x20   if [ -d /run/systemd/system ]; then systemctl stop {units} || :; fi\n\
                 \x20   for name in {names}; do rm -f {SBIN}/$name; done\n\
                 fi\n"
            ),
        ),
        (
            "post_uninstall.sh",
            "# linuxha %postun: forget the units; /etc/cluster and the logs stay.\n\
             if [ -d /run/systemd/system ]; then systemctl daemon-reload || :; fi\n"
                .to_string(),
        ),
    ]
}
