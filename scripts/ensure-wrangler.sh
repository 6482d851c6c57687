#!/usr/bin/env bash
# ensure-wrangler.sh: install the Cloudflare Worker's npm packages (wrangler,
# @cloudflare/containers and typescript, pinned in
# providers/cloudflare/worker/package.json and its package-lock.json) with
# `npm ci` into a cache outside the checkout, and print the directory (its
# node_modules is what scripts/cloudflare-dev.sh runs the Worker with).
# The cache is $AGCLUSTER_CACHE/cloudflare-worker-<wrangler version> (default
# ~/.cache/agcluster); it is installed again when the lock file changes.
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=providers/cloudflare/worker
for tool in node npm; do
	if ! command -v "$tool" >/dev/null; then
		echo "ensure-wrangler: $tool is not on PATH; install Node.js 20 or later with npm (Debian: apt-get install nodejs npm)" >&2
		exit 1
	fi
done

# json_field FILE KEY... prints the value at the path of keys KEY... of the
# JSON in FILE (one argument per key: "@cloudflare/containers" holds a slash).
json_field() {
	node -e 'let v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
for (const k of process.argv.slice(2)) v = v?.[k];
console.log(v ?? "")' "$@"
}

VERSION="$(json_field "$SRC/package.json" devDependencies wrangler)"
CACHE="${AGCLUSTER_CACHE:-$HOME/.cache/agcluster}"
DEST="$CACHE/cloudflare-worker-$VERSION"
LOCK_SUM="$(sha256sum "$SRC/package-lock.json" | cut -d' ' -f1)"

installed() {
	[ -f "$1/.lock-sha256" ] && [ "$(cat "$1/.lock-sha256")" = "$LOCK_SUM" ] &&
		[ -x "$1/node_modules/.bin/wrangler" ] &&
		[ "$(json_field "$1/node_modules/wrangler/package.json" version)" = "$VERSION" ]
}

if installed "$DEST"; then
	echo "$DEST"
	exit 0
fi

mkdir -p "$CACHE"
tmp="$(mktemp -d "$CACHE/.cloudflare-worker.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
cp "$SRC/package.json" "$SRC/package-lock.json" "$tmp/"
echo "ensure-wrangler: npm ci wrangler@$VERSION" >&2
# Install scripts stay off: workerd and esbuild come as per-platform
# packages and need none.
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >"$tmp/npm.log" 2>&1) || {
	cat "$tmp/npm.log" >&2
	exit 1
}
rm -f "$tmp/npm.log"
echo "$LOCK_SUM" >"$tmp/.lock-sha256"
if ! installed "$tmp"; then
	echo "ensure-wrangler: npm ci did not install wrangler@$VERSION" >&2
	exit 1
fi
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
echo "$DEST"
