"""Batch prediction: score a CSV (or Parquet) file with the trained model.

    python -m src.models.predict_model --input data/processed/test.csv \
        --model models/model.joblib --out reports/predictions.csv

The output has one row per input row: `prediction`, and for classification one
`proba_<class>` column per class. Input columns are checked against the feature schema
stored with the model: a missing or mistyped column is rejected with a message naming it;
extra columns (such as the target) are ignored; categories unseen in training follow
`features.unknown_categories` (ignore: scored and warned about; reject: refused, named).
The output file is written atomically.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from src import config
from src.data.make_dataset import read_table
from src.features.schema import SchemaError, validate_frame
from src.models.artifact import ModelLoadError, load_model, model_outputs
from src.tasks import schema_task
from src.utils import PipelineError, atomic_write, run_cli

log = logging.getLogger(__name__)


def predict_file(input_path: Path, model_path: Path, out_path: Path) -> pd.DataFrame:
    """Score `input_path` with the model at `model_path`; write and return the predictions."""
    try:
        bundle = load_model(model_path)
    except ModelLoadError as exc:
        raise PipelineError(str(exc)) from exc
    df = read_table(input_path)
    try:
        frame = validate_frame(df, bundle["schema"])
    except SchemaError as exc:
        raise PipelineError(f"{input_path}: {exc}") from exc
    task = schema_task(bundle["schema"])
    outputs = model_outputs(bundle, frame)
    out = pd.DataFrame({"prediction": task.predictions(outputs)}, index=frame.index)
    if task.is_classifier:
        for cls in outputs.columns:
            out[f"proba_{cls}"] = outputs[cls].round(6)
    atomic_write(out_path, lambda p: out.to_csv(p, index=False))
    log.info("wrote %d predictions to %s", len(out), out_path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Batch prediction with the trained model.")
    parser.add_argument("--input", type=Path, default=config.TEST_DATA, help="CSV or Parquet")
    parser.add_argument("--model", type=Path, default=config.MODEL_FILE)
    parser.add_argument("--out", type=Path, default=config.PREDICTIONS_FILE)
    args = parser.parse_args()
    predict_file(args.input, args.model, args.out)


if __name__ == "__main__":
    run_cli(main)
