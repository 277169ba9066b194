//! The built configuration: what `clbuild` / `clbuildapp --build` install after validation.
//!
//! It is one self-contained JSON document: a version number that only grows, where and when it
//! was built, the resolved configuration, and the source XML it came from — so it can be sent
//! to a peer, compared, and re-validated there with the same positions in any message.

use serde::{Deserialize, Serialize};

/// Format number of the built artefact, bumped on incompatible changes.
pub const FORMAT: u32 = 1;

/// A validated configuration with its build metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Built<T> {
    /// Artefact format.
    pub format: u32,
    /// Build number: one more than the previous build of the same file.
    pub version: u64,
    /// Seconds since the Unix epoch when it was built.
    pub built_at: u64,
    /// The node it was built on.
    pub built_on: String,
    /// The XML it was built from, byte for byte.
    pub source: String,
    /// The resolved configuration.
    pub config: T,
}

impl<T> Built<T> {
    /// The build that follows `previous` (version 1 when there was none).
    pub fn after(
        previous: Option<u64>,
        built_at: u64,
        built_on: String,
        source: String,
        config: T,
    ) -> Built<T> {
        Built {
            format: FORMAT,
            version: previous.map_or(1, |v| v + 1),
            built_at,
            built_on,
            source,
            config,
        }
    }
}
