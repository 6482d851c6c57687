#!/usr/bin/env bash
# build.sh: build a Caddy binary with the caddy-agcluster plugin from this
# checkout, using xcaddy (installed at the pinned version if missing).
#
# Usage: xcaddy/build.sh [OUTPUT]   (default ./caddy)
set -euo pipefail
cd "$(dirname "$0")/.."
CADDY_VERSION="${CADDY_VERSION:-v2.11.9}"
# The rate limiter operators put in front of agcluster (rate_limit, keyed
# on agcluster_owner's {agcluster.owner}). v0.1.0 is its only tag; the
# module proxy refuses to list its versions, so it is named exactly.
RATELIMIT_VERSION="${RATELIMIT_VERSION:-v0.1.0}"
XCADDY_VERSION="${XCADDY_VERSION:-v0.4.5}"
OUTPUT="${1:-./caddy}"
GOBIN="$(go env GOPATH)/bin"
XCADDY="$GOBIN/xcaddy"
if ! "$XCADDY" version 2>/dev/null | grep -q "${XCADDY_VERSION}"; then
	echo "xcaddy: installing ${XCADDY_VERSION}" >&2
	go install "github.com/caddyserver/xcaddy/cmd/xcaddy@${XCADDY_VERSION}"
fi
# CGO off: a static binary that also runs in a scratch or slim image.
CGO_ENABLED=0 XCADDY_SKIP_CLEANUP=0 "$XCADDY" build "$CADDY_VERSION" \
	--output "$OUTPUT" \
	--with "github.com/agcluster/caddy-agcluster@v0.0.0=$(pwd)" \
	--with "github.com/mholt/caddy-ratelimit@${RATELIMIT_VERSION}"
# The build is only good if Caddy knows our modules.
modules="$("$OUTPUT" list-modules)"
for id in agcluster agcluster.providers.docker agcluster.providers.fly agcluster.providers.kubernetes agcluster.providers.vercel agcluster.providers.cloudflare http.handlers.agcluster http.handlers.agcluster_owner admin.api.agcluster http.handlers.rate_limit; do
	if ! grep -qx "$id" <<<"$modules"; then
		echo "xcaddy/build.sh: $OUTPUT lacks module $id" >&2
		exit 1
	fi
done
echo "xcaddy/build.sh: $OUTPUT has the agcluster modules and rate_limit" >&2
