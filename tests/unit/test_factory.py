import numpy as np
import pytest

from src.models.factory import MODEL_BUILDERS, make_estimator
from src.utils import ParamsError


@pytest.mark.parametrize("model_type", sorted(MODEL_BUILDERS))
def test_every_model_type_builds_and_fits(params, model_type):
    estimator = make_estimator({**params["train"], "model_type": model_type}, 0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.where(X[:, 0] > 0, "yes", "no")
    estimator.fit(X, y)
    assert estimator.predict_proba(X).shape == (60, 2)
    assert (estimator.predict(X) == y).mean() > 0.8


def test_params_reach_the_estimator(params):
    train = {**params["train"], "model_type": "random_forest", "n_estimators": 7, "max_depth": 3}
    rf = make_estimator(train, 1)
    assert (rf.n_estimators, rf.max_depth, rf.random_state) == (7, 3, 1)


def test_unknown_model_type_lists_choices(params):
    with pytest.raises(ParamsError, match="train.model_type: 'xgb': must be one of: random_forest"):
        make_estimator({**params["train"], "model_type": "xgb"}, 0)


def test_missing_hyperparameter_is_named():
    with pytest.raises(ParamsError, match="train.n_estimators: missing: random_forest needs it"):
        make_estimator({"model_type": "random_forest"}, 0)
