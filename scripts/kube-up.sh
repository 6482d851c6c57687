#!/usr/bin/env bash
# kube-up.sh: start (or verify) a one-node Kubernetes cluster on this machine,
# offline, and print the path of its admin kubeconfig as the last line of
# stdout (everything else goes to stderr). Needs root (a bridge, mounts,
# cgroups). Idempotent: with the cluster up it only checks it (about a second)
# and imports the agent image again if Docker's copy changed.
#
# What runs, all under $KUBE_DIR (default /var/lib/agcluster-kube) with pid
# files, logs and state there (see kube-env.sh for names and addresses):
#   etcd                     127.0.0.1:$KUBE_ETCD_PORT, plain HTTP on loopback
#   kube-apiserver           https://127.0.0.1:$KUBE_API_PORT; it advertises the
#                            bridge address (it refuses a loopback one)
#   kube-controller-manager  default ServiceAccounts, node lifecycle, ...
#   kube-scheduler
#   containerd               a private instance (Debian's package): own socket,
#                            root and state; Docker's engine is not touched
#   kubelet                  node $KUBE_NODE, IP $KUBE_BRIDGE_ADDR, cgroupfs
# Pods attach to the bridge $KUBE_BRIDGE through Debian's CNI plugins. Images
# come from Docker (`docker save | ctr import`), so pods use
# imagePullPolicy: Never; the sandbox ("pause") image is built here FROM
# scratch. kube-down.sh stops it all and puts the host back.
#
# The first run builds the binaries (kube-build.sh, ~7 min, cached by version
# under $AGCLUSTER_CACHE). From built binaries a start takes ~10 s plus the
# agent image import. AGENT_IMAGE (default agcluster/agent:latest; run it again
# with another name to import more images, each re-imported only when its
# Docker image id changed) is
# waited for up to AGENT_IMAGE_WAIT seconds (default 900) if Docker does not
# have it yet; AGENT_IMAGE_WAIT=0 with no image skips the import.
set -euo pipefail
SCRIPTS="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/kube-env.sh
. "$SCRIPTS/kube-env.sh"

