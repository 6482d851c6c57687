#!/usr/bin/env bash
# cloudflare-dev.sh PORT: run the agcluster Worker (providers/cloudflare/worker)
# locally with `wrangler dev` on 127.0.0.1:PORT: the Worker in the real
# Cloudflare runtime (workerd, real Durable Objects, R2 simulated on disk), each
# agent container on the local Docker engine, offline, no Cloudflare account.
# It prints "cloudflare-dev: ready on http://127.0.0.1:PORT" once the Worker
# answers with the secret and runs until it is stopped (SIGINT or SIGTERM:
# wrangler then removes its containers, and this script the image it built and
# its files). It exits non-zero with the reason if the Worker cannot start.
#
# Environment:
#   AGCLUSTER_WORKER_SECRET  the shared secret the Worker requires (required)
#   AGENT_IMAGE              the agent image the containers run (default agcluster/agent:latest)
#   AGCLUSTER_AGENT_BINARY   optional: an agcluster-agent binary put into the container image
#                            over the image's own (tests run the checkout's agent)
#   CLOUDFLARE_DEV_STATE     optional: where wrangler keeps Durable Objects and R2 (--persist-to);
#                            default a temporary directory removed at exit
#   WRANGLER_DOCKER_HOST     optional: the Docker API the runtime creates containers through
#                            (the docker CLI that builds the image uses DOCKER_HOST)
#   CLOUDFLARE_DEV_TIMEOUT   seconds to wait for the Worker (default 300)
#
# Wrangler 4.71.0 builds the container image with `docker build --load
# --provenance=false`, buildx flags; Debian's Docker has no buildx, so without
# it the build goes through a wrapper that drops those two flags.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$ROOT/providers/cloudflare/worker"

die() {
	echo "cloudflare-dev: $*" >&2
	exit 1
}

PORT="${1:-}"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "usage: scripts/cloudflare-dev.sh PORT"
SECRET="${AGCLUSTER_WORKER_SECRET:-}"
[ -n "$SECRET" ] || die "AGCLUSTER_WORKER_SECRET is not set (the secret the Worker requires)"
case "$SECRET" in
*"'"* | *$'\n'*) die "AGCLUSTER_WORKER_SECRET must not hold a single quote or a newline" ;;
esac
AGENT_IMAGE="${AGENT_IMAGE:-agcluster/agent:latest}"
TIMEOUT="${CLOUDFLARE_DEV_TIMEOUT:-300}"
command -v docker >/dev/null || die "docker is not on PATH (run scripts/ensure-docker.sh)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (run scripts/ensure-docker.sh)"
docker image inspect "$AGENT_IMAGE" >/dev/null 2>&1 || die "image $AGENT_IMAGE not found (run make image)"
if [ -n "${AGCLUSTER_AGENT_BINARY:-}" ] && [ ! -x "$AGCLUSTER_AGENT_BINARY" ]; then
	die "AGCLUSTER_AGENT_BINARY $AGCLUSTER_AGENT_BINARY is not an executable"
fi
MODULES="$("$ROOT/scripts/ensure-wrangler.sh")" || die "the Worker's npm packages could not be installed"

# The Worker runs from a copy: wrangler writes its bundle and state next to
# its configuration, and the secret goes in the copy's .dev.vars.
RUN="cf$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/agcluster-cloudflare-dev.XXXXXX")"
STATE="${CLOUDFLARE_DEV_STATE:-$WORK/state}"
LOG="$WORK/wrangler.log"
WRANGLER_PID=""

