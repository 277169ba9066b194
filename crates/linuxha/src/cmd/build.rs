//! `clbuild` and `clbuildapp`: validate a configuration and install it as a new built version.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cl_config::clconf::{check_hex_key, KeySource};
use cl_config::{load_app, load_cluster, AppConfig, Built, ClusterConfig};
use cl_paths::secure::{self, Trust};
use cl_paths::Paths;

use crate::cli::{ClbuildArgs, ClbuildappArgs};
use crate::fail::{Failure, Outcome};
use crate::site::{self, RootedHost};

/// Progress lines, printed only with --verbose.
struct Progress {
    command: &'static str,
    verbose: bool,
}

impl Progress {
    fn say(&self, line: impl AsRef<str>) {
        if self.verbose {
            println!("{}: {}", self.command, line.as_ref());
        }
    }
}

/// Run clbuild.
pub fn clbuild(paths: &Paths, args: &ClbuildArgs) -> Outcome<()> {
    let progress = Progress { command: "clbuild", verbose: args.verbose };
    if args.genkey {
        return genkey(paths, args, &progress);
    }
    let previous = site::read_built::<ClusterConfig>("clbuild", &paths.built_clconf())?;
    let (source_name, bytes) = if args.rollback {
        let prev_path = cl_paths::previous_path(&paths.built_clconf());
        let prev = site::read_built::<ClusterConfig>("clbuild", &prev_path)?.ok_or_else(|| {
            Failure::runtime(format!(
                "clbuild: there is no previous built configuration ({}) to roll back to",
                prev_path.display()
            ))
        })?;
        progress
            .say(format!("rolling back to the configuration built as version {}", prev.version));
        (
            format!("{} (previous build, version {})", paths.clconf().display(), prev.version),
            prev.source.into_bytes(),
        )
    } else {
        let file = paths.clconf();
        progress.say(format!("reading {}", file.display()));
        (file.display().to_string(), site::read_file("clbuild", paths, &file)?)
    };
    let host = RootedHost { paths };
    let loaded = load_cluster(&source_name, &bytes, &host);
    let config = site::report("clbuild", Path::new(&source_name), loaded)?;
    progress.say(format!(
        "cluster `{}`: {} nodes, {} known connections, heartbeat every {:?} (timeout {:?})",
        config.name,
        config.nodes.len(),
        config.known_connections.len(),
        config.heartbeat.interval,
        config.heartbeat.timeout
    ));
    let me = site::local_node("clbuild")?;
    if config.node(&me).is_none() {
        return Err(Failure::config(format!(
            "clbuild: this node (`{me}`) is not one of the nodes in clconf.xml ({}); fix the node names or set LINUXHA_NODE",
            config.node_names().join(", ")
        )));
    }
    if let KeySource::File(key_path) = &config.key {
        check_key_file(paths, key_path)?;
        progress.say(format!("key file {} is valid", key_path.display()));
    }
    let source = String::from_utf8_lossy(&bytes).into_owned();
    if let Some(previous) = &previous {
        if previous.source == source && previous.config == config && !args.force && !args.rollback {
            progress.say(format!(
                "configuration unchanged; version {} stays installed (use --force to rebuild)",
                previous.version
            ));
            return Ok(());
        }
    }
    refuse_while_running(paths, &config.name, args.force, "clbuild")?;
    let built = Built::after(
        previous.as_ref().map(|p| p.version),
        site::now_epoch_seconds(),
        me,
        source,
        config,
    );
    let version = built.version;
    site::install_built("clbuild", &paths.built_clconf(), &built)?;
    progress.say(format!("installed version {version} at {}", paths.built_clconf().display()));
    if previous.is_some() {
        progress.say(format!(
            "previous version kept at {}",
            cl_paths::previous_path(&paths.built_clconf()).display()
        ));
    }
    crate::cmd::cluster::distribute(
        "clbuild",
        paths,
        cl_wire::msg::ConfigKind::Cluster,
        args.force,
        args.verbose,
    )
}

/// The cluster key: the file must hold at least 128 bits of hex.
fn check_key_file(paths: &Paths, key_path: &Path) -> Outcome<()> {
    let (resolved, bytes) =
        secure::read_configured(paths, key_path, secure::KEY_CAP, Trust::Secret)
            .map_err(|e| site::file_failure("clbuild", e))?;
    check_hex_key(&String::from_utf8_lossy(&bytes))
        .map_err(|e| Failure::config(format!("clbuild: key file {}: {e}", resolved.display())))?;
    Ok(())
}

