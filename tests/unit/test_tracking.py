import time

import pytest

from src.models.tracking import check_tracking_server, run_link, summary_metrics
from src.utils import PipelineError
from tests.repo_tools import free_port

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)


def test_unreachable_server_fails_fast_with_a_clear_message():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(PipelineError, match=f"MLflow tracking server {uri} is unreachable"):
        check_tracking_server(uri)
    assert time.monotonic() - start < 10


def test_summary_metrics_are_valid_mlflow_names_and_never_overwrite_each_other():
    from mlflow.utils.validation import _validate_metric_name

    summary = {
        "per_class": {
            "Adélie (m)": {"f1": 0.5, "support": 3},
            "Ad_lie _m_": {"f1": 0.25, "support": 1},
            "x/y z": {"f1": 1.0, "support": 2},
        }
    }
    metrics = summary_metrics(summary)
    assert metrics == {
        "per_class.Ad_lie _m_.f1": 0.5,
        "per_class.Ad_lie _m_.support": 3.0,
        "per_class.Ad_lie _m_.f1_2": 0.25,
        "per_class.Ad_lie _m_.support_2": 1.0,
        "per_class.x/y z.f1": 1.0,
        "per_class.x/y z.support": 2.0,
    }
    for name in metrics:
        _validate_metric_name(name)


def test_no_run_link_without_a_tracking_server(tmp_path):
    model = tmp_path / "model.joblib"
    model.write_bytes(b"model")
    assert run_link({}, model) is None
    assert run_link({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}, model) is None
