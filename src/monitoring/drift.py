"""`make drift INPUT=file`: the drift of a CSV or Parquet file against the training data.

    python -m src.monitoring.drift --input data/external/last_week.csv [--out reports/drift]

Compares the file with the drift reference stored with the serving model
(models/serving/drift_reference.json, written by the export stage) using the statistic
code of the predictor's GET /drift (src/serving/drift.py: PSI per feature, null and
unseen-category rates), judged with params.yaml's `drift:` thresholds. Writes
`<out>/report.md` (a table and one plot per feature), `<out>/drift.json` (the same
summary as /drift) and the plots, replacing the previous report as a whole.

Exit status: 0 no feature over a threshold; 1 at least one feature drifted; 65 the input
does not fit (one line naming the missing, extra or mistyped columns, or too few rows) and
nothing is written; 78 a bad params.yaml; 74 a file that cannot be read or written.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from src import config
from src.data.make_dataset import read_table
from src.features.schema import NUMERIC, to_model_frame
from src.serving.drift import (
    DRIFT,
    INSUFFICIENT,
    Reference,
    ReferenceError,
    matches_schema,
    thresholds_of,
)
from src.serving.drift import (
    settings as drift_settings,
)
from src.serving.manifest import ModelLoadError, drift_reference_bytes, read_model_dir
from src.utils import PipelineError, atomic_dir, load_params, run_cli

log = logging.getLogger(__name__)

OUT_DIR = config.REPORTS_DIR / "drift"
SERVING_DIR = config.MODELS_DIR / "serving"
EXIT_DRIFT = 1
EXIT_BAD_INPUT = 65  # sysexits.h EX_DATAERR


class InputError(PipelineError):
    """The drift input does not fit the schema: exit 65, nothing written."""

    exit_code = EXIT_BAD_INPUT


def load_reference(model_dir: Path) -> tuple[Reference, dict[str, Any]]:
    """(reference, manifest) of an export, both checked; PipelineError naming the file."""
    try:
        model_dir, manifest, _ = read_model_dir(model_dir)
        reference = Reference.from_bytes(drift_reference_bytes(model_dir, manifest))
    except ModelLoadError as exc:
        raise PipelineError(str(exc)) from exc
    except ReferenceError as exc:
        raise PipelineError(f"drift reference in {model_dir} is invalid: {exc}") from exc
    problem = matches_schema(reference, manifest["schema"])
    if problem:
        raise PipelineError(f"drift reference in {model_dir}: {problem}")
    return reference, manifest


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:10]) + (
        f" and {len(names) - 10} more" if len(names) > 10 else ""
    )


def check_columns(
    frame: pd.DataFrame, schema: dict[str, Any], allowed_extra: set[str], source: str
) -> None:
    """InputError naming every missing, extra (not a feature, the target or a declared
    dropped column) and mistyped (a numeric feature with non-numbers) column."""
    features = [f["name"] for f in schema["features"]]
    missing = [n for n in features if n not in frame.columns]
    extra = [str(c) for c in frame.columns if c not in features and c not in allowed_extra]
    mistyped = []
    for f in schema["features"]:
        if f["type"] != NUMERIC or f["name"] not in frame.columns:
            continue
        column = frame[f["name"]]
        if ptypes.is_bool_dtype(column):
            mistyped.append(f["name"])
            continue
        numbers = pd.to_numeric(column, errors="coerce")
        if (numbers.isna() & column.notna()).any() or not np.isfinite(numbers.dropna()).all():
            mistyped.append(f["name"])
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if extra:
        problems.append(f"extra {_names(extra)}")
    if mistyped:
        problems.append(f"mistyped {_names(mistyped)} (expected finite numbers)")
    if problems:
        raise InputError(f"{source}: columns do not match the schema: " + "; ".join(problems))


def input_counts(frame: pd.DataFrame, reference: Reference, schema: dict[str, Any]) -> dict:
    """Count vectors of the file's features (the model frame: "" for a null category)."""
    model = to_model_frame(frame, schema)
    columns = {
        f["name"]: model[f["name"]].to_numpy(dtype=np.float64 if f["type"] == NUMERIC else object)
        for f in schema["features"]
    }
    return reference.count_columns(columns)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~])")