log() { printf 'kube-up: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (it creates a bridge, mounts and cgroups)"
if [ -z "${KUBE_LOCK_HELD:-}" ]; then
	kube_lock
	export KUBE_LOCK_HELD=1
fi

# --- checks -------------------------------------------------------------------

# all_running: every component's process is alive.
all_running() {
	local c
	for c in $KUBE_COMPONENTS; do
		kube_pid "$c" >/dev/null || return 1
	done
}

# node_ready: the API answers and the node is Ready.
node_ready() {
	[ "$(kubectl_admin get node "$KUBE_NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# healthy: the cluster kube-up.sh started is up and usable.
healthy() {
	[ -f "$KUBE_KUBECONFIG" ] && [ -x "$KUBE_BIN/kubectl" ] || return 1
	all_running || return 1
	ip -4 -o addr show dev "$KUBE_BRIDGE" 2>/dev/null | grep -q " $KUBE_BRIDGE_ADDR/" || return 1
	kubectl_admin get --raw /readyz >/dev/null 2>&1 || return 1
	node_ready
}

# wait_for tries a command every 0.2 s until it succeeds or $1 seconds pass.
wait_for() {
	local timeout="$1" what="$2" deadline
	shift 2
	deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "$what: not within ${timeout}s"
			return 1
		fi
		sleep 0.2
	done
}

# fail_with_log names a component whose start failed and shows its log.
fail_with_log() {
	local name="$1"
	log "$name did not come up; last lines of $KUBE_LOGS/$name.log:"
	tail -n 40 "$KUBE_LOGS/$name.log" >&2 || true
	exit 1
}

# --- packages -----------------------------------------------------------------

# ensure_packages installs, from Debian, what is not there yet.
ensure_packages() {
	local missing=""
	command -v containerd >/dev/null || missing="$missing containerd"
	command -v runc >/dev/null || missing="$missing runc"
	[ -x "$KUBE_CNI_BIN/bridge" ] || missing="$missing containernetworking-plugins"
	command -v openssl >/dev/null || missing="$missing openssl"
	command -v ip >/dev/null || missing="$missing iproute2"
	command -v curl >/dev/null || missing="$missing curl"
	[ -z "$missing" ] && return 0
	log "installing from Debian:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing >&2
}

# --- certificates and kubeconfigs ---------------------------------------------

PKI="$KUBE_DIR/pki"

# cert NAME SUBJECT EXTENSIONS: an ECDSA P-256 key and a certificate signed by
# the cluster CA.
cert() {
	local name="$1" subj="$2" ext="$3"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
	printf '%b\n' "$ext" >"$PKI/$name.ext"
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 3650 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
	rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
	local client="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
	local server="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth"
	mkdir -p "$PKI"
	chmod 0700 "$PKI"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
		-keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=agcluster-kube-ca" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
	cert apiserver "/CN=kube-apiserver" \
		"$server\nsubjectAltName=IP:127.0.0.1,IP:$KUBE_BRIDGE_ADDR,IP:$KUBE_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	cert kubelet-serving "/CN=$KUBE_NODE" "$server\nsubjectAltName=IP:$KUBE_BRIDGE_ADDR,DNS:$KUBE_NODE"
	cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
	cert admin "/O=system:masters/CN=agcluster-admin" "$client"
	cert controller-manager "/CN=system:kube-controller-manager" "$client"
	cert scheduler "/CN=system:kube-scheduler" "$client"
	cert kubelet "/O=system:nodes/CN=system:node:$KUBE_NODE" "$client"
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
	openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

# kubeconfig NAME USER: a kubeconfig for the client certificate NAME, with the
# certificates embedded (the admin one may be copied elsewhere).
kubeconfig() {
	local name="$1" user="$2" out="$KUBE_DIR/$1.kubeconfig"
	cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: agcluster
  cluster:
    server: https://127.0.0.1:$KUBE_API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$name.crt")
    client-key-data: $(base64 -w0 "$PKI/$name.key")
contexts:
- name: agcluster
  context:
    cluster: agcluster
    user: $user
current-context: agcluster
EOF
	chmod 0600 "$out"
}

# --- configuration files ------------------------------------------------------

write_containerd_config() {
	local d="$KUBE_DIR/containerd"
	mkdir -p "$d/root" "$d/state" "$KUBE_DIR/cni/net.d" "$KUBE_DIR/cni/ipam"
	# restrict_oom_score_adj: without CAP_SYS_RESOURCE runc cannot lower a
	# process's oom_score_adj, and every sandbox fails ("can't get final
	# child's PID from pipe: EOF"). The sandbox image is ours: nothing is pulled.
	cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$KUBE_CONTAINERD_SOCK"

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$KUBE_PAUSE_IMAGE"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$KUBE_CNI_BIN"
    conf_dir = "$KUBE_DIR/cni/net.d"
    max_conf_num = 1
EOF
	# No default route: pods reach the host's bridge address and nothing else
	# (see kube-env.sh). No masquerading, so no iptables rules.
	cat >"$KUBE_DIR/cni/net.d/10-agcluster.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "agcluster",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$KUBE_BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$KUBE_POD_SUBNET", "rangeStart": "${KUBE_BRIDGE_ADDR%.*}.10", "rangeEnd": "${KUBE_BRIDGE_ADDR%.*}.250"}]],
        "dataDir": "$KUBE_DIR/cni/ipam"
      }
    }
  ]
}
EOF
}

write_kubelet_config() {
	mkdir -p "$KUBE_KUBELET_ROOT" "$KUBE_DIR/pod-logs" "$KUBE_DIR/volume-plugins"
	# makeIPTablesUtilChains: false keeps the kubelet's iptables chains off the
	# host. Image GC off (100%) and tiny eviction thresholds: images come from
	# Docker and cannot be pulled again, and a busy CI disk must not evict pods.
	cat >"$KUBE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $KUBE_BRIDGE_ADDR
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
containerRuntimeEndpoint: unix://$KUBE_CONTAINERD_SOCK
podLogsDir: $KUBE_DIR/pod-logs
volumePluginDir: $KUBE_DIR/volume-plugins
hairpinMode: none
resolvConf: /etc/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
EOF
}

# --- the pause image ----------------------------------------------------------

# pause_image_tar makes (once) an OCI image archive of the pause binary, FROM
# scratch, named $KUBE_PAUSE_IMAGE; deterministic, so its digest is stable.
pause_image_tar() {
	local out="$KUBE_CACHE/pause-image.tar" t layer cfg man
	if [ -f "$out" ] && [ "$out" -nt "$KUBE_BIN/pause" ]; then
		echo "$out"
		return
	fi
	t="$(mktemp -d "$KUBE_CACHE/.pause.XXXXXX")"
	mkdir -p "$t/rootfs" "$t/oci/blobs/sha256"
	install -m 0755 "$KUBE_BIN/pause" "$t/rootfs/pause"
	tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$t/rootfs" -cf "$t/layer.tar" pause
	layer="$(sha256sum "$t/layer.tar" | cut -d' ' -f1)"
	mv "$t/layer.tar" "$t/oci/blobs/sha256/$layer"
	printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$layer" >"$t/config.json"
	cfg="$(sha256sum "$t/config.json" | cut -d' ' -f1)"
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
		"$cfg" "$(stat -c %s "$t/config.json")" "$layer" "$(stat -c %s "$t/oci/blobs/sha256/$layer")" >"$t/manifest.json"
	man="$(sha256sum "$t/manifest.json" | cut -d' ' -f1)"
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
		"$man" "$(stat -c %s "$t/manifest.json")" "$KUBE_PAUSE_IMAGE" "${KUBE_PAUSE_IMAGE##*:}" >"$t/oci/index.json"
	mv "$t/config.json" "$t/oci/blobs/sha256/$cfg"
	mv "$t/manifest.json" "$t/oci/blobs/sha256/$man"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$t/oci/oci-layout"
	tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$t/oci" -cf "$out.partial" oci-layout index.json blobs
	mv "$out.partial" "$out"
	rm -rf "$t"
	echo "$out"
}

