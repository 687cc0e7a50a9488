#!/usr/bin/env bash
# Runs every check: formatting, clippy, unit and property tests, and the end-to-end tests
# against the real local control plane and a real node (kubelet + containerd + runc; root only):
# everything on the newest Kubernetes (containerd 2, image volumes), then the node tests and the
# chart on the node again on the older minor (containerd 1.6, the copy path). README, "Tested
# versions".
# It installs the tools first (scripts/install-tools.sh, cached: well under a second when warm),
# so it is the one command a fresh machine needs. Nothing skips: a missing tool fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
step() { echo; echo "== test: $*"; }

if [ "$(id -u)" != 0 ]; then
  echo "test: the end-to-end tests run pods on a real node and need root (CI runs as root)" >&2
  exit 1
fi
step "tools (scripts/install-tools.sh, cached by version)"
bash scripts/install-tools.sh

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

step "cargo test (unit, property and end-to-end) on Kubernetes $(.tools/bin/kubelet --version | cut -d' ' -f2)"
cargo test --workspace --locked -- --test-threads 2

older=$PWD/.tools/k8s-older/bin
step "the node tests and the chart on the node on the older minor, Kubernetes $("$older/kubelet" --version | cut -d' ' -f2)"
ROTOR_TOOLS_BIN=$older cargo test --locked -p rotor-e2e --test node_pods --test chart_on_node -- --test-threads 2
