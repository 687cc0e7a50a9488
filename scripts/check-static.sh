#!/usr/bin/env bash
# Builds rotor-webhook and rotor-reloader exactly as Dockerfile.webhook does and shows that the
# binaries are static and run in an empty root (chroot, no libc, no shell). rotor-init's image
# binary is checked by crates/rotor-init/tests/static_binary.rs (against OpenBao).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked --release -p rotor-webhook -p rotor-reloader --target x86_64-unknown-linux-gnu
out=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chroot_bin=$(command -v chroot || echo /usr/sbin/chroot)
for bin in rotor-webhook rotor-reloader; do
  file "$out/$bin"
  if ! file "$out/$bin" | grep -Eq 'static-pie linked|statically linked'; then
    echo "check-static: $bin is not static" >&2; exit 1
  fi
  cp "$out/$bin" "$root/$bin"
  "$chroot_bin" "$root" "/$bin" --version
  ls -l "$out/$bin" | awk -v b="$bin" '{print "check-static: " b " " $5 " bytes"}'
done
