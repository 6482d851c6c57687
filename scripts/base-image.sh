#!/usr/bin/env bash
# base-image.sh: build the offline Debian bookworm base image for the agent image.
#
# No container registry is reachable on air-gapped build machines, so the base is
# made with `debootstrap --variant=minbase` from Debian's package mirror and loaded
# with `docker import`. It already carries every package agent/Dockerfile needs,
# so the image build itself needs no network. The rootfs tarball is cached outside
# the checkout; the image is only rebuilt when neither the image nor the cache exist.
#
# Usage: scripts/base-image.sh [IMAGE]   (default agcluster/base:bookworm)
set -euo pipefail

IMAGE="${1:-${BASE_IMAGE:-agcluster/base:bookworm}}"
CACHE="${AGCLUSTER_CACHE:-$HOME/.cache/agcluster}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="bash,coreutils,ca-certificates,git,ripgrep,tini,passwd,procps"
TARBALL="$CACHE/base-bookworm-minbase.tar"

log() { printf 'base-image: %s\n' "$*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
	log "$IMAGE already present"
	exit 0
fi

mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
	if ! command -v debootstrap >/dev/null 2>&1; then
		log "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get update -q
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
	fi
	root="$(mktemp -d /var/tmp/agcluster-rootfs.XXXXXX)"
	trap 'rm -rf "$root"' EXIT
	log "debootstrap --variant=minbase bookworm (about 1.5 min)"
	debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
		tail -n 40 "$CACHE/debootstrap.log" >&2
		exit 1
	}
	# Trim what an image never needs: apt lists and caches.
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
	tar -C "$root" -cf "$TARBALL.partial" .
	mv "$TARBALL.partial" "$TARBALL"
fi

log "docker import $TARBALL as $IMAGE"
docker import "$TARBALL" "$IMAGE" >/dev/null
log "done: $(docker image inspect --format '{{.Id}} {{.Size}}' "$IMAGE")"
