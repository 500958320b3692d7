#!/usr/bin/env bash
# Make sure a base image TAG exists in the Docker engine.
#
# Usage:   scripts/docker/ensure-base-image.sh [TAG]      (default python:3.11-slim)
#
# 1. TAG already in the engine: nothing to do.
# 2. TAG can be pulled (short timeout): done.
# 3. Otherwise (no registry reachable) build a local stand-in: a Debian bookworm
#    rootfs made with mmdebstrap (python3 3.11, venv, pip, ca-certificates, passwd)
#    with the host's extra CA certificates installed and a /etc/pip.conf that makes
#    pip trust them, then `docker import` it as TAG.
#
# The engine comes from scripts/docker/ensure-dockerd.sh (started if needed).
# Logs on stderr; nothing on stdout.
#
# Environment:
#   MLOPS_CACHE          cache dir for the rootfs tar (default ~/.cache/mlops)
#   MLOPS_PULL_TIMEOUT   seconds allowed for `docker pull` (default 20)
#   MLOPS_BASE_REBUILD=1 rebuild the stand-in even if TAG exists / the tar is cached
#
# Like Debian's slim images, it leaves out docs, man/info pages, locales and apt lists.
# Differences from the real python:3.11-slim: python is Debian's /usr/bin/python3
# (3.11.2; /usr/local/bin/python{,3} are symlinks to it), pip is Debian's; PEP 668's
# EXTERNALLY-MANAGED marker is removed so `pip install` works as in the real image.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG="${1:-python:3.11-slim}"
CACHE_DIR="${MLOPS_CACHE:-$HOME/.cache/mlops}"
TAR="$CACHE_DIR/base-bookworm.tar"
PULL_TIMEOUT="${MLOPS_PULL_TIMEOUT:-20}"
REBUILD="${MLOPS_BASE_REBUILD:-0}"
SUITE=bookworm
INCLUDE=python3,python3-venv,python3-pip,ca-certificates,python-is-python3,passwd
HOST_CA_DIR=/usr/local/share/ca-certificates

log() { printf '[ensure-base-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing"
    SUDO=(sudo)
fi

eval "$("$HERE/ensure-dockerd.sh")"
: "${DOCKER:?ensure-dockerd.sh did not set DOCKER}"
NET_ARGS=()
[ -z "${MLOPS_DOCKER_NETWORK:-}" ] || NET_ARGS=(--network "$MLOPS_DOCKER_NETWORK")

# --- 1. already there ----------------------------------------------------------
if [ "$REBUILD" != 1 ] && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG already present in the engine: nothing to do"
    exit 0
fi

# --- 2. pull ---------------------------------------------------------------------
if [ "$REBUILD" != 1 ]; then
    log "trying: docker pull $TAG (timeout ${PULL_TIMEOUT}s)"
    if timeout "$PULL_TIMEOUT" "$DOCKER" pull "$TAG" >&2 2>&1; then
        log "pulled $TAG"
        exit 0
    fi
fi

log "*** The registry is unreachable: building a LOCAL STAND-IN for $TAG"
log "*** (Debian $SUITE + Debian python3 via mmdebstrap), not the official image."

# --- 3. stand-in ---------------------------------------------------------------------
# shellcheck source=scripts/docker/apt-lib.sh
source "$HERE/apt-lib.sh"

# pip settings for the image. Only what is reachable from inside a container and
# carries no credentials: the CA bundle (which will hold the host's extra CAs) and,
# if the host routes pip through an http(s) index or proxy, that URL. Host-local
# settings (file:// indexes, find-links, constraint files) are deliberately dropped.
host_pip_get() {
    local key="$1"
    command -v python3 >/dev/null 2>&1 || return 0
    python3 -m pip config get "global.$key" 2>/dev/null || true
}
url_ok() {
    case "$1" in http://*@* | https://*@*) return 1 ;; http://* | https://*) return 0 ;; *) return 1 ;; esac
}
gen_pip_conf() {
    local v u out=""
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n'
    v="${PIP_INDEX_URL:-$(host_pip_get index-url)}"
    if [ -n "$v" ]; then
        if url_ok "$v"; then printf 'index-url = %s\n' "$v"; else log "not copying pip index-url to the image (not http(s) or has credentials)"; fi
    fi
    v="${PIP_EXTRA_INDEX_URL:-$(host_pip_get extra-index-url)}"
    for u in $v; do url_ok "$u" && out="$out $u"; done
    [ -z "$out" ] || printf 'extra-index-url =%s\n' "$out"
    v="${PIP_TRUSTED_HOST:-$(host_pip_get trusted-host)}"
    [ -z "$v" ] || printf 'trusted-host = %s\n' "$v"
    v="${PIP_PROXY:-${HTTPS_PROXY:-${https_proxy:-}}}"
    if [ -n "$v" ]; then
        if url_ok "$v"; then printf 'proxy = %s\n' "$v"; else log "not copying the host's proxy setting to the image (has credentials or is not a URL)"; fi
    fi
}

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/root/etc" "$STAGE/root$HOST_CA_DIR"
gen_pip_conf >"$STAGE/root/etc/pip.conf"
ncerts=0
if [ -d "$HOST_CA_DIR" ]; then
    while IFS= read -r -d '' crt; do
        cp "$crt" "$STAGE/root$HOST_CA_DIR/"
        ncerts=$((ncerts + 1))
    done < <(find "$HOST_CA_DIR" -maxdepth 1 -type f -name '*.crt' -print0)
fi
log "image will get $ncerts extra CA certificate(s) from $HOST_CA_DIR and this /etc/pip.conf:"
sed 's/^/    /' "$STAGE/root/etc/pip.conf" >&2

# Everything that shapes the rootfs goes into the cache key.
HOOK_VERSION=2
key="$( {
    printf '%s\n' "$HOOK_VERSION" "$SUITE" "$INCLUDE"
    (cd "$STAGE/root" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
} | sha256sum | cut -d' ' -f1)"

