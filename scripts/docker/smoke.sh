#!/usr/bin/env bash
# Smoke-test the predictor image for real (`make docker-smoke`).
#
# Usage:   scripts/docker/smoke.sh [IMAGE]        (default mloperation-predictor:latest)
#
# Runs IMAGE on loopback (a port Docker picks) the way production should: read-only root
# filesystem, a tmpfs /tmp, all capabilities dropped, no-new-privileges. Then:
#   1. Docker's own HEALTHCHECK reports `healthy` (its probe interval is lowered to 1 s here
#      so the smoke test does not wait 10 s; the probe command is the image's);
#   2. GET /health, GET /ready, GET /metadata (model hash = the image label), POST /predict
#      with one record and with the test set as a batch: labels equal to the pipeline's
#      scikit-learn model (models/model.joblib) run in-process on the host, probabilities
#      within 1e-5 (scripts/docker/smoke_check.py); a bad record gets a 4xx; GET /drift
#      counted the records (its window file in the read-only container's /tmp);
#   3. the server process (PID 1) and `docker exec` run as a non-root user, and the image
#      sets a non-root USER;
#   4. the serving venv holds no pip, pandas, scikit-learn, MLflow or DVC.
# Always removes the container. Exits non-zero with a message naming the failed check.
# Writes reports/bench/image.json: image and base sizes (MB), smoke timings.
#
# Environment:
#   MLOPS_PYTHON   python with the pipeline's packages (default: .venv/bin/python, else python3)
#   IMAGE_REPORT   where to write the JSON summary (default reports/bench/image.json)
#   SMOKE_TIMEOUT  seconds allowed to become healthy (default 60)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
IMAGE="${1:-mloperation-predictor:latest}"
REPORT="${IMAGE_REPORT:-reports/bench/image.json}"
TIMEOUT="${SMOKE_TIMEOUT:-60}"
TRAINED_MODEL=models/model.joblib
TEST_DATA=data/processed/test.csv

