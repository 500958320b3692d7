#!/usr/bin/env bash
# Build the predictor image with the trained model baked in (`make docker-build`).
#
# Usage:   scripts/docker/build.sh [IMAGE]        (default mloperation-predictor:latest)
#
# 1. The exported model must exist: models/serving/ (model.onnx + model.json, written by
#    the pipeline's `export` stage). Missing, or exported from another models/model.joblib
#    than the one in the work tree: fail and say `make repro`.
# 2. A Docker engine (ensure-dockerd.sh: reused, or installed and started) and the base
#    image (ensure-base-image.sh: present, pulled, or a LOCAL STAND-IN built with
#    mmdebstrap when no registry is reachable; said loudly).
# 3. `docker build` of the top-level Dockerfile with OCI labels: source, revision (git SHA),
#    created, base name, and the model's hashes (io.mloperation.model.sha256 is the sha256 of
#    models/model.joblib the export came from, the same value GET /metadata reports as
#    model_sha256; io.mloperation.model.onnx.sha256 that of the baked-in model.onnx).
#
# Environment:
#   BASE_IMAGE      base of both stages (default python:3.11-slim)
#   SOURCE_URL      org.opencontainers.image.source (default: the GitHub Actions repository,
#                   else the `origin` remote as an https URL without credentials)
#   VCS_REF         org.opencontainers.image.revision (default: GITHUB_SHA, else git HEAD,
#                   with a "-dirty" suffix when tracked files have uncommitted changes)
#   MLOPS_BUILDKIT  1 or 0 to force BuildKit or the legacy builder (default: auto)
#   REGISTERED_MODEL_NAME, REGISTERED_MODEL_VERSION, REGISTERED_MODEL_ALIAS
#                   the model registry's version this image is built for (`make register`'s
#                   outputs in the release): io.mloperation.registry.* labels and /metadata's
#                   `registry`; unset: empty labels, null in /metadata
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
IMAGE="${1:-mloperation-predictor:latest}"
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
SERVING_DIR=models/serving
TRAINED_MODEL=models/model.joblib

log() { printf '[docker-build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

cd "$ROOT"
t_start="$(now)"

# --- 1. the model to bake in ---------------------------------------------------------------
for f in "$SERVING_DIR/model.onnx" "$SERVING_DIR/model.json"; do
    [ -s "$f" ] || die "$f is missing: the image bakes in the exported model. Run \`make repro\` first (its export stage writes $SERVING_DIR/), then \`make docker-build\` again."
done
# model.json is JSON: read it with whatever python3 is at hand (no project venv needed).
manifest_model_sha="$(python3 -c 'import json, sys
m = json.load(open(sys.argv[1], encoding="utf-8"))
print((m.get("model") or {}).get("model_sha256") or "")' "$SERVING_DIR/model.json")" \
    || die "$SERVING_DIR/model.json is not valid JSON: run \`make repro\`"
onnx_sha="$(sha256sum "$SERVING_DIR/model.onnx" | cut -d' ' -f1)"
if [ -f "$TRAINED_MODEL" ]; then
    trained_sha="$(sha256sum "$TRAINED_MODEL" | cut -d' ' -f1)"
    if [ -n "$manifest_model_sha" ] && [ "$manifest_model_sha" != "$trained_sha" ]; then
        die "$SERVING_DIR/ was exported from another model (sha256 ${manifest_model_sha:0:12}…) than $TRAINED_MODEL (${trained_sha:0:12}…): it is stale. Run \`make repro\` first."
    fi
fi
model_sha="${manifest_model_sha:-${trained_sha:-unknown}}"

# --- labels --------------------------------------------------------------------------------
git_ok=0
git rev-parse --git-dir >/dev/null 2>&1 && git_ok=1
if [ -n "${VCS_REF:-}" ]; then
    vcs_ref="$VCS_REF"
elif [ -n "${GITHUB_SHA:-}" ]; then
    vcs_ref="$GITHUB_SHA"
elif [ "$git_ok" = 1 ] && vcs_ref="$(git rev-parse HEAD 2>/dev/null)"; then
    git diff --quiet HEAD -- 2>/dev/null || vcs_ref="$vcs_ref-dirty"
else
    vcs_ref=unknown
fi
https_url() {
    # git@host:owner/repo(.git) or scheme://[user[:pass]@]host/owner/repo(.git) -> an https
    # URL without credentials; anything else (a local path) -> nothing.
    local u="$1" rest host
    case "$u" in
        git@*:*) rest="${u#git@}"; host="${rest%%:*}"; rest="$host/${rest#*:}" ;;
        ssh://* | git://* | http://* | https://*) rest="${u#*://}" ;;
        *) return 1 ;;
    esac
    host="${rest%%/*}"
    case "$host" in *@*) rest="${rest#*@}" ;; esac
    printf 'https://%s\n' "${rest%.git}"
}
if [ -n "${SOURCE_URL:-}" ]; then
    source_url="$SOURCE_URL"
