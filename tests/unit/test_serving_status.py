"""src/models/serving_status.py: DVC's status of the export stage, as one line of changes."""

import pytest

from src.models.serving_status import describe

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)


def test_every_kind_of_change_is_named():
    status = {
        "export": [{"changed outs": {"models/serving": "modified"}}],
        "train": [
            {"changed deps": {"params.yaml": {"train.n_estimators": "modified"}}},
            {"changed deps": {"src/models/train_model.py": "modified"}},
        ],
        "prepare": ["always changed"],
    }
    assert describe(status) == [
        "export: changed outs models/serving (modified)",
        "train: changed deps params.yaml: train.n_estimators (modified)",
        "train: changed deps src/models/train_model.py (modified)",
        "prepare: always changed",
    ]
    assert describe({}) == []
