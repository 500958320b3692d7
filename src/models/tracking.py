"""MLflow tracking: train logs its run (tagged with the model file's sha256); evaluate logs
the test metrics on that same run; the PR report links it.

The tracking URI comes from MLFLOW_TRACKING_URI; by default a local store inside the repo
(`mlflow.db` + `mlruns/`, git-ignored; open it with `make mlflow-ui`). A configured server
that cannot be reached fails the stage with a message that says so: runs are never
silently dropped.

The train run is tagged `model_sha256` (sha256 of models/model.joblib): the artifact holds
no run id (that would make every run's file differ), so later stages and tools find the
run of a model by that tag (`training_run_id`). Inside `dvc exp run`, DVC gives the stage
commands the experiment's name and baseline commit (DVC_EXP_NAME, DVC_EXP_BASELINE_REV);
train records them as the tags `dvc_exp_name` / `dvc_exp_baseline_rev`, which is how the
report finds each experiment's run (`find_experiment_run`). They are MLflow tags only,
never in a DVC-tracked output.
"""

from __future__ import annotations

import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src import config
from src.utils import PipelineError, sha256_file

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = f"sqlite:///{config.ROOT / 'mlflow.db'}"
DEFAULT_EXPERIMENT = "mloperation"
HEALTH_TIMEOUT_S = 5.0
MODEL_SHA256_TAG = "model_sha256"
EXP_NAME_TAG = "dvc_exp_name"
EXP_BASELINE_TAG = "dvc_exp_baseline_rev"
# DVC's own environment for the stage commands of `dvc exp run` (dvc/env.py).
DVC_EXP_ENV = {"DVC_EXP_NAME": EXP_NAME_TAG, "DVC_EXP_BASELINE_REV": EXP_BASELINE_TAG}


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
        mlflow.set_experiment(experiment_name())
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


# --- the training run, found again by its model ------------------------------------------

MODEL_TAG = MODEL_SHA256_TAG  # sha256 of models/model.joblib: how later stages find the run
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)


def experiment_tags(env: Mapping[str, str]) -> dict[str, str]:
    """The tags naming the DVC experiment a stage runs in (none outside `dvc exp run`)."""
    return {tag: env[var] for var, tag in DVC_EXP_ENV.items() if env.get(var)}


def _newest_finished(uri: str, tags: Mapping[str, str]) -> Any | None:
    """The newest finished run of our experiment with all of `tags`, or None.

    Callers pass only values checked to be plain (hex, or experiment names of
    src/experiments.py NAME): safe inside the filter's quotes.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name())
    if experiment is None:
        return None
    where = " and ".join(f"tags.{tag} = '{value}'" for tag, value in tags.items())
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"{where} and status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def find_experiment_run(uri: str, name: str, baseline: str) -> Any | None:
    """The newest finished run that `dvc exp run --name NAME` trained on commit `baseline`.

    None when there is none: an experiment whose set changes no input of train (or whose
    train DVC restored from its run-cache) logs no run of its own.
    """
    if not _PLAIN.fullmatch(name) or not re.fullmatch(r"[0-9a-f]{40}", baseline):
        raise ValueError(f"not an experiment name and commit: {name!r} {baseline!r}")
    return _newest_finished(uri, {EXP_NAME_TAG: name, EXP_BASELINE_TAG: baseline})


def find_run_by_sha(uri: str, model_sha256: str) -> Any | None:
    """The newest finished run of the experiment tagged `model_sha256`, or None.

    A retrained model with the same bytes tags another run with the same value; the
    newest one is returned.
    """
    if len(model_sha256) != 64 or not all(c in "0123456789abcdef" for c in model_sha256):
        raise ValueError(f"not a sha256: {model_sha256!r}")  # hex only: safe to quote
    return _newest_finished(uri, {MODEL_TAG: model_sha256})


def find_training_run(uri: str, model_file: Path) -> Any | None:
    """The newest finished run that trained `model_file` (by its sha256 tag), or None."""
    return find_run_by_sha(uri, sha256_file(model_file))


def run_id_for_sha(model_sha256: str, uri: str | None = None) -> str | None:
    """The id of the newest finished run tagged `model_sha256` at `uri` (default: ours)."""
    run = find_run_by_sha(uri or tracking_uri(), model_sha256)
    return run.info.run_id if run else None


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Nested summary -> MLflow metric names (`per_class.<class>.f1`, `residual.p95`).

    MLflow keys allow letters, digits and `_-. /:`; anything else in a class name becomes
    `_`, and a name that collides after that gets a `_2`, `_3`... suffix.
    """
    flat: dict[str, Any] = {}
    _flatten("", summary, flat)
    out: dict[str, float] = {}
    for key, value in flat.items():
        name = re.sub(r"[^A-Za-z0-9_\-. /:]", "_", key)[:240]
        base, n = name, 1
        while name in out:
            n += 1
            name = f"{base}_{n}"
        out[name] = float(value)
    return out


