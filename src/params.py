"""params.yaml: its typed schema, and the check that runs before any stage does work.

    python -m src.params check [--params params.yaml]      (make check-params)

`load(path)` reads the file (YAML, at most MAX_FILE_BYTES, no duplicate keys) and checks
it against `Params`: every section and key, types and ranges, and the settings that
depend on each other (the target and drop_columns are columns of data.schema, a URL
source has a sha256, train.model_type is a model of the task, that model's
hyperparameters are set, the gate's blocks and rules). Every problem is one line naming
the key path, the value and what is allowed:

    params.yaml: train.n_estimators: -5: must be an integer from 1 to 10000
    params.yaml: train.n_estimator: unknown key (did you mean n_estimators?)

An unknown key is an error, so a typo never falls back to a default silently: a fork
that adds a param (a new estimator's hyperparameter, a section for its own stage) adds
its field here too. The schema accepts or rejects, it never converts (strict types: `"5"`
is not 5, `true` is not 1): `load` returns the values as the file holds them, so the
stages read plain dicts and the artifacts record exactly what the file said. That is why
this module is not a `deps:` entry of the stages in dvc.yaml: it cannot change an output.

params.yaml is hostile input (a fork's pull request runs the pipeline): it is parsed with
yaml's safe loader (no objects, no code), its size is bounded, and the settings that cost
run time (trees, iterations, folds, repeats, probe records) have upper bounds.
"""

from __future__ import annotations

import argparse
import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from src.config import PARAMS_FILE
from src.serving.drift import DEFAULT_SETTINGS as _DRIFT
from src.tasks import DECLARABLE, FAMILIES, TaskError, metric_direction, task_family
from src.utils import ParamsError, PipelineError, run_cli, setup_logging, show

