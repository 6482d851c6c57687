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
# shellcheck source=scripts/npm-cache.sh
. scripts/npm-cache.sh

npm_cache_install ensure-vercel-sandbox vercel-sandbox internal/vercelemu/testdata/sdk @vercel/sandbox 20
