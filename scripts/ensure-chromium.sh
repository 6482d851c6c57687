#!/usr/bin/env bash
# ensure-chromium.sh: install Debian's chromium package (the headless
# browser of e2e/ops_test.go's dashboard test, driven by chromedp) when
# /usr/bin/chromium is missing, and print its version.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null # its wrapper script may warn on stderr
