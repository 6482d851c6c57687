#!/usr/bin/env bash
# ensure-openai-node.sh: install the openai-node e2e harness (the official
# `openai` npm package pinned in e2e/testdata/openai-node/package.json and its
# package-lock.json) with `npm ci` into a cache outside the checkout, and
# print the directory (its node_modules is what e2e/openainode_test.go uses).
# The cache is $AGCLUSTER_CACHE/openai-node-<version> (default
# ~/.cache/agcluster); it is installed again when the lock file changes.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/npm-cache.sh
. scripts/npm-cache.sh

npm_cache_install ensure-openai-node openai-node e2e/testdata/openai-node openai 18
