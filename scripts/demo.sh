#!/usr/bin/env bash
# The main job in one command: install the tools (cached), build rotor, run the local flow.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-tools.sh
cargo build --quiet --workspace --bins
exec cargo run --quiet -p rotor-e2e --bin rotor-demo -- "$@"