def training_run_id(model_file: Path) -> str | None:
    """The id of the run that trained `model_file`: the most recent tagged with its sha256.

    With MLFLOW_TRACKING_URI set, a missing run is an error; with the local default store it
    is a warning and None (the model was trained elsewhere, e.g. pulled with DVC, or with
    --no-mlflow).
    """
    uri = tracking_uri()
    check_tracking_server(uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    try:
        run = find_training_run(uri, model_file)
    except Exception as exc:
        raise PipelineError(f"MLflow search at {uri} failed: {type(exc).__name__}: {exc}") from exc
    if run is not None:
        return run.info.run_id
    problem = (
        f"no MLflow run tagged {MODEL_TAG}={sha256_file(model_file)[:12]}… in experiment "
        f"{experiment_name()!r} at {uri}"
    )
    if os.environ.get("MLFLOW_TRACKING_URI"):
        raise PipelineError(
            f"{problem}: train logs it there; rerun it with this MLFLOW_TRACKING_URI "
            "(dvc repro -f train) or unset MLFLOW_TRACKING_URI"
        )
    log.warning("%s (trained elsewhere?): test metrics not logged to MLflow", problem)
    return None


def run_of_this_experiment(run_id: str, env: Mapping[str, str]) -> bool:
    """Whether the training run `run_id` belongs to the DVC experiment `env` names (always
    true outside `dvc exp run`). An experiment whose set changes only evaluate's inputs
    does not retrain: the model's run is another configuration's, and evaluate must not log
    this experiment's test metrics over that run's."""
    from mlflow.tracking import MlflowClient

    wanted = experiment_tags(env)
    if not wanted:
        return True
    tags = MlflowClient(tracking_uri()).get_run(run_id).data.tags
    return all(tags.get(tag) == value for tag, value in wanted.items())


def log_evaluation(run_id: str, metrics: dict[str, float], summary: dict[str, Any]) -> None:
    """Log the test metrics and the summary (metrics + evaluation/test_summary.json) on the
    training run `run_id`."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    now = int(time.time() * 1000)
    values = {**metrics, **summary_metrics(summary)}
    try:
        client = MlflowClient(uri)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
        client.log_dict(run_id, summary, "evaluation/test_summary.json")
    except Exception as exc:
        raise PipelineError(f"MLflow logging to {uri} failed: {type(exc).__name__}: {exc}") from exc
    log.info("test metrics logged to MLflow run %s at %s", run_id, uri)


def server_uri(env: Mapping[str, str]) -> str | None:
    """MLFLOW_TRACKING_URI when it is a tracking server (http/https): only then does the
    report link runs (a local store has no UI address to link)."""
    uri = env.get("MLFLOW_TRACKING_URI", "")
    return uri if uri.startswith(("http://", "https://")) else None


def run_url(uri: str, run: Any) -> str:
    """The address of `run` in the MLflow UI of server `uri`, without its credentials."""
    run_id, experiment = run.info.run_id, run.info.experiment_id
    if not (_RUN_ID.fullmatch(run_id) and experiment.isdigit()):
        raise PipelineError(f"MLflow server {uri} answered an unexpected run id {run_id!r}")
    parts = urllib.parse.urlsplit(uri)  # never the credentials of user:password@host
    base = urllib.parse.quote(f"{parts.scheme}://{parts.hostname}", safe=":/")
    if parts.port:
        base += f":{parts.port}"
    base += urllib.parse.quote(parts.path.rstrip("/"), safe="/")
    return f"{base}/#/experiments/{experiment}/runs/{run_id}"


def search(uri: str, find: Any, *args: Any) -> Any | None:
    """`find(uri, *args)`, a failure of the server being one PipelineError."""
    try:
        return find(uri, *args)
    except Exception as exc:
        raise PipelineError(f"MLflow server {uri} could not be searched: {exc}") from exc


def run_link(env: Mapping[str, str], model_file: Path) -> str | None:
    """Markdown line linking the model's run in the MLflow UI, when a server is configured.

    None unless MLFLOW_TRACKING_URI is http(s); a note instead of a link when the server
    has no run for this model.
    """
    uri = server_uri(env)
    if uri is None or not model_file.is_file():
        return None
    run = search(uri, find_training_run, model_file)
    if run is None:
        return f"MLflow: no run on the tracking server for this model ({MODEL_TAG} not found)."
    return f"[MLflow run]({run_url(uri, run)})"
