#!/usr/bin/env bash
# Runs every check: formatting, clippy, unit and property tests, and the end-to-end tests
# against the real local control plane (installed by scripts/install-tools.sh). Nothing skips:
# a missing tool fails the tests that need it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
step() { echo; echo "== test: $*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "one rustls provider in the dependency graph (ring, no aws-lc-rs)"
if cargo tree --workspace -e normal,build,dev -i aws-lc-rs >/dev/null 2>&1; then
  cargo tree --workspace -e normal,build,dev -i aws-lc-rs | head -n 20
  echo "aws-lc-rs is in the dependency graph; rotor uses ring only" >&2
  exit 1
fi
cargo tree --workspace -e normal -i ring --depth 1

step "the image binaries are static and run in an empty root (Dockerfile.webhook's build)"
bash scripts/check-static.sh

step "cargo test (unit, property and end-to-end)"
cargo test --workspace --locked -- --test-threads 2
