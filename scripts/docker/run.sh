#!/usr/bin/env bash
# Run the predictor image in the foreground (`make docker-run`); Ctrl-C stops and removes it.
#
# Usage:   scripts/docker/run.sh [IMAGE]          (default mloperation-predictor:latest)
#
# Publishes port 8000 as 8000 on all interfaces (PUBLISH=127.0.0.1:8000:8000 to keep it on
# loopback); the image's env (WEB_CONCURRENCY, MAX_BATCH_SIZE, ...) can be passed with
# DOCKER_RUN_ARGS, e.g. DOCKER_RUN_ARGS="-e WEB_CONCURRENCY=4".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${1:-mloperation-predictor:latest}"
PUBLISH="${PUBLISH:-8000:8000}"

log() { printf '[docker-run] %s\n' "$*" >&2; }

eval "$("$HERE/ensure-dockerd.sh")"
: "${DOCKER:?ensure-dockerd.sh did not set DOCKER}"
if ! "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
    log "ERROR: image $IMAGE not found: run \`make docker-build IMAGE=$IMAGE\` first"
    exit 1
fi

ARGS=(--rm)
[ -t 0 ] && [ -t 1 ] && ARGS+=(--interactive --tty)
if [ "${MLOPS_DOCKER_NETWORK:-}" = host ]; then
    port="${PUBLISH##*:}"
    ARGS+=(--network host -e "PORT=$port")
    log "no bridge network on this engine: sharing the host's, serving on port $port"
else
    port="${PUBLISH%:*}"
    port="${port##*:}"
    ARGS+=(--publish "$PUBLISH")
fi
# Word splitting of DOCKER_RUN_ARGS is intended (several flags in one variable).
# shellcheck disable=SC2206
EXTRA=(${DOCKER_RUN_ARGS:-})
log "serving $IMAGE on http://127.0.0.1:$port (GET /health, POST /predict); Ctrl-C stops it"
exec "$DOCKER" run "${ARGS[@]}" "${EXTRA[@]}" "$IMAGE"
