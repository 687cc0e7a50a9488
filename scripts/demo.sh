#!/usr/bin/env bash
# The main job in one command: install the tools (cached), build rotor, run the whole flow on the
# local control plane (stack, webhook, reloader, a Deployment, its pod run as a kubelet would, a
# rotation and the rollout), then stop everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-tools.sh >/dev/null
echo "==> building rotor"
cargo build --quiet --locked --workspace --bins
exec target/debug/rotor-demo "$@"
