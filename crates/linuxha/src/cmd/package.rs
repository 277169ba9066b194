//! `linuxha package-tree DIR`: the files the .deb and .rpm carry besides the binary, laid out
//! as installed (cargo-deb and cargo-generate-rpm pick them up from there, see
//! crates/linuxha/Cargo.toml): the command links, the systemd units, a tmpfiles.d entry for
//! /run/cluster, the manual pages, the bash, zsh and fish completions and /etc/cluster/VERSION.

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
    for unit in crate::units::units(Path::new(SBIN)) {
        let path = dir.join("usr/lib/systemd/system").join(unit.name);
        docs::write("package-tree", &path, unit.text.as_bytes())?;
    }
    docs::write("package-tree", &dir.join("usr/lib/tmpfiles.d/linuxha.conf"), TMPFILES.as_bytes())?;
    docs::man::write_pages("package-tree", &dir.join("usr/share/man"))?;
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
