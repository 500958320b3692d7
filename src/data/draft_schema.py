"""Draft params.yaml's `data:` block (source, target, schema) from a CSV or Parquet file.

    python -m src.data.draft_schema SOURCE [--target COL] [--task TASK] [--write]
                                    [--params params.yaml]

Prints the block; with `--write` it also replaces the `data:` block of params.yaml in
place, leaving every other line of the file untouched, once the whole result passes
params.yaml's schema (src/params.py, as `make check-params`): a draft the pipeline would
refuse (no --target, an `int` target without --task) is not written, one line per
problem, exit 78. Types follow the `prepare` stage
(src/data/make_dataset.py): `int` is numeric with no fractional values, `float` any other
number, `category` text, booleans, pandas categoricals and anything else.
"""

from __future__ import annotations

import argparse
import logging
import numbers
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pandas.api import types as ptypes

from src import config
from src.data.make_dataset import read_table
from src.params import check as check_params
from src.tasks import DECLARABLE
from src.utils import PipelineError, atomic_write, run_cli

log = logging.getLogger(__name__)

COMMENT_COLUMN = 30  # params.yaml's end-of-line comments start here
TARGET_PLACEHOLDER = "TODO: the column to predict (one of the schema's columns)"
TASK_BY_TARGET_TYPE = {
    "category": "category target: with data.task auto, a classification task",
    "float": "float target: with data.task auto, a regression task",
    "int": "int target (labels or a quantity?): declare data.task classification|regression",
}
_TOP_LEVEL_DATA = re.compile(r"""^(data|"data"|'data')[ \t]*:(?:[ \t]|\r?\n|$)""")


@dataclass(frozen=True)
class Column:
    """One column's drafted type and the notes for its YAML comment."""

    name: Any
    kind: str
    notes: tuple[str, ...] = ()


def _numeric_values(series: pd.Series) -> pd.Series | None:
    """`series` as numbers if it holds numbers (not booleans), else None."""
    if ptypes.is_bool_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype):
        return None
    if ptypes.is_complex_dtype(series):
        return None
    if ptypes.is_numeric_dtype(series):
        return series
    if series.dtype == object:
        values = series.dropna()
        if len(values) and all(
            isinstance(v, numbers.Number) and not isinstance(v, bool | np.bool_) for v in values
        ):  # e.g. Decimal from a Parquet decimal column
            return pd.to_numeric(series, errors="coerce")
    return None


def infer_column(series: pd.Series, *, is_target: bool = False) -> Column:
    """The pipeline type (float | int | category) of one column, with notes for a human."""
    n_rows = len(series)
    non_null = series.dropna()
    n_null = n_rows - len(non_null)
    numeric = _numeric_values(series)
    notes: list[str] = []
    if is_target:
        notes.append("target")

    if len(non_null) == 0:
        kind = "float" if numeric is not None else "category"
        notes.append(f"all {n_rows} values are null: type unknown, consider drop_columns")
        return Column(series.name, kind, tuple(notes))

    if numeric is not None:
        values = numeric.dropna().astype("float64")
        whole = bool(np.isfinite(values).all() and (values == values.round()).all())
        kind = "int" if whole else "float"
    else:
        kind = "category"

    try:
        n_distinct = int(non_null.nunique())
    except TypeError:  # unhashable values (e.g. a Parquet list column): count them as text
        n_distinct = int(non_null.astype(str).nunique())
    looks_like_id = not is_target and kind != "float" and n_rows > 1 and n_distinct == n_rows
    if kind != "float" and n_distinct > 1 and not looks_like_id:
        notes.append(f"{n_distinct} distinct")
    if n_null:
        notes.append(f"{n_null} null")
    if ptypes.is_bool_dtype(series) or (
        series.dtype == object and all(isinstance(v, bool | np.bool_) for v in non_null)
    ):
        notes.append("true/false")
    elif ptypes.is_datetime64_any_dtype(series) or series.dtype.kind == "m":
        notes.append("dates/times, read as text")
    elif ptypes.is_complex_dtype(series):
        notes.append("complex numbers, read as text")

    if n_distinct == 1:
        notes.append("a single value: consider drop_columns")
    elif looks_like_id:
        notes.append("every value distinct: looks like an id, consider drop_columns")
    return Column(series.name, kind, tuple(notes))


