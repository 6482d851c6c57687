#!/usr/bin/env bash
# fetch-claude.sh: put the pinned Claude Code CLI binary in the cache and print its path.
# The binary ships in the npm package @anthropic-ai/claude-code-linux-x64; `npm pack`
# verifies the registry's integrity hash. The cache lives outside the checkout.
set -euo pipefail

CLAUDE_VERSION="${CLAUDE_VERSION:-2.1.328}"
CACHE="${AGCLUSTER_CACHE:-$HOME/.cache/agcluster}"
DEST="$CACHE/claude-$CLAUDE_VERSION"

if [ -x "$DEST/claude" ] && "$DEST/claude" --version >/dev/null 2>&1; then
	echo "$DEST/claude"
	exit 0
fi

mkdir -p "$CACHE"
tmp="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-claude: npm pack @anthropic-ai/claude-code-linux-x64@$CLAUDE_VERSION" >&2
(cd "$tmp" && npm pack --silent "@anthropic-ai/claude-code-linux-x64@$CLAUDE_VERSION" >/dev/null 2>"$tmp/npm.log") || {
	cat "$tmp/npm.log" >&2
	exit 1
}
tar -xzf "$tmp"/*.tgz -C "$tmp"
if [ ! -f "$tmp/package/claude" ]; then
	echo "fetch-claude: package has no claude binary; contents:" >&2
	ls -la "$tmp/package" >&2
	exit 1
fi
mkdir -p "$DEST.partial"
install -m 0755 "$tmp/package/claude" "$DEST.partial/claude"
"$DEST.partial/claude" --version >&2
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "$DEST/claude"
