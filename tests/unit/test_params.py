"""params.yaml's schema (src/params.py): every bad value is one line naming the key path,
the value and what is allowed; unknown keys are named; good files come back unchanged."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from src import params as schema
from src.config import PARAMS_FILE, ROOT
from src.models.factory import make_estimator
from src.tasks import get_task, task_family
from src.utils import EXIT_PARAMS, ParamsError, PipelineError, load_params
from tests import fixture_data


def repo_params() -> dict:
    return yaml.safe_load(PARAMS_FILE.read_text())


def problems(params: dict) -> list[str]:
    with pytest.raises(ParamsError) as caught:
        schema.check(params)
    return str(caught.value).splitlines()


def edited(**changes) -> dict:
    """The repository's params with `section.key` set (a value of DELETE removes it)."""
    params = copy.deepcopy(repo_params())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = params
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return params


DELETE = object()


def test_key_paths_quote_names_that_are_not_identifiers():
    assert schema.join("data", "schema", "bill_length_mm") == "data.schema.bill_length_mm"
    assert schema.join("data", "schema", "leaf area") == "data.schema['leaf area']"
    assert schema.join("data", "drop_columns", 0) == "data.drop_columns[0]"


def test_the_repositorys_params_and_the_fixture_params_are_valid():
    assert load_params(PARAMS_FILE) == repo_params()  # values as the file holds them
    for task in fixture_data.TASKS:
        schema.check(fixture_data.make_params(task))


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"train__n_estimators": -5}, "train.n_estimators: -5: must be an integer from 1 to 10000"),
        (
            {"train__n_estimators": "lots"},
            "train.n_estimators: 'lots': must be an integer from 1 to 10000",
        ),
        ({"train__n_estimators": True}, "train.n_estimators: True: must be an integer"),
        ({"train__n_estimators": 2.5}, "train.n_estimators: 2.5: must be an integer"),
        ({"train__n_estimators": None}, "train.n_estimators: None: must be an integer"),
        (
            {"split__test_size": 1.5},
            "split.test_size: 1.5: must be a fraction between 0 and 1 (exclusive)",
        ),
        ({"split__test_size": "0.2"}, "split.test_size: '0.2': must be a fraction"),
        ({"train__learning_rate": float("nan")}, "train.learning_rate: nan: must be a number > 0"),
        ({"train__max_depth": 0}, "train.max_depth: 0: must be null (unlimited) or an integer"),
        ({"train__class_weight": "heavy"}, "train.class_weight: 'heavy': must be null or balanced"),
        ({"train__cv_folds": 1}, "train.cv_folds: 1: must be an integer from 2 to 100"),
        ({"train__cv_folds": DELETE}, "train.cv_folds: missing: must be an integer from 2 to 100"),
        ({"train__n_estimator": 3}, "train.n_estimator: unknown key (did you mean n_estimators?)"),
        ({"trian": {}}, "trian: unknown key (did you mean train?)"),
        ({"base__random_state": -1}, "base.random_state: -1: must be an integer from 0 to"),
        (
            {"evaluate__permutation_repeats": 10**9},
            "evaluate.permutation_repeats: 1000000000: must be an integer from 1 to 1000",
        ),
        (
            {"export__probe_records": 10**8},
            "export.probe_records: 100000000: must be an integer from 1 to 100000",
        ),
        (
            {"export__max_abs_proba_diff": "1e-5"},
            "export.max_abs_proba_diff: '1e-5': must be a number from 0 to 1 "
            "(YAML reads 1e-5 as text: write 1.0e-5)",
        ),
        ({"features__numeric_impute": "mode"}, "features.numeric_impute: 'mode': must be one of"),
        (
            {"features__onehot_min_frequency": 1.5},
            "features.onehot_min_frequency: 1.5: must be null, an integer >= 1 or a fraction",
        ),
        ({"features__onehot_max_categories": 1}, "features.onehot_max_categories: 1: must be"),
        (
            {"features__unknown_categories": "guess"},
            "features.unknown_categories: 'guess': must be one of: reject, ignore",
        ),
        ({"data__task": "clustering"}, "data.task: 'clustering': must be one of: auto, "),
        ({"data__sha256": "abc"}, "data.sha256: 'abc': must be null or a sha256 digest"),
        ({"data__drop_columns": "year"}, "data.drop_columns: 'year': must be a list of column"),
        ({"data__drop_columns": ["nope"]}, "data.drop_columns[0]: 'nope': not in data.schema"),
        ({"data__target": "nope"}, "data.target: 'nope' is not declared in data.schema"),
        ({"data__schema": {}}, "data.schema: {}: must be a mapping of column name to float"),
        ({"data__schema": ["a"]}, "data.schema: ['a']: must be a mapping of column name"),
        (
            {"data__source": "https://example.org/x.csv"},
            "data.sha256: null: must be the file's sha256 (64 hex digits) when data.source is",
        ),
        ({"data__source": "ftp://host/x.csv"}, "data.source: 'ftp://host/x.csv': must be a local"),
        ({"train": 5}, "train: 5: must be a mapping: model_type and the model's hyperparameters"),
        ({"base": None}, "base: None: must be a mapping: random_state"),
        ({"gate__classification__minimum": {}}, "gate.classification.minimum: unknown key"),
    ],
)
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_allowed(changes, line):
    lines = problems(edited(**changes))
    assert len(lines) == 1 and lines[0].startswith(f"params.yaml: {line}"), lines