MAX_FILE_BYTES = 1 << 20  # params.yaml of the demo: 5 KB
MAX_COLUMNS = 10_000
MAX_NAME = 1024  # characters of a column or metric name
MAX_METRICS = 100  # bounds per gate rule
HEX64 = r"^[0-9a-fA-F]{64}$"
URL_SCHEMES = ("http", "https")
PACKAGE_SOURCES = ("palmerpenguins",)
# YAML 1.1 (PyYAML) reads `1e-5` as text: a float needs a dot (`1.0e-5`)
_TEXT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class Section(BaseModel):
    """A mapping of params: strict types, no conversion, no unknown keys, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


def setting(allowed: str, default: Any = ..., **constraints: Any) -> Any:
    """A field whose errors read `must be <allowed>`; `entry`/`key` describe the entries
    and keys of a mapping or list field."""
    entry = constraints.pop("entry", None)
    key = constraints.pop("key", None)
    extra = {k: v for k, v in (("entry", entry), ("key", key)) if v}
    return Field(default, description=allowed, json_schema_extra=extra or None, **constraints)


Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
ColumnType = Literal["float", "int", "category"]
Int = int  # strict: a YAML integer, not a float, a string or a bool
Number = float  # strict: a YAML integer or float, not a string or a bool


class BaseParams(Section):
    random_state: Int = setting("an integer from 0 to 4294967295", ge=0, le=2**32 - 1)


class DataParams(Section):
    source: Annotated[str, Field(min_length=1, max_length=2048)] = setting(
        "palmerpenguins, a .csv or .parquet path, or an http(s) URL (at most 2048 characters)"
    )
    sha256: Annotated[str, Field(pattern=HEX64)] | None = setting(
        "null or a sha256 digest (64 hex digits)", None
    )
    target: Name = setting("a column name declared in data.schema")
    task: Literal[DECLARABLE] | None = setting(f"one of: {', '.join(DECLARABLE)}", "auto")
    drop_columns: list[Name] | None = setting(
        "a list of column names declared in data.schema",
        None,
        max_length=MAX_COLUMNS,
        entry="a column name declared in data.schema",
    )
    schema_: dict[Name, ColumnType] = setting(
        f"a mapping of column name to float, int or category (1 to {MAX_COLUMNS} columns)",
        alias="schema",
        min_length=1,
        max_length=MAX_COLUMNS,
        entry="float, int or category",
        key="a column name (a string)",
    )


class SplitParams(Section):
    test_size: Number = setting("a fraction between 0 and 1 (exclusive)", gt=0, lt=1)


class FeaturesParams(Section):
    numeric_impute: Literal["median", "mean"] = setting("one of: median, mean", "median")
    categorical_impute: Literal["most_frequent", "constant"] = setting(
        "one of: most_frequent, constant", "most_frequent"
    )
    scale_numeric: Literal["none", "standard"] = setting("one of: none, standard", "none")
    onehot_min_frequency: (
        Annotated[Int, Field(ge=1)] | Annotated[Number, Field(gt=0, lt=1)] | None
    ) = setting("null, an integer >= 1 or a fraction between 0 and 1 (exclusive)", None)
    onehot_max_categories: Annotated[Int, Field(ge=2)] | None = setting(
        "null or an integer >= 2", None
    )
    unknown_categories: Literal["reject", "ignore"] = setting("one of: reject, ignore", "reject")


class TrainParams(Section):
    """The estimator and its hyperparameters. Each model reads the keys it understands
    (src/tasks/<task>.py `estimators`); a key it reads must be set (checked in
    `cross_checks`), the others may be absent. A default of None here means "absent":
    an explicit `null` is accepted only where the type says so (max_depth, class_weight).
    """

    model_type: Name = setting("a model of the task (src/tasks/<task>.py estimators)")
    n_estimators: Int = setting("an integer from 1 to 10000", None, ge=1, le=10_000)
    max_depth: Annotated[Int, Field(ge=1, le=1000)] | None = setting(
        "null (unlimited) or an integer from 1 to 1000", None
    )
    min_samples_leaf: Int = setting("an integer >= 1", None, ge=1)
    learning_rate: Number = setting("a number > 0", None, gt=0)
    max_iter: Int = setting("an integer from 1 to 100000", None, ge=1, le=100_000)
    C: Number = setting("a number > 0", None, gt=0)
    alpha: Number = setting("a number >= 0", None, ge=0)
    class_weight: Literal["balanced"] | None = setting("null or balanced", None)
    cv_folds: Int = setting("an integer from 2 to 100", ge=2, le=100)


class EvaluateParams(Section):
    permutation_repeats: Int = setting("an integer from 1 to 1000", ge=1, le=1000)
    predictions_max_rows: Int = setting(
        "an integer from 1 to 1000000 (rows of metrics/test_predictions.csv)",
        10_000,
        ge=1,
        le=1_000_000,
    )


class ExportParams(Section):
    max_abs_proba_diff: Number = setting("a number from 0 to 1", None, ge=0, le=1)
    max_rel_diff: Number = setting("a number >= 0", None, ge=0)
    probe_records: Int = setting("an integer from 1 to 100000", None, ge=1, le=100_000)


class DriftParams(Section):
    """Drift monitoring (src/serving/drift.py, its DEFAULT_SETTINGS): the export stores the
    training reference with `bins` and the thresholds (the predictor's /drift judges with
    those); `make drift` judges a file with the values here."""

    bins: Int = setting(
        "an integer from 2 to 100 (quantile bins per numeric feature)", _DRIFT["bins"], ge=2, le=100
    )
    min_records: Int = setting(
        "an integer from 1 to 1000000 (records needed before drift is judged)",
        _DRIFT["min_records"],
        ge=1,
        le=1_000_000,
    )
    max_psi: Number = setting("a number > 0 (largest PSI not flagged)", _DRIFT["max_psi"], gt=0)
    max_null_rate_change: Number = setting(
        "a number from 0 to 1 (largest change of a null rate not flagged)",
        _DRIFT["max_null_rate_change"],
        ge=0,
        le=1,
    )
    max_unseen_rate: Number = setting(
        "a number from 0 to 1 (largest share of unseen categories not flagged)",
        _DRIFT["max_unseen_rate"],
        ge=0,
        le=1,
    )


if set(DriftParams.model_fields) != set(_DRIFT):  # pragma: no cover
    raise ImportError("DriftParams must have one field per src.serving.drift.DEFAULT_SETTINGS")


Bounds = dict[Name, Number]
DropBounds = dict[Name, Annotated[Number, Field(ge=0)]]
_METRICS = "a mapping of metric name (a key of metrics/scores.json) to a number"


def _bounds(kind: str) -> Any:
    entry = "a number >= 0 (the largest allowed worsening)" if kind == "max_drop" else "a number"
    return setting(
        f"null or {_METRICS}",
        None,
        max_length=MAX_METRICS,
        entry=entry,
        key="a metric name (a string)",
    )


class GateRules(Section):
    min: Bounds | None = _bounds("min")
    max: Bounds | None = _bounds("max")
    max_drop: DropBounds | None = _bounds("max_drop")
    max_drop_mode: Literal["delta", "noise"] | None = setting(
        "null or one of: delta (the plain difference), noise (the whole 95 % interval)", None
    )


class GateParams(GateRules):
    """One block of rules per task family, or (the older flat form) the rules directly."""

    classification: GateRules | None = setting("null or a mapping of min, max, max_drop", None)
    regression: GateRules | None = setting("null or a mapping of min, max, max_drop", None)


# MLflow model registry names: letters, digits and `_.-` (safe in `models:/NAME@ALIAS`
# URIs and in the registry's search filters). Aliases: MLflow refuses `latest` and `vN`.
REGISTERED_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$"
ALIAS = r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$"
_ALIAS_TEXT = "an alias: a letter or _, then letters, digits, _ or - (not latest, not v<number>)"


class RegistryParams(Section):
    """The model registry of the team MLflow server (src/models/registry.py; not a stage)."""

    model_name: Annotated[str, Field(pattern=REGISTERED_NAME)] = setting(
        "a registered model name: letters, digits, _ . - (at most 256 characters)"
    )
    branch_alias: Annotated[str, Field(pattern=ALIAS)] = setting(_ALIAS_TEXT, "candidate")
    tag_alias: Annotated[str, Field(pattern=ALIAS)] = setting(_ALIAS_TEXT, "production")


def alias_problem(alias: str) -> str | None:
    """Why MLflow would refuse `alias` as a model alias, or None."""
    if not re.fullmatch(ALIAS, alias):
        return f"{show(alias)}: must be {_ALIAS_TEXT}"
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        return f"{show(alias)}: reserved by MLflow (latest, v<number>): must be {_ALIAS_TEXT}"
    return None


def registry_problems(registry: dict[str, Any]) -> list[tuple[str, str]]:
    """The registry block's aliases: not reserved by MLflow, and not both the same."""
    problems = [
        (f"registry.{key}", problem)
        for key in ("branch_alias", "tag_alias")
        if key in registry and (problem := alias_problem(registry[key]))
    ]
    branch, tag = registry.get("branch_alias", "candidate"), registry.get("tag_alias", "production")
    if not problems and branch == tag:
        problems.append(("registry.tag_alias", f"{show(tag)}: must differ from branch_alias"))
    return problems