cleanup() {
	local code=$?
	trap - EXIT INT TERM
	if [ -n "$WRANGLER_PID" ] && kill -0 "$WRANGLER_PID" 2>/dev/null; then
		kill -INT "$WRANGLER_PID" 2>/dev/null || true
		wait "$WRANGLER_PID" 2>/dev/null || true
	fi
	# The image wrangler built for this run (its containers are gone with
	# wrangler; any left are removed with it).
	local images
	images="$(docker images -q --filter "label=agcluster.cloudflare.dev=$RUN" | sort -u)"
	if [ -n "$images" ]; then
		# shellcheck disable=SC2086
		docker ps -aq --filter "label=agcluster.cloudflare.dev=$RUN" | xargs -r docker rm -f >/dev/null 2>&1 || true
		# shellcheck disable=SC2086
		docker rmi -f $images >/dev/null 2>&1 || true
	fi
	rm -rf "$WORK"
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cp -r "$SRC/src" "$SRC/container" "$SRC/wrangler.jsonc" "$SRC/package.json" "$SRC/tsconfig.json" "$WORK/"
ln -s "$MODULES/node_modules" "$WORK/node_modules"
umask 077
printf "AGCLUSTER_WORKER_SECRET='%s'\n" "$SECRET" >"$WORK/.dev.vars"
umask 022

# The container image: the agent image, this run's label (what is removed at
# exit), and the given agent binary.
DOCKERFILE="$WORK/container/Dockerfile"
sed -i "s|^ARG AGENT_IMAGE=.*|ARG AGENT_IMAGE=$AGENT_IMAGE|" "$DOCKERFILE"
echo "LABEL agcluster.cloudflare.dev=\"$RUN\"" >>"$DOCKERFILE"
if [ -n "${AGCLUSTER_AGENT_BINARY:-}" ]; then
	cp "$AGCLUSTER_AGENT_BINARY" "$WORK/container/agcluster-agent"
	echo "COPY agcluster-agent /usr/local/bin/agcluster-agent" >>"$DOCKERFILE"
fi

DOCKER_BIN="$(command -v docker)"
if ! docker buildx version >/dev/null 2>&1; then
	DOCKER_BIN="$WORK/docker-without-buildx"
	cat >"$DOCKER_BIN" <<'WRAPPER'
#!/usr/bin/env bash
# docker without the buildx-only flags wrangler passes to docker build.
args=()
for a in "$@"; do
	case "$a" in
	--load | --provenance=*) ;;
	*) args+=("$a") ;;
	esac
done
exec docker "${args[@]}"
WRAPPER
	chmod +x "$DOCKER_BIN"
fi

# The runtime's inspector listens too (default 9229): another free port, so
# that several Workers can run at once.
INSPECTOR_PORT="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"

echo "cloudflare-dev: starting wrangler dev on 127.0.0.1:$PORT (state in $STATE)" >&2
: >"$LOG"
(
	cd "$WORK"
	exec env WRANGLER_SEND_METRICS=false WRANGLER_DOCKER_BIN="$DOCKER_BIN" CI=1 \
		"$WORK/node_modules/.bin/wrangler" dev --ip 127.0.0.1 --port "$PORT" \
		--inspector-port "$INSPECTOR_PORT" \
		--show-interactive-dev-session=false --persist-to "$STATE" --log-level log
) >"$LOG" 2>&1 &
WRANGLER_PID=$!
tail -n +1 -f "$LOG" --pid "$WRANGLER_PID" >&2 &

# ping answers 0 once the Worker answers GET /v1/ping with the secret.
ping() {
	node -e 'fetch(process.argv[1], { headers: { Authorization: "Bearer " + process.env.AGCLUSTER_WORKER_SECRET } })
  .then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))' "http://127.0.0.1:$PORT/v1/ping"
}

deadline=$((SECONDS + TIMEOUT))
until ping; do
	if ! kill -0 "$WRANGLER_PID" 2>/dev/null; then
		wait "$WRANGLER_PID" && code=0 || code=$?
		WRANGLER_PID=""
		die "wrangler dev exited (code $code) before the Worker answered; see its output above"
	fi
	if grep -qE "Docker command (exited|failed)|Error building|✘ \[ERROR\]" "$LOG"; then
		die "wrangler dev failed: $(grep -m1 -E "Docker command (exited|failed)|Error building|✘ \[ERROR\]" "$LOG")"
	fi
	if [ "$SECONDS" -ge "$deadline" ]; then
		die "the Worker did not answer on 127.0.0.1:$PORT within ${TIMEOUT}s"
	fi
	sleep 0.5
done
if [ -z "$(docker images -q --filter "label=agcluster.cloudflare.dev=$RUN")" ]; then
	die "wrangler dev answers but built no container image; see its output above"
fi
echo "cloudflare-dev: ready on http://127.0.0.1:$PORT" >&2
wait "$WRANGLER_PID" && code=0 || code=$?
WRANGLER_PID=""
die "wrangler dev exited (code $code)"
