"""Drift of live traffic against the training reference, summed over every gunicorn worker.

Each checked /predict record is counted per feature and bin in one prometheus_client
Counter, `mloperation_drift_values_total{feature, bin}` (bins of src/serving/drift.py:
"0".."k-1", "unseen", "null"). Under gunicorn it lives in prometheus_client's multiprocess
files (flask_app/metrics.py), so any worker reads the counts of all of them, and /drift
and /metrics compute from the same numbers with the same code (Reference.summarize).
A worker counts into its own memory first and adds that to the Counter at most
DRIFT_FLUSH_SECONDS (default 1) later, so another worker's /drift lags by up to that much;
its own reads, and its exit, flush first (a worker killed with SIGKILL loses the counts of
its last DRIFT_FLUSH_SECONDS).

Counters only go up; the *window* that /drift judges is the counts minus a baseline taken
at its start. The baseline is one small JSON file in PROMETHEUS_MULTIPROC_DIR (in memory
without it), replaced atomically under an flock, so every worker sees the same window:
- `POST /drift/reset` starts a new window (bearer token DRIFT_RESET_TOKEN; no token set:
  the endpoint answers 403, so an anonymous client cannot hide drift);
- with DRIFT_WINDOW_SECONDS > 0, a window older than that is closed at the next
  prediction or read: its summary stays readable as `previous_window`.
(prometheus_client has no shared mutable state across processes besides its value files;
this file is the one thing written by hand, a baseline of a few hundred numbers.)
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, Response, request
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from flask_app.contract import ClientError
from src.serving.drift import INSUFFICIENT, Reference, ReferenceError, matches_schema
from src.serving.manifest import REEXPORT, ModelLoadError, drift_reference_bytes

VALUES = "mloperation_drift_values"
WINDOW_FILE = "drift-window.json"  # in PROMETHEUS_MULTIPROC_DIR; gunicorn.conf.py empties it
LOCK_FILE = "drift-window.lock"


class DriftMonitor:
    """Counts records into the reference's bins; summarizes the current window.

    Requests count into this process's own lists; they reach the shared Counter (and so
    every worker's /drift) at most `flush_seconds` later, from a background flusher, and at
    once for this worker's own reads (/drift, /metrics) and at worker exit. 0 flushes on
    every request. (An increment of a multiprocess Counter takes a lock and an mmap write:
    counting one record of the demo's 6 features that way took 10 µs, into the lists 2 µs,
    measured in-process.)
    """

    def __init__(
        self,
        reference: Reference,
        registry: CollectorRegistry,
        multiprocess: bool,
        window_seconds: int = 0,
        flush_seconds: float = 0.0,
    ):
        self.reference = reference
        self.window_seconds = window_seconds
        self.flush_seconds = flush_seconds
        self.counter = Counter(
            VALUES,
            "Records seen by /predict, by feature and drift bin (src/serving/drift.py).",
            ["feature", "bin"],
            registry=registry,
        )
        self._features = [
            (f.name, f, [self.counter.labels(f.name, b) for b in f.metric_labels()])
            for f in reference.features
        ]
        self._index = {
            f.name: {b: i for i, b in enumerate(f.metric_labels())} for f in reference.features
        }
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") if multiprocess else None
        self._dir = Path(directory) if directory else None
        self._memory: dict[str, Any] | None = None  # the window state without a directory
        self._mutex = threading.Lock()
        self._next_check = 0.0
        self._pending_lock = threading.Lock()
        self._pending = self._zeros()
        self._flusher_pid = -1  # the process whose flusher runs (none survives a fork)
        self._ensure_window()

    # -- the hot path -----------------------------------------------------------------

    def _zeros(self) -> list[list[int]]:
        return [[0] * len(children) for _, _, children in self._features]

    def observe(self, records: list[dict[str, Any]], columns: dict[str, Any] | None = None) -> None:
        """Count checked records (by feature in `columns`, as flask_app.contract.Checked
        has them, binned with numpy; one record is binned without numpy)."""
        with self._pending_lock:
            pending = self._pending
            if len(records) == 1:
                record = records[0]
                for (name, ref, _), counts in zip(self._features, pending, strict=True):
                    counts[ref.index(record[name])] += 1
            else:
                for (name, ref, _), counts in zip(self._features, pending, strict=True):
                    column = columns[name] if columns is not None else [r[name] for r in records]
                    found = ref.counts(column)
                    for i in np.flatnonzero(found).tolist():
                        counts[i] += int(found[i])
            start_flusher = self.flush_seconds and self._flusher_pid != os.getpid()
            if start_flusher:
                self._flusher_pid = os.getpid()
        if not self.flush_seconds:
            self.flush()
        elif start_flusher:
            _start_flusher(weakref.ref(self), self.flush_seconds)
        if self.window_seconds and time.time() >= self._next_check:
            self._roll_if_due()

    def flush(self) -> None:
        """Move this process's pending counts into the shared Counter."""
        with self._pending_lock:
            pending, self._pending = self._pending, self._zeros()
        for (_, _, children), counts in zip(self._features, pending, strict=True):
            for child, n in zip(children, counts, strict=True):
                if n:
                    child.inc(n)

    # -- counts and the window --------------------------------------------------------

    def totals(self) -> dict[str, np.ndarray]:
        """The counters' values summed over every process (or this one's), this
        process's pending counts flushed first."""
        self.flush()
        out = {f.name: np.zeros(f.size, dtype=np.int64) for f in self.reference.features}
        if self._dir is not None:
            families = MultiProcessCollector(None, path=str(self._dir)).collect()
        else:
            families = self.counter.collect()
        for family in families:
            if family.name != VALUES:
                continue
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                index = self._index.get(sample.labels.get("feature", ""), {})
                i = index.get(sample.labels.get("bin", ""))
                if i is not None:
                    out[sample.labels["feature"]][i] += int(sample.value)
        return out

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            if self._dir is None:
                yield
                return
            with open(self._dir / LOCK_FILE, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any] | None:
        if self._dir is None:
            return self._memory
        try:
            state = json.loads((self._dir / WINDOW_FILE).read_text())
        except (FileNotFoundError, ValueError):  # absent, or not ours: a new window
            return None
        ok = isinstance(state, dict) and isinstance(state.get("started"), (int, float))
        return state if ok and isinstance(state.get("baseline"), dict) else None

    def _write(self, state: dict[str, Any]) -> None:
        if self._dir is None:
            self._memory = state
            return
        fd, tmp = tempfile.mkstemp(prefix=".drift-", dir=self._dir)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh)
        os.replace(tmp, self._dir / WINDOW_FILE)

    def _new_state(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        totals = self.totals()
        return {
            "started": time.time(),
            "baseline": {k: v.tolist() for k, v in totals.items()},
            "previous": previous,
        }

    def _ensure_window(self) -> None:
        with self._locked():
            state = self._read()
            if state is None:
                state = self._new_state(None)
                self._write(state)
            self._next_check = state["started"] + self.window_seconds

    def _roll_if_due(self) -> None:
        with self._locked():
            state = self._read() or self._new_state(None)
            due = state["started"] + self.window_seconds
            if time.time() >= due:
                summary = self._summarize(state, self.totals())
                summary["window"]["ended"] = round(time.time(), 3)
                state = self._new_state(summary)
                self._write(state)
            self._next_check = state["started"] + self.window_seconds

    def reset(self) -> dict[str, Any]:
        """Start a new window now (the previous one is dropped)."""
        with self._locked():
            state = self._new_state(None)
            self._write(state)
            self._next_check = state["started"] + self.window_seconds
        return self.summary()

    def _summarize(self, state: dict[str, Any], totals: dict[str, np.ndarray]) -> dict[str, Any]:
        counts = {}
        for name, total in totals.items():
            base = np.asarray(state["baseline"].get(name, []), dtype=np.int64)
            counts[name] = np.maximum(total - base, 0) if base.shape == total.shape else total
        summary = self.reference.summarize(counts)
        summary["window"] = {
            "started": round(state["started"], 3),
            "seconds": self.window_seconds or None,
        }
        return summary

    def summary(self) -> dict[str, Any]:
        """GET /drift: the current window and the last closed one (or null)."""
        if self.window_seconds and time.time() >= self._next_check:
            self._roll_if_due()
        with self._locked():
            state = self._read() or self._new_state(None)
        summary = self._summarize(state, self.totals())
        summary["previous_window"] = state.get("previous")
        return summary


def _start_flusher(monitor: weakref.ref, seconds: float) -> None:
    """Flush every `seconds` in a daemon thread of this process (a greenlet under gunicorn's
    gevent worker, whose monkey-patching makes threading and time.sleep cooperative); it
    ends with its monitor (apps come and go in a test process)."""

    def run() -> None:
        while True:
            time.sleep(seconds)
            current = monitor()
            if current is None:
                return
            current.flush()
            del current

    threading.Thread(target=run, name="drift-flush", daemon=True).start()


class DriftCollector:
    """/metrics gauges of the current window, from the same summary as GET /drift:
    mloperation_drift_psi / _null_rate / _unseen_rate / _drifted {feature} (no sample while
    a feature has insufficient data) and mloperation_drift_window_records."""

    def __init__(self, monitor: DriftMonitor):
        self.monitor = monitor

    def collect(self):
        summary = self.monitor.summary()
        gauges = {
            key: GaugeMetricFamily(f"mloperation_drift_{key}", text, labels=["feature"])
            for key, text in (
                ("psi", "Population stability index of the feature in the drift window."),
                ("null_rate", "Share of null values of the feature in the drift window."),
                ("unseen_rate", "Share of unseen categories of the feature in the window."),
                ("drifted", "1 when the feature is over a drift threshold, else 0."),
            )
        }
        for f in summary["features"]:
            if f["status"] == INSUFFICIENT:
                continue
            for key in ("psi", "null_rate", "unseen_rate"):
                if f.get(key) is not None:
                    gauges[key].add_metric([f["name"]], f[key])
            gauges["drifted"].add_metric([f["name"]], 1.0 if f["status"] == "drift" else 0.0)
        yield from gauges.values()
        records = GaugeMetricFamily(
            "mloperation_drift_window_records", "Records counted in the current drift window."
        )
        records.add_metric([], summary["records"])
        yield records


def load_reference(model_dir: Path, manifest: dict[str, Any]) -> Reference:
    """The export's drift reference, checked (sha256, content, the model's features);
    ModelLoadError naming the file otherwise."""
    path = Path(model_dir) / manifest["drift_reference"]["file"]
    try:
        reference = Reference.from_bytes(drift_reference_bytes(model_dir, manifest))
    except ReferenceError as exc:
        raise ModelLoadError(f"drift reference {path} is invalid: {exc}; {REEXPORT}") from None
    problem = matches_schema(reference, manifest["schema"])
    if problem:
        raise ModelLoadError(f"drift reference {path}: {problem}; {REEXPORT}")
    return reference


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")), status=status, mimetype="application/json"
    )


def register_routes(app: Flask, monitor: DriftMonitor | None, token: str | None) -> None:
    """GET /drift and POST /drift/reset (404 for both when DRIFT_TRACKING=0)."""

    def tracking() -> DriftMonitor:
        if monitor is None:
            raise ClientError(
                404,
                "drift tracking is off",
                [{"field": "(path)", "problem": "the server runs with DRIFT_TRACKING=0"}],
            )
        return monitor

    @app.get("/drift")
    def drift() -> Response:
        return _json(tracking().summary())

    @app.post("/drift/reset")
    def drift_reset() -> Response:
        current = tracking()
        if token is None:
            raise ClientError(
                403,
                "drift reset is disabled",
                [{"field": "Authorization", "problem": "the server has no DRIFT_RESET_TOKEN"}],
            )
        given = request.headers.get("Authorization", "")
        scheme, _, secret = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            secret.strip().encode(), token.encode()
        ):
            error = ClientError(
                401,
                "drift reset needs the server's token",
                [{"field": "Authorization", "problem": "expected Bearer <DRIFT_RESET_TOKEN>"}],
            )
            raise error
        return _json(current.reset())
