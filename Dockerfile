# The predictor image: gunicorn + flask_app/ + the exported model (models/serving/) baked in.
#
#   make docker-build    # scripts/docker/build.sh: labels from git and the model hash
#   make docker-smoke    # run it on loopback: healthy, /ready, a real /predict, non-root
#
# Serving needs only numpy + onnxruntime + flask + gunicorn (gevent workers) +
# prometheus-client (requirements-serve.txt), so the image carries no pandas, scikit-learn,
# MLflow or DVC. See docs/docker.md.
ARG BASE_IMAGE=python:3.11-slim

# --- builder: a venv holding only the pinned serving runtime -----------------------------
FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

COPY requirements-serve.txt /tmp/requirements-serve.txt
# The venv gets no pip of its own: the base image's pip installs into it (`--python`), so
# neither pip nor setuptools reaches the runtime image. Then everything serving never
# loads goes: bytecode caches, test suites, type stubs, C sources and headers, console
# scripts other than gunicorn's, and onnxruntime's offline tooling (quantization,
# transformers, tools) and its C-API library libonnxruntime.so (34 MB; the Python binding
# is a separate, self-contained extension module). The last line proves what is left still
# runs a model.
RUN python3 -m venv --without-pip /opt/venv \
    && python3 -m pip --python /opt/venv/bin/python install --no-cache-dir --no-compile \
        -r /tmp/requirements-serve.txt \
    && site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && find /opt/venv -depth \( -name __pycache__ -o -name tests \) -type d -exec rm -rf {} + \
    && find /opt/venv \( -name '*.pyc' -o -name '*.pyi' \) -type f -delete \
    && rm -rf "$site"/onnxruntime/capi/libonnxruntime.so.* \
        "$site"/onnxruntime/quantization "$site"/onnxruntime/transformers \
        "$site"/onnxruntime/tools "$site"/onnxruntime/datasets \
        "$site"/numpy/f2py "$site"/numpy/_core/include "$site"/numpy/_pyinstaller \
        "$site"/gevent/testing \
    && find "$site" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.hpp' \
        -o -name '*.pxd' -o -name '*.pyx' \) -delete \
    && find /opt/venv/bin -type f ! -name 'python*' ! -name gunicorn -delete \
    && /opt/venv/bin/python -c "import flask, gunicorn.workers.ggevent, numpy, onnxruntime, prometheus_client; onnxruntime.SessionOptions()"

# The app, normalised to root-owned and world-readable whatever the host's umask was.
COPY gunicorn.conf.py /app/
COPY flask_app/ /app/flask_app/
# The serving contract (manifest reader, ONNX model): the only part of src/ it needs.
COPY src/__init__.py /app/src/
COPY src/serving/ /app/src/serving/
COPY models/serving/ /app/models/serving/
RUN chmod -R u=rwX,go=rX /app

# --- runtime -------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

# ORT_DISABLE_TELEMETRY: onnxruntime's Linux wheels (1.32) carry Microsoft's 1DS telemetry
# client; a model server sends nothing anywhere it was not asked to.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_DIR=/app/models/serving \
    ORT_DISABLE_TELEMETRY=1

RUN groupadd --system --gid 10001 predictor \
    && useradd --system --uid 10001 --gid 10001 --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin predictor

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app

# Code and model are root-owned and read-only to the server; it writes nothing but /tmp
# (gunicorn's worker heartbeats, the /metrics counter files), so the container also runs
# with --read-only --tmpfs /tmp.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py"]

# Last, so a new commit or model changes only the image config, not a cached layer.
ARG BASE_IMAGE
ARG SOURCE_URL=""
ARG VCS_REF=unknown
ARG BUILD_DATE=""
ARG MODEL_SHA256=unknown
ARG ONNX_SHA256=unknown
# The model registry's version this image was built for (make register in the release;
# empty without a team MLflow server: /metadata then says null)
ARG REGISTERED_MODEL_NAME=""
ARG REGISTERED_MODEL_VERSION=""
ARG REGISTERED_MODEL_ALIAS=""
LABEL org.opencontainers.image.title="mloperation-predictor" \
      org.opencontainers.image.description="MLOperation predictor: Flask + gunicorn + ONNX Runtime, trained model baked in" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.mloperation.model.sha256="${MODEL_SHA256}" \
      io.mloperation.model.onnx.sha256="${ONNX_SHA256}" \
      io.mloperation.registry.name="${REGISTERED_MODEL_NAME}" \
      io.mloperation.registry.version="${REGISTERED_MODEL_VERSION}" \
      io.mloperation.registry.alias="${REGISTERED_MODEL_ALIAS}"
# GET /metadata's git_commit (model.json records none: the same model exports to the same
# bytes) and its registry block
ENV GIT_COMMIT="${VCS_REF}" \
    REGISTERED_MODEL_NAME="${REGISTERED_MODEL_NAME}" \
    REGISTERED_MODEL_VERSION="${REGISTERED_MODEL_VERSION}" \
    REGISTERED_MODEL_ALIAS="${REGISTERED_MODEL_ALIAS}"