log() { printf '[docker-smoke] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

cd "$ROOT"
t_start="$(now)"

# --- the reference: the pipeline's scikit-learn model, in-process on the host -------------
if [ -n "${MLOPS_PYTHON:-}" ]; then
    PY="$MLOPS_PYTHON"
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import sklearn, pandas, src.models.artifact' 2>/dev/null \
    || die "$PY cannot import the pipeline (scikit-learn, pandas, src): run \`make setup\`, or set MLOPS_PYTHON"
for f in "$TRAINED_MODEL" "$TEST_DATA"; do
    [ -s "$f" ] || die "$f is missing: run \`make repro\` (the smoke test compares the image's answers with it)"
done

# --- the image -------------------------------------------------------------------------------
eval "$("$HERE/ensure-dockerd.sh")"
: "${DOCKER:?ensure-dockerd.sh did not set DOCKER}"
"$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1 \
    || die "image $IMAGE not found in the engine at $DOCKER_HOST: run \`make docker-build IMAGE=$IMAGE\` first"
label() {
    local v
    v="$("$DOCKER" image inspect -f "{{ index .Config.Labels \"$1\" }}" "$IMAGE" 2>/dev/null || true)"
    [ "$v" = "<no value>" ] && v=""
    printf '%s' "$v"
}
image_model_sha="$(label io.mloperation.model.sha256)"
host_model_sha="$(sha256sum "$TRAINED_MODEL" | cut -d' ' -f1)"
[ -n "$image_model_sha" ] || die "$IMAGE has no io.mloperation.model.sha256 label: build it with \`make docker-build\`"
[ "$image_model_sha" = "$host_model_sha" ] \
    || die "$IMAGE holds the model ${image_model_sha:0:12}… but $TRAINED_MODEL here is ${host_model_sha:0:12}…: nothing to compare with. Rebuild: \`make docker-build IMAGE=$IMAGE\`"
user="$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")"
case "${user%%:*}" in
    "" | 0 | root) die "$IMAGE runs as root (Config.User='$user'): the Dockerfile must set a non-root USER" ;;
esac
log "image $IMAGE: USER $user, revision $(label org.opencontainers.image.revision), model ${image_model_sha:0:12}…"

# --- run it ----------------------------------------------------------------------------------
name="mloperation-smoke-$$-$RANDOM"
RUN_ARGS=(--detach --name "$name" --read-only --tmpfs /tmp --cap-drop ALL
    --security-opt no-new-privileges --health-interval 1s)
if [ "${MLOPS_DOCKER_NETWORK:-}" = host ]; then
    # No bridge on this engine: share the host's network, on a free loopback port.
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    RUN_ARGS+=(--network host -e HOST=127.0.0.1 -e "PORT=$port")
else
    RUN_ARGS+=(--publish 127.0.0.1::8000)
fi
ok=0
cleanup() {
    if [ "$ok" != 1 ] && "$DOCKER" container inspect "$name" >/dev/null 2>&1; then
        log "container logs (last 40 lines):"
        "$DOCKER" logs --tail 40 "$name" >&2 2>&1 || true
    fi
    "$DOCKER" rm --force "$name" >/dev/null 2>&1 || true
}
trap cleanup EXIT

t_run="$(now)"
"$DOCKER" run "${RUN_ARGS[@]}" "$IMAGE" >/dev/null || die "docker run $IMAGE failed"
if [ "${MLOPS_DOCKER_NETWORK:-}" != host ]; then
    mapping="$("$DOCKER" port "$name" 8000/tcp)"
    mapping="${mapping%%$'\n'*}"  # first line, e.g. 127.0.0.1:49153
    port="${mapping##*:}"
    [ -n "$port" ] || die "no host port published for 8000/tcp"
fi
url="http://127.0.0.1:$port"
log "container $name from $IMAGE on $url"

# --- 1. Docker's healthcheck ---------------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
while :; do
    state="$("$DOCKER" inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$name")"
    case "$state" in
        "running healthy") break ;;
        "running none") die "$IMAGE has no HEALTHCHECK" ;;
        "running unhealthy")
            die "Docker reports the container unhealthy: $("$DOCKER" inspect -f '{{range .State.Health.Log}}{{.ExitCode}}: {{.Output}} {{end}}' "$name" | tail -c 600)" ;;
        running*) ;;
        *) die "the container stopped (state: $state, exit code $("$DOCKER" inspect -f '{{.State.ExitCode}}' "$name"))" ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "not healthy after ${TIMEOUT}s (state: $state)"
    sleep 0.1
done
healthy_s="$(since "$t_run")"
log "ok   Docker HEALTHCHECK: healthy ${healthy_s} s after docker run"

# --- 2. the HTTP API against scikit-learn ----------------------------------------------------
summary="$(mktemp)"
trap 'rm -f "$summary"; cleanup' EXIT
"$PY" "$HERE/smoke_check.py" "$url" --model "$TRAINED_MODEL" --data "$TEST_DATA" \
    --model-sha256 "$image_model_sha" --out "$summary" \
    --registry "$(label io.mloperation.registry.name)" "$(label io.mloperation.registry.version)" \
    "$(label io.mloperation.registry.alias)" >&2 \
    || die "the predictor's HTTP answers (see above)"

# --- 3. non-root -----------------------------------------------------------------------------
exec_uid="$("$DOCKER" exec "$name" id -u)"
server_uid="$("$DOCKER" exec "$name" python -c 'import os; print(os.stat("/proc/1").st_uid)')"
[ "$exec_uid" != 0 ] || die "docker exec runs as root"
[ "$server_uid" != 0 ] || die "the server process (PID 1) runs as root"
log "ok   non-root: USER $user, server PID 1 uid $server_uid, docker exec uid $exec_uid"

# --- 4. only the serving runtime in the venv ------------------------------------------------
present="$("$DOCKER" exec "$name" python -c 'import importlib.util as u
print(" ".join(m for m in ("pip", "setuptools", "pandas", "sklearn", "scipy", "mlflow", "dvc") if u.find_spec(m)))')"
[ -z "$present" ] || die "the serving venv holds packages it must not: $present"
log "ok   serving venv: no pip, setuptools, pandas, scikit-learn, scipy, MLflow or DVC"
ok=1

# --- report ----------------------------------------------------------------------------------
smoke_s="$(since "$t_start")"
base_image="$(label org.opencontainers.image.base.name)"
size="$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")"
base_size="$("$DOCKER" image inspect -f '{{.Size}}' "$base_image" 2>/dev/null || echo "")"
stand_in="$(label org.mlops.base-stand-in)"
mkdir -p "$(dirname "$REPORT")"
SMOKE_IMAGE="$IMAGE" SMOKE_SIZE="$size" SMOKE_BASE_IMAGE="$base_image" SMOKE_BASE_SIZE="$base_size" \
SMOKE_STAND_IN="$stand_in" SMOKE_REVISION="$(label org.opencontainers.image.revision)" \
SMOKE_MODEL_SHA="$image_model_sha" SMOKE_HEALTHY_S="$healthy_s" SMOKE_S="$smoke_s" \
    "$PY" - "$summary" "$REPORT" <<'PYEOF'
import json
import os
import sys

env = os.environ
check = json.load(open(sys.argv[1], encoding="utf-8"))
size = int(env["SMOKE_SIZE"])
base = int(env["SMOKE_BASE_SIZE"]) if env["SMOKE_BASE_SIZE"] else None
report = {
    "image": env["SMOKE_IMAGE"],
    "size_mb": round(size / 1e6, 1),
    "base_image": env["SMOKE_BASE_IMAGE"],
    "base_size_mb": None if base is None else round(base / 1e6, 1),
    "added_mb": None if base is None else round((size - base) / 1e6, 1),
    "base_is_local_stand_in": bool(env["SMOKE_STAND_IN"]),
    "target_mb": 250,
    "revision": env["SMOKE_REVISION"],
    "model_sha256": env["SMOKE_MODEL_SHA"],
    "healthy_after_s": float(env["SMOKE_HEALTHY_S"]),
    "smoke_s": float(env["SMOKE_S"]),
    "predict_rows_checked": check["rows"],
    "task": check["task"],
    "max_gap": check["max_gap"],
}
with open(sys.argv[2], "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=2)
    fh.write("\n")
print(json.dumps(report))
PYEOF
log "passed in ${smoke_s} s; wrote $REPORT"