def infer_columns(df: pd.DataFrame, target: str | None = None) -> list[Column]:
    """Every column of `df`, in file order, with its drafted type."""
    if df.columns.duplicated().any():
        dupes = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise PipelineError(f"duplicate column name(s): {', '.join(dupes)}")
    return [infer_column(df[c], is_target=c == target) for c in df.columns]


def yaml_scalar(value: Any) -> str:
    """`value` as one line of YAML (quoted when it has to be), e.g. 'naïve: yes'."""
    text = yaml.safe_dump(value, allow_unicode=True, default_flow_style=True, width=float("inf"))
    text = text.removesuffix("\n...\n").removesuffix("\n")
    if "\n" in text:  # multi-line scalar: force one double-quoted line with escapes
        text = yaml.safe_dump(value, allow_unicode=True, default_style='"', width=float("inf"))
        text = text.rstrip("\n")
    return text


def _line(indent: int, key: Any, value: str, comment: str = "", width: int = 0) -> str:
    rendered_key = yaml_scalar(key)
    if len(rendered_key) > 1000:  # beyond YAML's limit for an implicit key: `? key`
        head = f"{' ' * indent}? {rendered_key}\n{' ' * indent}: {value}"
        text = head
    else:
        text = f"{' ' * indent}{rendered_key}: {value}"
    if comment:
        comment = " ".join(comment.split())  # a comment must stay on its line
        last = text.rsplit("\n", 1)[-1]
        text += " " * max(width - len(last), 2) + "# " + comment
    return text + "\n"


