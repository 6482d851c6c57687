#!/usr/bin/env bash
# kube-build.sh: build, once per version, the binaries of the local Kubernetes
# cluster and print the directory that holds them (everything else goes to
# stderr). Offline: all sources come from the Go module proxy.
#
#   kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl
#       from k8s.io/kubernetes v$KUBE_VERSION, in a scratch module of our own:
#       kubernetes requires its staging modules (k8s.io/api, client-go, ...) as
#       v0.0.0 replaced by ./staging directories, which a module that requires it
#       cannot see, so the scratch go.mod replaces each of them by the published
#       v0.<minor>.<patch> (all but k8s.io/sample-cli-plugin, which the proxy
#       refuses and nothing needs). The version is stamped with -X, else kubectl
#       and client-go cannot parse it.
#   etcd   from go.etcd.io/etcd/server/v3 v$ETCD_VERSION, in a second scratch
#       module (its dependency versions are not kubernetes').
#   pause  a static binary that sleeps until SIGTERM or SIGINT: the pod sandbox
#       image's only file (kube-up.sh makes the image; there is no registry).
#
# First build: about 7 minutes on 2 cores (build cache ~4 GB, module sources
# ~0.5 GB); it reports progress every 30 s. KUBE_BUILD_P sets go build -p
# (default 2) and it runs under nice -n 10: other work shares the machine.
set -euo pipefail
# shellcheck source=scripts/kube-env.sh
. "$(dirname "$0")/kube-env.sh"

log() { printf 'kube-build: %s\n' "$*" >&2; }

STAGING_VERSION="v0.${KUBE_VERSION#*.}"
BINARIES="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd pause"
STAMP="kubernetes v$KUBE_VERSION staging $STAGING_VERSION etcd v$ETCD_VERSION pause 1"
P="${KUBE_BUILD_P:-2}"

built() {
	local b
	[ "$(cat "$KUBE_BIN/VERSIONS" 2>/dev/null)" = "$STAMP" ] || return 1
	for b in $BINARIES; do
		[ -x "$KUBE_BIN/$b" ] || return 1
	done
}

if built; then
	echo "$KUBE_BIN"
	exit 0
fi

export GOFLAGS="${GOFLAGS:-} -mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0
OUT="$KUBE_CACHE/bin.partial"
rm -rf "$OUT"
mkdir -p "$OUT" "$KUBE_CACHE/src/kubernetes/pause" "$KUBE_CACHE/src/etcd"

# heartbeat runs a go build -v (its package list in $1) and says every 30 s how
# far it got, so a CI log is not silent for minutes.
heartbeat() {
	local list="$1" what="$2" start=$SECONDS pid rc
	shift 2
	"$@" 2>"$list" &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		for _ in $(seq 1 30); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$what: $((SECONDS - start)) s, $(grep -c . "$list" || true) packages so far (last: $(tail -n 1 "$list"))"
		fi
	done
	rc=0
	wait "$pid" || rc=$?
	if [ "$rc" -ne 0 ]; then
		log "$what failed (exit $rc):"
		grep -v '^[a-zA-Z0-9._/-]*$' "$list" | tail -n 60 >&2 || tail -n 60 "$list" >&2
		exit "$rc"
	fi
	log "$what: done in $((SECONDS - start)) s ($(grep -c . "$list" || true) packages)"
}

# --- kubernetes ---------------------------------------------------------------
cd "$KUBE_CACHE/src/kubernetes"
log "resolving k8s.io/kubernetes v$KUBE_VERSION (module proxy)"
printf 'module agcluster.local/kube-build\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v%s\n' "$KUBE_VERSION" >go.mod
kmod="$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[ -f "$kmod" ] || {
	log "no go.mod for k8s.io/kubernetes@v$KUBE_VERSION"
	exit 1
}
{
	echo
	echo "// kubernetes' staging modules at their published versions"
	echo "replace ("
	sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$kmod" |
		grep -vx 'k8s.io/sample-cli-plugin' |
		while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done
	echo ")"
} >>go.mod
cat >pause/main.go <<'EOF'
// Command pause is the pod sandbox's process: it holds the pod's namespaces
// and sleeps until it is told to stop.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
EOF
: >go.sum
K8S_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
pkgs=""
for c in $K8S_CMDS; do pkgs="$pkgs k8s.io/kubernetes/cmd/$c"; done
log "downloading module sources (first time ~0.5 GB)"
# shellcheck disable=SC2086
go mod download k8s.io/kubernetes
# shellcheck disable=SC2086
go list -deps $pkgs >/dev/null

date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
minor="${KUBE_VERSION#*.}"
minor="${minor%%.*}"
major="${KUBE_VERSION%%.*}"
V=k8s.io/component-base/version
C=k8s.io/client-go/pkg/version
LDF="-s -w -X $V.gitVersion=v$KUBE_VERSION -X $V.gitMajor=$major -X $V.gitMinor=$minor -X $V.gitTreeState=clean -X $V.buildDate=$date"
LDF="$LDF -X $C.gitVersion=v$KUBE_VERSION -X $C.gitMajor=$major -X $C.gitMinor=$minor"
log "building $K8S_CMDS (go build -p $P, nice 10; ~7 min from an empty build cache)"
# shellcheck disable=SC2086
heartbeat "$KUBE_CACHE/build-kubernetes.log" "kubernetes build" \
	nice -n 10 go build -v -p "$P" -trimpath -ldflags "$LDF" -o "$OUT/" $pkgs
go build -trimpath -ldflags "-s -w" -o "$OUT/pause" ./pause

# --- etcd ---------------------------------------------------------------------
cd "$KUBE_CACHE/src/etcd"
printf 'module agcluster.local/etcd-build\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$ETCD_VERSION" >go.mod
: >go.sum
log "building etcd v$ETCD_VERSION"
go mod download go.etcd.io/etcd/server/v3
go list -deps go.etcd.io/etcd/server/v3 >/dev/null
heartbeat "$KUBE_CACHE/build-etcd.log" "etcd build" \
	nice -n 10 go build -v -p "$P" -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3

echo "$STAMP" >"$OUT/VERSIONS"
"$OUT/kube-apiserver" --version >&2
rm -rf "$KUBE_BIN"
mv "$OUT" "$KUBE_BIN"
built || {
	log "binaries missing after the build"
	exit 1
}
echo "$KUBE_BIN"