class Params(Section):
    """The whole of params.yaml."""

    base: BaseParams = setting("a mapping: random_state")
    data: DataParams = setting("a mapping: source, sha256, target, task, drop_columns, schema")
    split: SplitParams = setting("a mapping: test_size")
    features: FeaturesParams | None = setting("null or a mapping of the preprocessing", None)
    train: TrainParams = setting("a mapping: model_type and the model's hyperparameters")
    evaluate: EvaluateParams = setting("a mapping: permutation_repeats")
    export: ExportParams | None = setting("null or a mapping of the export's parity checks", None)
    drift: DriftParams | None = setting(
        "null or a mapping: bins, min_records, max_psi, max_null_rate_change, max_unseen_rate",
        None,
    )
    gate: GateParams | None = setting(
        "null or a mapping of task families (classification, regression) to min/max/max_drop",
        None,
    )
    registry: RegistryParams | None = setting(
        "null or a mapping: model_name, branch_alias, tag_alias", None
    )


MODE = "max_drop_mode"  # how max_drop measures a drop (src/gate.py, src/noise.py)
RULES = tuple(f for f in GateRules.model_fields if f != MODE)
if set(GateParams.model_fields) - {*RULES, MODE} != set(FAMILIES):  # pragma: no cover
    raise ImportError("GateParams must have one block per task family of src.tasks")


# --- pydantic's errors as one line per key ------------------------------------------------