mkdir -p "$CACHE_DIR"
exec 8>"$CACHE_DIR/base-bookworm.lock"
flock -w 1800 8 || die "timed out waiting for $CACHE_DIR/base-bookworm.lock"

if [ "$REBUILD" != 1 ] && [ -s "$TAR" ] && [ "$(cat "$TAR.key" 2>/dev/null)" = "$key" ]; then
    log "using cached rootfs $TAR ($(du -h "$TAR" | cut -f1))"
else
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        log "installing mmdebstrap"
        t0="$(now)"
        apt_install mmdebstrap
        log "mmdebstrap installed in $(since "$t0") s"
    fi
    hookdir=/usr/share/mmdebstrap/hooks/merged-usr
    [ -d "$hookdir" ] || die "$hookdir missing (mmdebstrap too old?)"
    stage_q="$(printf '%q' "$STAGE/root")"
    log "running mmdebstrap ($SUITE, minbase) -> $TAR"
    t0="$(now)"
    rm -f "$TAR.tmp"
    # stdin from /dev/null: with a non-tty stdin mmdebstrap would read mirrors from it.
    # "$1" in the hooks is the rootfs path, expanded by mmdebstrap's hook shell.
    # shellcheck disable=SC2016
    "${SUDO[@]}" mmdebstrap --variant=minbase --format=tar \
        --include="$INCLUDE" \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        --hook-dir="$hookdir" \
        --customize-hook="cp -R $stage_q/. \"\$1/\"" \
        --customize-hook='chroot "$1" update-ca-certificates' \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        --customize-hook='ln -sf /usr/bin/python3 "$1/usr/local/bin/python3"; ln -sf /usr/bin/python3 "$1/usr/local/bin/python"' \
        "$SUITE" "$TAR.tmp" </dev/null >&2
    mv -f "$TAR.tmp" "$TAR"
    printf '%s\n' "$key" >"$TAR.key"
    log "mmdebstrap done in $(since "$t0") s; tar $(du -h "$TAR" | cut -f1)"
fi

log "docker import $TAR as $TAG"
t0="$(now)"
"$DOCKER" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'LABEL org.mlops.base-stand-in=debian-bookworm-mmdebstrap' \
    --change 'CMD ["python3"]' \
    "$TAR" "$TAG" >&2
log "imported in $(since "$t0") s; image size $("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{ printf "%.0f MB", $1 / 1e6 }')"

# Smoke test: python, venv and TLS trust inside the image.
"$DOCKER" run --rm "${NET_ARGS[@]}" "$TAG" python3 -c \
    'import ssl, sys, venv, ensurepip; print("stand-in ok:", sys.version.split()[0], ssl.get_default_verify_paths().openssl_cafile)' >&2 \
    || die "smoke test of $TAG failed"
log "local stand-in $TAG is ready (registry unreachable; built from Debian $SUITE)"
