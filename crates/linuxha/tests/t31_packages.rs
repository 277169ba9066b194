//! The manual pages, the completions and the packages.
//!
//! - Every command has a page generated from its clap definition, each page renders with
//!   groff and `man -l` without a warning, and names every option the command's --help shows;
//!   clconf.xml(5) and appconf.xml(5) name every element docs/config.md has a heading for.
//! - The .deb (cargo-deb) installs into a throwaway root with `dpkg --root`, is upgraded to a
//!   newer version, removed and purged: files, command links, units, `clstat --help` from the
//!   root, and the administrator's clconf.xml, key and edited VERSION survive.
//! - The .rpm (cargo-generate-rpm) carries the same files (`rpm -qlp`), VERSION as
//!   %config(noreplace), and scriptlets that create the command links; it installs, upgrades
//!   and erases with `rpm --root` (busybox as the root's shell for the scriptlets), keeping the
//!   administrator's files.
//!
//! The package tests use target/release/linuxha (scripts/test.sh builds it) and are skipped,
//! with a line saying so, when cargo-deb, cargo-generate-rpm, dpkg, rpm or that binary is
//! missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use common::text;

/// The package tests share target/release/package-tree: one at a time.
static STAGING: Mutex<()> = Mutex::new(());

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn linuxha() -> &'static str {
    env!("CARGO_BIN_EXE_linuxha")
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .current_dir(workspace())
        .output()
        .unwrap_or_else(|e| panic!("{} {args:?}: {e}", program.to_string_lossy()))
}

fn ok(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref().to_owned();
    let out = run(&program, args);
    assert!(out.status.success(), "{} {args:?}: {}", program.to_string_lossy(), text(&out));
    out
}

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

/// The program names that have a page: every `man8/*.8` but linuxha.8.
fn command_names(man8: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(man8)
        .expect("man8")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".8").map(str::to_string))
        .filter(|n| n != "linuxha")
        .collect();
    names.sort();
    names
}