def md(text: Any) -> str:
    """A value from the data as literal markdown text on one line (a table cell)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def plot_feature(entry: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = entry["bins"]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.45 * len(labels) + 2), 3.2))
    ax.bar(x - 0.2, entry["reference"], 0.4, label="training")
    ax.bar(x + 0.2, entry["observed"], 0.4, label="input")
    ax.set_xticks(x, [str(label)[:24] for label in labels], rotation=40, ha="right", fontsize=7)
    ax.set_ylabel("share of non-null values")
    psi = "n/a" if entry["psi"] is None else f"{entry['psi']:.3f}"
    ax.set_title(f"{str(entry['name'])[:60]}: PSI {psi} ({entry['status']})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def render_markdown(summary: dict[str, Any], source: str, plots: list[str]) -> str:
    t = summary["thresholds"]
    verdict = {
        DRIFT: f"**Drift** in {len(summary['drifted'])} feature(s): "
        + ", ".join(f"`{md(n)}`" for n in summary["drifted"]),
        INSUFFICIENT: "**Insufficient data** for some features",
        "ok": "**No drift**: every feature is within its thresholds",
    }[summary["status"]]
    lines = [
        "# Drift report",
        "",
        f"Input: `{md(source)}`, {summary['records']} rows, against the training data of the "
        "serving model (models/serving/drift_reference.json).",
        "",
        verdict + ".",
        "",
        f"Statistic: {summary['statistic']['definition']}. Thresholds (params.yaml `drift:`): "
        f"PSI > {t['psi']:g}, null rate change > {t['null_rate']:g}, unseen rate > "
        f"{t['unseen_rate']:g}; judged with at least {summary['min_records']} rows.",
        "",
        "| feature | type | PSI | null rate (training) | unseen rate | status |",
        "|---|---|---:|---:|---:|---|",
    ]
    for f in summary["features"]:
        psi = "n/a" if f["psi"] is None else f"{f['psi']:.4f}"
        null = "n/a" if f["null_rate"] is None else f"{f['null_rate']:.3f}"
        unseen = f.get("unseen_rate")
        unseen_text = "" if f["type"] == NUMERIC else "n/a" if unseen is None else f"{unseen:.3f}"
        status = f["status"] + (f": {md('; '.join(f['reasons']))}" if f["reasons"] else "")
        lines.append(
            f"| {md(f['name'])} | {f['type']} | {psi} | {null} ({f['reference_null_rate']:.3f})"
            f" | {unseen_text} | {status} |"
        )
    lines += ["", "## Distributions (share of non-null values per bin)", ""]
    for f, plot in zip(summary["features"], plots, strict=True):
        lines.append(f"![{md(f['name'])}](./{plot})")
    return "\n".join(lines) + "\n"


def write_report(summary: dict[str, Any], source: str, out_dir: Path) -> Path:
    """Write report.md, drift.json and the plots into a fresh directory, then swap it in
    for `out_dir` (a reader sees the old report or the new one)."""
    with atomic_dir(out_dir) as staging:
        plots = []
        for i, f in enumerate(summary["features"]):
            name = f"feature_{i:02d}.png"  # feature names are data: never a path
            plot_feature(f, staging / name)
            plots.append(name)
        (staging / "drift.json").write_text(json.dumps(summary, indent=2) + "\n")
        (staging / "report.md").write_text(render_markdown(summary, source, plots))
    return out_dir / "report.md"


def run(input_path: Path, model_dir: Path, params: dict[str, Any], out_dir: Path) -> int:
    """Judge `input_path`; write the report; return the exit status (0 or EXIT_DRIFT)."""
    reference, manifest = load_reference(model_dir)
    schema = manifest["schema"]
    frame = read_table(input_path)
    data = params.get("data") or {}
    allowed = {str(c) for c in (data.get("schema") or {})} | {str(schema.get("target"))}
    check_columns(frame, schema, allowed, str(input_path))
    settings = drift_settings(params.get("drift"))
    if len(frame) < settings["min_records"]:
        raise InputError(
            f"{input_path}: {len(frame)} rows; drift is judged on at least "
            f"{settings['min_records']} (params.yaml drift.min_records)"
        )
    summary = reference.summarize(
        input_counts(frame, reference, schema), thresholds_of(settings), settings["min_records"]
    )
    report = write_report(summary, str(input_path), out_dir)
    if summary["drifted"]:
        log.warning("drift in %s; report: %s", ", ".join(summary["drifted"]), report)
        return EXIT_DRIFT
    log.info("no drift in %d rows of %s; report: %s", len(frame), input_path, report)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="CSV or Parquet file")
    parser.add_argument("--model-dir", type=Path, default=SERVING_DIR)
    parser.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    return run(args.input, args.model_dir, load_params(args.params), args.out)


if __name__ == "__main__":
    run_cli(main)
