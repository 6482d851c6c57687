# shellcheck shell=bash
# npm-cache.sh: sourced by the ensure-*.sh scripts that install a pinned npm
# test harness (a package.json and its package-lock.json under testdata) with
# `npm ci` into a cache outside the checkout. Bash; needs set -euo pipefail
# and the checkout as the working directory.

# json_field FILE KEY... prints the value at the path of keys KEY... of the
# JSON in FILE (one argument per key: "@vercel/sandbox" holds a slash).
json_field() {
	node -e 'let v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
for (const k of process.argv.slice(2)) v = v?.[k];
console.log(v ?? "")' "$@"
}

# npm_cache_install TAG NAME SRC PKG NODE prints the directory holding
# SRC's dependencies installed with npm ci: $AGCLUSTER_CACHE/NAME-<version>
# (default ~/.cache/agcluster), where <version> is PKG's pinned version in
# SRC/package.json. It installs them (again) when they are missing or the
# lock file changed. TAG prefixes its messages; NODE is the Node.js version
# the harness needs at least (for the message when node is missing).
npm_cache_install() {
	local tag=$1 name=$2 src=$3 pkg=$4 node=$5
	local tool
	for tool in node npm; do
		if ! command -v "$tool" >/dev/null; then
			echo "$tag: $tool is not on PATH; install Node.js $node or later with npm (Debian: apt-get install nodejs npm)" >&2
			return 1
		fi
	done
	local version cache dest lock_sum
	version="$(json_field "$src/package.json" dependencies "$pkg")"
	cache="${AGCLUSTER_CACHE:-$HOME/.cache/agcluster}"
	dest="$cache/$name-$version"
	lock_sum="$(sha256sum "$src/package-lock.json" | cut -d' ' -f1)"
	if npm_cache_installed "$dest" "$pkg" "$version" "$lock_sum"; then
		echo "$dest"
		return 0
	fi

	mkdir -p "$cache"
	local tmp
	tmp="$(mktemp -d "$cache/.$name.XXXXXX")"
	chmod 755 "$tmp"
	# shellcheck disable=SC2064 # expand $tmp now: it is local
	trap "rm -rf '$tmp'" EXIT
	cp "$src/package.json" "$src/package-lock.json" "$tmp/"
	echo "$tag: npm ci $pkg@$version" >&2
	(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >"$tmp/npm.log" 2>&1) || {
		cat "$tmp/npm.log" >&2
		return 1
	}
	rm -f "$tmp/npm.log"
	echo "$lock_sum" >"$tmp/.lock-sha256"
	if ! npm_cache_installed "$tmp" "$pkg" "$version" "$lock_sum"; then
		echo "$tag: npm ci did not install $pkg@$version" >&2
		return 1
	fi
	rm -rf "$dest"
	mv "$tmp" "$dest"
	trap - EXIT
	echo "$dest"
}

# npm_cache_installed DIR PKG VERSION LOCK_SUM reports whether DIR holds
# PKG@VERSION installed from the lock file whose sha256 is LOCK_SUM.
npm_cache_installed() {
	[ -f "$1/.lock-sha256" ] && [ "$(cat "$1/.lock-sha256")" = "$4" ] &&
		[ -f "$1/node_modules/$2/package.json" ] &&
		[ "$(json_field "$1/node_modules/$2/package.json" version)" = "$3" ]
}
