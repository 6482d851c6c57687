#!/usr/bin/env bash
# ensure-openai-node.sh: install the openai-node e2e harness (the official
# `openai` npm package pinned in e2e/testdata/openai-node/package.json and its
# package-lock.json) with `npm ci` into a cache outside the checkout, and
# print the directory (its node_modules is what e2e/openainode_test.go uses).
# The cache is $AGCLUSTER_CACHE/openai-node-<version> (default
# ~/.cache/agcluster); it is installed again when the lock file changes.
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=e2e/testdata/openai-node
for tool in node npm; do
	if ! command -v "$tool" >/dev/null; then
		echo "ensure-openai-node: $tool is not on PATH; install Node.js 18 or later with npm (Debian: apt-get install nodejs npm)" >&2
		exit 1
	fi
done

# json_field FILE KEY.PATH prints the value at KEY.PATH of the JSON in FILE.
json_field() {
	node -e 'let v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
for (const k of process.argv[2].split(".")) v = v?.[k];
console.log(v ?? "")' "$1" "$2"
}

VERSION="$(json_field "$SRC/package.json" dependencies.openai)"
CACHE="${AGCLUSTER_CACHE:-$HOME/.cache/agcluster}"
DEST="$CACHE/openai-node-$VERSION"
LOCK_SUM="$(sha256sum "$SRC/package-lock.json" | cut -d' ' -f1)"

installed() {
	[ -f "$1/.lock-sha256" ] && [ "$(cat "$1/.lock-sha256")" = "$LOCK_SUM" ] &&
		[ -f "$1/node_modules/openai/package.json" ] &&
		[ "$(json_field "$1/node_modules/openai/package.json" version)" = "$VERSION" ]
}

if installed "$DEST"; then
	echo "$DEST"
	exit 0
fi

mkdir -p "$CACHE"
tmp="$(mktemp -d "$CACHE/.openai-node.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
cp "$SRC/package.json" "$SRC/package-lock.json" "$tmp/"
echo "ensure-openai-node: npm ci openai@$VERSION" >&2
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >"$tmp/npm.log" 2>&1) || {
	cat "$tmp/npm.log" >&2
	exit 1
}
rm -f "$tmp/npm.log"
echo "$LOCK_SUM" >"$tmp/.lock-sha256"
if ! installed "$tmp"; then
	echo "ensure-openai-node: npm ci did not install openai@$VERSION" >&2
	exit 1
fi
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
echo "$DEST"