elif [ -n "${GITHUB_REPOSITORY:-}" ]; then
    source_url="${GITHUB_SERVER_URL:-https://github.com}/$GITHUB_REPOSITORY"
elif [ "$git_ok" = 1 ] && origin="$(git remote get-url origin 2>/dev/null)"; then
    source_url="$(https_url "$origin" || true)"
else
    source_url=""
fi
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
reg_name="${REGISTERED_MODEL_NAME:-}" reg_version="${REGISTERED_MODEL_VERSION:-}" reg_alias="${REGISTERED_MODEL_ALIAS:-}"
if [ -n "$reg_name$reg_version$reg_alias" ]; then
    # the same rules as src/params.py (registry names, aliases): the values become labels
    [[ "$reg_name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$ ]] || die "REGISTERED_MODEL_NAME='$reg_name' is not a registered model name"
    [[ "$reg_version" =~ ^[1-9][0-9]{0,9}$ ]] || die "REGISTERED_MODEL_VERSION='$reg_version' is not a version number"
    [[ -z "$reg_alias" || "$reg_alias" =~ ^[A-Za-z_][A-Za-z0-9_-]{0,254}$ ]] || die "REGISTERED_MODEL_ALIAS='$reg_alias' is not an alias"
fi

# --- 2. engine and base image --------------------------------------------------------------
eval "$("$HERE/ensure-dockerd.sh")"
: "${DOCKER:?ensure-dockerd.sh did not set DOCKER}"
NET_ARGS=()
[ -z "${MLOPS_DOCKER_NETWORK:-}" ] || NET_ARGS=(--network "$MLOPS_DOCKER_NETWORK")

"$HERE/ensure-base-image.sh" "$BASE_IMAGE"
stand_in="$("$DOCKER" image inspect -f '{{ index .Config.Labels "org.mlops.base-stand-in" }}' "$BASE_IMAGE" 2>/dev/null || true)"
if [ -n "$stand_in" ] && [ "$stand_in" != "<no value>" ]; then
    log "NOTE: $BASE_IMAGE here is a LOCAL STAND-IN ($stand_in), built because no registry is"
    log "      reachable; the image's Python is Debian's and its size differs from the official base."
fi

# --- 3. build --------------------------------------------------------------------------------
buildkit="${MLOPS_BUILDKIT:-auto}"
if [ "$buildkit" = auto ]; then
    buildkit=0
    if "$DOCKER" buildx version >/dev/null 2>&1; then
        buildkit=1
    else
        # Clients before 23.0 have BuildKit built in (no buildx plugin needed).
        case "$("$DOCKER" version --format '{{.Client.Version}}' 2>/dev/null || true)" in
            19.* | 20.* | 22.*) buildkit=1 ;;
        esac
    fi
fi
BUILD_ARGS=(--file Dockerfile --tag "$IMAGE"
    --build-arg "BASE_IMAGE=$BASE_IMAGE"
    --build-arg "SOURCE_URL=$source_url"
    --build-arg "VCS_REF=$vcs_ref"
    --build-arg "BUILD_DATE=$build_date"
    --build-arg "MODEL_SHA256=$model_sha"
    --build-arg "ONNX_SHA256=$onnx_sha"
    --build-arg "REGISTERED_MODEL_NAME=$reg_name"
    --build-arg "REGISTERED_MODEL_VERSION=$reg_version"
    --build-arg "REGISTERED_MODEL_ALIAS=$reg_alias")
[ "$buildkit" = 1 ] && BUILD_ARGS+=(--progress=plain)

log "building $IMAGE (base $BASE_IMAGE, revision $vcs_ref, model ${model_sha:0:12}…${reg_version:+, registered $reg_name v$reg_version${reg_alias:+@$reg_alias}}, builder: $([ "$buildkit" = 1 ] && echo BuildKit || echo legacy))"
t0="$(now)"
DOCKER_BUILDKIT="$buildkit" "$DOCKER" build "${NET_ARGS[@]}" "${BUILD_ARGS[@]}" . >&2 \
    || die "docker build of $IMAGE failed (see above)"
build_s="$(since "$t0")"

size="$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")"
base_size="$("$DOCKER" image inspect -f '{{.Size}}' "$BASE_IMAGE")"
log "built $IMAGE in ${build_s} s (whole script $(since "$t_start") s): $(mb "$size") MB, of which the base $BASE_IMAGE is $(mb "$base_size") MB and this Dockerfile adds $(mb $((size - base_size))) MB"
log "next: make docker-smoke IMAGE=$IMAGE   (or make docker-run IMAGE=$IMAGE)"
