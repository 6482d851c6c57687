#!/usr/bin/env bash
# ensure-docker.sh: make sure a Docker engine answers on this machine.
# Installs Debian's docker.io when no engine is installed and starts dockerd in
# the background when none is running. Idempotent; safe to run repeatedly.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
	log "docker engine already answering"
	exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
	log "installing docker.io from Debian"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q docker.io
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
	log "starting dockerd (log: /var/log/dockerd.log)"
	nohup dockerd >/var/log/dockerd.log 2>&1 &
fi

for i in $(seq 1 120); do
	if docker info >/dev/null 2>&1; then
		log "docker engine ready ($(docker version --format '{{.Server.Version}} API {{.Server.APIVersion}}'))"
		exit 0
	fi
	sleep 0.5
done
log "docker engine did not answer within 60s; see /var/log/dockerd.log"
tail -n 30 /var/log/dockerd.log >&2 || true
exit 1
