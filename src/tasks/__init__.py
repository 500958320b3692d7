"""Tasks: what differs between binary classification, multiclass classification and
regression. One module per family owns it (split, CV, estimators, metrics and their
directions, plots, the served answer); everything else asks the task.

    get_task(params)          -> the Task for a params dict (data.task, data.schema)
    metric_direction(name)    -> +1 higher is better, -1 lower is better, 0 no direction
"""

from __future__ import annotations

from typing import Any

from src.utils import PipelineError

# Direction of every metric a task writes to metrics/scores.json. Cross-validation
# metrics are `cv_<name>_mean` (the direction of <name>) and `cv_<name>_std` (lower is
# better: a less noisy estimate). Counts (`n_*`) and train-set scores (`train_*`: lower
# often means less overfitting) have no direction.
METRIC_DIRECTIONS: dict[str, int] = {
    # classification
    "accuracy": 1,
    "balanced_accuracy": 1,
    "f1_macro": 1,
    "roc_auc_ovr": 1,
    "roc_auc": 1,
    "average_precision": 1,
    "log_loss": -1,
    # regression
    "rmse": -1,
    "mae": -1,
    "r2": 1,
}


def metric_direction(name: str) -> int:
    """+1 when higher is better, -1 when lower is better, 0 when neither applies."""
    if name.startswith(("n_", "train_")):
        return 0
    if name.startswith("cv_") and name.endswith("_std"):
        return -1
    if name.startswith("cv_") and name.endswith("_mean"):
        name = name[len("cv_") : -len("_mean")]
    if name in METRIC_DIRECTIONS:
        return METRIC_DIRECTIONS[name]
    if name.endswith(("loss", "error")):
        return -1
    return 0


FAMILIES = ("classification", "regression")
DECLARABLE = ("auto", "classification", "binary", "multiclass", "regression")


class TaskError(PipelineError, ValueError):
    """The task cannot be chosen from params (one line naming the key and what to set)."""


def task_family(data_params: dict) -> str:
    """ "classification" or "regression", from params alone (no data needed).

    The rule (also in params.yaml's comments): `data.task` when declared; with `auto`,
    a `category` target is classification, a `float` target is regression, and an `int`
    target is ambiguous (labels 0/1, or a count?), so it must be declared.
    """
    declared = data_params.get("task") or "auto"
    target = data_params.get("target")
    if declared not in DECLARABLE:
        raise TaskError(f"data.task {declared!r} is not one of: {', '.join(DECLARABLE)}")
    if declared != "auto":
        return "regression" if declared == "regression" else "classification"
    kind = (data_params.get("schema") or {}).get(target)
    if kind == "category":
        return "classification"
    if kind == "float":
        return "regression"
    if kind == "int":
        raise TaskError(
            f"data.target {target!r} is declared int, which could be class labels or a "
            "quantity: set data.task to classification or regression"
        )
    raise TaskError(f"data.target {target!r} is not declared in data.schema")


def resolve_task(data_params: dict, y: Any) -> str:
    """The task name ("binary" | "multiclass" | "regression") for params and the target
    column `y` (a pandas Series, nulls dropped). Raises TaskError naming the key to set."""
    family = task_family(data_params)
    target = data_params.get("target")
    kind = (data_params.get("schema") or {}).get(target)
    declared = data_params.get("task") or "auto"
    n_values = int(y.nunique())
    if family == "regression":
        if kind == "category":
            raise TaskError(
                f"data.target {target!r} is declared category but data.task is regression: "
                "a regression target must be numeric (declare it float in data.schema)"
            )
        if n_values < 2:
            raise TaskError(f"data.target {target!r} has a single value: nothing to regress")
        return "regression"
    if kind == "float":
        raise TaskError(
            f"data.target {target!r} is declared float, and a classifier would make every "
            f"distinct value ({n_values}) a class: set data.task: regression, or declare the "
            "target category"
        )
    if n_values < 2:
        only = ", ".join(map(repr, map(str, y.unique()[:1])))
        raise TaskError(
            f"data.target {target!r} has one class ({only}): classification needs at least 2"
        )
    name = "binary" if n_values == 2 else "multiclass"
    if declared in ("binary", "multiclass") and declared != name:
        raise TaskError(
            f"data.task is {declared} but data.target {target!r} has {n_values} classes: "
            f"set data.task: {name} (or classification)"
        )
    return name


def get_task(name: str) -> Any:
    """The task object for a resolved task name (as stored in the feature schema)."""
    from src.tasks.classification import ClassificationTask
    from src.tasks.regression import RegressionTask

    if name == "regression":
        return RegressionTask()
    if name in ("binary", "multiclass"):
        return ClassificationTask(binary=name == "binary")
    raise TaskError(f"unknown task {name!r}: expected binary, multiclass or regression")


def schema_task(schema: dict) -> Any:
    """The task a model was trained for (models before tasks existed are classifiers)."""
    name = schema.get("task") or ("binary" if len(schema.get("classes", [])) == 2 else "multiclass")
    return get_task(name)
