#!/usr/bin/env bash
# Build the linuxha .deb and .rpm: the release binary, the staging tree it writes (command
# links, units, manual pages, completions, VERSION), then cargo-deb and cargo-generate-rpm.
# Needs: cargo install --locked cargo-deb cargo-generate-rpm. Output: target/debian/*.deb,
# target/generate-rpm/*.rpm.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p linuxha
"$target/release/linuxha" package-tree "$target/release/package-tree"
cargo deb -p linuxha --no-build "$@"
cargo generate-rpm -p crates/linuxha
ls -l "$target"/debian/*.deb "$target"/generate-rpm/*.rpm