fn genkey(paths: &Paths, args: &ClbuildArgs, progress: &Progress) -> Outcome<()> {
    let target = args.key_file.clone().unwrap_or_else(|| PathBuf::from("/etc/cluster/cluster.key"));
    if !target.is_absolute() {
        return Err(Failure::config(format!(
            "clbuild: --key-file {} must be an absolute path (as on the node, under the root)",
            target.display()
        )));
    }
    let resolved = paths.confine(&target).map_err(|e| site::file_failure("clbuild", e))?;
    if resolved.exists() && !args.force {
        return Err(Failure::runtime(format!(
            "clbuild: {} already exists; a new key must be copied to every node, so replace it only with --force",
            resolved.display()
        )));
    }
    write_new_key("clbuild", &resolved)?;
    println!("clbuild: wrote a new 256-bit cluster key to {}", resolved.display());
    progress.say(format!(
        "add <key file=\"{}\"/> to <global> and copy the file to every node",
        target.display()
    ));
    Ok(())
}

/// Write a new random 256-bit cluster key to `resolved` (mode 0600, atomically).
pub fn write_new_key(command: &str, resolved: &Path) -> Outcome<()> {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let text = format!("{}\n", hex::encode(bytes));
    cl_paths::write_atomic_with_mode(resolved, text.as_bytes(), 0o600).map_err(|e| {
        Failure::runtime(format!("{command}: cannot write {}: {e}", resolved.display()))
    })
}

/// Changing the configuration under a formed cluster needs --force: the daemons keep the
/// version they started with until the cluster is formed again.
fn refuse_while_running(paths: &Paths, cluster: &str, force: bool, command: &str) -> Outcome<()> {
    let formed = paths.run_dir().join(format!("{cluster}.formed")).exists();
    if formed && !force {
        return Err(Failure::runtime(format!(
            "{command}: cluster `{cluster}` is formed on this node; use --force to install the new configuration anyway (it is sent to the other nodes and used when the cluster is next formed)"
        )));
    }
    Ok(())
}

/// Run clbuildapp.
pub fn clbuildapp(paths: &Paths, args: &ClbuildappArgs) -> Outcome<()> {
    let progress = Progress { command: "clbuildapp", verbose: args.verbose };
    let app_name = cl_config::value::name(&args.application, "application name")
        .map_err(|e| Failure::config(format!("clbuildapp: {e}")))?;
    let cluster = site::built_cluster("clbuildapp", paths)?;
    if let Some(source) = &args.source {
        crate::names::node("clbuildapp", &cluster.config, source)?;
    }
    progress.say(format!(
        "using cluster `{}` built as version {}",
        cluster.config.name, cluster.version
    ));
    let file = paths.appconf(&app_name);
    progress.say(format!("reading {}", file.display()));
    let bytes = site::read_file("clbuildapp", paths, &file)?;
    let others: Vec<AppConfig> = site::built_apps("clbuildapp", paths, Some(&app_name))?
        .into_iter()
        .map(|b| b.config)
        .collect();
    // The agents themselves are asked: meta-data for the parameters, validate-all.
    let host = cl_daemon::agents::AgentHost { paths };
    let loaded =
        load_app(&file.display().to_string(), &bytes, &app_name, &cluster.config, &others, &host);
    let app = site::report("clbuildapp", &file, loaded)?;
    progress.say(format!(
        "application `{}`: nodes {}, {} VIPs, {} filesystems, {} resources, {} monitors",
        app.name,
        app.nodes.join(" > "),
        app.vips.len(),
        app.filesystems.len(),
        app.resources.len(),
        app.monitors.len()
    ));
    if args.vgbuild {
        if !app.filesystems.is_empty() || app.replication.is_none() {
            prepare_storage(paths, &app, args.force, &progress)?;
        }
        if let Some(replication) = &app.replication {
            let file_name = file.display().to_string();
            crate::cmd::vgbuild::vgbuild(
                paths,
                &cluster.config,
                &app,
                replication,
                &file_name,
                args,
            )?;
        }
    } else if args.source.is_some() || args.no_wait {
        return Err(Failure::config("clbuildapp: --source and --no-wait go with --vgbuild"));
    }
    if args.build {
        let built_path = paths.built_app(&app_name);
        let previous = site::read_built::<AppConfig>("clbuildapp", &built_path)?;
        let source = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(previous) = &previous {
            if previous.source == source && previous.config == app && !args.force {
                progress.say(format!(
                    "configuration unchanged; version {} stays installed (use --force to rebuild)",
                    previous.version
                ));
                return Ok(());
            }
        }
        let me = site::local_node("clbuildapp")?;
        let built = Built::after(
            previous.as_ref().map(|p| p.version),
            site::now_epoch_seconds(),
            me,
            source,
            app,
        );
        let version = built.version;

        site::install_built("clbuildapp", &built_path, &built)?;
        progress.say(format!("installed version {version} at {}", built_path.display()));
        let kind = cl_wire::msg::ConfigKind::App { name: app_name.clone() };
        crate::cmd::cluster::distribute("clbuildapp", paths, kind, args.force, args.verbose)?;
    }
    Ok(())
}

