#!/usr/bin/env bash
# Ensure a working Docker engine and print the environment to use it.
#
# Usage:   eval "$(scripts/docker/ensure-dockerd.sh)"
#
# stdout:  only `export NAME=value` lines:
#            DOCKER_HOST           engine to talk to (unix socket)
#            DOCKER                docker client binary to use ("$DOCKER" build ...)
#            MLOPS_DOCKER_NETWORK  "host" when the engine has no bridge network
#                                  (then pass --network host to build and run),
#                                  empty otherwise
# stderr:  all logs.
#
# Order of preference:
#   1. $DOCKER_HOST (or the default socket) already answers `docker info`: use it.
#   2. A daemon started earlier by this script (pidfile + socket in the state dir).
#   3. Install Debian's docker.io if dockerd is missing, then start dockerd in the
#      background with its own data-root/exec-root/pidfile/socket under the state
#      dir, overlay2 first, falling back to vfs without bridge/iptables.
#
# Environment:
#   MLOPS_DOCKER_STATE    state dir (default /tmp/mlops-docker)
#   MLOPS_DOCKERD_TIMEOUT seconds to wait for readiness (default 60)
#   MLOPS_DOCKER_STORAGE_DRIVER  auto (default), overlay2 (never vfs) or vfs (skip
#                         overlay2: for hosts where overlay2 starts but misbehaves)
#
# Refuses to start a second daemon while another dockerd uses the docker0 bridge.
#
# Stop the daemon started here with scripts/docker/stop-dockerd.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${MLOPS_DOCKER_STATE:-/tmp/mlops-docker}"
TIMEOUT="${MLOPS_DOCKERD_TIMEOUT:-60}"
SOCK="$STATE_DIR/docker.sock"
PIDFILE="$STATE_DIR/dockerd.pid"
LOGFILE="$STATE_DIR/dockerd.log"
MODEFILE="$STATE_DIR/network-mode"

log() { printf '[ensure-dockerd] %s\n' "$*" >&2; }
now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
die() { log "ERROR: $*"; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing"
    SUDO=(sudo)
fi

# Candidate clients, best first. Debian's /usr/bin/docker matches Debian's dockerd
# (same API version, and it can also use BuildKit with DOCKER_BUILDKIT=1);
# /usr/local/bin/docker (28.x, no buildx) only has the legacy builder.
client_candidates() {
    local c seen=" "
    for c in /usr/bin/docker /usr/local/bin/docker "$(command -v docker 2>/dev/null || true)"; do
        if [ -z "$c" ] || [ ! -x "$c" ]; then continue; fi
        case "$seen" in *" $c "*) continue ;; esac
        seen="$seen$c "
        printf '%s\n' "$c"
    done
}

# Print the first client that answers `info` on the given host; fail if none.
client_for() {
    local host="$1" c
    while IFS= read -r c; do
        if DOCKER_HOST="$host" timeout 20 "$c" info >/dev/null 2>&1; then
            printf '%s\n' "$c"
            return 0
        fi
    done < <(client_candidates)
    return 1
}

emit() {
    # $1 host, $2 client, $3 network mode
    printf 'export DOCKER_HOST=%q\n' "$1"
    printf 'export DOCKER=%q\n' "$2"
    printf 'export MLOPS_DOCKER_NETWORK=%q\n' "$3"
}

network_mode_of_ours() {
    if [ -s "$MODEFILE" ]; then cat "$MODEFILE"; else printf '\n'; fi
}

# --- 1. an engine that already answers ------------------------------------------
if [ "${DOCKER_HOST:-}" = "unix://$SOCK" ]; then
    :   # our own daemon: checked (and repaired if needed) below
elif [ -n "${DOCKER_HOST:-}" ]; then
    if client="$(client_for "$DOCKER_HOST")"; then
        log "using existing engine at DOCKER_HOST=$DOCKER_HOST (client $client)"
        emit "$DOCKER_HOST" "$client" "${MLOPS_DOCKER_NETWORK:-}"
        exit 0
    fi
    log "DOCKER_HOST=$DOCKER_HOST does not answer; falling back to our own daemon"
elif [ -S /var/run/docker.sock ]; then
    if client="$(client_for unix:///var/run/docker.sock)"; then
        log "using existing engine at unix:///var/run/docker.sock (client $client)"
        emit unix:///var/run/docker.sock "$client" "${MLOPS_DOCKER_NETWORK:-}"
        exit 0
    fi
fi

mkdir -p "$STATE_DIR"
# Serialise concurrent callers. fd 9 must not leak into dockerd (closed below).
exec 9>"$STATE_DIR/lock"
flock -w 600 9 || die "timed out waiting for lock $STATE_DIR/lock"

is_our_dockerd() {
    local pid="$1"
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "dockerd" ] || return 1
    local cmdline
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
    case "$cmdline" in *" unix://$SOCK "*) return 0 ;; *) return 1 ;; esac
}