ctr_k8s() {
	ctr -n k8s.io --address "$KUBE_CONTAINERD_SOCK" "$@"
}

# --- the agent image ----------------------------------------------------------

# normalized_image prints an image reference as containerd names it
# (agcluster/agent:latest -> docker.io/agcluster/agent:latest).
normalized_image() {
	local ref="$1" first
	case "$ref" in
	*/*) ;;
	*) ref="library/$ref" ;;
	esac
	first="${ref%%/*}"
	case "$first" in
	*.* | *:* | localhost) ;;
	*) ref="docker.io/$ref" ;;
	esac
	case "${ref##*/}" in
	*:* | *@*) ;;
	*) ref="$ref:latest" ;;
	esac
	echo "$ref"
}

# import_agent_image copies AGENT_IMAGE from Docker into the cluster's
# containerd when it is not there or Docker's image id changed.
import_agent_image() {
	local id="" waited=0 wait="${AGENT_IMAGE_WAIT:-900}" name have record
	"$SCRIPTS/ensure-docker.sh" >&2
	until id="$(docker image inspect -f '{{.Id}}' "$AGENT_IMAGE" 2>/dev/null)"; do
		if [ "$waited" -ge "$wait" ]; then
			if [ "$wait" = 0 ]; then
				log "no $AGENT_IMAGE in Docker; not imported (AGENT_IMAGE_WAIT=0)"
				return 0
			fi
			die "no $AGENT_IMAGE in Docker after ${wait}s (make image builds it)"
		fi
		[ $((waited % 30)) = 0 ] && log "waiting for Docker image $AGENT_IMAGE (make image builds it; ${waited}s so far)"
		sleep 5
		waited=$((waited + 5))
	done
	name="$(normalized_image "$AGENT_IMAGE")"
	# The Docker image id each image was imported at, one file per image.
	record="$KUBE_DIR/images/$(echo "$name" | tr '/:@' '___').id"
	have="$(cat "$record" 2>/dev/null || true)"
	if [ "$have" = "$id" ] && [ -n "$(ctr_k8s images ls -q "name==$name" 2>/dev/null)" ]; then
		return 0
	fi
	log "importing $AGENT_IMAGE ($id) into the cluster's containerd"
	local start=$SECONDS
	docker save "$AGENT_IMAGE" | ctr_k8s images import - >/dev/null
	[ -n "$(ctr_k8s images ls -q "name==$name")" ] || die "import of $AGENT_IMAGE did not create $name"
	mkdir -p "$KUBE_DIR/images"
	echo "$id" >"$record"
	log "imported $AGENT_IMAGE in $((SECONDS - start)) s"
}

# --- starting -----------------------------------------------------------------

# start NAME BINARY ARGS...: run a component in its own session, detached
# from this script (stdin, stdout, stderr and the lock's fd 9 closed), with
# its pid and log under $KUBE_DIR.
start() {
	local name="$1"
	shift
	setsid "$@" </dev/null >"$KUBE_LOGS/$name.log" 2>&1 9>&- &
	echo "$!" >"$KUBE_PIDS/$name.pid"
}

start_etcd() {
	start etcd "$KUBE_BIN/etcd" --name agcluster --data-dir "$KUBE_DIR/etcd" \
		--listen-client-urls "http://127.0.0.1:$KUBE_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$KUBE_ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
		--initial-cluster "agcluster=http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
		--unsafe-no-fsync --log-level warn
	wait_for 30 etcd curl -fsS "http://127.0.0.1:$KUBE_ETCD_PORT/health" || fail_with_log etcd
}

