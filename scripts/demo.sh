#!/usr/bin/env bash
# The main job in one command: install the tools (cached), build rotor, run the whole flow on the
# local control plane and a real node (stack, webhook, reloader, a Deployment whose pod kubelet
# runs under containerd + runc, its log through the API, a rotation, the rollout, the new pod's
# log), then stop everything it started and undo its host changes. Needs root (kubelet, runc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo: the real node needs root (kubelet, containerd and runc create cgroups, mounts and" >&2
  echo "demo: network namespaces); run: sudo scripts/demo.sh" >&2
  exit 1
fi
echo "==> installing the tools (cached in ${ROTOR_TOOLS_CACHE:-$HOME/.cache/rotor})"
bash scripts/install-tools.sh >/dev/null
echo "==> building rotor"
cargo build --quiet --locked --workspace --bins
exec target/debug/rotor-demo "$@"
