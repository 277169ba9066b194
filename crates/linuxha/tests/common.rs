//! Shared helpers for the command-line tests: a node root in a temp dir and the binary
//! called by its command names.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A throwaway node: a root with the example cluster's configuration, and a directory of
/// command links (`clbuild` → linuxha …) so the multicall names are exercised.
pub struct Node {
    /// Holds the root and the links; removed on drop.
    pub dir: tempfile::TempDir,
    /// The node name the commands run as.
    pub name: String,
}

impl Node {
    /// A node called `name` with examples/cluster1 copied under its root.
    pub fn with_example(name: &str) -> Node {
        let dir = tempfile::Builder::new().prefix("linuxha-cli-test-").tempdir().expect("temp dir");
        let node = Node { dir, name: name.to_string() };
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster1");
        copy_tree(&example, &node.root());
        std::fs::create_dir_all(node.bin()).expect("bin dir");
        for command in [
            "clbuild",
            "clbuildapp",
            "clstat",
            "clform",
            "clhalt",
            "clstartapp",
            "clhaltapp",
            "clswitchapp",
            "cllock",
            "clsplitbrain",
        ] {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_linuxha"), node.bin().join(command))
                .expect("link");
        }
        node
    }

    /// The node's root (LINUXHA_ROOT).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Where the command links are.
    pub fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// Run `program args…` (a command link name, or `linuxha`) as this node.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let path = if program == "linuxha" {
            PathBuf::from(env!("CARGO_BIN_EXE_linuxha"))
        } else {
            self.bin().join(program)
        };
        Command::new(path)
            .args(args)
            .env("LINUXHA_ROOT", self.root())
            .env("LINUXHA_NODE", &self.name)
            .output()
            .expect("command runs")
    }

    /// Path under the root.
    pub fn file(&self, relative: &str) -> PathBuf {
        self.root().join(relative)
    }
}

/// Copy a directory tree, keeping permissions.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// stdout and stderr as text, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
