"""Small seeded tables for the tests of the pipeline's mechanics, independent of params.yaml.

Each table mixes categorical, float and int columns, with nulls in some of them (one
categorical and one numeric feature are nullable, the others are not), a column to drop,
and a column name with a space in it. The target is a noisy function of the features, so
every model type can learn it but not perfectly:

    binary      outcome: "no" | "yes"
    multiclass  kind:    "alpha" | "beta" | "gamma"
    regression  value:   float

`make_params(task)` is the repository's params.yaml with only its `data` block replaced by
the one describing the table, so the tests of mechanics never depend on the configured
dataset. Same arguments, same table, byte for byte.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.config import ROOT
from src.utils import load_params

TASKS = ("binary", "multiclass", "regression")
CLASSIFICATION_TASKS = ("binary", "multiclass")
TARGETS = {"binary": "outcome", "multiclass": "kind", "regression": "value"}
CLASSES = {"binary": ["no", "yes"], "multiclass": ["alpha", "beta", "gamma"]}
FEATURE_TYPES = {
    "colour": "category",  # nullable
    "site": "category",
    "size": "float",  # nullable
    "leaf area": "float",
    "count": "int",
    "batch": "int",  # read, validated, then dropped
}
DROP_COLUMNS = ["batch"]
NULLABLE = ("colour", "size")
N_ROWS = 240
NULL_SHARE = 0.08


def _check(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown fixture task {task!r}: use one of {', '.join(TASKS)}")


def data_schema(task: str) -> dict[str, str]:
    """The `data.schema` of the task's table: target first, then the features."""
    _check(task)
    target_type = "float" if task == "regression" else "category"
    return {TARGETS[task]: target_type, **FEATURE_TYPES}


def make_table(task: str, n_rows: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    """The raw table for `task`: seeded, deterministic, with nulls in the nullable columns."""
    _check(task)
    rng = np.random.default_rng([seed, TASKS.index(task)])
    colour = rng.choice(["blue", "green", "red"], n_rows).astype(object)
    site = rng.choice(["north", "south"], n_rows, p=[0.6, 0.4]).astype(object)
    size = rng.normal(10.0, 2.0, n_rows).round(2)
    leaf_area = rng.uniform(0.0, 5.0, n_rows).round(3)
    count = rng.integers(0, 20, n_rows)
    batch = rng.integers(1, 4, n_rows)
    signal = (
        (size - 10.0) / 2.0
        + np.select([colour == "red", colour == "blue"], [1.2, -1.2], 0.0)
        + 0.8 * (leaf_area - 2.5)
        + np.where(site == "south", 0.5, -0.3)
        + rng.normal(0.0, 0.35, n_rows)
    )
    colour[rng.random(n_rows) < NULL_SHARE] = None
    size[rng.random(n_rows) < NULL_SHARE] = np.nan
    frame = pd.DataFrame(
        {
            "colour": colour,
            "site": site,
            "size": size,
            "leaf area": leaf_area,
            "count": count,
            "batch": batch,
        }
    )
    if task == "binary":
        target: Any = np.where(signal > 0.2, "yes", "no")
    elif task == "multiclass":
        cuts = np.quantile(signal, [1 / 3, 2 / 3])
        target = np.asarray(CLASSES["multiclass"])[np.searchsorted(cuts, signal)]
    else:
        target = (20.0 + 3.0 * signal + 0.1 * count).round(4)
    frame.insert(0, TARGETS[task], target)
    return frame


def make_params(task: str, source: str | None = None) -> dict[str, Any]:
    """params.yaml with its `data` block describing the task's fixture table."""
    _check(task)
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["data"] = {
        "source": source or f"data/external/fixture_{task}.csv",
        "sha256": None,
        "target": TARGETS[task],
        "task": "regression" if task == "regression" else "classification",
        "drop_columns": list(DROP_COLUMNS),
        "schema": data_schema(task),
    }
    return params


def write_table(task: str, path: Path, **kwargs: Any) -> Path:
    """Write the task's table to `path` (.csv or .parquet), as a fork's data file."""
    frame = make_table(task, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path
