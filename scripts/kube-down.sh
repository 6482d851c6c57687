#!/usr/bin/env bash
# kube-down.sh: stop the cluster kube-up.sh started and put the host back:
# the components stopped in order (the kubelet, scheduler and
# controller-manager before the API server, which otherwise waits ~70 s for
# its clients; then the pods' containers, containerd and etcd), the pods'
# network namespaces and mounts removed, the bridge deleted, the host sysctls
# the kubelet changed restored, and $KUBE_DIR removed. The cached binaries
# stay. Idempotent: with nothing running it only checks that nothing is left.
set -euo pipefail
SCRIPTS="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/kube-env.sh
. "$SCRIPTS/kube-env.sh"

log() { printf 'kube-down: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || {
	log "needs root"
	exit 1
}
if [ -z "${KUBE_LOCK_HELD:-}" ]; then
	kube_lock
fi

# stop NAME: SIGTERM, up to 15 s, then SIGKILL.
stop() {
	local name="$1" pid
	if pid="$(kube_pid "$name")"; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 75); do
			kube_pid "$name" >/dev/null || break
			sleep 0.2
		done
		if kube_pid "$name" >/dev/null; then
			log "$name did not exit within 15 s of SIGTERM; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$KUBE_PIDS/$name.pid"
}

ctr_k8s() {
	ctr -n k8s.io --address "$KUBE_CONTAINERD_SOCK" "$@"
}

# remove_containers kills and deletes every container of the cluster's
# containerd (pods' containers and sandboxes), so their shims exit.
remove_containers() {
	local ids id
	[ -S "$KUBE_CONTAINERD_SOCK" ] && kube_pid containerd >/dev/null || return 0
	ids="$(ctr_k8s containers ls -q 2>/dev/null || true)"
	[ -n "$ids" ] || return 0
	log "removing $(echo "$ids" | wc -l) containers"
	for id in $ids; do
		ctr_k8s tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
	done
	for id in $ids; do
		ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true
		ctr_k8s containers delete "$id" >/dev/null 2>&1 || true
		# libcni's cache of the sandbox's networks (CNI DEL never ran).
		rm -f /var/lib/cni/results/*-"$id"-* 2>/dev/null || true
	done
}

# kill_shims kills what is left of the shims this containerd started (their
# command line names its socket), e.g. when containerd had died.
kill_shims() {
	local p
	for p in /proc/[0-9]*; do
		if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "^[^ ]*containerd-shim[^ ]* .*-address $KUBE_CONTAINERD_SOCK "; then
			kill -KILL "${p#/proc/}" 2>/dev/null || true
		fi
	done
}

# remove_pod_cgroups kills what still runs in the kubelet's cgroups
# (kubepods, in every cgroup v1 hierarchy) and removes them.
remove_pod_cgroups() {
	local root pid
	for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
		[ -d "$root" ] || continue
		find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do
			kill -KILL "$pid" 2>/dev/null || true
		done
	done
	for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
		[ -d "$root" ] || continue
		find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}

# remove_netns deletes the pods' network namespaces that CNI left: those under
# /run/netns whose interfaces have an address on the cluster's subnet.
remove_netns() {
	local ns prefix="${KUBE_BRIDGE_ADDR%.*}."
	[ -d /run/netns ] || return 0
	for ns in /run/netns/cni-*; do
		[ -e "$ns" ] || continue
		if ip -n "${ns##*/}" -4 -o addr show 2>/dev/null | grep -q "inet ${prefix//./\\.}"; then
			ip netns delete "${ns##*/}" 2>/dev/null || { umount -l "$ns" && rm -f "$ns"; } || true
		fi
	done
}

# unmount_all unmounts everything under $KUBE_DIR, deepest first.
unmount_all() {
	local m
	awk -v d="$KUBE_DIR/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
		m="$(printf '%b' "$m")" # /proc/self/mounts escapes spaces as \040
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
	done
}

restore_sysctls() {
	local kv
	[ -f "$KUBE_SYSCTLS_SAVED" ] || return 0
	while read -r kv; do
		[ -n "$kv" ] && sysctl -q -w "$kv" >/dev/null
	done <"$KUBE_SYSCTLS_SAVED"
	log "restored $(tr '\n' ' ' <"$KUBE_SYSCTLS_SAVED")"
	rm -f "$KUBE_SYSCTLS_SAVED"
}

begin=$SECONDS
for c in kubelet kube-scheduler kube-controller-manager kube-apiserver; do
	stop "$c"
done
remove_containers
stop containerd
kill_shims
stop etcd
remove_pod_cgroups
remove_netns
unmount_all
if ip link show "$KUBE_BRIDGE" >/dev/null 2>&1; then
	ip link delete "$KUBE_BRIDGE"
fi
restore_sysctls
# libcni's result cache, outside our directory; its file names start with
# the network's name.
rm -f /var/lib/cni/results/agcluster-* 2>/dev/null || true
rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true # only if empty
if [ -d "$KUBE_DIR" ]; then
	if awk -v d="$KUBE_DIR/" 'index($2, d) == 1 { f = 1 } END { exit !f }' /proc/self/mounts; then
		log "mounts left under $KUBE_DIR; removing the rest of it only"
	fi
	# --one-file-system: never descend into something still mounted there.
	rm -rf --one-file-system "$KUBE_DIR"
fi
log "cluster down ($((SECONDS - begin)) s)"
