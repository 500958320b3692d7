"""MLflow tracking for the train stage.

The tracking URI comes from MLFLOW_TRACKING_URI; by default a local store inside the repo
(`mlflow.db` + `mlruns/`, git-ignored; open it with `make mlflow-ui`). A configured server
that cannot be reached fails the stage with a message that says so: runs are never
silently dropped.

The train run is tagged `model_sha256` (sha256 of models/model.joblib): the artifact holds
no run id (that would make every run's file differ), so later stages and tools find the
run of a model by that tag (`training_run_id`).
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from src import config
from src.utils import PipelineError

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = f"sqlite:///{config.ROOT / 'mlflow.db'}"
DEFAULT_EXPERIMENT = "mloperation"
HEALTH_TIMEOUT_S = 5.0
MODEL_SHA256_TAG = "model_sha256"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def check_tracking_server(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """For an HTTP(S) tracking URI, fail fast unless the server answers /health."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status == 200:
                return
            problem = f"HTTP {resp.status}"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        problem = str(getattr(exc, "reason", exc))
    raise PipelineError(
        f"MLflow tracking server {uri} is unreachable ({problem}); start it, fix "
        "MLFLOW_TRACKING_URI, or unset it to log to the local store in the repo"
    )


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, list):
        out[prefix] = ",".join(map(str, value))
    else:
        out[prefix] = value


def log_training_run(
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
    pipeline: Any,
    input_example: Any,
    tags: dict[str, str],
    artifacts: list[Path],
) -> str:
    """Log one training run to MLflow and return its run id.

    Any failure is raised as PipelineError: the stage fails rather than lose the run.
    """
    uri = tracking_uri()
    check_tracking_server(uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    import cloudpickle
    import mlflow
    import numpy
    import pandas
    import sklearn
    from mlflow.models import infer_signature

    flat: dict[str, Any] = {}
    _flatten("", {k: v for k, v in params.items() if k != "data"}, flat)
    flat["data.source"] = params["data"]["source"]
    flat["data.target"] = params["data"]["target"]
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT))
        with mlflow.start_run(run_name=tags.get("model_type")) as run:
            mlflow.set_tags(tags)
            mlflow.log_params(flat)
            mlflow.log_metrics(metrics)
            for path in artifacts:
                if path.is_file():
                    mlflow.log_artifact(str(path))
            signature = infer_signature(input_example, pipeline.predict(input_example))
            mlflow.sklearn.log_model(
                sk_model=pipeline,
                name="model",
                signature=signature,
                input_example=input_example,
                serialization_format="cloudpickle",
                pip_requirements=[
                    f"scikit-learn=={sklearn.__version__}",
                    f"pandas=={pandas.__version__}",
                    f"numpy=={numpy.__version__}",
                    f"cloudpickle=={cloudpickle.__version__}",
                ],
            )
            run_id = run.info.run_id
    except PipelineError:
        raise
    except Exception as exc:
        raise PipelineError(f"MLflow logging to {uri} failed: {type(exc).__name__}: {exc}") from exc
    log.info("MLflow run %s logged to %s", run_id, uri)
    return run_id


def training_run_id(model_sha256: str, uri: str | None = None) -> str | None:
    """The id of the newest finished MLflow run tagged `model_sha256`, or None.

    A retrained model with the same bytes tags another run with the same value; the
    newest one is returned.
    """
    import mlflow

    if not all(c in "0123456789abcdef" for c in model_sha256) or len(model_sha256) != 64:
        raise ValueError(f"not a sha256: {model_sha256!r}")
    client = mlflow.MlflowClient(tracking_uri=uri or tracking_uri())
    experiment = client.get_experiment_by_name(
        os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
    )
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.{MODEL_SHA256_TAG} = '{model_sha256}' and status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None
