#!/usr/bin/env bash
# Stop the dockerd that scripts/docker/ensure-dockerd.sh started (found by its
# pidfile in the state dir), and nothing else. Safe to run when none is running.
#
# Usage:   scripts/docker/stop-dockerd.sh
# Environment: MLOPS_DOCKER_STATE (default /tmp/mlops-docker)
set -euo pipefail

STATE_DIR="${MLOPS_DOCKER_STATE:-/tmp/mlops-docker}"
SOCK="$STATE_DIR/docker.sock"
PIDFILE="$STATE_DIR/dockerd.pid"

log() { printf '[stop-dockerd] %s\n' "$*" >&2; }

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)

if [ ! -s "$PIDFILE" ]; then
    log "no pidfile at $PIDFILE: nothing to stop"
    exit 0
fi
pid="$(cat "$PIDFILE")"
case "$pid" in '' | *[!0-9]*) log "pidfile $PIDFILE is not a pid: '$pid'"; exit 1 ;; esac

cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)"
if ! kill -0 "$pid" 2>/dev/null \
    || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "dockerd" ] \
    || [[ "$cmdline" != *" unix://$SOCK "* ]]; then
    log "pid $pid is not our dockerd (already stopped?); removing stale pidfile"
    rm -f "$PIDFILE"
    exit 0
fi

log "stopping dockerd pid $pid"
"${SUDO[@]}" kill -TERM "$pid"
# dockerd stops its containers (up to ~15 s each) and its own containerd first.
for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
    log "dockerd pid $pid still running after 30 s; sending SIGKILL"
    "${SUDO[@]}" kill -KILL "$pid" 2>/dev/null || true
fi
# The containerd that dockerd started for itself normally exits with it; not after SIGKILL.
cpidfile="$STATE_DIR/exec/containerd/containerd.pid"
if [ -s "$cpidfile" ]; then
    cpid="$(cat "$cpidfile")"
    if kill -0 "$cpid" 2>/dev/null && [ "$(cat "/proc/$cpid/comm" 2>/dev/null)" = "containerd" ]; then
        log "stopping leftover containerd pid $cpid"
        "${SUDO[@]}" kill -TERM "$cpid" 2>/dev/null || true
    fi
fi
# Mounts dockerd can leave behind (e.g. exec/netns/default with --bridge=none).
# Only once our daemon is gone, and only under our own state dir.
if ! kill -0 "$pid" 2>/dev/null; then
    awk -v p="$STATE_DIR/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r \
        | while IFS= read -r m; do
            log "unmounting leftover $m"
            "${SUDO[@]}" umount -l "$m" 2>/dev/null || true
        done
fi
rm -f "$PIDFILE" "$SOCK"
log "stopped"