def test_schema_entries_and_names_are_checked_one_by_one():
    params = edited()
    target = params["data"]["target"]
    column = next(c for c in params["data"]["schema"] if c != target)
    params["data"]["schema"][column] = "decimal"
    params["data"]["schema"][True] = "float"  # YAML `yes:` is a bool key
    assert problems(params) == [
        f"params.yaml: {schema.join('data', 'schema', column)}: 'decimal': must be float, "
        "int or category",
        "params.yaml: data.schema[True]: True: must be a column name (a string)",
    ]


def test_the_model_must_be_one_of_the_tasks_and_have_its_hyperparameters():
    params = edited()
    regression = task_family(params["data"]) == "regression"
    other = "logistic_regression" if regression else "ridge"
    family = "regression" if regression else "classification"
    (line,) = problems(edited(train__model_type=other))
    assert line.startswith(f"params.yaml: train.model_type: '{other}': must be one of: ")
    assert line.endswith(f"(the {family} models)")
    assert problems(edited(train__model_type="random_forest", train__n_estimators=DELETE)) == [
        "params.yaml: train.n_estimators: missing: random_forest needs it"
    ]


def test_an_int_target_needs_a_declared_task():
    params = fixture_data.make_params("binary")
    params["data"]["schema"]["outcome"] = "int"
    params["data"]["task"] = "auto"
    (line,) = problems(params)
    assert line.startswith("params.yaml: data.task: data.target 'outcome' is declared int")


def test_every_problem_of_a_file_is_reported_at_once():
    lines = problems(
        edited(train__n_estimators=-5, split__test_size=1.5, train__n_estimator=3, extra=1)
    )
    assert len(lines) == 4, lines
    assert {line.split(": ")[1] for line in lines} == {
        "train.n_estimators",
        "split.test_size",
        "train.n_estimator",
        "extra",
    }


def test_a_hostile_value_gives_a_short_line():
    # a YAML alias bomb: nine levels of nine references, shown without expanding it
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    value = yaml.safe_load(bomb)["i"]
    (line,) = problems(edited(train__n_estimators=value, train__model_type="x\ny" * 1000))[:1]
    assert len(line) < 200 and "\n" not in line


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "train:\n  n_estimators: 5\n  n_estimators: 6\n",
            "line 3: not valid YAML: duplicate key 'n_estimators'",
        ),
        ("train: [1\n", "not valid YAML"),
        ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
        ("\xff\xfe", "not UTF-8 text"),
        ("- a\n- b\n", None),
    ],
)
def test_a_malformed_file_is_one_line(tmp_path, text, line):
    path = tmp_path / "params.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(PipelineError) as caught:
        load_params(path)
    message = str(caught.value)
    assert "\n" not in message
    assert (line or "must hold a mapping of sections") in message


def test_an_oversized_file_is_refused_unparsed(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("# " + "x" * schema.MAX_FILE_BYTES + "\n")
    with pytest.raises(ParamsError, match="larger than"):
        load_params(path)
    with pytest.raises(PipelineError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize("family", ["classification", "regression"])
def test_the_bounds_are_values_scikit_learn_accepts(family):
    """The schema never admits a value the estimator then refuses (sklearn's own checks)."""
    task = get_task("regression" if family == "regression" else "multiclass")
    fields = schema.TrainParams.model_fields
    lowest = {"n_estimators": 1, "max_depth": 1, "min_samples_leaf": 1, "max_iter": 1}
    highest = {"n_estimators": 10_000, "max_depth": 1000, "max_iter": 100_000}
    smallest = {"learning_rate": 1e-12, "C": 1e-12, "alpha": 0.0}
    for values in (lowest | smallest, highest | {"class_weight": "balanced"}):
        for model_type in task.estimators:
            train = {**repo_params()["train"], **values, "model_type": model_type}
            assert set(train) <= set(fields)
            estimator = make_estimator(train, 0, task)
            for step in getattr(estimator, "steps", [(None, estimator)]):
                step[1]._validate_params()  # scikit-learn's own parameter constraints


def test_check_cli_exits_78_with_one_line_per_key_and_no_traceback(tmp_path):
    bad = edited(train__n_estimators=-5, train__n_estimator=3)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = subprocess.run(
        [sys.executable, "-m", "src.params", "check", "--params", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == EXIT_PARAMS == 78
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert [e.split(" ERROR ")[1] for e in errors] == [
        "params.yaml: train.n_estimators: -5: must be an integer from 1 to 10000",
        "params.yaml: train.n_estimator: unknown key (did you mean n_estimators?)",
    ]
    assert "Traceback" not in proc.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "src.params", "check"], cwd=ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