wait_ready() {
    # $1 pid. Returns 0 when the socket answers, 1 if the process died or timed out.
    local pid="$1" deadline=$((SECONDS + TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if [ -S "$SOCK" ] && client_for "unix://$SOCK" >/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

# --- 2. reuse the daemon from a previous invocation -----------------------------
if [ -s "$PIDFILE" ]; then
    pid="$(cat "$PIDFILE")"
    if is_our_dockerd "$pid" && [ -z "$(network_mode_of_ours)" ] && [ ! -e /sys/class/net/docker0 ]; then
        # Happens when another dockerd was started with --bridge=none (it deletes
        # docker0): new containers would fail with "could not find bridge docker0".
        # A restart recreates the bridge.
        log "WARNING: bridge docker0 has vanished; restarting our dockerd pid $pid"
        MLOPS_DOCKER_STATE="$STATE_DIR" "$HERE/stop-dockerd.sh"
    fi
    if is_our_dockerd "$pid"; then
        if wait_ready "$pid"; then
            client="$(client_for "unix://$SOCK")"
            log "reusing dockerd pid $pid at unix://$SOCK (client $client)"
            emit "unix://$SOCK" "$client" "$(network_mode_of_ours)"
            exit 0
        fi
        die "dockerd pid $pid is running but unix://$SOCK does not answer; see $LOGFILE or run scripts/docker/stop-dockerd.sh"
    fi
    if [ -e "$PIDFILE" ]; then
        log "removing stale pidfile $PIDFILE (pid $pid is not our dockerd)"
        rm -f "$PIDFILE"
    fi
fi

# --- 3. install and start -------------------------------------------------------
# shellcheck source=scripts/docker/apt-lib.sh
source "$HERE/apt-lib.sh"

find_dockerd() {
    command -v dockerd 2>/dev/null || { [ -x /usr/sbin/dockerd ] && echo /usr/sbin/dockerd; } || true
}

DOCKERD="$(find_dockerd)"
if [ -z "$DOCKERD" ]; then
    log "dockerd not found: installing Debian's docker.io"
    t0="$(now)"
    # Keep the package's maintainer scripts from starting a system daemon.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    rc=0
    apt_install docker.io || rc=$?
    [ "$created_policy" -eq 0 ] || "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
    [ "$rc" -eq 0 ] || die "apt-get install docker.io failed"
    log "docker.io installed in $(since "$t0") s"
    DOCKERD="$(find_dockerd)"
    [ -n "$DOCKERD" ] || die "dockerd still missing after installing docker.io"
fi

start_dockerd() {
    # $1 = network mode to record ("" or host); rest = extra dockerd flags.
    local mode="$1"; shift
    rm -f "$SOCK" "$PIDFILE"
    mkdir -p "$STATE_DIR/data" "$STATE_DIR/exec"
    printf '\n==== %s: dockerd %s\n' "$(date -Is)" "$*" >>"$LOGFILE"
    # setsid + nohup: survive the caller's process group / terminal going away.
    # shellcheck disable=SC2024  # the log file is ours, not root-only
    "${SUDO[@]}" setsid nohup "$DOCKERD" \
        --data-root "$STATE_DIR/data" \
        --exec-root "$STATE_DIR/exec" \
        --pidfile "$PIDFILE" \
        -H "unix://$SOCK" \
        "$@" </dev/null >>"$LOGFILE" 2>&1 9>&- &
    local pid=$! t0
    t0="$(now)"
    if wait_ready "$pid"; then
        printf '%s\n' "$mode" >"$MODEFILE"
        log "dockerd ready in $(since "$t0") s (pid $(cat "$PIDFILE" 2>/dev/null || echo "$pid"), flags: $*)"
        return 0
    fi
    if kill -0 "$pid" 2>/dev/null; then
        log "dockerd (flags: $*) not ready after ${TIMEOUT}s; stopping it"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    else
        log "dockerd (flags: $*) exited during start-up"
    fi
    log "last lines of $LOGFILE:"
    tail -n 20 "$LOGFILE" >&2 || true
    return 1
}

# A second dockerd next to one that uses the docker0 bridge breaks networking:
# with a bridge both hand out the same 172.17.0.x addresses, and with
# --bridge=none dockerd deletes docker0 at start-up (seen here). Refuse instead.
other_bridged_dockerd() {
    local p cmdline
    for p in $(pgrep -x dockerd || true); do
        is_our_dockerd "$p" && continue
        cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" || true)"
        case "$cmdline" in *--bridge=none* | *"--bridge none"*) ;; *) printf '%s: %s\n' "$p" "$cmdline"; return 0 ;; esac
    done
    return 1
}
if other="$(other_bridged_dockerd)"; then
    die "another dockerd with the docker0 bridge is running (pid $other). A second daemon would break its networking: point DOCKER_HOST at it, or stop it (for ours: MLOPS_DOCKER_STATE=<its dir> scripts/docker/stop-dockerd.sh)"
fi

log "starting dockerd (state dir $STATE_DIR, log $LOGFILE)"
want_driver="${MLOPS_DOCKER_STORAGE_DRIVER:-auto}"
case "$want_driver" in auto | overlay2 | vfs) ;; *) die "MLOPS_DOCKER_STORAGE_DRIVER must be auto, overlay2 or vfs" ;; esac
if [ "$want_driver" != vfs ] && start_dockerd "" --storage-driver=overlay2; then
    :
elif [ "$want_driver" != vfs ] && start_dockerd host --storage-driver=overlay2 --iptables=false --bridge=none; then
    log "WARNING: no bridge network; use --network host for docker build/run (MLOPS_DOCKER_NETWORK=host)"
elif [ "$want_driver" != overlay2 ] && start_dockerd host --storage-driver=vfs --iptables=false --bridge=none; then
    log "WARNING: overlay2 failed or not wanted; using vfs (slow, disk-hungry) and no bridge network; use --network host (MLOPS_DOCKER_NETWORK=host)"
else
    die "could not start dockerd (see $LOGFILE)"
fi

client="$(client_for "unix://$SOCK")" || die "no docker client answers on unix://$SOCK"
emit "unix://$SOCK" "$client" "$(network_mode_of_ours)"
