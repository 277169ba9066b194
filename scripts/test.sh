#!/usr/bin/env bash
# Run every check and test of linuxha: installs what the tests need (Debian packages, as root),
# then formatting, lints, and all tests, including the network-namespace lab tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# tool:package pairs the tests use (a tool may be an absolute path, e.g. an OCF agent).
needs=(ip:iproute2 nft:nftables ping:iputils-ping arping:iputils-arping mkfs.ext4:e2fsprogs
       mkfs.ext2:e2fsprogs blkid:util-linux unshare:util-linux nsenter:util-linux
       mount:mount python3:python3 ps:procps tcpdump:tcpdump timeout:coreutils
       /usr/lib/ocf/resource.d/heartbeat/IPaddr2:resource-agents
       qemu-system-x86_64:qemu-system-x86 cpio:cpio /bin/busybox:busybox-static curl:curl
       wipefs:util-linux faketime:faketime rpm:rpm man:man-db groff:groff-base
       promtool:prometheus)
missing=()
for pair in "${needs[@]}"; do
  tool=${pair%%:*} package=${pair#*:}
  command -v "$tool" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "test.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

# The packages (t31_packages): cargo-deb and cargo-generate-rpm, at known versions, installed
# once into ~/.cargo/bin.
for tool in cargo-deb@3.8.0 cargo-generate-rpm@0.21.1; do
  name=${tool%@*} version=${tool#*@}
  if [ "$("$name" --version 2>/dev/null)" != "$name $version" ]; then
    echo "test.sh: cargo install --locked $tool"
    cargo install --locked --quiet "$name" --version "$version"
  fi
done

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The VM lab's guests (t70: replicated storage on real kernels) run the release binary: the
# debug build is too slow for TCG guests. t31_packages packages it.
echo "test.sh: cargo build --release -p linuxha (for the VM lab's guests and the packages)"
cargo build --release -p linuxha
echo "test.sh: cargo test"
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt || status=$?
# One closing line for whoever counts: the sum over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' target/test-output.txt
exit "$status"
