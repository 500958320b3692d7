"""The served model: `model.onnx` + `model.json` written by the pipeline's `export` stage.

Only numpy and onnxruntime are needed here (no scikit-learn, scipy or pandas), so the
serving image stays small. `model.json` carries the task, the feature schema, the
preprocessing parameters learned in training (imputer fill values, one-hot columns) and
the model's identity; `model.onnx` is the fitted estimator, verified against scikit-learn
by the export stage before it was written.
"""

from __future__ import annotations

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
    ModelLoadError,
    read_model_dir,
    sha256_bytes,
)

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


def make_session(onnx_bytes: bytes) -> Any:
    """A single-threaded ONNX Runtime session: workers are processes, one core each."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


class ServingModel:
    """Feature schema + preprocessing parameters + an ONNX Runtime session.

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
        spec = manifest["preprocessing"]
        self.width = int(spec["width"])
        self._numeric = [(f["name"], int(f["column"]), float(f["fill"])) for f in spec["numeric"]]
        self._categorical = [
            (f["name"], f["fill"], {str(k): int(v) for k, v in f["columns"].items()})
            for f in spec["categorical"]
        ]
        self._input_name = manifest["onnx"]["input"]
        self._output_name = manifest["onnx"]["output"]
        self._session: Any = None
        self._session_pid = -1

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, model_dir: Path | str, open_session: bool = True) -> ServingModel:
        """Load and check `model_dir`; raise ModelLoadError naming the file and the problem.

        With `open_session=False` only the files are checked (manifest, sha256 of the ONNX
        file): a pre-fork server must not start ONNX Runtime before forking (its threads do
        not survive fork, and forked children then hang or abort at exit), so each worker
        calls open_session() after the fork.
        """
        model_dir, manifest, onnx_bytes = read_model_dir(model_dir)
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
        if self._output_name not in names or inputs != [self._input_name]:
            raise ModelLoadError(
                f"{where} has inputs {inputs} and outputs {sorted(names)}; its manifest "
                f"expects {self._input_name!r} -> {self._output_name!r}"
            )
        self._session, self._session_pid = session, os.getpid()
        self.self_check()

    def self_check(self) -> None:
        """Score one record built from the schema: fails at start-up, not at request time."""
        try:
            out = self.raw_outputs(self.matrix([self.example_record()]))
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

    def matrix(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The model-input matrix (float32): imputed numerics, one-hot categoricals."""
        X = np.zeros((len(records), self.width), dtype=np.float32)
        for name, column, fill in self._numeric:
            X[:, column] = [fill if (v := r[name]) is None else v for r in records]
        for name, fill, columns in self._categorical:
            for i, r in enumerate(records):
                value = r[name]
                column = columns.get(fill if value is None else value)
                if column is not None:  # unseen categories encode as all zeros
                    X[i, column] = 1.0
        return X

    def raw_outputs(self, X: np.ndarray) -> np.ndarray:
        """The ONNX model's output for matrix X: (n, classes) probabilities for
        classification, (n,) values for regression (float32)."""
        if self._session_pid != os.getpid() or self._session is None:
            self.open_session()  # first use in this process (never share across fork)
        (out,) = self._session.run([self._output_name], {self._input_name: X})
        return out if self.is_classifier else out.reshape(-1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.raw_outputs(X)

    def predict(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[Any], np.ndarray | None]:
        """For checked records: (labels, probabilities rounded to PROBA_DECIMALS as float64)
        for classification; (values rounded to VALUE_DIGITS significant digits, None) for
        regression."""
        out = self.raw_outputs(self.matrix(records)).astype(np.float64)
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

    def predict(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[Any], np.ndarray | None]:
        if not self.is_classifier:
            return [0.0] * len(records), None
        proba = np.repeat(self._answer, len(records), axis=0)
        return [self.classes[0]] * len(records), proba
