#!/usr/bin/env bash
# ensure-vercel-sandbox.sh: install the Vercel Sandbox SDK harness (the
# official `@vercel/sandbox` npm package pinned in
# internal/vercelemu/testdata/sdk/package.json and its package-lock.json)
# with `npm ci` into a cache outside the checkout, and print the directory
# (its node_modules is what internal/vercelemu/sdk_test.go uses to drive the
# emulator, so the emulator cannot drift from the API the SDK speaks).
# The cache is $AGCLUSTER_CACHE/vercel-sandbox-<version> (default
# ~/.cache/agcluster); it is installed again when the lock file changes.
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=internal/vercelemu/testdata/sdk
PKG=@vercel/sandbox
for tool in node npm; do
	if ! command -v "$tool" >/dev/null; then
		echo "ensure-vercel-sandbox: $tool is not on PATH; install Node.js 20 or later with npm (Debian: apt-get install nodejs npm)" >&2
		exit 1
	fi
done

# json_field FILE KEY... prints the value at the path of keys KEY... of the JSON
# in FILE (one argument per key: "@vercel/sandbox" holds a slash).
json_field() {
	node -e 'let v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
for (const k of process.argv.slice(2)) v = v?.[k];
console.log(v ?? "")' "$@"
}

VERSION="$(json_field "$SRC/package.json" dependencies "$PKG")"
CACHE="${AGCLUSTER_CACHE:-$HOME/.cache/agcluster}"
DEST="$CACHE/vercel-sandbox-$VERSION"
LOCK_SUM="$(sha256sum "$SRC/package-lock.json" | cut -d' ' -f1)"

installed() {
	[ -f "$1/.lock-sha256" ] && [ "$(cat "$1/.lock-sha256")" = "$LOCK_SUM" ] &&
		[ -f "$1/node_modules/$PKG/package.json" ] &&
		[ "$(json_field "$1/node_modules/$PKG/package.json" version)" = "$VERSION" ]
}

if installed "$DEST"; then
	echo "$DEST"
	exit 0
fi

mkdir -p "$CACHE"
tmp="$(mktemp -d "$CACHE/.vercel-sandbox.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
cp "$SRC/package.json" "$SRC/package-lock.json" "$tmp/"
echo "ensure-vercel-sandbox: npm ci $PKG@$VERSION" >&2
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >"$tmp/npm.log" 2>&1) || {
	cat "$tmp/npm.log" >&2
	exit 1
}
rm -f "$tmp/npm.log"
echo "$LOCK_SUM" >"$tmp/.lock-sha256"
if ! installed "$tmp"; then
	echo "ensure-vercel-sandbox: npm ci did not install $PKG@$VERSION" >&2
	exit 1
fi
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
echo "$DEST"