def _key(part: Any) -> str:
    if isinstance(part, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
        return part
    return f"[{show(part)}]"


def join(*parts: Any) -> str:
    """A key path as written in the messages: `train.n_estimators`, `data.schema['a b']`."""
    out = ""
    for part in parts:
        key = _key(part)
        out += key if (not out or key.startswith("[")) else f".{key}"
    return out


def _model_of(annotation: Any) -> type[Section] | None:
    """The Section class of a (nullable) field, if it is one."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, Section):
            return candidate
    return None


def _container(annotation: Any) -> type | None:
    """dict or list, for a (nullable) mapping or list field."""
    for candidate in (annotation, *get_args(annotation)):
        origin = get_origin(candidate)
        if origin in (dict, list):
            return origin
    return None


def _hint(value: Any) -> str:
    if isinstance(value, str) and _TEXT_FLOAT.match(value.strip()):
        mantissa, exponent = re.split("[eE]", value.strip())
        dotted = mantissa if "." in mantissa else f"{mantissa}.0"
        return f" (YAML reads {value} as text: write {dotted}e{exponent})"
    return ""


def unknown_key(path: list, key: Any, model: type[Section]) -> tuple[str, str]:
    """The line for a key `model` does not have, with the closest known key."""
    known = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    tip = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"
    return join(*path, key), f"unknown key ({tip})"


def _problem(
    model: type[Section], error: dict[str, Any], prefix: tuple, allowed: str
) -> tuple[str, str]:
    """(key path, message) of one pydantic error, walking `model` along its location."""
    loc, cls, path, field = tuple(error["loc"]), model, list(prefix), None
    i = 0
    while i < len(loc) and cls is not None:
        name = loc[i]
        by_alias = {f.alias or n: f for n, f in cls.model_fields.items()}
        if name not in by_alias:
            break
        field = by_alias[name]
        path.append(name)
        i += 1
        cls = _model_of(field.annotation)
    rest = loc[i:]
    if error["type"] == "extra_forbidden":
        return unknown_key(path, rest[0] if rest else "?", cls or model)
    allowed = field.description if field is not None else allowed
    extra = (field.json_schema_extra or {}) if field is not None else {}
    if rest and cls is None and field is not None and _container(field.annotation):
        if len(rest) > 1 and rest[1] == "[key]":  # pydantic's loc shows a key True as 1
            key = error.get("input")
            return join(*path, key), f"{show(key)}: must be {extra.get('key', 'a string')}"
        path.append(rest[0])
        allowed = extra.get("entry", allowed)
    if error["type"] == "missing":
        return join(*path), f"missing: must be {allowed}"
    value = error.get("input")
    return join(*path), f"{show(value)}: must be {allowed}{_hint(value)}"


def schema_problems(
    model: type[Section], raw: Any, prefix: tuple = (), allowed: str = "a mapping"
) -> tuple[Section | None, list[tuple[str, str]]]:
    """Validate `raw` with `model`: (the model or None, one (path, message) per bad key).
    `allowed` says what `raw` itself must be, for when it is not a mapping."""
    try:
        return model.model_validate(raw), []
    except ValidationError as exc:
        seen: dict[str, str] = {}
        for error in exc.errors(include_url=False):
            path, message = _problem(model, error, prefix, allowed)
            seen.setdefault(path, message)  # a union reports once per member: keep one
        return None, list(seen.items())


# --- what one key alone cannot tell --------------------------------------------------------


def data_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The data block's keys against each other (its types already checked)."""
    problems = []
    schema, target = data["schema"], data["target"]
    if target not in schema:
        problems.append(("data.target", f"{show(target)} is not declared in data.schema"))
    for i, column in enumerate(data.get("drop_columns") or []):
        if column not in schema:
            problems.append((f"data.drop_columns[{i}]", f"{show(column)}: not in data.schema"))
        elif column == target:
            problems.append((f"data.drop_columns[{i}]", f"{show(column)} is data.target"))
    source = data["source"]
    scheme = urlparse(source).scheme
    if scheme in URL_SCHEMES and not data.get("sha256"):
        problems.append(
            (
                "data.sha256",
                f"null: must be the file's sha256 (64 hex digits) when data.source is a URL "
                f"({show(source)}), so the download is verifiable",
            )
        )
    elif "://" in source and scheme not in URL_SCHEMES:
        problems.append(("data.source", f"{show(source)}: must be a local path or an http(s) URL"))
    if target in schema:
        try:
            task_family(data)
        except TaskError as exc:
            problems.append(("data.task", str(exc)))
    return problems


def train_problems(train: dict[str, Any], family: str, seed: int) -> list[tuple[str, str]]:
    """train.model_type is a model of the task's family, and its hyperparameters are set."""
    from src.models.factory import make_estimator  # scikit-learn: only when a model is named
    from src.tasks import get_task

    try:
        make_estimator(
            train, seed, get_task("regression" if family == "regression" else "multiclass")
        )
    except ParamsError as exc:
        return exc.problems
    return []


def gate_problems(gate: dict[str, Any], prefix: str = "gate") -> list[tuple[str, str]]:
    """The gate's blocks and rules (their types already checked)."""
    rules = [r for r in (*RULES, MODE) if r in gate]
    families = [f for f in FAMILIES if f in gate]
    if rules and families:
        return [
            (
                prefix,
                f"mixes task blocks {families} with rules {rules}: move the rules into the blocks",
            )
        ]
    problems = []
    blocks = {(prefix,): gate} if rules else {(prefix, f): gate[f] or {} for f in families}
    for where, block in blocks.items():
        for metric in (block or {}).get("max_drop") or {}:
            if not metric_direction(metric):
                problems.append(
                    (
                        join(*where, "max_drop", metric),
                        f"{show(metric)} has no better/worse direction "
                        "(src.tasks.metric_direction), so it cannot drop: bound it with min/max",
                    )
                )
    return problems


def check_gate(gate: Any, source: str = "params.yaml") -> None:
    """Raise ParamsError (one line per bad key) unless `gate` is a valid `gate:` section."""
    if gate is None:
        return
    model, problems = schema_problems(
        GateParams, gate, ("gate",), Params.model_fields["gate"].description
    )
    if model is not None:
        problems = gate_problems(gate)
    if problems:
        raise ParamsError(problems, source)


def check(params: Any, source: str = "params.yaml") -> None:
    """Raise ParamsError naming every bad key of a whole params mapping.

    Each section is checked on its own, so one bad section does not hide another's
    problems; the checks across keys run on the sections that passed.
    """
    if not isinstance(params, dict):
        raise ParamsError(
            [("", f"{show(params)}: must be a mapping of sections (base, data, ...)")], source
        )
    problems: list[tuple[str, str]] = []
    fields = {f.alias or n: f for n, f in Params.model_fields.items()}
    valid: dict[str, bool] = {}
    problems += [unknown_key([], name, Params) for name in params if name not in fields]
    for name, field in fields.items():
        section = _model_of(field.annotation)
        if name not in params:
            if field.is_required():
                problems.append((name, f"missing: must be {field.description}"))
            continue
        value = params[name]
        if value is None and not field.is_required():
            valid[name] = True
            continue
        _, found = schema_problems(section, value, (name,), field.description)
        problems += found
        valid[name] = not found
    if valid.get("data"):
        problems += data_problems(params["data"])
    if valid.get("data") and valid.get("train") and valid.get("base"):
        try:
            family = task_family(params["data"])
        except TaskError:
            family = None  # reported by data_problems
        if family:
            problems += train_problems(params["train"], family, params["base"]["random_state"])
    if valid.get("gate") and params.get("gate"):
        problems += gate_problems(params["gate"])
    if valid.get("registry") and params.get("registry"):
        problems += registry_problems(params["registry"])
    if problems:
        raise ParamsError(problems, source)


# --- reading the file ----------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing duplicate keys: PyYAML keeps the last one silently, so a
    pasted second `n_estimators:` would override the first unseen. (ruamel.yaml refuses
    duplicates too, but reads YAML 1.2, unlike every other reader of params here.)"""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {show(key)}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def read(path: Path | str = PARAMS_FILE) -> Any:
    """The parsed YAML of `path`, unvalidated; PipelineError for a missing, oversized or
    malformed file (one line, with the line number)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        raise PipelineError(f"params file not found: {path}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ParamsError([("", f"larger than {MAX_FILE_BYTES} bytes")], str(path.name))
    try:
        return yaml.load(data.decode("utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except UnicodeDecodeError as exc:
        raise ParamsError(
            [("", f"not UTF-8 text ({exc.reason} at byte {exc.start})")], path.name
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        raise ParamsError([("", f"{where}not valid YAML: {what}")], path.name) from exc


def load(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """Read and check params.yaml; return its values unchanged (see the module docstring)."""
    path = Path(path)
    params = read(path)
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must hold a mapping of sections (base, data, ...)")
    check(params, path.name)
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    checker = sub.add_parser("check", help="check params.yaml; one line per bad key, exit 78")
    checker.add_argument("--params", type=Path, default=PARAMS_FILE)
    args = parser.parse_args()
    load(args.params)
    setup_logging().info("%s: ok", args.params)


if __name__ == "__main__":
    run_cli(main)
