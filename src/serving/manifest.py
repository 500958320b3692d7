"""The serving manifest (`models/serving/model.json`): its format, and the one reader.

Standard library only. The export stage writes the manifest with `build_manifest` fields
and reads it back with `read_model_dir` exactly as the predictor does; the predictor
refuses anything that does not pass `read_model_dir`, with one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FORMAT = "mloperation.serving"
FORMAT_VERSION = 3  # 3: one ONNX graph for the whole pipeline, one input per feature
MANIFEST_FILE = "model.json"
ONNX_FILE = "model.onnx"
TASKS = ("binary", "multiclass", "regression")
REQUIRED_KEYS = ("task", "onnx", "schema")
INPUT_DTYPES = ("float32", "string")


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


def parse_manifest(path: Path, raw: bytes) -> dict[str, Any]:
    """Decode and check a manifest; raise ModelLoadError naming `path` and the problem."""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"model manifest is truncated or not JSON: {path} ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelLoadError(
            f'not an MLOperation serving manifest: {path} (expected "format": "{FORMAT}", '
            "as written by `python -m src.models.export_model`)"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"serving manifest version {manifest.get('format_version')!r} in {path} is not "
            f"supported (this server reads version {FORMAT_VERSION}); re-run the export stage"
        )
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if manifest.get("task") in ("binary", "multiclass") and "classes" not in manifest:
        missing.append("classes")
    if missing:
        raise ModelLoadError(f"serving manifest {path} lacks {', '.join(missing)}")
    inputs = manifest["onnx"].get("inputs") if isinstance(manifest["onnx"], dict) else None
    if not isinstance(inputs, list) or not all(
        isinstance(i, dict)
        and {"feature", "name", "dtype"} <= set(i)
        and i["dtype"] in INPUT_DTYPES
        for i in inputs
    ):
        raise ModelLoadError(
            f"serving manifest {path}: onnx.inputs must list {{feature, name, dtype}} per "
            f"feature, dtype one of {', '.join(INPUT_DTYPES)}"
        )
    if manifest["task"] not in TASKS:
        raise ModelLoadError(
            f"serving manifest {path}: task {manifest['task']!r} is not one of {', '.join(TASKS)}"
        )
    return manifest


def read_model_dir(model_dir: Path | str) -> tuple[Path, dict[str, Any], bytes]:
    """(directory, manifest, ONNX bytes) of an export, the ONNX file's sha256 checked."""
    model_dir = Path(model_dir)
    if model_dir.is_file():  # MODEL_PATH may name model.json itself
        model_dir = model_dir.parent
    if not model_dir.is_dir():
        raise ModelLoadError(
            f"model directory not found: {model_dir} (run `make repro`, or set MODEL_DIR)"
        )
    manifest_path = model_dir / MANIFEST_FILE
    manifest = parse_manifest(manifest_path, _read(manifest_path, "model manifest"))
    onnx_path = model_dir / str(manifest["onnx"].get("file", ONNX_FILE))
    onnx_bytes = _read(onnx_path, "ONNX model")
    expected = manifest["onnx"].get("sha256")
    found = sha256_bytes(onnx_bytes)
    if expected != found:
        raise ModelLoadError(
            f"ONNX model {onnx_path} does not match its manifest {manifest_path}: "
            f"sha256 {found[:12]}… expected {str(expected)[:12]}… (the file is truncated, "
            "corrupt or from another export)"
        )
    return model_dir, manifest, onnx_bytes