/// --vgbuild: every device exists and holds the expected filesystem; with --force an empty
/// device gets one. A device holding a different filesystem is never overwritten.
fn prepare_storage(
    paths: &Paths,
    app: &AppConfig,
    force: bool,
    progress: &Progress,
) -> Outcome<()> {
    if app.filesystems.is_empty() {
        progress.say("no filesystems configured; storage needs nothing");
        return Ok(());
    }
    let mut problems = Vec::new();
    for fs_spec in &app.filesystems {
        let device = paths.resolve(&fs_spec.device);
        if !device.exists() {
            problems.push(format!("device {} does not exist on this node", device.display()));
            continue;
        }
        match probe_fstype(&device) {
            Ok(Some(found)) if found == fs_spec.fstype => {
                progress.say(format!("{} holds {} as expected", device.display(), found));
            }
            Ok(Some(found)) => problems.push(format!(
                "{} holds a filesystem of type {found}, not {}; it is never overwritten automatically (wipe it yourself if you mean it)",
                device.display(),
                fs_spec.fstype
            )),
            Ok(None) if force => {
                if is_mounted(&device) {
                    problems.push(format!("{} is mounted; not creating a filesystem on it", device.display()));
                    continue;
                }
                progress.say(format!("creating an {} filesystem on {} (--force)", fs_spec.fstype, device.display()));
                make_filesystem(&device, &fs_spec.fstype).unwrap_or_else(|e| problems.push(e));
            }
            Ok(None) => problems.push(format!(
                "{} holds no filesystem; run with --force to create {} on it",
                device.display(),
                fs_spec.fstype
            )),
            Err(e) => problems.push(e),
        }
        let mountpoint = match paths.confine(&fs_spec.mountpoint) {
            Ok(mountpoint) => mountpoint,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        if !mountpoint.exists() {
            progress.say(format!("creating mount point {}", mountpoint.display()));
            if let Err(e) = fs::create_dir_all(&mountpoint) {
                problems.push(format!("cannot create mount point {}: {e}", mountpoint.display()));
            }
        }
    }
    match problems.as_slice() {
        [] => Ok(()),
        [one] => Err(Failure::runtime(format!("clbuildapp: {one}"))),
        many => {
            for p in many {
                eprintln!("clbuildapp: {p}");
            }
            Err(Failure::runtime(format!(
                "clbuildapp: {} problems with the storage of `{}`",
                many.len(),
                app.name
            )))
        }
    }
}

/// The filesystem type on `device` (None when it holds none), as blkid sees it.
fn probe_fstype(device: &Path) -> Result<Option<String>, String> {
    let output = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(device)
        .output()
        .map_err(|e| format!("cannot run blkid to inspect {}: {e}", device.display()))?;
    match output.status.code() {
        Some(0) => Ok(Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
            .filter(|t| !t.is_empty())),
        Some(2) => Ok(None),
        _ => Err(format!(
            "blkid could not inspect {}: {}",
            device.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

fn is_mounted(device: &Path) -> bool {
    let canonical = fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
    fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| l.split_whitespace().next() == Some(&*canonical.to_string_lossy()))
        })
        .unwrap_or(false)
}

fn make_filesystem(device: &Path, fstype: &str) -> Result<(), String> {
    let mut command = Command::new(format!("mkfs.{fstype}"));
    if fstype.starts_with("ext") {
        command.arg("-q");
    }
    let output =
        command.arg(device).output().map_err(|e| format!("cannot run mkfs.{fstype}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mkfs.{fstype} {} failed: {}",
            device.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