def source_for_params(path: Path) -> str:
    """How params.yaml should name `path`: relative to the repository when inside it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(config.ROOT).as_posix()
    except ValueError:
        return str(resolved)


def _source_note(path: Path) -> str:
    resolved = path.resolve()
    if not resolved.is_relative_to(config.ROOT):
        return "outside the repository: move it to data/external/ so CI can read it"
    if not resolved.is_relative_to(config.EXTERNAL_DIR):
        return "keep it under data/external/ (prepare's DVC dependency)"
    return "a local CSV or Parquet file"


def render_data_block(
    df: pd.DataFrame,
    source: str,
    target: str | None = None,
    source_note: str = "",
    task: str = "auto",
) -> str:
    """The `data:` block for params.yaml, as text with comments."""
    columns = infer_columns(df, target)
    kinds = {c.name: c.kind for c in columns}
    lines = [
        "data:\n",
        f"  # Drafted by `make schema` ({len(df)} rows x {len(df.columns)} columns): "
        "check every type, then `make repro`.\n",
        _line(2, "source", yaml_scalar(source), source_note, COMMENT_COLUMN),
        _line(2, "sha256", "null", "required only when source is an https:// URL", COMMENT_COLUMN),
    ]
    if target is None:
        lines.append(_line(2, "target", "null", TARGET_PLACEHOLDER, COMMENT_COLUMN))
        task_note = "category target -> classification, float -> regression, int: declare it"
    else:
        lines.append(_line(2, "target", yaml_scalar(target), "", COMMENT_COLUMN))
        task_note = TASK_BY_TARGET_TYPE[kinds[target]]
    if task != "auto":
        task_note = f"declared (--task); {task_note}"
    lines.append(_line(2, "task", task, task_note, COMMENT_COLUMN))
    lines.append(
        _line(2, "drop_columns", "[]", "columns read but not used as features", COMMENT_COLUMN)
    )
    lines.append("  # Declared schema of the raw table: column -> float | int | category.\n")
    lines.append("  schema:\n")
    width = max([COMMENT_COLUMN, *(len(_line(4, c.name, c.kind)) + 1 for c in columns)])
    width = min(width, 60)
    lines += [_line(4, c.name, c.kind, ", ".join(c.notes), width) for c in columns]
    text = "".join(lines)

    expected = {
        "source": source,
        "sha256": None,
        "target": target,
        "task": task,
        "drop_columns": [],
        "schema": kinds,
    }
    parsed = yaml.safe_load(text)
    if parsed != {"data": expected}:  # never hand out YAML that says something else
        raise PipelineError("the drafted data: block does not read back as drafted (a bug)")
    return text


def draft(source: Path, target: str | None = None, task: str = "auto") -> str:
    """Read `source` and draft its `data:` block; errors name the problem."""
    df = read_table(source)
    if df.empty:
        raise PipelineError(f"data file has no rows: {source}")
    if target is not None and target not in df.columns:
        raise PipelineError(
            f"--target {target!r} is not a column of {source}; columns: "
            + ", ".join(repr(c) for c in df.columns)
        )
    if target is not None and df[target].isna().all():
        raise PipelineError(f"target column {target!r} is null in every row of {source}")
    return render_data_block(df, source_for_params(source), target, _source_note(source), task)


def replace_data_block(params_text: str, block: str) -> str:
    """`params_text` with its top-level `data:` block replaced by `block`.

    The block runs from the `data:` line to the last indented line before the next
    top-level key; blank lines and column-0 comments just above that key belong to it
    and are kept. Every other byte is unchanged. Without a `data:` block, `block` is
    appended.
    """
    lines = params_text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _TOP_LEVEL_DATA.match(line)]
    if len(starts) > 1:
        raise PipelineError("params file has more than one top-level data: key")
    newline = "\r\n" if "\r\n" in params_text else "\n"
    block = block.replace("\n", newline) if newline != "\n" else block
    if not starts:
        sep = "" if not params_text or params_text.endswith("\n") else newline
        return params_text + sep + newline + block
    start = starts[0]
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
        end += 1
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def write_data_block(params_file: Path, block: str) -> Path:
    """Replace the `data:` block of `params_file` atomically, after checking the result."""
    params_file = params_file.resolve()
    try:
        raw = params_file.read_bytes()
    except FileNotFoundError as exc:
        raise PipelineError(f"params file not found: {params_file}") from exc
    text = raw.decode("utf-8")
    try:
        old = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineError(f"{params_file} is not valid YAML: {exc}") from exc
    if not isinstance(old, dict):
        raise PipelineError(f"{params_file} must hold a mapping of sections (base, data, ...)")
    new_text = replace_data_block(text, block)
    new = yaml.safe_load(new_text)
    others_same = {k: v for k, v in new.items() if k != "data"} == {
        k: v for k, v in old.items() if k != "data"
    }
    if not others_same or new.get("data") != yaml.safe_load(block)["data"]:
        raise PipelineError(
            f"could not replace the data: block of {params_file} safely; "
            "paste the printed block by hand"
        )
    # The pipeline's own check (make check-params): never write what it would refuse.
    check_params(new, f"{params_file.name} not written, the draft fails its check")
    mode = params_file.stat().st_mode & 0o7777

    def write(tmp: Path) -> None:
        tmp.write_bytes(new_text.encode("utf-8"))
        os.chmod(tmp, mode)

    return atomic_write(params_file, write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the CSV or Parquet file")
    parser.add_argument("--target", help="the column to predict")
    parser.add_argument(
        "--task", choices=DECLARABLE, default="auto", help="data.task (an int target needs it)"
    )
    parser.add_argument(
        "--write", action="store_true", help="replace the data: block of --params in place"
    )
    parser.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    args = parser.parse_args()
    block = draft(args.source, args.target, args.task)
    if args.write:
        write_data_block(args.params, block)
        log.info("replaced the data: block of %s", args.params)
    sys.stdout.buffer.write(block.encode("utf-8"))  # YAML is UTF-8, whatever the locale
    sys.stdout.flush()


if __name__ == "__main__":
    run_cli(main)
