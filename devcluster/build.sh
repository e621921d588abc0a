#!/usr/bin/env bash
# Build the local cluster's binaries (etcd, kube-apiserver, kube-controller-manager, kubectl, helm)
# from their published Go modules into a cache outside the repository.
#
#   devcluster/build.sh              build what is missing or reports the wrong version
#   devcluster/build.sh --real-node  also the real-node lane's parts: kubelet, kubeadm, kube-scheduler,
#                                    kube-proxy, kind, CoreDNS, kube-router and our pause
#   CACHEWARDEN_BIN_DIR=/x build.sh  put the binaries in /x (default ~/.cache/cachewarden/bin)
#
# Each binary is skipped when the cached one already reports the pinned version, so a warm run takes
# a second. A failure names the component and prints the tail of its build log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${CACHEWARDEN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cachewarden}
bin_dir=${CACHEWARDEN_BIN_DIR:-$cache_root/bin}
work_dir=$cache_root/build
mkdir -p "$bin_dir" "$work_dir"

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod GOPROXY=${GOPROXY:-https://proxy.golang.org}
export GONOSUMDB=${GONOSUMDB:-} GOFLAGS="-mod=mod -buildvcs=false"

k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
staging_version=v0.${KUBERNETES_VERSION#v1.}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
started=$(date +%s)

log() { printf '[devcluster build %4ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

fail() { # component, log file
  echo "devcluster build: FAILED building $1; last lines of $2:" >&2
  tail -n 40 "$2" >&2 || true
  exit 1
}

# run_logged COMPONENT LOGFILE CMD...: run a step, print a heartbeat while it runs, fail with the log tail.
run_logged() {
  local component=$1 logfile=$2; shift 2
  ( "$@" ) >>"$logfile" 2>&1 &
  local pid=$! waited=0
  # Poll every second (a step ends as soon as it is done), print a heartbeat every 30 s.
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    waited=$((waited + 1))
    if [ $((waited % 30)) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then
      log "$component: still building ($(wc -l <"$logfile") log lines)"
    fi
  done
  wait "$pid" || fail "$component" "$logfile"
}

have_version() { # binary, expected substring of its version output, version args...
  local bin=$bin_dir/$1 want=$2; shift 2
  [ -x "$bin" ] && "$bin" "$@" 2>/dev/null | grep -qF -- "$want"
}

# build_kubernetes CMD...: the named commands of k8s.io/kubernetes, each skipped when it already
# reports the pinned version.
build_kubernetes() {
  local missing=() cmd
  for cmd in "$@"; do
    case $cmd in
      kubectl) have_version kubectl "$KUBERNETES_VERSION" version --client || missing+=("$cmd") ;;
      kubeadm) have_version kubeadm "$KUBERNETES_VERSION" version -o short || missing+=("$cmd") ;;
      *) have_version "$cmd" "$KUBERNETES_VERSION" --version || missing+=("$cmd") ;;
    esac
  done
  if [ ${#missing[@]} -eq 0 ]; then log "kubernetes $KUBERNETES_VERSION ($*): cached"; return; fi
  local mod=$work_dir/kubernetes-$KUBERNETES_VERSION logfile=$work_dir/kubernetes-$KUBERNETES_VERSION.log
  mkdir -p "$mod"; : >>"$logfile"
  log "kubernetes $KUBERNETES_VERSION: downloading k8s.io/kubernetes (log: $logfile)"
  local gomod
  gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" 2>>"$logfile" \
          | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p') || fail kubernetes "$logfile"
  [ -n "$gomod" ] || fail kubernetes "$logfile"
  # The staging modules k8s.io/kubernetes requires at v0.0.0 (and replaces with ./staging paths) are
  # published as v0.<minor>.<patch>; derive the list from its go.mod instead of hard-coding it.
  local staging
  staging=$(awk '/^require|^\t/ {for (i=1;i<=NF;i++) if ($i ~ /^k8s\.io\// && $(i+1) == "v0.0.0") print $i}' "$gomod" | sort -u)
  [ -n "$staging" ] || { echo "no v0.0.0 staging modules found in $gomod" >>"$logfile"; fail kubernetes "$logfile"; }
  {
    echo "module cachewarden.local/kubebuild"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    for m in $staging; do echo "replace $m => $m $staging_version"; done
  } >"$mod/go.mod"
  log "kubernetes: wrapper module replaces $(echo "$staging" | wc -l) staging modules with $staging_version"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit=0000000000000000000000000000000000000000"
  done
  for cmd in "${missing[@]}"; do
    log "kubernetes: building $cmd"
    run_logged "$cmd" "$logfile" bash -c "cd '$mod' && go build -trimpath -ldflags '$ldflags' -o '$bin_dir/$cmd.tmp' k8s.io/kubernetes/cmd/$cmd"
    mv "$bin_dir/$cmd.tmp" "$bin_dir/$cmd"
    log "kubernetes: $cmd done"
  done
}

build_etcd() {
  if have_version etcd "etcd Version: ${ETCD_VERSION#v}" --version; then log "etcd $ETCD_VERSION: cached"; return; fi
  local mod=$work_dir/etcd-$ETCD_VERSION logfile=$work_dir/etcd-$ETCD_VERSION.log
  mkdir -p "$mod"; : >"$logfile"
  log "etcd $ETCD_VERSION: downloading go.etcd.io/etcd/server/v3 (log: $logfile)"
  local gomod
  gomod=$(cd "$mod" && go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>>"$logfile" \
          | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p') || fail etcd "$logfile"
  [ -n "$gomod" ] || fail etcd "$logfile"
  # server/v3's go.mod replaces its sibling etcd modules with ../ paths; pin them to the same release.
  local siblings
  siblings=$(awk '$1 ~ /^go\.etcd\.io\/etcd\// && $2 == "=>" && $3 ~ /^\.\.?\// {print $1} $1 == "replace" && $2 ~ /^go\.etcd\.io\/etcd\// && $4 ~ /^\.\.?\// {print $2}' "$gomod" | sort -u)
  {
    echo "module cachewarden.local/etcdbuild"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo
    for m in $siblings; do echo "replace $m => $m $ETCD_VERSION"; done
  } >"$mod/go.mod"
  cat >"$mod/main.go" <<'GO'
// Command etcd runs the etcd server from the published go.etcd.io/etcd/server/v3 module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "etcd: building (siblings pinned: $(echo $siblings))"
  run_logged etcd "$logfile" bash -c "cd '$mod' && go build -trimpath -ldflags '-s -w' -o '$bin_dir/etcd.tmp' ."
  mv "$bin_dir/etcd.tmp" "$bin_dir/etcd"
  log "etcd: done"
}

build_helm() {
  if have_version helm "$HELM_VERSION" version --short; then log "helm $HELM_VERSION: cached"; return; fi
  local logfile=$work_dir/helm-$HELM_VERSION.log; : >"$logfile"
  local major=${HELM_VERSION%%.*}
  log "helm $HELM_VERSION: building (log: $logfile)"
  run_logged helm "$logfile" env GOBIN="$bin_dir" GOFLAGS=-buildvcs=false go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION -X helm.sh/helm/$major/internal/version.gitTreeState=clean" \
    "helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
  log "helm: done"
}

# --- the real-node lane (docs/devcluster.md, "Real-node lane") ------------------------------------

build_kind() {
  if have_version kind "kind $KIND_VERSION " version; then log "kind $KIND_VERSION: cached"; return; fi
  local logfile=$work_dir/kind-$KIND_VERSION.log; : >"$logfile"
  log "kind $KIND_VERSION: building (log: $logfile)"
  run_logged kind "$logfile" env GOBIN="$bin_dir" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION"
  log "kind: done"
}

# CoreDNS through a wrapper main that links only the plugins a cluster's Corefile uses (kubeadm's
# default Corefile: errors, health, ready, kubernetes, prometheus, forward, cache, loop, reload,
# loadbalance, plus log): the stock main links every cloud provider's SDK and takes far longer.
build_coredns() {
  if have_version coredns "CoreDNS-${COREDNS_VERSION#v}" -version; then log "coredns $COREDNS_VERSION: cached"; return; fi
  local mod=$work_dir/coredns-$COREDNS_VERSION logfile=$work_dir/coredns-$COREDNS_VERSION.log
  mkdir -p "$mod"; : >"$logfile"
  {
    echo "module cachewarden.local/corednsbuild"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo
    echo "require github.com/coredns/coredns $COREDNS_VERSION"
  } >"$mod/go.mod"
  cat >"$mod/main.go" <<'GO'
// Command coredns runs CoreDNS from the published github.com/coredns/coredns module with the plugins a
// Kubernetes cluster's Corefile names; the order in which they run comes from CoreDNS's own table.
package main

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
GO
  log "coredns $COREDNS_VERSION: building (log: $logfile)"
  run_logged coredns "$logfile" bash -c "cd '$mod' && go build -trimpath -ldflags '-s -w' -o '$bin_dir/coredns.tmp' ."
  mv "$bin_dir/coredns.tmp" "$bin_dir/coredns"
  log "coredns: done"
}

# The NetworkPolicy enforcer the node runs as a DaemonSet: kube-router with only its firewall
# (iptables + ipset); routing and the Service proxy stay kube-proxy's and the CNI bridge's.
build_kube_router() {
  local stamp=$bin_dir/.kube-router.version
  if [ -x "$bin_dir/kube-router" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$KUBE_ROUTER_VERSION" ]; then
    log "kube-router $KUBE_ROUTER_VERSION: cached"; return
  fi
  local mod=$work_dir/kube-router-$KUBE_ROUTER_VERSION logfile=$work_dir/kube-router-$KUBE_ROUTER_VERSION.log
  mkdir -p "$mod"; : >"$logfile"
  {
    echo "module cachewarden.local/kuberouterbuild"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo
    echo "require github.com/cloudnativelabs/kube-router/v2 $KUBE_ROUTER_VERSION"
  } >"$mod/go.mod"
  log "kube-router $KUBE_ROUTER_VERSION: building (log: $logfile)"
  run_logged kube-router "$logfile" bash -c "cd '$mod' && go build -trimpath -ldflags '-s -w' -o '$bin_dir/kube-router.tmp' github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
  mv "$bin_dir/kube-router.tmp" "$bin_dir/kube-router"
  echo "$KUBE_ROUTER_VERSION" >"$stamp"
  log "kube-router: done"
}

# The pod sandbox's process: our own few lines (devcluster/realnode/pause/main.go), rebuilt when they change.
build_pause() {
  local src=$here/realnode/pause/main.go stamp=$bin_dir/.pause.sha256 sum
  sum=$(sha256sum "$src" | cut -d' ' -f1)
  if [ -x "$bin_dir/pause" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then log "pause: cached"; return; fi
  local logfile=$work_dir/pause.log; : >"$logfile"
  run_logged pause "$logfile" bash -c "cd '$(dirname "$src")' && go build -trimpath -ldflags '-s -w' -o '$bin_dir/pause.tmp' main.go"
  mv "$bin_dir/pause.tmp" "$bin_dir/pause"; echo "$sum" >"$stamp"
  log "pause: done"
}

real_node=0
for arg in "$@"; do
  case $arg in
    --real-node) real_node=1 ;;
    *) echo "devcluster build: unknown argument $arg; accepted: --real-node" >&2; exit 2 ;;
  esac
done

log "binaries go to $bin_dir (Go $(go env GOVERSION), $(nproc) cores)"
build_etcd
build_helm
build_kubernetes kube-apiserver kube-controller-manager kubectl
if [ "$real_node" = 1 ]; then
  build_kubernetes kubelet kubeadm kube-scheduler kube-proxy
  build_kind
  build_coredns
  build_kube_router
  build_pause
fi
log "all binaries ready in $bin_dir ($(( $(date +%s) - started ))s)"
