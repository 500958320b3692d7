"""Prometheus metrics shared by all gunicorn workers, without prometheus_client.

The counters live in one anonymous shared memory block, created before gunicorn forks
(the app is preloaded), so `GET /metrics` on any worker reports the whole server. Each
worker writes only its own row (no cross-process lock: a worker killed mid-update cannot
wedge the others); the master folds the row of a worker that exited into row 0, so
counters never go backwards when workers are replaced. Without a pre-fork master (the
Flask test client, `flask run`) everything lands in one row.
"""

from __future__ import annotations

import bisect
import mmap
import threading
from collections.abc import Iterable

import numpy as np

ENDPOINTS = ("/", "/health", "/ready", "/metadata", "/predict", "/openapi.json", "/metrics")
OTHER_ENDPOINT = "other"
STATUSES = (200, 400, 404, 405, 408, 411, 413, 414, 415, 422, 429, 500, 503)
OTHER_STATUS = "other"
# Request latency histogram buckets, seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class SharedMetrics:
    """Request counts/latencies by endpoint and status, predictions by class."""

    def __init__(self, classes: Iterable[str], slots: int = 64):
        self.classes = [str(c) for c in classes]
        self.endpoints = (*ENDPOINTS, OTHER_ENDPOINT)
        self.statuses = (*(str(s) for s in STATUSES), OTHER_STATUS)
        self._endpoint_index = {e: i for i, e in enumerate(self.endpoints)}
        self._status_index = {s: i for i, s in enumerate(STATUSES)}
        n_series = len(self.endpoints) * len(self.statuses)
        self._n_series = n_series
        self._n_buckets = len(BUCKETS) + 1  # last one is +Inf
        # row layout: [bucket counts (series x buckets) | sums (series) | classes]
        self._sum_offset = n_series * self._n_buckets
        self._class_offset = self._sum_offset + n_series
        self.row_size = self._class_offset + len(self.classes)
        self.slots = slots
        self._mem = mmap.mmap(-1, 8 * self.row_size * (slots + 1))  # MAP_SHARED: survives fork
        self._data = np.frombuffer(self._mem, dtype=np.float64).reshape(slots + 1, self.row_size)
        self._free = list(range(slots, 0, -1))
        self._row = self._data[self._free.pop()]  # single-process default
        self._lock = threading.Lock()  # threads of one worker; never shared across processes

    # -- gunicorn master side --------------------------------------------------------------

    def claim_slot(self) -> int:
        """A free row for a worker about to be forked (called in the master)."""
        if not self._free:
            raise RuntimeError(f"more than {self.slots} live workers: raise METRICS_SLOTS")
        return self._free.pop()

    def release_slot(self, slot: int) -> None:
        """Fold an exited worker's row into row 0 and free it (called in the master)."""
        self._data[0] += self._data[slot]
        self._data[slot] = 0.0
        self._free.append(slot)

    # -- worker side -----------------------------------------------------------------------

    def bind(self, slot: int) -> None:
        """Write to `slot` from now on (called in the worker right after fork)."""
        self._row = self._data[slot]

    def observe(self, endpoint: str | None, status: int, seconds: float) -> None:
        e = self._endpoint_index.get(endpoint or OTHER_ENDPOINT, len(ENDPOINTS))
        s = self._status_index.get(status, len(STATUSES))
        series = e * len(self.statuses) + s
        bucket = bisect.bisect_left(BUCKETS, seconds)  # le is inclusive
        with self._lock:
            self._row[series * self._n_buckets + bucket] += 1.0
            self._row[self._sum_offset + series] += seconds

    def count_predictions(self, class_counts: np.ndarray) -> None:
        with self._lock:
            self._row[self._class_offset : self._class_offset + len(self.classes)] += class_counts

    # -- exposition ------------------------------------------------------------------------

    def render(self, info: dict[str, str]) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        total = self._data.sum(axis=0)
        buckets = total[: self._sum_offset].reshape(self._n_series, self._n_buckets)
        counts = buckets.sum(axis=1)
        cumulative = buckets.cumsum(axis=1)
        sums = total[self._sum_offset : self._class_offset]
        lines = [
            "# HELP mloperation_requests_total HTTP requests answered, by endpoint and status.",
            "# TYPE mloperation_requests_total counter",
        ]
        active = [i for i in range(self._n_series) if counts[i] > 0]
        labels = {}
        for i in active:
            e, s = divmod(i, len(self.statuses))
            labels[i] = f'endpoint="{self.endpoints[e]}",status="{self.statuses[s]}"'
            lines.append(f"mloperation_requests_total{{{labels[i]}}} {_num(counts[i])}")
        lines += [
            "# HELP mloperation_request_duration_seconds Time to answer a request, by "
            "endpoint and status.",
            "# TYPE mloperation_request_duration_seconds histogram",
        ]
        for i in active:
            for b, upper in enumerate(BUCKETS):
                lines.append(
                    f'mloperation_request_duration_seconds_bucket{{{labels[i]},le="{upper}"}} '
                    f"{_num(cumulative[i, b])}"
                )
            lines.append(
                f'mloperation_request_duration_seconds_bucket{{{labels[i]},le="+Inf"}} '
                f"{_num(cumulative[i, -1])}"
            )
            lines.append(f"mloperation_request_duration_seconds_sum{{{labels[i]}}} {sums[i]!r}")
            lines.append(
                f"mloperation_request_duration_seconds_count{{{labels[i]}}} {_num(counts[i])}"
            )
        lines += [
            "# HELP mloperation_predictions_total Records predicted, by predicted class.",
            "# TYPE mloperation_predictions_total counter",
        ]
        for c, name in enumerate(self.classes):
            value = total[self._class_offset + c]
            lines.append(f'mloperation_predictions_total{{class="{_escape(name)}"}} {_num(value)}')
        info_labels = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(info.items()))
        lines += [
            "# HELP mloperation_model_info The served model's identity.",
            "# TYPE mloperation_model_info gauge",
            f"mloperation_model_info{{{info_labels}}} 1",
        ]
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
