"""Predictor settings: environment variables, overridable by the mapping passed to
create_app() (tests). Names are the same in both places."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = ROOT / "models" / "serving"


class ConfigError(ValueError):
    """A setting has a value the server cannot use."""


@dataclass(frozen=True)
class Settings:
    model_dir: Path = DEFAULT_MODEL_DIR
    max_batch_size: int = 1000  # records per /predict request
    max_body_bytes: int = 1 << 20  # 1 MiB: a 1000-record batch is ~150 KB
    constant_model: bool = False  # benchmark switch: fixed answer, no inference
    body_timeout: int = 10  # seconds a client may take to send a request body (then 408)
    # Drift of live inputs (flask_app/drift.py, docs/serving.md "Drift"):
    drift_tracking: bool = True  # count /predict records into the training reference's bins
    drift_window_seconds: int = 3600  # close the /drift window after this long; 0: never
    drift_reset_token: str | None = None  # bearer token of POST /drift/reset; None: refused
    drift_flush_seconds: float = 1.0  # a worker's counts reach the shared counters this late

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None) -> Settings:
        """MODEL_DIR (or MODEL_PATH), MAX_BATCH_SIZE, MAX_BODY_BYTES, BODY_TIMEOUT,
        CONSTANT_MODEL, DRIFT_TRACKING, DRIFT_WINDOW_SECONDS, DRIFT_RESET_TOKEN,
        DRIFT_FLUSH_SECONDS from the environment, then from `overrides`."""
        values: dict[str, Any] = {
            k: v
            for k in ("MODEL_PATH", "MODEL_DIR", *_INTS, "CONSTANT_MODEL", *_DRIFT)
            if (v := os.environ.get(k)) not in (None, "")
        }
        values.update(overrides or {})
        kwargs: dict[str, Any] = {}
        model_dir = values.get("MODEL_DIR") or values.get("MODEL_PATH")
        if model_dir:
            kwargs["model_dir"] = Path(model_dir)
        for key, field in _INTS.items():
            if key in values:
                kwargs[field] = _positive_int(key, values[key])
        if "CONSTANT_MODEL" in values:
            kwargs["constant_model"] = _flag("CONSTANT_MODEL", values["CONSTANT_MODEL"])
        if "DRIFT_TRACKING" in values:
            kwargs["drift_tracking"] = _flag("DRIFT_TRACKING", values["DRIFT_TRACKING"])
        if "DRIFT_WINDOW_SECONDS" in values:
            kwargs["drift_window_seconds"] = _seconds(
                "DRIFT_WINDOW_SECONDS", values["DRIFT_WINDOW_SECONDS"]
            )
        if "DRIFT_RESET_TOKEN" in values:
            kwargs["drift_reset_token"] = _token(values["DRIFT_RESET_TOKEN"])
        if "DRIFT_FLUSH_SECONDS" in values:
            kwargs["drift_flush_seconds"] = _flush_seconds(values["DRIFT_FLUSH_SECONDS"])
        return cls(**kwargs)


_INTS = {
    "MAX_BATCH_SIZE": "max_batch_size",
    "MAX_BODY_BYTES": "max_body_bytes",
    "BODY_TIMEOUT": "body_timeout",
}


_DRIFT = ("DRIFT_TRACKING", "DRIFT_WINDOW_SECONDS", "DRIFT_RESET_TOKEN", "DRIFT_FLUSH_SECONDS")
MAX_FLUSH_SECONDS = 60.0
MIN_TOKEN = 16  # characters of DRIFT_RESET_TOKEN: not a guessable word


def _token(value: Any) -> str:
    text = str(value)
    if len(text) < MIN_TOKEN or not text.isprintable() or " " in text:
        raise ConfigError(
            f"DRIFT_RESET_TOKEN must be at least {MIN_TOKEN} printable characters, no spaces"
        )
    return text


def _flush_seconds(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"DRIFT_FLUSH_SECONDS={value!r} is not a number") from None
    if not 0 <= number <= MAX_FLUSH_SECONDS:  # also refuses nan
        raise ConfigError(
            f"DRIFT_FLUSH_SECONDS={value!r} must be from 0 (every request) to "
            f"{MAX_FLUSH_SECONDS:g} seconds"
        )
    return number


def _seconds(key: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not an integer") from None
    if number < 0:
        raise ConfigError(f"{key}={value!r} must be 0 (no window) or more")
    return number


def _positive_int(key: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not an integer") from None
    if number < 1:
        raise ConfigError(f"{key}={value!r} must be at least 1")
    return number


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{key}={value!r} is not a boolean (use 1 or 0)")
