"""Drifted and undrifted copies of a training frame, for the drift tests of any schema.

`shifted(train, schema)` moves the first numeric feature by three standard deviations and
puts 90 % of the first categorical feature's values on its rarest training category (none
when the schema has no categorical feature); it returns the frame and the names of the
features it changed. `resampled(train)` draws rows of the training frame with replacement:
the same distribution, so no feature should be flagged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

ROWS = 1500  # several times drift.min_records, so sampling noise stays far below max_psi


def resampled(train: pd.DataFrame, rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    return train.sample(n=rows, replace=True, random_state=seed).reset_index(drop=True)


def shifted(
    train: pd.DataFrame, schema: dict[str, Any], rows: int = ROWS, seed: int = 1
) -> tuple[pd.DataFrame, set[str]]:
    frame = resampled(train, rows, seed)
    rng = np.random.default_rng(seed)
    changed = set()
    numeric = [f for f in schema["features"] if f["type"] == "numeric" and f["max"] > f["min"]]
    if numeric:
        name = numeric[0]["name"]
        values = pd.to_numeric(train[name])
        frame[name] = pd.to_numeric(frame[name]) + 3 * float(values.std())
        changed.add(name)
    categorical = [f for f in schema["features"] if f["type"] == "categorical"]
    categorical = [f for f in categorical if len(f["categories"]) >= 2]
    if categorical:
        name = categorical[0]["name"]
        counts = train[name].dropna().astype(str).value_counts()
        rarest = sorted(counts.index, key=lambda c: (counts[c], c))[0]
        move = frame[name].notna().to_numpy() & (rng.random(len(frame)) < 0.9)
        column = frame[name].astype(object).to_numpy().copy()
        column[move] = rarest
        frame[name] = column
        changed.add(name)
    return frame, changed