start_apiserver() {
	start kube-apiserver "$KUBE_BIN/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$KUBE_ETCD_PORT" \
		--bind-address 127.0.0.1 --secure-port "$KUBE_API_PORT" --advertise-address "$KUBE_BRIDGE_ADDR" \
		--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--client-ca-file "$PKI/ca.crt" \
		--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types InternalIP \
		--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-cluster-ip-range "$KUBE_SERVICE_RANGE" \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--profiling=false
	wait_for 60 kube-apiserver kubectl_admin get --raw /readyz || fail_with_log kube-apiserver
}

start_controllers() {
	start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
		--kubeconfig "$KUBE_DIR/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$KUBE_DIR/controller-manager.kubeconfig" \
		--authorization-kubeconfig "$KUBE_DIR/controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --leader-elect=false \
		--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
		--use-service-account-credentials --profiling=false
	start kube-scheduler "$KUBE_BIN/kube-scheduler" \
		--kubeconfig "$KUBE_DIR/scheduler.kubeconfig" \
		--authentication-kubeconfig "$KUBE_DIR/scheduler.kubeconfig" \
		--authorization-kubeconfig "$KUBE_DIR/scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --leader-elect=false --profiling=false
}

start_containerd() {
	start containerd containerd --config "$KUBE_DIR/containerd/config.toml"
	wait_for 30 containerd ctr_k8s version || fail_with_log containerd
	ctr_k8s images import "$(pause_image_tar)" >/dev/null
}

# save_sysctls records, once, the host values the kubelet is about to change.
save_sysctls() {
	local k
	[ -f "$KUBE_SYSCTLS_SAVED" ] && return 0
	for k in $KUBE_SYSCTLS; do
		echo "$k=$(sysctl -n "$k")"
	done >"$KUBE_SYSCTLS_SAVED.partial"
	mv "$KUBE_SYSCTLS_SAVED.partial" "$KUBE_SYSCTLS_SAVED"
}

start_kubelet() {
	save_sysctls
	start kubelet "$KUBE_BIN/kubelet" --config "$KUBE_DIR/kubelet.yaml" \
		--kubeconfig "$KUBE_DIR/kubelet.kubeconfig" --root-dir "$KUBE_KUBELET_ROOT" \
		--hostname-override "$KUBE_NODE" --node-ip "$KUBE_BRIDGE_ADDR"
	wait_for 90 "node $KUBE_NODE Ready" node_ready || fail_with_log kubelet
	wait_for 60 "ServiceAccount default/default" kubectl_admin -n default get serviceaccount default ||
		fail_with_log kube-controller-manager
}

make_bridge() {
	if ! ip link show "$KUBE_BRIDGE" >/dev/null 2>&1; then
		ip link add "$KUBE_BRIDGE" type bridge
	fi
	ip -4 -o addr show dev "$KUBE_BRIDGE" | grep -q " $KUBE_BRIDGE_ADDR/" ||
		ip addr add "$KUBE_BRIDGE_ADDR/${KUBE_POD_SUBNET#*/}" dev "$KUBE_BRIDGE"
	ip link set "$KUBE_BRIDGE" up
}

# --- main ---------------------------------------------------------------------

# A cluster whose processes all run is only waited for, never restarted on a
# passing hiccup (a loaded machine, the API server catching up): tests of
# other packages may be using it.
if all_running && wait_for 90 "the running cluster to be healthy" healthy; then
	import_agent_image
	log "cluster already up"
	echo "$KUBE_KUBECONFIG"
	exit 0
fi

if [ -d "$KUBE_DIR" ]; then
	log "a cluster is partly up or down; tearing it down first"
	"$SCRIPTS/kube-down.sh" >&2
fi

ensure_packages
"$SCRIPTS/kube-build.sh" >/dev/null

begin=$SECONDS
log "starting the cluster in $KUBE_DIR"
mkdir -p "$KUBE_DIR" "$KUBE_LOGS" "$KUBE_PIDS"
chmod 0700 "$KUBE_DIR"
make_pki
kubeconfig admin agcluster-admin
kubeconfig controller-manager system:kube-controller-manager
kubeconfig scheduler system:kube-scheduler
kubeconfig kubelet "system:node:$KUBE_NODE"
write_containerd_config
write_kubelet_config
make_bridge

start_etcd
log "etcd up ($((SECONDS - begin)) s)"
start_apiserver
log "kube-apiserver ready ($((SECONDS - begin)) s)"
start_controllers
start_containerd
log "containerd up ($((SECONDS - begin)) s)"
start_kubelet
log "node $KUBE_NODE Ready ($((SECONDS - begin)) s)"
all_running || die "a component exited during the start; logs in $KUBE_LOGS"
import_agent_image
log "cluster up in $((SECONDS - begin)) s; kubeconfig: $KUBE_KUBECONFIG"
echo "$KUBE_KUBECONFIG"
