"""Drafting params.yaml's data: block from a table (src/data/draft_schema.py, `make schema`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from src import config
from src.config import ROOT
from src.data.draft_schema import draft, infer_column, replace_data_block
from src.data.make_dataset import read_table, validate_raw
from src.tasks import TaskError, task_family

AWKWARD = [
    "body mass (g)",
    "a/b",
    "Größe",
    "naïve: yes",
    'say "hi"',
    "it's",
    "yes",
    "123",
    "# not a comment",
    "- dash",
    "x: {y}",
    "null",
    "trailing ",
]


def write_table(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src.data.draft_schema", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        encoding="utf-8",
    )


def schema_line(text: str, rendered_key: str) -> str:
    """The printed schema line of one column (its key as the YAML shows it)."""
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"    {rendered_key}: ")]
    return line


def mixed_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ratio": [0.5, 1.25, 2.0, 3.5, 0.5, 1.25],
            "count": [1, 2, 3, 2, 1, 3],
            "count_with_gaps": [1, 2, None, 2, None, 3],  # float64 with NaN, but whole
            "colour": ["red", "blue", "red", None, "green", "blue"],
            "flag": [True, False, True, True, False, True],
            "row_id": [101, 102, 103, 104, 105, 106],
            "code": ["A1", "B2", "C3", "D4", "E5", "F6"],
            "constant": ["x"] * 6,
            "empty": [np.nan] * 6,
        }
    )


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_each_kind_of_column_gets_the_pipeline_type(tmp_path, ext):
    path = write_table(mixed_frame(), tmp_path / f"table{ext}")
    text = draft(path, "colour")
    data = yaml.safe_load(text)["data"]
    assert data["schema"] == {
        "ratio": "float",
        "count": "int",
        "count_with_gaps": "int",
        "colour": "category",
        "flag": "category",
        "row_id": "int",
        "code": "category",
        "constant": "category",
        "empty": "float",
    }
    assert data["source"] == str(path.resolve())
    assert data["target"] == "colour"
    assert list(data["schema"]) == list(mixed_frame().columns)  # file order
    # the prepare stage accepts the draft as it is
    validate_raw(read_table(path), data["schema"], data["target"])


def test_comments_point_at_what_to_check(tmp_path):
    text = draft(write_table(mixed_frame(), tmp_path / "table.csv"), "colour")
    assert "looks like an id, consider drop_columns" in schema_line(text, "row_id")
    assert "looks like an id" in schema_line(text, "code")
    assert "looks like an id" not in schema_line(text, "ratio")  # distinct floats are data
    assert "3 distinct" in schema_line(text, "colour")
    assert "1 null" in schema_line(text, "colour")
    assert "2 null" in schema_line(text, "count_with_gaps")
    assert "all 6 values are null" in schema_line(text, "empty")
    assert "a single value" in schema_line(text, "constant")
    assert "true/false" in schema_line(text, "flag")


def test_parquet_dtypes_map_to_pipeline_types(tmp_path):
    df = pd.DataFrame(
        {
            "level": pd.Categorical(["lo", "hi", "lo", "hi"]),
            "n": pd.array([1, None, 3, 4], dtype="Int64"),
            "ok": pd.array([True, None, False, True], dtype="boolean"),
            "name": pd.array(["a", "b", None, "a"], dtype="string"),
            "when": pd.to_datetime(["2024-01-01", "2024-01-02", None, "2024-01-01"]),
            "nothing": [None] * 4,  # all null, no numeric dtype
            "price": [Decimal("1.50"), Decimal("2.25"), None, Decimal("1.50")],  # SQL numeric
            "qty": [Decimal("1"), Decimal("2"), Decimal("2"), None],
            "y": [0.1, 0.2, 0.3, 0.4],
        }
    )
    path = write_table(df, tmp_path / "table.parquet")
    text = draft(path, "y")
    schema = yaml.safe_load(text)["data"]["schema"]
    assert schema == {
        "level": "category",
        "n": "int",
        "ok": "category",
        "name": "category",
        "when": "category",
        "nothing": "category",
        "price": "float",
        "qty": "int",
        "y": "float",
    }
    assert "all 4 values are null" in schema_line(text, "nothing")
    validate_raw(read_table(path), schema, "y")


def test_a_pandas_categorical_of_numbers_is_a_category():
    # (Parquet stores such a column as plain integers; in memory it is still a category.)
    column = infer_column(pd.Series(pd.Categorical([1, 2, 1, 2]), name="level"))
    assert column.kind == "category"


@pytest.mark.parametrize(
    ("target", "says", "family"),
    [
        ("ratio", "regression", "regression"),
        ("colour", "classification", "classification"),
        ("count", "declare data.task", None),
    ],
)
def test_target_type_tells_the_task(tmp_path, target, says, family):
    text = draft(write_table(mixed_frame(), tmp_path / "table.csv"), target)
    (task_line,) = [ln for ln in text.splitlines() if ln.startswith("  task: ")]
    assert says in task_line
    data = yaml.safe_load(text)["data"]
    if family:  # the comment says what the pipeline's rule will do
        assert task_family(data) == family
    else:
        with pytest.raises(TaskError, match="set data.task"):
            task_family(data)


def test_without_target_the_target_is_a_placeholder(tmp_path):
    text = draft(write_table(mixed_frame(), tmp_path / "table.csv"))
    (target_line,) = [ln for ln in text.splitlines() if ln.startswith("  target: ")]
    assert target_line.startswith("  target: null") and "TODO" in target_line
    assert yaml.safe_load(text)["data"]["target"] is None


def test_source_inside_the_repository_is_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "ROOT", tmp_path)
    monkeypatch.setattr(config, "EXTERNAL_DIR", tmp_path / "data" / "external")
    config.EXTERNAL_DIR.mkdir(parents=True)
    path = write_table(mixed_frame(), config.EXTERNAL_DIR / "mine.csv")
    text = draft(path, "colour")
    assert yaml.safe_load(text)["data"]["source"] == "data/external/mine.csv"
    assert "outside" not in text and "keep it under" not in text


def test_source_outside_data_external_gets_a_warning(tmp_path):
    text = draft(write_table(mixed_frame(), tmp_path / "table.csv"), "colour")
    (source_line,) = [ln for ln in text.splitlines() if ln.startswith("  source: ")]
    assert "move it to data/external/" in source_line


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_awkward_column_names_round_trip_through_the_printed_yaml(tmp_path, ext):
    values = [
        [1.5, 2.5, 3.5, 4.5],
        ["x", "y", "x", "y"],
        [1, 2, 1, 2],
    ]
    df = pd.DataFrame({name: values[i % 3] for i, name in enumerate(AWKWARD)})
    path = write_table(df, tmp_path / f"odd names{ext}")
    proc = cli(path, "--target", "naïve: yes")
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(proc.stdout)["data"]
    assert list(data["schema"]) == AWKWARD
    assert data["target"] == "naïve: yes"
    assert data["source"] == str(path.resolve())
    clean = validate_raw(read_table(path), data["schema"], data["target"])
    assert list(clean.columns) == AWKWARD
    assert "\n    'naïve: yes': float" in proc.stdout  # quoted where YAML needs it


def test_write_replaces_only_the_data_block(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    params.chmod(0o644)
    before = params.read_text(encoding="utf-8")
    start = before.index("\ndata:") + 1
    next_key = re.compile(r"^[A-Za-z_]\w*:", re.M).search(before, start + 1).start()
    source = write_table(mixed_frame(), tmp_path / "mine.csv")

    proc = cli(source, "--target", "ratio", "--write", "--params", params)

    assert proc.returncode == 0, proc.stderr
    after = params.read_text(encoding="utf-8")
    assert after.startswith(before[:start])  # everything above data: byte-identical
    assert after.endswith(before[next_key:])  # everything from the next section on
    assert after[start : len(after) - len(before) + next_key].strip() == proc.stdout.strip()
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    assert list(new) == list(old)
    assert {k: v for k, v in new.items() if k != "data"} == {
        k: v for k, v in old.items() if k != "data"
    }
    assert new["data"]["target"] == "ratio"
    assert new["data"]["schema"]["count_with_gaps"] == "int"
    assert "# Quality gate for PRs" in after  # comments of other sections kept
    assert params.stat().st_mode & 0o777 == 0o644


def test_replace_keeps_the_next_sections_comments_and_handles_a_last_block():
    block = "data:\n  source: new.csv\n"
    text = (
        "base:\n  seed: 1\n\n"
        "data:\n  source: old.csv   # old\n  # inner\n\n"
        "# about split\nsplit:\n  x: 1\n"
    )
    assert replace_data_block(text, block) == (
        "base:\n  seed: 1\n\ndata:\n  source: new.csv\n\n# about split\nsplit:\n  x: 1\n"
    )
    assert replace_data_block("base: 1\ndata:\n  a: 1\n", block) == "base: 1\n" + block
    assert replace_data_block("base: 1\n", block) == "base: 1\n\n" + block
    crlf = "data:\r\n  a: 1\r\nsplit: 2\r\n"
    assert replace_data_block(crlf, block) == "data:\r\n  source: new.csv\r\nsplit: 2\r\n"


@pytest.mark.parametrize(
    ("make_source", "extra", "message"),
    [
        (lambda d: d / "missing.csv", [], "data file not found"),
        (lambda d: d / "table.xlsx", [], "unsupported data file type '.xlsx'"),
        (lambda d: d / "empty.csv", [], "data file is empty"),
        (lambda d: d / "header.csv", [], "data file has no rows"),
        (lambda d: d / "table.csv", ["--target", "nope"], "'nope' is not a column"),
        (lambda d: d / "table.csv", ["--target", "empty"], "'empty' is null in every row"),
    ],
    ids=["missing", "extension", "empty", "no-rows", "bad-target", "null-target"],
)
def test_bad_input_fails_with_one_line_and_writes_nothing(tmp_path, make_source, extra, message):
    write_table(mixed_frame(), tmp_path / "table.csv")
    (tmp_path / "table.xlsx").write_bytes(b"PK\x03\x04 not really a spreadsheet")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("a,b\n")
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = params.read_bytes()

    proc = cli(make_source(tmp_path), *extra, "--write", "--params", params)

    assert proc.returncode != 0
    assert message in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert params.read_bytes() == before
    assert not list(tmp_path.glob(".params.yaml.*"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ([], "data.target: None: must be a column name declared in data.schema"),
        (
            ["--target", "count_with_gaps"],
            "data.task: data.target 'count_with_gaps' is declared int",
        ),
    ],
    ids=["no-target", "int-target-task-auto"],
)
def test_write_refuses_a_draft_that_fails_the_params_schema(tmp_path, extra, problem):
    """--write leaves params.yaml as it was when the result would fail `make check-params`
    (the draft itself is still what a plain run prints)."""
    source = write_table(mixed_frame(), tmp_path / "mine.csv")
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = params.read_bytes()

    proc = cli(source, *extra, "--write", "--params", params)

    assert proc.returncode == 78, proc.stderr  # EXIT_PARAMS, as make check-params
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"params.yaml not written, the draft fails its check: {problem}" in errors[0]
    assert proc.stdout == ""
    assert params.read_bytes() == before
    assert not list(tmp_path.glob(".params.yaml.*"))
    printed = cli(source, *extra, "--params", params)  # without --write: the draft to edit
    assert printed.returncode == 0 and printed.stdout.startswith("data:")


def test_write_with_a_declared_task_writes_an_int_target(tmp_path):
    source = write_table(mixed_frame(), tmp_path / "mine.csv")
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)

    proc = cli(
        source, "--target", "count_with_gaps", "--task", "regression", "--write", "--params", params
    )

    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(params.read_text(encoding="utf-8"))["data"]
    assert (data["target"], data["task"]) == ("count_with_gaps", "regression")
    assert task_family(data) == "regression"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_schema_passes_names_through_and_requires_source(tmp_path):
    df = pd.DataFrame({'it\'s "odd" (g)': ["a", "b", "a"], "x y": [1.5, 2.5, 3.5]})
    source = write_table(df, tmp_path / "my data.csv")
    # RUN_STAMP= : use the running interpreter's environment, install nothing
    make = ["make", "-s", "schema", "RUN_STAMP=", f"VENV={Path(sys.executable).parent.parent}"]

    ok = subprocess.run(
        [*make, f"SOURCE={source}", 'TARGET=it\'s "odd" (g)'],
        cwd=ROOT,
        capture_output=True,
        encoding="utf-8",
    )
    assert ok.returncode == 0, ok.stderr
    data = yaml.safe_load(ok.stdout)["data"]
    assert data["target"] == 'it\'s "odd" (g)'
    assert data["source"] == str(source.resolve())

    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE", "TARGET")}
    missing = subprocess.run(make, cwd=ROOT, capture_output=True, encoding="utf-8", env=env)
    assert missing.returncode != 0
    assert "set SOURCE" in missing.stderr