/// Render a page as man does; stderr must be empty (no warning).
fn render_with_man(page: &Path) -> String {
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANPAGER", "cat")
        .env("LC_ALL", "C.UTF-8")
        .env("MANWIDTH", "100")
        .output()
        .expect("man runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "man -l {}: {}",
        page.display(),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_command_has_a_manual_page_that_renders_and_matches_its_options() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run(linuxha(), &["gen-man", dir.path().to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let man8 = dir.path().join("man8");
    let names = command_names(&man8);
    // The list the binary links (`linuxha install`) is the list that has pages.
    for known in [
        "clbuild",
        "clbuildapp",
        "clstat",
        "clswitchapp",
        "cllock",
        "cldaemon",
        "clarbd",
        "linuxha-migrate",
    ] {
        assert!(names.iter().any(|n| n == known), "no page for {known}: {names:?}");
    }
    assert!(man8.join("linuxha.8").is_file());
    let groff = have("groff", &["--version"]);
    if !groff {
        println!("SKIPPED: rendering the pages needs groff (apt-get install groff-base)");
    }
    for name in names.iter().map(String::as_str).chain(["linuxha"]) {
        let page = man8.join(format!("{name}.8"));
        let source = std::fs::read_to_string(&page).expect("page").replace("\\-", "-");
        // Every option --help shows is on the page.
        // `linuxha-migrate.8` is the page of `linuxha migrate`, as git names its pages.
        let args: Vec<&str> = if name == "linuxha" {
            vec!["--help"]
        } else {
            vec![name.strip_prefix("linuxha-").unwrap_or(name), "--help"]
        };
        let args = args.as_slice();
        let help = ok(linuxha(), args);
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        for option in help.split_whitespace().filter(|w| w.starts_with("--") && w.len() > 2) {
            let option = option.trim_end_matches([',', '.', ')']);
            let option = option.split(['=', '[', '<']).next().unwrap_or(option);
            assert!(source.contains(option), "{name}.8 lacks {option}");
        }
        if groff {
            let out = ok("groff", &["-man", "-Tutf8", "-ww", "-z", page.to_str().expect("utf-8")]);
            assert!(out.stderr.is_empty(), "groff warns on {name}.8: {}", text(&out));
        }
    }
    // The configuration pages carry every element docs/config.md has a heading for.
    let config = std::fs::read_to_string(workspace().join("docs/config.md")).expect("config.md");
    let pages = ["clconf.xml.5", "appconf.xml.5"]
        .map(|p| std::fs::read_to_string(dir.path().join("man5").join(p)).expect("man5 page"));
    let mut elements = 0;
    for heading in config.lines().filter(|l| l.starts_with('#')) {
        for element in heading.split('`').filter(|w| w.starts_with('<') && w.ends_with('>')) {
            elements += 1;
            assert!(pages.iter().any(|p| p.contains(element)), "{element} is on no page");
        }
    }
    assert!(elements > 10, "only {elements} elements found in docs/config.md headings");
    if groff {
        for page in ["clconf.xml.5", "appconf.xml.5"] {
            let path = dir.path().join("man5").join(page);
            let out = ok("groff", &["-man", "-Tutf8", "-ww", "-z", path.to_str().expect("utf-8")]);
            assert!(out.stderr.is_empty(), "groff warns on {page}: {}", text(&out));
        }
    }
    if have("man", &["--version"]) {
        let shown = render_with_man(&man8.join("clstat.8"));
        assert!(shown.contains("clstat") && shown.contains("--json"), "{shown}");
        let shown = render_with_man(&dir.path().join("man5/clconf.xml.5"));
        assert!(shown.contains("<arbitrator>"), "{shown}");
    } else {
        println!("SKIPPED: man -l needs man-db (apt-get install man-db)");
    }
}

#[test]
fn completions_for_every_command_and_shell() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (shell, file) in [("bash", "clstat"), ("zsh", "_clstat"), ("fish", "clstat.fish")] {
        let out_dir = dir.path().join(shell);
        ok(linuxha(), &["gen-completions", shell, out_dir.to_str().expect("utf-8")]);
        let script = std::fs::read_to_string(out_dir.join(file)).expect("completion");
        assert!(script.contains("json"), "{shell}: {script}");
        assert_eq!(std::fs::read_dir(&out_dir).expect("dir").count(), 17, "{shell}");
    }
    for entry in std::fs::read_dir(dir.path().join("bash")).expect("bash dir") {
        let path = entry.expect("entry").path();
        ok("bash", &["-n", path.to_str().expect("utf-8")]);
    }
    let out = run(linuxha(), &["gen-completions", "csh", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// target/release/linuxha and the staging tree written by it, or why the test is skipped.
fn staged(tools: &[(&str, &[&str], &str)]) -> Option<PathBuf> {
    for (program, args, install) in tools {
        if !have(program, args) {
            println!("SKIPPED: {program} is missing ({install}; scripts/test.sh does)");
            return None;
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: installing packages into a root needs root");
        return None;
    }
    let target = Path::new(linuxha()).parent()?.parent()?.to_path_buf();
    let release = target.join("release/linuxha");
    if !release.is_file() {
        println!(
            "SKIPPED: {} is missing (cargo build --release -p linuxha; scripts/test.sh does)",
            release.display()
        );
        return None;
    }
    ok(&release, &["package-tree", target.join("release/package-tree").to_str()?]);
    Some(target)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn dpkg(root: &Path, args: &[&str]) -> Output {
    let root_arg = format!("--root={}", root.display());
    // --path-include: minimal images exclude /usr/share/man and /usr/share/doc in dpkg.cfg.d.
    let mut all =
        vec![root_arg.as_str(), "--force-script-chrootless", "--force-depends", "--path-include=*"];
    all.extend(args);
    let out =
        Command::new("dpkg").args(&all).stdin(std::process::Stdio::null()).output().expect("dpkg");
    assert!(out.status.success(), "dpkg {all:?}: {}", text(&out));
    out
}

#[test]
fn deb_installs_upgrades_and_purges_keeping_the_configuration() {
    let _staging = STAGING.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_target) = staged(&[
        ("cargo-deb", &["--version"], "cargo install --locked cargo-deb"),
        ("dpkg", &["--version"], "apt-get install dpkg"),
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (v1, v2) = (dir.path().join("v1.deb"), dir.path().join("v2.deb"));
    let newer = format!("{VERSION}-2");
    let build = |output: &Path, version: Option<&str>| {
        let mut args = vec!["deb", "-p", "linuxha", "--no-build", "--fast", "--output"];
        args.push(output.to_str().expect("utf-8"));
        if let Some(v) = version {
            args.extend(["--deb-version", v]);
        }
        ok(cargo(), &args);
    };
    build(&v1, None);
    build(&v2, Some(&newer));

    // A throwaway root with dpkg's database and an administrator's configuration.
    let root = dir.path().join("root");
    for sub in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc/cluster"] {
        std::fs::create_dir_all(root.join(sub)).expect("root");
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(file), "").expect("dpkg db");
    }
    let admin = [("etc/cluster/clconf.xml", "<linuxha/>\n"), ("etc/cluster/cluster.key", "k\n")];
    for (file, content) in admin {
        std::fs::write(root.join(file), content).expect("admin file");
    }
    let admin_files_kept = |when: &str| {
        for (file, content) in admin {
            let now = std::fs::read_to_string(root.join(file));
            assert_eq!(now.ok().as_deref(), Some(content), "{file} after {when}");
        }
    };

    dpkg(&root, &["-i", v1.to_str().expect("utf-8")]);
    let sbin = root.join("usr/sbin");
    assert!(std::fs::symlink_metadata(sbin.join("linuxha")).expect("binary").is_file());
    let man8 = root.join("usr/share/man/man8");
    let pages: Vec<String> = std::fs::read_dir(&man8)
        .expect("man8")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".8.gz").map(str::to_string))
        .filter(|n| n != "linuxha")
        // linuxha-<command>.8 are pages of linuxha's subcommands, not program names.
        .filter(|n| !n.starts_with("linuxha-"))
        .collect();
    assert!(pages.len() >= 16, "{pages:?}");
    // Every command link has its page, every page its link.
    for entry in std::fs::read_dir(&sbin).expect("sbin") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if name != "linuxha" {
            assert!(pages.contains(&name), "{name} has no page: {pages:?}");
        }
    }
    for name in &pages {
        let link = std::fs::read_link(sbin.join(name));
        assert_eq!(link.ok().as_deref(), Some(Path::new("linuxha")), "{name}");
        for completion in [
            format!("usr/share/bash-completion/completions/{name}"),
            format!("usr/share/zsh/vendor-completions/_{name}"),
            format!("usr/share/fish/vendor_completions.d/{name}.fish"),
        ] {
            assert!(root.join(&completion).is_file(), "{completion}");
        }
    }
    for page in ["usr/share/man/man5/clconf.xml.5.gz", "usr/share/man/man5/appconf.xml.5.gz"] {
        assert!(root.join(page).is_file(), "{page}");
    }
    let units = root.join("usr/lib/systemd/system");
    let cldaemon = std::fs::read_to_string(units.join("linuxha-cldaemon.service")).expect("unit");
    assert!(cldaemon.contains("ExecStart=/usr/sbin/cldaemon --foreground\n"), "{cldaemon}");
    assert!(cldaemon.contains("\nLimitNOFILE=65536\n"), "{cldaemon}");
    let clarbd = std::fs::read_to_string(units.join("linuxha-clarbd.service")).expect("unit");
    assert!(clarbd.contains("ExecStart=/usr/sbin/clarbd --foreground\n"), "{clarbd}");
    assert!(
        clarbd.contains("\nProtectSystem=strict\n") && clarbd.contains("\nLimitNOFILE=65536\n")
    );
    assert!(root.join("usr/lib/tmpfiles.d/linuxha.conf").is_file());
    assert!(root.join("var/log/cluster").is_dir(), "postinst creates the log directory");
    let version = root.join("etc/cluster/VERSION");
    assert_eq!(std::fs::read_to_string(&version).ok(), Some(format!("{VERSION}\n")));
    admin_files_kept("install");

    // The installed binary works under a command name.
    let out = ok(sbin.join("clstat"), &["--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--json"), "{}", text(&out));
    if have("man", &["--version"]) {
        let shown = render_with_man(&man8.join("clstat.8.gz"));
        assert!(shown.contains("clstat"), "{shown}");
    } else {
        println!("SKIPPED: man -l needs man-db (apt-get install man-db)");
    }

    // Upgrade: an edited conffile is kept, the administrator's files too.
    std::fs::write(&version, "edited by the administrator\n").expect("edit VERSION");
    dpkg(&root, &["-i", v2.to_str().expect("utf-8")]);
    let status = dpkg(&root, &["-s", "linuxha"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains(&format!("Version: {newer}\n")));
    assert_eq!(
        std::fs::read_to_string(&version).ok().as_deref(),
        Some("edited by the administrator\n")
    );
    admin_files_kept("upgrade");
    ok(sbin.join("clstat"), &["--version"]);

    // Remove: the program goes, configuration stays; purge: the conffile goes, the
    // administrator's files and /etc/cluster stay, an enabled unit's link is cleaned up.
    dpkg(&root, &["-r", "linuxha"]);
    assert!(std::fs::symlink_metadata(sbin.join("clstat")).is_err());
    assert!(!sbin.join("linuxha").exists() && !units.join("linuxha-cldaemon.service").exists());
    assert!(version.is_file(), "a removal keeps conffiles");
    admin_files_kept("remove");
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).expect("wants");
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/linuxha-cldaemon.service",
        wants.join("linuxha-cldaemon.service"),
    )
    .expect("wants link");
    dpkg(&root, &["-P", "linuxha"]);
    assert!(!version.exists(), "purge removes the conffile");
    assert!(std::fs::symlink_metadata(wants.join("linuxha-cldaemon.service")).is_err());
    admin_files_kept("purge");
}

#[test]
fn rpm_carries_the_same_files() {
    let _staging = STAGING.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_target) = staged(&[
        ("cargo-generate-rpm", &["--version"], "cargo install --locked cargo-generate-rpm"),
        ("rpm", &["--version"], "apt-get install rpm"),
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let package = dir.path().join("linuxha.rpm");
    let package_arg = package.to_str().expect("utf-8");
    ok(
        cargo(),
        &["generate-rpm", "-p", "crates/linuxha", "--payload-compress", "gzip", "-o", package_arg],
    );
    let out = ok(
        "rpm",
        &["-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILENAMES}\n]", package_arg],
    );
    let files = String::from_utf8_lossy(&out.stdout).into_owned();
    let has = |line_end: &str| files.lines().any(|l| l.ends_with(line_end));
    for path in [
        " /usr/sbin/linuxha",
        " /usr/lib/systemd/system/linuxha-cldaemon.service",
        " /usr/lib/systemd/system/linuxha-clarbd.service",
        " /usr/lib/tmpfiles.d/linuxha.conf",
        " /usr/share/man/man8/linuxha.8.gz",
        " /usr/share/man/man8/clstat.8.gz",
        " /usr/share/man/man5/clconf.xml.5.gz",
        " /usr/share/bash-completion/completions/clstat",
        " /usr/share/zsh/site-functions/_clstat",
        " /usr/share/fish/vendor_completions.d/clstat.fish",
    ] {
        assert!(has(path), "{path} not in the rpm:\n{files}");
    }
    assert!(
        files.lines().any(|l| l.starts_with("cn ") && l.ends_with(" /etc/cluster/VERSION")),
        "{files}"
    );
    let listed = ok("rpm", &["-qlp", package_arg]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("/usr/sbin/linuxha\n"));
    let scripts = ok("rpm", &["-qp", "--scripts", package_arg]);
    let scripts = String::from_utf8_lossy(&scripts.stdout).into_owned();
    assert!(scripts.contains("ln -sfn linuxha /usr/sbin/$name"), "{scripts}");
    assert!(scripts.contains("mkdir -p /var/log/cluster"), "{scripts}");
    for name in ["clbuild", "clstat", "cldaemon", "clarbd"] {
        assert!(scripts.split([' ', ';']).any(|w| w == name), "{name}: {scripts}");
    }

    // Install, upgrade and erase in a throwaway root; rpm runs the scriptlets chrooted there,
    // with busybox as the shell.
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        println!("SKIPPED: installing the rpm needs /bin/busybox (apt-get install busybox-static)");
        return;
    }
    let newer = dir.path().join("linuxha-2.rpm");
    let newer_arg = newer.to_str().expect("utf-8");
    ok(
        cargo(),
        &[
            "generate-rpm",
            "-p",
            "crates/linuxha",
            "--payload-compress",
            "gzip",
            "-s",
            "release = \"2\"",
            "-o",
            newer_arg,
        ],
    );
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).expect("bin");
    std::fs::create_dir_all(root.join("etc/cluster")).expect("etc");
    std::fs::copy(busybox, root.join("bin/busybox")).expect("busybox");
    for applet in ["sh", "ln", "mkdir", "rm"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet");
    }
    let admin = [("etc/cluster/clconf.xml", "<linuxha/>\n"), ("etc/cluster/cluster.key", "k\n")];
    for (file, content) in admin {
        std::fs::write(root.join(file), content).expect("admin file");
    }
    let root_arg = root.to_str().expect("utf-8");
    let rpm = |args: &[&str]| {
        let mut all = vec!["--root", root_arg];
        all.extend(args);
        ok("rpm", &all)
    };
    rpm(&["--initdb"]);
    rpm(&["-i", "--nodeps", package_arg]);
    let sbin = root.join("usr/sbin");
    for name in ["clbuild", "clstat", "cldaemon", "clarbd"] {
        let link = std::fs::read_link(sbin.join(name));
        assert_eq!(link.ok().as_deref(), Some(Path::new("linuxha")), "{name} after %post");
    }
    assert!(root.join("var/log/cluster").is_dir(), "%post creates the log directory");
    ok(sbin.join("clstat"), &["--version"]);
    let version = root.join("etc/cluster/VERSION");
    std::fs::write(&version, "edited by the administrator\n").expect("edit VERSION");
    rpm(&["-U", "--nodeps", newer_arg]);
    let edited = std::fs::read_to_string(&version).ok();
    assert_eq!(edited.as_deref(), Some("edited by the administrator\n"), "noreplace");
    assert!(std::fs::read_link(sbin.join("clstat")).is_ok(), "links kept on upgrade");
    rpm(&["-e", "--nodeps", "linuxha"]);
    assert!(std::fs::symlink_metadata(sbin.join("clstat")).is_err(), "%preun removes links");
    assert!(!sbin.join("linuxha").exists());
    for (file, content) in admin {
        assert_eq!(
            std::fs::read_to_string(root.join(file)).ok().as_deref(),
            Some(content),
            "{file}"
        );
    }
    // rpm keeps an edited %config file as .rpmsave when the package goes.
    assert!(version.is_file() || root.join("etc/cluster/VERSION.rpmsave").is_file());
}
