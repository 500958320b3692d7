"""Every task end to end in memory, on small tables made here (not the configured data):
split, features, train, evaluate (metrics, plots), export (parity), the predictor's answer
and the batch CLI; and the unknown-category policy, the same in each of them."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeRegressor

from flask_app import create_app
from src.config import ROOT
from src.data.make_dataset import clean_and_split
from src.models.artifact import save_model
from src.models.evaluate_model import evaluate
from src.models.export_model import export, float32_thresholds, probe_frame
from src.models.factory import REGRESSION_BUILDERS
from src.models.predict_model import predict_file
from src.serving.model import ServingModel
from src.utils import PipelineError, load_params
from tests.conftest import train_bundle

COLOURS = [f"colour {i}" for i in range(8)]  # more than a 422 lists


def table(task: str, n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Two numeric features (one with nulls), one categorical (with nulls), a target; the
    names have a space, a slash and a non-ASCII letter, as a fork's columns may."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.uniform(0, 10, size=n)
    colour = rng.choice(COLOURS, size=n)
    signal = 2 * x1 + 0.3 * x2 + np.isin(colour, COLOURS[:4])
    df = pd.DataFrame({"x 1": x1, "x/2": x2, "Färbung": colour})
    if task == "regression":
        df["target"] = 10 + 3 * signal + rng.normal(scale=0.3, size=n)
    elif task == "binary":
        df["target"] = np.where(signal > np.median(signal), "yes", "no")
    else:
        df["target"] = pd.cut(signal, 3, labels=["low", "mid", "high"]).astype(str)
    df.loc[rng.random(n) < 0.1, "x/2"] = np.nan
    df.loc[rng.random(n) < 0.1, "Färbung"] = None
    return df


def task_params(
    task: str,
    unknown: str = "ignore",
    model_type: str = "random_forest",
    features: dict | None = None,
) -> dict:
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["data"] = {
        "source": "fixture",
        "target": "target",
        "task": "regression" if task == "regression" else "classification",
        "drop_columns": [],
        "schema": {
            "x 1": "float",
            "x/2": "float",
            "Färbung": "category",
            "target": "float" if task == "regression" else "category",
        },
    }
    params["features"]["unknown_categories"] = unknown
    params["features"].update(features or {})
    params["train"].update(model_type=model_type, n_estimators=30, max_iter=30, cv_folds=3)
    params["evaluate"]["permutation_repeats"] = 2
    return params


def fit(task: str, **kwargs) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame]:
    """prepare + features + train in memory, as the stages run them."""
    params = task_params(task, **kwargs)
    _, train_df, test_df = clean_and_split(table(task), params)
    return params, train_bundle(params, train_df), train_df, test_df


EXPECTED_METRICS = {
    "binary": {"accuracy", "roc_auc", "average_precision", "log_loss", "cv_roc_auc_mean"},
    "multiclass": {"accuracy", "roc_auc_ovr", "f1_macro", "cv_f1_macro_std", "train_accuracy"},
    "regression": {"rmse", "mae", "r2", "cv_rmse_mean", "cv_r2_std", "train_r2"},
}
EXPECTED_PLOTS = {
    "binary": {"confusion_matrix.csv", "roc", "precision_recall", "feature_importance.csv"},
    "multiclass": {"confusion_matrix.csv", "roc", "precision_recall", "feature_importance.csv"},
    "regression": {"predictions.csv", "feature_importance.csv"},
}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_task_trains_evaluates_exports_and_serves(task, tmp_path):
    params, bundle, train_df, test_df = fit(task)
    assert bundle["schema"]["task"] == task
    assert ("classes" in bundle["schema"]) == (task != "regression")

    scores = evaluate(bundle, test_df, params, tmp_path / "plots")
    assert EXPECTED_METRICS[task] <= set(scores), sorted(scores)
    assert scores["n_test"] == len(test_df)
    written = {p.name for p in (tmp_path / "plots").iterdir()} - {"images"}
    assert written == EXPECTED_PLOTS[task]
    images = {p.stem for p in (tmp_path / "plots" / "images").glob("*.png")}
    assert "feature_importance" in images
    assert ("predicted_vs_actual" in images) == (task == "regression")
    if task == "regression":
        assert scores["r2"] > 0.8  # the target is a near-linear function of the features
    else:
        assert scores["balanced_accuracy"] > 0.6

    frames = {"train": train_df, "test": test_df}
    figures = export(bundle, tmp_path / "serving", frames, 1e-4, "0" * 64)
    for f in figures.values():
        assert f.get("label_mismatches", 0) == 0
        assert f.get("max_abs_proba_diff", 0) <= 1e-5 and f.get("max_rel_diff", 0) <= 1e-4

    client = create_app({"MODEL_DIR": str(tmp_path / "serving")}).test_client()
    served = ServingModel.load(tmp_path / "serving")
    record = served.example_record()
    assert (served.predict([record])[1] is None) == (task == "regression")  # no probabilities
    answer = client.post("/predict", json={"instances": [record, record]}).get_json()
    if task == "regression":
        assert set(answer) == {"predictions"}
        assert all(isinstance(v, float) for v in answer["predictions"])
    else:
        assert set(answer) == {"predictions", "probabilities"}
        assert set(answer["probabilities"][0]) == set(bundle["schema"]["classes"])
        assert answer["predictions"][0] in bundle["schema"]["classes"]
    assert client.get("/metadata").get_json()["task"] == task

    save_model(bundle, tmp_path / "model.joblib")
    test_df.to_csv(tmp_path / "in.csv", index=False)
    out = predict_file(tmp_path / "in.csv", tmp_path / "model.joblib", tmp_path / "out.csv")
    assert len(out) == len(test_df)
    proba_columns = [c for c in out.columns if c.startswith("proba_")]
    assert (proba_columns == []) == (task == "regression")


def test_a_regression_pipeline_switches_model_types_by_params():
    for model_type in ("hist_gradient_boosting", "ridge", "gradient_boosting"):
        _, bundle, _, _ = fit("regression", model_type=model_type)
        assert bundle["pipeline"][-1].__class__.__name__ != "RandomForestRegressor"
    with pytest.raises(
        PipelineError, match="train.model_type: 'logistic_regression': must be one of.*regression"
    ):
        fit("regression", model_type="logistic_regression")


@pytest.mark.parametrize("model_type", sorted(REGRESSION_BUILDERS))
def test_every_regression_model_exports_with_parity(model_type, tmp_path):
    _, bundle, train_df, test_df = fit("regression", model_type=model_type)
    frames = {
        "train": train_df,
        "test": test_df,
        "probe": probe_frame(bundle["schema"], 500, seed=1),
    }
    figures = export(bundle, tmp_path / "serving", frames, 1e-4)
    assert figures["probe"]["rows_with_nulls"] and figures["probe"]["rows_with_unseen_categories"]
    for name, f in figures.items():
        assert f["max_rel_diff"] <= 1e-4, (model_type, name, f)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_a_scaler_ahead_of_a_linear_model_exports_with_parity(task, tmp_path):
    model_type = "ridge" if task == "regression" else "logistic_regression"
    _, bundle, _, test_df = fit(task, model_type=model_type, features={"scale_numeric": "standard"})
    frames = {"test": test_df, "probe": probe_frame(bundle["schema"], 500, seed=2)}
    figures = export(bundle, tmp_path / "serving", frames, 1e-5 if task == "binary" else 1e-4)
    for f in figures.values():
        assert f.get("label_mismatches", 0) == 0


def test_unknown_categories_ignored_everywhere(tmp_path):
    params, bundle, _, test_df = fit("binary", unknown="ignore")
    test_df = test_df.copy()
    test_df.loc[test_df.index[:3], "Färbung"] = "a colour never seen"
    scores = evaluate(bundle, test_df, params, tmp_path / "plots")
    assert scores["n_unknown_category_rows"] == 3 and scores["n_test"] == len(test_df)
    export(bundle, tmp_path / "serving", {"test": test_df}, 1e-5)
    client = create_app({"MODEL_DIR": str(tmp_path / "serving")}).test_client()
    record = ServingModel.load(tmp_path / "serving").example_record()
    response = client.post("/predict", json={**record, "Färbung": "a colour never seen"})
    assert response.status_code == 200
    save_model(bundle, tmp_path / "model.joblib")
    test_df.to_csv(tmp_path / "in.csv", index=False)
    out = predict_file(tmp_path / "in.csv", tmp_path / "model.joblib", tmp_path / "out.csv")
    assert len(out) == len(test_df)


def test_unknown_categories_rejected_everywhere(tmp_path):
    params, bundle, train_df, test_df = fit("multiclass", unknown="reject")
    test_df = test_df.copy()
    test_df.loc[test_df.index[:3], "Färbung"] = "a colour never seen"
    scores = evaluate(bundle, test_df, params, tmp_path / "plots")
    assert scores["n_unknown_category_rows"] == 3 and scores["n_test"] == len(test_df) - 3

    export(bundle, tmp_path / "serving", {"train": train_df}, 1e-5)
    client = create_app({"MODEL_DIR": str(tmp_path / "serving")}).test_client()
    record = ServingModel.load(tmp_path / "serving").example_record()
    response = client.post("/predict", json={**record, "Färbung": "a colour never seen"})
    assert response.status_code == 422
    (detail,) = response.get_json()["error"]["details"]
    assert detail["field"] == "Färbung"
    assert "'colour 0'" in detail["problem"] and "and 3 more" in detail["problem"]
    assert "colour 7" not in detail["problem"]  # a few allowed values, then a count

    save_model(bundle, tmp_path / "model.joblib")
    test_df.to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(PipelineError, match="Färbung: unknown categories 'a colour never seen'"):
        predict_file(tmp_path / "in.csv", tmp_path / "model.joblib", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_tree_thresholds_between_adjacent_float32_values_are_served_as_trained():
    # Two training values one float32 apart: the float64 midpoint threshold rounds up to
    # the larger one in float32, so a served (float32) tree would send it left.
    low = np.float32(28.2)
    if low.view(np.int32) % 2 == 0:  # ties round to even: make the upper neighbour even
        low = np.nextafter(low, np.float32(np.inf))
    high = np.nextafter(low, np.float32(np.inf))
    X = np.array([[low], [high]] * 10, dtype=np.float32)
    y = np.array([0.0, 1.0] * 10)
    tree = DecisionTreeRegressor(random_state=0).fit(X, y)
    threshold = tree.tree_.threshold[0]
    assert np.float32(threshold) == high  # the trap
    rounded = float32_thresholds(tree).tree_.threshold[0]
    assert np.float32(rounded) == low and low <= rounded < high
    assert tree.tree_.threshold[0] == threshold  # the trained model is left untouched


def test_the_export_serves_trees_split_between_adjacent_float32_values_as_trained(tmp_path):
    # The same trap end to end: a feature whose training values sit one float32 step
    # apart, the split between them learned by hist gradient boosting (skl2onnx already
    # rounds forest thresholds; it converts these as they are); the export must still match.
    low = np.float32(28.2)
    if low.view(np.int32) % 2 == 0:
        low = np.nextafter(low, np.float32(np.inf))
    high = np.nextafter(low, np.float32(np.inf))
    df = table("regression")
    df["x 1"] = np.where(np.arange(len(df)) % 2, float(high), float(low))
    df["target"] = np.where(df["x 1"] == float(high), 100.0, 0.0) + df["x/2"].fillna(0)
    params = task_params("regression", model_type="hist_gradient_boosting")
    _, train_df, test_df = clean_and_split(df, params)
    bundle = train_bundle(params, train_df)
    figures = export(bundle, tmp_path / "serving", {"test": test_df}, 1e-4)
    assert figures["test"]["max_rel_diff"] <= 1e-4


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_evaluate_summarises_per_class_or_residuals_for_mlflow(task, tmp_path):
    params, bundle, _, test_df = fit(task)
    summary: dict = {}
    scores = evaluate(bundle, test_df, params, tmp_path / "plots", summary=summary)
    target = params["data"]["target"]
    if task == "regression":
        predicted = pd.read_csv(tmp_path / "plots" / "predictions.csv")
        residual = predicted["actual"] - predicted["predicted"]
        assert set(summary) == {"residual"}
        assert summary["residual"]["mean"] == pytest.approx(residual.mean(), abs=1e-5)
        assert summary["residual"]["max_abs"] == pytest.approx(residual.abs().max(), abs=1e-5)
        assert summary["residual"]["p05"] <= summary["residual"]["median"]
        assert summary["residual"]["median"] <= summary["residual"]["p95"]
    else:
        per_class = summary["per_class"]
        assert list(per_class) == bundle["schema"]["classes"]
        counts = test_df[target].astype(str).value_counts()
        assert {c: v["support"] for c, v in per_class.items()} == counts.to_dict()
        recall = sum(v["recall"] for v in per_class.values()) / len(per_class)
        assert recall == pytest.approx(scores["balanced_accuracy"], abs=1e-5)
