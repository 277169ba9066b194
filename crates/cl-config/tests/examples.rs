//! The configurations under `examples/` load without errors, as shipped: `examples/cluster1`
//! (plain filesystems, OCF resources) and `examples/replicated` (DRBD over LVM). Scripts are
//! checked for real, under the example's directory as the node's root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cl_config::appconf::AppConfig;
use cl_config::{load_app, load_cluster, Built, ClusterConfig, FileKind, Host};

/// The example directory as a node's root.
struct ExampleRoot(PathBuf);

/// The key file the examples name; each installation makes its own (`clbuild --genkey`), so
/// none is shipped.
const KEY_FILE: &str = "/etc/cluster/cluster.key";

impl Host for ExampleRoot {
    fn file_kind(&self, path: &Path) -> FileKind {
        if path == Path::new(KEY_FILE) {
            return FileKind::NotExecutable;
        }
        let on_node = self.0.join(path.strip_prefix("/").unwrap_or(path));
        match std::fs::metadata(on_node) {
            Err(_) => FileKind::Missing,
            Ok(m) if m.is_dir() => FileKind::Directory,
            Ok(m) if m.permissions().mode() & 0o111 != 0 => FileKind::Executable,
            Ok(_) => FileKind::NotExecutable,
        }
    }
}

fn example(name: &str) -> ExampleRoot {
    ExampleRoot(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name))
}

fn load_example(root: &ExampleRoot, apps: &[&str]) -> (ClusterConfig, Vec<AppConfig>) {
    let etc = root.0.join("etc/cluster");
    let bytes = std::fs::read(etc.join("clconf.xml")).expect("clconf.xml readable");
    let loaded = load_cluster("clconf.xml", &bytes, root);
    assert_eq!(loaded.errors().count(), 0, "{:?}", loaded.diagnostics);
    let cluster = loaded.config.expect("cluster loads");
    let mut built: Vec<AppConfig> = Vec::new();
    for app in apps {
        let bytes = std::fs::read(etc.join(app).join("appconf.xml")).expect("appconf readable");
        let loaded = load_app("appconf.xml", &bytes, app, &cluster, &built, root);
        assert!(loaded.diagnostics.is_empty(), "{app}: {:?}", loaded.diagnostics);
        built.push(loaded.config.expect("application loads"));
    }
    (cluster, built)
}

#[test]
fn cluster1_example_loads() {
    let (_, apps) = load_example(&example("cluster1"), &["apache", "ocfweb"]);
    assert!(apps.iter().all(|a| a.replication.is_none()));
}

#[test]
fn replicated_example_loads_and_round_trips() {
    let (cluster, apps) = load_example(&example("replicated"), &["webdata"]);
    assert_eq!(cluster.name, "cluster2");
    let app = &apps[0];
    let replication = app.replication.as_ref().expect("replicated storage");
    assert_eq!(replication.volume_group.as_ref().map(|g| g.name.as_str()), Some("webdatavg"));
    let volumes: Vec<(&str, u32, u16, &Path)> = replication
        .volumes
        .iter()
        .map(|v| (v.resource.as_str(), v.minor, v.port, v.filesystem.device.as_path()))
        .collect();
    assert_eq!(
        volumes,
        [
            ("webdata-www", 0, 7788, Path::new("/dev/drbd0")),
            ("webdata-db", 1, 7789, Path::new("/dev/drbd1")),
        ]
    );
    assert!(replication
        .volumes
        .iter()
        .all(|v| v.net == "private" && v.resync_rate_kib == 40 << 10));
    assert!(app.filesystems.is_empty(), "no unreplicated filesystem");

    let built = Built::after(None, 1, "node1".into(), String::new(), app.clone());
    let json = serde_json::to_string_pretty(&built).expect("serialises");
    let back: Built<AppConfig> = serde_json::from_str(&json).expect("parses");
    assert_eq!(&back.config, app);
}
