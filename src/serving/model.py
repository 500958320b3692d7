"""The served model: `model.onnx` + `model.json` written by the pipeline's `export` stage.

Only numpy and onnxruntime are needed here (no scikit-learn, scipy or pandas), so the
serving image stays small. `model.onnx` is the whole fitted pipeline (preprocessing and
estimator) as one graph with one input per feature, verified against scikit-learn by the
export stage before it was written; `model.json` carries the task, the feature schema,
those inputs and the model's identity. Nothing here re-implements preprocessing: records
become per-feature columns (float32 with NaN for null; strings with "" for null).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.serving.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    ONNX_FILE,
    REEXPORT,
    ModelLoadError,
    read_model_dir,
    serving_contract,
    sha256_bytes,
)
from src.serving.onnx_graph import CONTRACT_KEY, GraphReadError, read_graph

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "ONNX_FILE",
    "ConstantModel",
    "ModelLoadError",
    "ServingModel",
    "sha256_bytes",
]

# Served probabilities are rounded to this many decimals, regression values to this many
# significant digits (ONNX Runtime computes in float32; the export stage checks the
# rounded values against scikit-learn's float64 ones).
PROBA_DECIMALS = 7
VALUE_DIGITS = 7
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _first_difference(ours: Any, theirs: Any, where: str) -> tuple[str, Any, Any] | None:
    """(path, ours, theirs) of the first place two JSON values differ, or None."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs)):
            found = _first_difference(ours.get(key), theirs.get(key), f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            found = _first_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if ours == theirs and type(ours) is type(theirs) else (where, ours, theirs)


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_graph(manifest: dict[str, Any], onnx_bytes: bytes, onnx_path: Path | str) -> None:
    """The manifest against what the ONNX graph declares; raise ModelLoadError naming the
    first mismatch. Reads the graph without ONNX Runtime (onnx_graph.py), so it runs in the
    pre-fork master.

    - inputs: the graph's, by name, with the manifest's dtypes;
    - output: present, float32, with one column per class (regression: one value);
    - classes: equal to the class labels of the graph's classifier node, in order (the order
      of the probability columns);
    - the whole serving contract (task, classes, schema with types and categories, inputs,
      output) equal to the copy the export stage stored in the graph's metadata.
    """
    mismatch = f"ONNX model {onnx_path} does not match its manifest"
    try:
        graph = read_graph(onnx_bytes)
    except GraphReadError as exc:
        raise ModelLoadError(f"ONNX model {onnx_path}: {exc}") from None
    onnx = manifest["onnx"]
    declared = {t.name: t for t in graph.inputs}
    wanted = {i["name"]: i["dtype"] for i in onnx["inputs"]}
    if sorted(declared) != sorted(wanted):
        raise ModelLoadError(
            f"{mismatch}: the graph's inputs are {_short(sorted(declared))}, the manifest's "
            f"onnx.inputs {_short(sorted(wanted))}; {REEXPORT}"
        )
    for name, dtype in wanted.items():
        if declared[name].dtype != dtype:
            raise ModelLoadError(
                f"{mismatch}: input {name!r} is {declared[name].dtype} in the graph, {dtype} in "
                f"the manifest; {REEXPORT}"
            )
    outputs = {t.name: t for t in graph.outputs}
    output = outputs.get(onnx["output"])
    if output is None:
        raise ModelLoadError(
            f"{mismatch}: the graph has no output {onnx['output']!r} (it has "
            f"{_short(sorted(outputs))}); {REEXPORT}"
        )
    classes = manifest.get("classes") or []
    columns = len(classes) if manifest["task"] != "regression" else 1
    if output.dtype != "float32" or (output.shape[-1:] not in ((columns,), (None,))):
        raise ModelLoadError(
            f"{mismatch}: output {output.name!r} is {output.dtype} of shape "
            f"{list(output.shape)}, the manifest expects float32 with {columns} column(s); "
            f"{REEXPORT}"
        )
    for labels in graph.class_labels:
        if list(labels) != classes:
            raise ModelLoadError(
                f"{mismatch}: the graph's classifier has classes {_short(list(labels))}, the "
                f"manifest {_short(classes)} (probability columns would get the wrong "
                f"labels); {REEXPORT}"
            )
    stored = graph.metadata.get(CONTRACT_KEY)
    if stored is None:
        raise ModelLoadError(
            f"ONNX model {onnx_path} carries no MLOperation serving contract (metadata "
            f"{CONTRACT_KEY!r}): it was not written by the export stage; {REEXPORT}"
        )
    try:
        contract = json.loads(stored)
    except ValueError:
        raise ModelLoadError(f"ONNX model {onnx_path}: its {CONTRACT_KEY} is not JSON") from None
    found = _first_difference(serving_contract(manifest), contract, "")
    if found:
        where, ours, theirs = found
        raise ModelLoadError(
            f"{mismatch}: {where.lstrip('.')} is {_short(ours)} in the manifest, "
            f"{_short(theirs)} in the graph; {REEXPORT}"
        )


def make_session(onnx_bytes: bytes) -> Any:
    """A single-threaded ONNX Runtime session: workers are processes, one core each."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


class ServingModel:
    """Feature schema + the ONNX graph's per-feature inputs + an ONNX Runtime session.

    `predict(records)` takes records already checked against the schema (see
    flask_app.contract): numbers (or None where nullable) for numeric features, known
    category strings (or None) for categorical ones.
    """

    def __init__(self, manifest: dict[str, Any], onnx_bytes: bytes, source: Path | None = None):
        self.manifest = manifest
        self.source = source
        self.schema: dict[str, Any] = manifest["schema"]
        self.task: str = manifest["task"]
        self.is_classifier = self.task != "regression"
        self.classes: list[str] = [str(c) for c in manifest.get("classes") or []]
        self._class_array = np.asarray(self.classes, dtype=object)
        self._onnx_bytes = onnx_bytes
        inputs = manifest["onnx"]["inputs"]
        self._input_names = [str(i["name"]) for i in inputs]
        # (feature, ONNX input) per dtype
        self._numeric = [(i["feature"], i["name"]) for i in inputs if i["dtype"] == "float32"]
        self._strings = [(i["feature"], i["name"]) for i in inputs if i["dtype"] == "string"]
        self._missing = str(manifest["onnx"].get("missing_category", ""))
        self._output_name = manifest["onnx"]["output"]
        self._session: Any = None
        self._session_pid = -1

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, model_dir: Path | str, open_session: bool = True) -> ServingModel:
        """Load and check `model_dir`; raise ModelLoadError naming the file and the problem.

        With `open_session=False` only the files are checked (manifest, sha256 of the ONNX
        file, the manifest against the graph): a pre-fork server must not start ONNX
        Runtime before forking (its threads do not survive fork, and forked children then
        hang or abort at exit), so each worker calls open_session() after the fork.
        """
        model_dir, manifest, onnx_bytes = read_model_dir(model_dir)
        check_graph(manifest, onnx_bytes, model_dir / manifest["onnx"]["file"])
        try:
            model = cls(manifest, onnx_bytes, source=model_dir)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"model in {model_dir} could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        if open_session:
            model.open_session()
        return model

    @property
    def session_open(self) -> bool:
        return self._session is not None and self._session_pid == os.getpid()

    def open_session(self) -> None:
        """Create this process's ONNX Runtime session and score one record with it.

        Raises ModelLoadError naming the model and the problem.
        """
        where = self.source / ONNX_FILE if self.source else "the ONNX model"
        try:
            session = make_session(self._onnx_bytes)
        except Exception as exc:
            raise ModelLoadError(
                f"ONNX Runtime cannot load {where}: {type(exc).__name__}: {exc}"
            ) from exc
        names = {o.name for o in session.get_outputs()}
        inputs = [i.name for i in session.get_inputs()]
        if self._output_name not in names or sorted(inputs) != sorted(self._input_names):
            raise ModelLoadError(
                f"{where} has inputs {inputs} and outputs {sorted(names)}; its manifest "
                f"expects {self._input_names} -> {self._output_name!r}"
            )
        self._session, self._session_pid = session, os.getpid()
        self.self_check()

    def self_check(self) -> None:
        """Score one record built from the schema: fails at start-up, not at request time."""
        try:
            out = self.raw_outputs(self.feeds([self.example_record()]))
        except Exception as exc:
            self._session = None
            raise ModelLoadError(
                f"model in {self.source} failed its start-up prediction: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        expected = (1, len(self.classes)) if self.is_classifier else (1,)
        if out.shape != expected or not np.isfinite(out).all():
            self._session = None
            what = f"{len(self.classes)} classes" if self.is_classifier else "regression"
            raise ModelLoadError(
                f"model in {self.source} returned outputs of shape {out.shape} for {what}"
            )

    # -- inference -----------------------------------------------------------------------

    def example_record(self) -> dict[str, Any]:
        """A valid record: the first category, the middle of each training range."""
        record: dict[str, Any] = {}
        for f in self.schema["features"]:
            if f["type"] == "categorical":
                record[f["name"]] = f["categories"][0]
            else:
                record[f["name"]] = round((f["min"] + f["max"]) / 2, 2)
        return record

    def feeds(self, records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """The ONNX inputs for checked records (see feeds_of_columns)."""
        return self.feeds_of_columns(self.columns(records), len(records))

    def columns(self, records: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """Checked records by feature: {feature: [value, ...]}."""
        return {f["name"]: [r[f["name"]] for r in records] for f in self.schema["features"]}

    def feeds_of_columns(self, columns: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
        """The ONNX inputs for `n` checked records by feature (lists, or float arrays for
        numeric features): one [n, 1] column per feature (float32, None -> NaN; strings,
        None -> the missing-category marker). The graph imputes, encodes and scores them."""
        feeds = {
            name: np.asarray(columns[feature], dtype=np.float32).reshape(n, 1)
            for feature, name in self._numeric  # numpy turns None into NaN
        }
        missing = self._missing
        for feature, name in self._strings:
            column = [missing if v is None else v for v in columns[feature]]
            feeds[name] = np.array(column, dtype=object).reshape(n, 1)
        return feeds

    def raw_outputs(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The ONNX model's output for `feeds`: (n, classes) probabilities for
        classification, (n,) values for regression (float32)."""
        if self._session_pid != os.getpid() or self._session is None:
            self.open_session()  # first use in this process (never share across fork)
        (out,) = self._session.run([self._output_name], feeds)
        return out if self.is_classifier else out.reshape(-1)

    def predict(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[Any], np.ndarray | None]:
        """For checked records: (labels, probabilities rounded to PROBA_DECIMALS as float64)
        for classification; (values rounded to VALUE_DIGITS significant digits, None) for
        regression."""
        return self.predict_columns(self.columns(records), len(records))

    def predict_columns(
        self, columns: Mapping[str, Any], n: int
    ) -> tuple[list[Any], np.ndarray | None]:
        """predict() for `n` checked records given by feature (flask_app.contract.Checked's
        columns: the server extracts them once, for the checks, drift and the model)."""
        out = self.raw_outputs(self.feeds_of_columns(columns, n)).astype(np.float64)
        if not self.is_classifier:
            return [float(f"{v:.{VALUE_DIGITS}g}") for v in out.tolist()], None
        proba = np.round(out, PROBA_DECIMALS)
        labels = self._class_array[proba.argmax(axis=1)].tolist()
        return labels, proba


class ConstantModel(ServingModel):
    """The same schema and contract, but a fixed answer: the HTTP stack's own floor.

    Used by `make bench-serve` (CONSTANT_MODEL=1) to measure what the server costs
    without preprocessing and inference.
    """

    def __init__(self, real: ServingModel):
        self.__dict__.update(real.__dict__)
        self._answer = np.zeros((1, max(len(self.classes), 1)))
        self._answer[0, 0] = 1.0

    def predict_columns(
        self, columns: Mapping[str, Any], n: int
    ) -> tuple[list[Any], np.ndarray | None]:
        if not self.is_classifier:
            return [0.0] * n, None
        return [self.classes[0]] * n, np.repeat(self._answer, n, axis=0)
