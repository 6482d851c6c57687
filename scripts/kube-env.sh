# shellcheck shell=bash disable=SC2034
# kube-env.sh: the names, paths and addresses shared by kube-build.sh, kube-up.sh
# and kube-down.sh (sourced, not run). Every value can be overridden from the
# environment; the defaults make one cluster per machine.
#
# Network: the cluster uses only 127.0.0.1 (etcd, the API server, the
# controller-manager's and scheduler's health ports, the kubelet's healthz) and
# a bridge of its own, KUBE_BRIDGE with KUBE_BRIDGE_ADDR/24, which kube-up.sh
# creates and kube-down.sh removes. Pods get addresses on that subnet and no
# default route: they reach the host at KUBE_BRIDGE_ADDR (the tests' mock
# Anthropic API listens there) and nothing beyond it; the host reaches pod IPs
# directly. No iptables rule is added (the kubelet's are turned off with
# makeIPTablesUtilChains: false, the CNI bridge runs with ipMasq: false). So
# where Docker runs with br_netfilter (bridge-nf-call-iptables=1) and its
# FORWARD policy DROP, as here, pods do not reach each other: nothing needs
# that (it would take an ACCEPT rule for -i $KUBE_BRIDGE -o $KUBE_BRIDGE).

KUBE_VERSION="${KUBE_VERSION:-1.37.2}"
# The etcd server built next to Kubernetes (Kubernetes 1.37 uses the v3.7 client).
ETCD_VERSION="${ETCD_VERSION:-3.7.3}"
AGCLUSTER_CACHE="${AGCLUSTER_CACHE:-$HOME/.cache/agcluster}"
# The binaries, built once per version; kube-down.sh leaves them.
KUBE_CACHE="$AGCLUSTER_CACHE/kubernetes-v$KUBE_VERSION"
KUBE_BIN="$KUBE_CACHE/bin"
# Everything the running cluster owns: certificates, etcd data, containerd's
# root and state, the kubelet's root dir, logs and pid files.
KUBE_DIR="${AGCLUSTER_KUBE_DIR:-/var/lib/agcluster-kube}"
KUBE_BRIDGE="${KUBE_BRIDGE:-agck0}"
KUBE_BRIDGE_ADDR="${KUBE_BRIDGE_ADDR:-10.88.77.1}"
KUBE_POD_SUBNET="${KUBE_POD_SUBNET:-10.88.77.0/24}"
# The API server allocates ClusterIPs from this range; nothing routes it (no
# kube-proxy): pods talk to the host, not to Services.
KUBE_SERVICE_RANGE="${KUBE_SERVICE_RANGE:-10.88.78.0/24}"
KUBE_SERVICE_IP="${KUBE_SERVICE_IP:-10.88.78.1}"
KUBE_API_PORT="${KUBE_API_PORT:-6443}"
KUBE_ETCD_PORT="${KUBE_ETCD_PORT:-23790}"
KUBE_ETCD_PEER_PORT="${KUBE_ETCD_PEER_PORT:-23800}"
KUBE_NODE="${KUBE_NODE:-agcluster-node}"
KUBE_PAUSE_IMAGE="agcluster.local/pause:1"
AGENT_IMAGE="${AGENT_IMAGE:-agcluster/agent:latest}"

KUBE_KUBECONFIG="$KUBE_DIR/admin.kubeconfig"
KUBE_CONTAINERD_SOCK="$KUBE_DIR/containerd/containerd.sock"
KUBE_KUBELET_ROOT="$KUBE_DIR/kubelet"
KUBE_LOGS="$KUBE_DIR/logs"
KUBE_PIDS="$KUBE_DIR/pids"
# The host sysctls the kubelet changes at start, as they were before it.
KUBE_SYSCTLS_SAVED="$KUBE_DIR/sysctls.saved"
# (It sets six; on this kind of machine three differ: vm.overcommit_memory 0->1,
# kernel.panic 1->10, kernel.panic_on_oops 0->1.)
KUBE_SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"
# The Debian directory of containernetworking-plugins.
KUBE_CNI_BIN="/usr/lib/cni"
# Serializes kube-up.sh and kube-down.sh (test binaries run kube-up.sh in parallel).
KUBE_LOCK="$AGCLUSTER_CACHE/.kube.lock"

# The components in the order kube-down.sh stops them (kube-up.sh starts them
# in the reverse order): the API server's clients before it, so it exits at
# once; containerd and etcd last.
KUBE_COMPONENTS="kubelet kube-scheduler kube-controller-manager kube-apiserver containerd etcd"

# kube_lock takes the lock on fd 9 (closed for every daemon started).
kube_lock() {
	mkdir -p "$AGCLUSTER_CACHE"
	exec 9>"$KUBE_LOCK"
	flock 9
}

# kube_pid prints the pid of a running component started by kube-up.sh, or
# fails. The pid file alone is not trusted: the process must still run the
# component's binary (a pid can be reused).
kube_pid() {
	local name="$1" pid exe
	[ -f "$KUBE_PIDS/$name.pid" ] || return 1
	pid="$(cat "$KUBE_PIDS/$name.pid")"
	[ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
	exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
	case "$exe" in
	*/"$name" | */"$name"" (deleted)") echo "$pid" ;;
	*) return 1 ;;
	esac
}

# kubectl_admin runs the cached kubectl with the admin kubeconfig.
kubectl_admin() {
	"$KUBE_BIN/kubectl" --kubeconfig "$KUBE_KUBECONFIG" "$@"
}
