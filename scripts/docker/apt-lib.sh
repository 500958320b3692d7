# shellcheck shell=bash
# Sourced by ensure-dockerd.sh and ensure-base-image.sh, which define `log` and the
# SUDO array (empty when root) before calling apt_install.

# apt_install PKG...: non-interactive install; `apt-get update` only when a package is
# unknown or the first attempt fails (e.g. stale package lists).
apt_install() {
    local need_update=0 p
    export DEBIAN_FRONTEND=noninteractive
    for p in "$@"; do
        # no `grep -q` on a pipe: with pipefail, SIGPIPE would fake a miss
        case "$(apt-cache policy "$p" 2>/dev/null)" in
            *"Candidate: (none)"* | "") need_update=1 ;;
        esac
    done
    local opts=(-y -q --no-install-recommends -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300)
    if [ "$need_update" -eq 1 ]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -q >&2
    fi
    if ! "${SUDO[@]}" apt-get install "${opts[@]}" "$@" >&2; then
        [ "$need_update" -eq 0 ] || return 1
        log "apt-get install failed; retrying after apt-get update"
        "${SUDO[@]}" apt-get update -q >&2
        "${SUDO[@]}" apt-get install "${opts[@]}" "$@" >&2
    fi
}
