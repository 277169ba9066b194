//! Any bytes as clconf.xml: the parser must answer with a config or diagnostics, never panic.
#![no_main]

use std::path::Path;

use cl_config::{load_cluster, FileKind, Host};
use libfuzzer_sys::fuzz_target;

struct EveryFileExists;

impl Host for EveryFileExists {
    fn file_kind(&self, _path: &Path) -> FileKind {
        FileKind::Executable
    }
}

fuzz_target!(|data: &[u8]| {
    let loaded = load_cluster("clconf.xml", data, &EveryFileExists);
    // A config is only returned when no error was reported.
    assert!(loaded.config.is_none() || loaded.errors().next().is_none());
});
