"""Model factory: `train.model_type` -> an unfitted scikit-learn estimator for the task.

Each task module lists its estimators (src/tasks/classification.py, src/tasks/regression.py
`estimators`): to add your own model, add one entry there.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator

from src.tasks import get_task
from src.tasks.classification import ClassificationTask
from src.tasks.regression import RegressionTask
from src.utils import ParamsError, show

# The classifiers, by model_type (kept under its old name for existing code and tests).
MODEL_BUILDERS = ClassificationTask.estimators
REGRESSION_BUILDERS = RegressionTask.estimators


def make_estimator(
    train_params: dict[str, Any], random_state: int, task: Any = None
) -> BaseEstimator:
    """Build the estimator named by `train_params["model_type"]` for `task` (a Task from
    src.tasks; default multiclass classification). ParamsError names an unknown model or a
    hyperparameter the model reads that is not set (src.params checks params.yaml with it).
    """
    task = task if task is not None else get_task("multiclass")
    builders = task.estimators
    model_type = train_params.get("model_type")
    if model_type not in builders:
        allowed = f"one of: {', '.join(builders)} (the {task.family} models)"
        raise ParamsError([("train.model_type", f"{show(model_type)}: must be {allowed}")])
    try:
        return builders[model_type](train_params, random_state)
    except KeyError as exc:
        key = exc.args[0]
        raise ParamsError([(f"train.{key}", f"missing: {model_type} needs it")]) from exc
