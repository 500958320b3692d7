"""Stage `prepare`: load the raw table, validate it against the declared schema, split it.

    python -m src.data.make_dataset [--params params.yaml]

Reads `data.*`, `split.*` and `base.random_state`; writes `data/raw/` (the validated raw
table) and `data/processed/{train,test}.csv` (seeded split; stratified on the target for
classification). The task (binary, multiclass, regression) is resolved here from
`data.task` and the target (src.tasks.resolve_task), so a bad choice stops the first stage.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
from pandas.api import types as ptypes
from sklearn.model_selection import train_test_split

from src import config
from src.tasks import resolve_task
from src.utils import PipelineError, atomic_path, atomic_write, load_params, run_cli

log = logging.getLogger(__name__)

PACKAGE_SOURCE = "palmerpenguins"
DOWNLOAD_TIMEOUT_S = 60


def is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def download(url: str, sha256: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download `url` to `dest`, verifying its sha256; `dest` appears only if the hash matches.

    (src.params requires data.sha256 with a URL source: an empty digest matches nothing.)
    """
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:
            with tmp.open("wb") as out:
                while block := resp.read(1 << 20):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != sha256.lower():
                raise PipelineError(
                    f"sha256 mismatch for {url}: expected {sha256.lower()}, "
                    f"got {digest.hexdigest()}; the file was not saved"
                )
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise PipelineError(f"could not download {url}: {exc}") from exc
    log.info("downloaded %s (sha256 verified) to %s", url, dest)
    return dest


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, with a clear error for a missing, empty or unreadable file."""
    if not path.is_file():
        raise PipelineError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise PipelineError(f"data file is empty: {path}") from exc
    except Exception as exc:
        raise PipelineError(f"could not read {path}: {exc}") from exc
    raise PipelineError(f"unsupported data file type {suffix!r} for {path}: use .csv or .parquet")


def load_source(source: str, sha256: str | None, raw_dir: Path) -> pd.DataFrame:
    """Load the raw table named by `data.source` (package name, local path or URL)."""
    if source == PACKAGE_SOURCE:
        import palmerpenguins

        return palmerpenguins.load_penguins()
    if is_url(source):
        name = Path(urlparse(source).path).name or "download.csv"
        return read_table(download(source, sha256 or "", raw_dir / "download" / name))
    path = Path(source)
    if not path.is_absolute():
        path = config.ROOT / path
    return read_table(path)


def validate_raw(df: pd.DataFrame, schema: dict[str, str], target: str) -> pd.DataFrame:
    """Check `df` against the declared schema and return it with normalised dtypes.

    Raises PipelineError naming every offending column and its problem. Rows with a
    missing target are dropped (and counted in the log); an all-null target is an error.
    `schema` and `target` are params as src.params checked them (types, target declared).
    """
    if df.empty or len(df.columns) == 0:
        raise PipelineError("the raw table is empty (no rows)")

    problems: list[str] = []
    missing = [c for c in schema if c not in df.columns]
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    out = pd.DataFrame(index=df.index)
    for column, kind in schema.items():
        if column in missing:
            continue
        series = df[column]
        if kind == "category":
            out[column] = series.astype("object").where(series.notna(), None)
            out[column] = out[column].map(lambda v: v if v is None else str(v))
            continue
        if ptypes.is_bool_dtype(series) or not ptypes.is_numeric_dtype(series):
            numeric = pd.to_numeric(series, errors="coerce")
            bad = series[numeric.isna() & series.notna()]
            if len(bad) or ptypes.is_bool_dtype(series):
                examples = ", ".join(repr(v) for v in bad.unique()[:3])
                problems.append(
                    f"column {column!r}: expected {kind}, found non-numeric values ({examples})"
                )
                continue
            series = numeric
        if kind == "int":
            non_null = series.dropna()
            if not (non_null == non_null.round()).all():
                problems.append(f"column {column!r}: expected int, found fractional values")
                continue
        out[column] = series.astype("float64")
    if problems:
        raise PipelineError("raw data does not match data.schema: " + "; ".join(problems))

    n_null_target = int(out[target].isna().sum())
    if n_null_target == len(out):
        raise PipelineError(f"target column {target!r} is null in every row")
    if n_null_target:
        log.warning("dropping %d row(s) with a missing target %r", n_null_target, target)
        out = out[out[target].notna()]
    return out.reset_index(drop=True)


def split_data(
    df: pd.DataFrame, target: str, test_size: float, random_state: int, stratify: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded train/test split, stratified on the target for classification."""
    if stratify:
        counts = df[target].value_counts()
        if (counts < 2).any():
            rare = ", ".join(map(str, counts[counts < 2].index[:10]))
            more = f" and {int((counts < 2).sum()) - 10} more" if (counts < 2).sum() > 10 else ""
            raise PipelineError(
                f"class(es) of data.target {target!r} with fewer than 2 rows cannot be split: "
                f"{rare}{more}"
            )
    train, test = train_test_split(
        df,
        test_size=test_size,
        random_state=random_state,
        stratify=df[target] if stratify else None,
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda p: df.to_csv(p, index=False))


def clean_and_split(
    raw: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(validated table, train, test): validate against data.schema, resolve the task,
    split (stratified for classification). Raises PipelineError naming the problem.
    `params` as src.params checked them (load_params)."""
    data = params["data"]
    clean = validate_raw(raw, data["schema"], data["target"])
    task = resolve_task(data, clean[data["target"]])
    log.info("task: %s (data.task: %s)", task, data.get("task") or "auto")
    train, test = split_data(
        clean,
        data["target"],
        params["split"]["test_size"],
        params["base"]["random_state"],
        stratify=task != "regression",
    )
    return clean, train, test


def prepare(params: dict[str, Any], raw_dir: Path, processed_dir: Path) -> dict[str, int]:
    """Run the whole stage; return row counts."""
    data = params["data"]
    raw = load_source(str(data["source"]), data.get("sha256"), raw_dir)
    log.info("loaded %d rows x %d columns from %s", len(raw), raw.shape[1], data["source"])
    clean, train, test = clean_and_split(raw, params)
    write_csv(clean, raw_dir / "dataset.csv")
    write_csv(train, processed_dir / "train.csv")
    write_csv(test, processed_dir / "test.csv")
    counts = {"raw": len(raw), "valid": len(clean), "train": len(train), "test": len(test)}
    log.info("rows: %s", counts)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    args = parser.parse_args()
    params = load_params(args.params)  # before anything is removed
    raw_dir = config.RAW_DATA.parent
    if raw_dir.exists():  # start from a clean folder so stale downloads never linger
        shutil.rmtree(raw_dir)
    prepare(params, raw_dir, config.PROCESSED_DIR)


if __name__ == "__main__":
    run_cli(main)
