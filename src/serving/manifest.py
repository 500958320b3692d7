"""The serving manifest (`models/serving/model.json`): its format, and the one reader.

Standard library only. The export stage writes the manifest with `build_manifest` fields
and reads it back with `read_model_dir` exactly as the predictor does; the predictor
refuses anything that does not pass `read_model_dir`, with one line naming the file.

The manifest carries its own checksum (`manifest_sha256`: the sha256 of its canonical JSON
without that key, see `canonical_json`), the ONNX file's (`onnx.sha256`) and the drift
reference's (`drift_reference.sha256`); the reader checks all three, then every key the
server reads, with its type. model.py then checks it against what the ONNX graph itself
declares (onnx_graph.py), so a manifest edited by hand (even with its checksum recomputed)
or paired with another export's graph is refused at
start-up rather than served with wrong labels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FORMAT = "mloperation.serving"
# 3: one ONNX graph for the whole pipeline, one input per feature
# 4: manifest_sha256, the contract copied into the graph, no per-run fields (byte-reproducible)
# 5: drift_reference (the training data's bins, src/serving/drift.py) and its sha256
FORMAT_VERSION = 5
MANIFEST_FILE = "model.json"
ONNX_FILE = "model.onnx"
DRIFT_KEY = "drift_reference"
CHECKSUM_KEY = "manifest_sha256"
TASKS = ("binary", "multiclass", "regression")
INPUT_DTYPES = ("float32", "string")
FEATURE_TYPES = {"numeric": "float32", "categorical": "string"}  # -> the ONNX input dtype
UNKNOWN_POLICIES = ("ignore", "reject")
REEXPORT = "re-run the export stage: `dvc repro export`"


PREVIEW = 5  # allowed values named in an error message; the rest are counted


def preview(values: list[str], limit: int = PREVIEW) -> str:
    """`'a', 'b', 'c', 'd', 'e' and 141 more`: short enough for a 1000-record batch."""
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


class ModelLoadError(RuntimeError):
    """The serving model is missing, truncated, corrupt or not an MLOperation export."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise ModelLoadError(
            f"{what} not found: {path} (run `make repro` or `dvc repro export` to write it)"
        )
    data = path.read_bytes()
    if not data:
        raise ModelLoadError(f"{what} is empty: {path}")
    return data


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value that checksums are taken of: sorted keys, no
    spaces, ASCII (Python's float repr round-trips, so a re-read manifest gives the same
    bytes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its own checksum key."""
    return sha256_bytes(canonical_json({k: v for k, v in manifest.items() if k != CHECKSUM_KEY}))


def serving_contract(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the server takes from the manifest to score and label: the export stage copies
    it into the ONNX graph's metadata, and the loader compares the two."""
    onnx = manifest["onnx"]
    return {
        "task": manifest["task"],
        "classes": manifest.get("classes"),
        "schema": manifest["schema"],
        "inputs": onnx["inputs"],
        "output": onnx["output"],
        "missing_category": onnx["missing_category"],
    }


class _Invalid(Exception):
    """One problem with the manifest's content (a key missing or of the wrong type)."""


_KINDS = {
    str: "a string",
    bool: "true or false",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "an object",
}


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """obj[key], which must be present and of `kind` (a bool is not a number here)."""
    if key not in obj:
        raise _Invalid(f"lacks {where}{key}")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        expected = " or ".join(_KINDS.get(k, k.__name__) for k in kinds)
        found = "null" if value is None else type(value).__name__
        raise _Invalid(f"{where}{key} must be {expected}, found {found}")
    return value


def _strings(obj: dict[str, Any], key: str, where: str, min_len: int = 1) -> list[str]:
    values = _get(obj, key, list, where)
    if len(values) < min_len or not all(isinstance(v, str) for v in values):
        raise _Invalid(f"{where}{key} must be a list of at least {min_len} string(s)")
    if len(set(values)) != len(values):
        raise _Invalid(f"{where}{key} lists a value twice")
    return values


def check_content(manifest: dict[str, Any]) -> None:
    """Every key the server reads, present and of the right type, and consistent with the
    others (inputs <-> schema features, classes <-> task); raise _Invalid naming the first
    problem."""
    task = _get(manifest, "task", str, "")
    if task not in TASKS:
        raise _Invalid(f"task {task!r} is not one of {', '.join(TASKS)}")
    onnx = _get(manifest, "onnx", dict, "")
    file = _get(onnx, "file", str, "onnx.")
    if Path(file).name != file or file in ("", ".", ".."):
        raise _Invalid(f"onnx.file {file!r} must be a file name in the model directory")
    sha = _get(onnx, "sha256", str, "onnx.")
    if len(sha) != 64 or not set(sha) <= set("0123456789abcdef"):
        raise _Invalid("onnx.sha256 must be 64 lowercase hex digits")
    _get(onnx, "output", str, "onnx.")
    _get(onnx, "missing_category", str, "onnx.")
    inputs = _get(onnx, "inputs", list, "onnx.")
    schema = _get(manifest, "schema", dict, "")
    features = _get(schema, "features", list, "schema.")
    if not features:
        raise _Invalid("schema.features is empty")
    names = []
    for i, feature in enumerate(features):
        where = f"schema.features[{i}]."
        if not isinstance(feature, dict):
            raise _Invalid(f"schema.features[{i}] must be an object")
        names.append(_get(feature, "name", str, where))
        kind = _get(feature, "type", str, where)
        if kind not in FEATURE_TYPES:
            raise _Invalid(f"{where}type {kind!r} is not one of {', '.join(FEATURE_TYPES)}")
        _get(feature, "nullable", bool, where)
        if kind == "categorical":
            _strings(feature, "categories", where)
        else:
            _get(feature, "min", (int, float), where)
            _get(feature, "max", (int, float), where)
    if len(set(names)) != len(names):
        raise _Invalid("schema.features names a feature twice")
    policy = schema.get("unknown_categories", "reject")
    if policy not in UNKNOWN_POLICIES:
        raise _Invalid(f"schema.unknown_categories {policy!r} is not one of ignore, reject")
    drift = _get(manifest, DRIFT_KEY, dict, "")
    drift_file = _get(drift, "file", str, f"{DRIFT_KEY}.")
    if Path(drift_file).name != drift_file or drift_file in ("", ".", "..", file):
        raise _Invalid(
            f"{DRIFT_KEY}.file {drift_file!r} must be a file name in the model directory"
        )
    drift_sha = _get(drift, "sha256", str, f"{DRIFT_KEY}.")
    if len(drift_sha) != 64 or not set(drift_sha) <= set("0123456789abcdef"):
        raise _Invalid(f"{DRIFT_KEY}.sha256 must be 64 lowercase hex digits")
    if len(inputs) != len(features):
        raise _Invalid(f"onnx.inputs has {len(inputs)} entries for {len(features)} features")
    for i, (entry, feature) in enumerate(zip(inputs, features, strict=True)):
        where = f"onnx.inputs[{i}]."
        if not isinstance(entry, dict):
            raise _Invalid(f"onnx.inputs[{i}] must be an object")
        _get(entry, "name", str, where)
        if _get(entry, "feature", str, where) != feature["name"]:
            raise _Invalid(f"{where}feature {entry['feature']!r} is not {feature['name']!r}")
        dtype = _get(entry, "dtype", str, where)
        if dtype != FEATURE_TYPES[feature["type"]]:
            raise _Invalid(
                f"{where}dtype {dtype!r} does not fit {feature['type']} feature "
                f"{feature['name']!r} ({FEATURE_TYPES[feature['type']]})"
            )
    if len({i["name"] for i in inputs}) != len(inputs):
        raise _Invalid("onnx.inputs names an input twice")
    if task == "regression":
        if manifest.get("classes"):
            raise _Invalid("a regression manifest has classes")
    else:
        classes = _strings(manifest, "classes", "", min_len=2)
        if "classes" in schema and schema["classes"] != classes:
            raise _Invalid("classes differ from schema.classes")
    if "task" in schema and schema["task"] != task:
        raise _Invalid(f"task {task!r} differs from schema.task {schema['task']!r}")
    for key in ("model", "export"):  # served as /metadata
        if key in manifest:
            _get(manifest, key, dict, "")
    model = manifest.get("model", {})
    for key in ("model_type", "model_sha256"):
        if model.get(key) is not None:
            _get(model, key, str, "model.")
    if "training_metrics" in model:
        _get(model, "training_metrics", dict, "model.")


def parse_manifest(path: Path, raw: bytes) -> dict[str, Any]:
    """Decode and check a manifest; raise ModelLoadError naming `path` and the problem."""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelLoadError(f"model manifest is truncated or not JSON: {path} ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelLoadError(
            f'not an MLOperation serving manifest: {path} (expected "format": "{FORMAT}", '
            "as written by `python -m src.models.export_model`)"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"serving manifest version {manifest.get('format_version')!r} in {path} is not "
            f"supported (this server reads version {FORMAT_VERSION}); {REEXPORT}"
        )
    recorded = manifest.get(CHECKSUM_KEY)
    if not isinstance(recorded, str):
        raise ModelLoadError(
            f"serving manifest {path} lacks its checksum {CHECKSUM_KEY}; {REEXPORT}"
        )
    found = manifest_checksum(manifest)
    if recorded != found:
        raise ModelLoadError(
            f"serving manifest {path} was changed after export: its content hashes to "
            f"{found[:12]}…, its {CHECKSUM_KEY} says {recorded[:12]}…; {REEXPORT}"
        )
    try:
        check_content(manifest)
    except _Invalid as exc:
        raise ModelLoadError(f"serving manifest {path} is invalid: {exc}; {REEXPORT}") from None
    return manifest


def read_model_dir(model_dir: Path | str) -> tuple[Path, dict[str, Any], bytes]:
    """(directory, manifest, ONNX bytes) of an export, the manifest checked (parse_manifest)
    and the ONNX file's sha256 checked against it."""
    model_dir = Path(model_dir)
    if model_dir.is_file():  # MODEL_PATH may name model.json itself
        model_dir = model_dir.parent
    if not model_dir.is_dir():
        raise ModelLoadError(
            f"model directory not found: {model_dir} (run `make repro`, or set MODEL_DIR)"
        )
    manifest_path = model_dir / MANIFEST_FILE
    manifest = parse_manifest(manifest_path, _read(manifest_path, "model manifest"))
    onnx_path = model_dir / manifest["onnx"]["file"]
    onnx_bytes = _read(onnx_path, "ONNX model")
    expected = manifest["onnx"]["sha256"]
    found = sha256_bytes(onnx_bytes)
    if expected != found:
        raise ModelLoadError(
            f"ONNX model {onnx_path} does not match its manifest {manifest_path}: "
            f"sha256 {found[:12]}… expected {expected[:12]}… (the file is truncated, "
            "corrupt or from another export)"
        )
    drift_reference_bytes(model_dir, manifest)
    return model_dir, manifest, onnx_bytes


def drift_reference_bytes(model_dir: Path, manifest: dict[str, Any]) -> bytes:
    """The drift reference file of a checked manifest, its sha256 checked against it."""
    path = Path(model_dir) / manifest[DRIFT_KEY]["file"]
    data = _read(path, "drift reference")
    found = sha256_bytes(data)
    if found != manifest[DRIFT_KEY]["sha256"]:
        raise ModelLoadError(
            f"drift reference {path} does not match its manifest: sha256 {found[:12]}… "
            f"expected {manifest[DRIFT_KEY]['sha256'][:12]}…; {REEXPORT}"
        )
    return data
