#!/usr/bin/env bash
# Renders deploy/rotor.yaml (plain manifests for kubectl users) from the Helm chart.
# Certificates come from cert-manager in this rendering, so the output is deterministic.
# A test (tests/e2e/helm_chart.rs) fails when deploy/ is out of date: rerun this script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
helm=${HELM:-.tools/bin/helm}
{
  echo "# Rendered from charts/rotor by scripts/render-deploy.sh; do not edit by hand."
  echo "# Needs cert-manager. Install: kubectl create namespace rotor-system && kubectl apply -f deploy/rotor.yaml"
  "$helm" template rotor charts/rotor --namespace rotor-system --set certificates.mode=certManager
} > deploy/rotor.yaml
echo "wrote deploy/rotor.yaml"
