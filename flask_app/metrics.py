"""Prometheus metrics with prometheus_client, in its multiprocess mode under gunicorn.

gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a directory it empties at server
start (before the app is imported: prometheus_client picks its mode at import). Each
worker then writes its counts to its own memory-mapped files there, and `GET /metrics` on
any worker sums the files of every worker, live or exited, so counters never go
backwards when a worker is replaced. Without that variable (the Flask test client,
`flask run`) the counts live in the process, in a registry of the app's own.

Label values are bounded: `endpoint` is a route of the app or "other", `status` one of
STATUSES or "other", so no client can grow the number of series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

OTHER = "other"
STATUSES = frozenset({200, 400, 404, 405, 408, 411, 413, 414, 415, 422, 429, 500, 503})
# Request latency histogram buckets, seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class _ModelInfo:
    """mloperation_model_info: the same constant in every process, so not stored in files."""

    def __init__(self, info: Mapping[str, str]):
        self.info = dict(sorted(info.items()))

    def collect(self):
        family = GaugeMetricFamily(
            "mloperation_model_info", "The served model's identity.", labels=list(self.info)
        )
        family.add_metric(list(self.info.values()), 1)
        yield family


class Metrics:
    """Request counts/latencies by endpoint and status, predictions by class."""

    def __init__(self, classes: Iterable[str], endpoints: Iterable[str], info: Mapping[str, str]):
        self.classes = [str(c) for c in classes]
        self.endpoints = frozenset(endpoints)
        # The mode prometheus_client chose when it was imported (see the module docstring).
        self.multiprocess = values.ValueClass is not values.MutexValue
        # The app's own registry: several apps may live in one test process.
        self._registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mloperation_requests",
            "HTTP requests answered, by endpoint and status.",
            ["endpoint", "status"],
            registry=self._registry,
        )
        self.duration = Histogram(
            "mloperation_request_duration_seconds",
            "Time to answer a request, by endpoint and status.",
            ["endpoint", "status"],
            buckets=BUCKETS,
            registry=self._registry,
        )
        self.predictions = Counter(
            "mloperation_predictions",
            "Records predicted, by predicted class.",
            ["class"],
            registry=self._registry,
        )
        self._by_class = [self.predictions.labels(c) for c in self.classes]  # 0 until used
        self._info = _ModelInfo(info)
        self._extra: list = []
        if not self.multiprocess:
            self._registry.register(self._info)

    @property
    def registry(self) -> CollectorRegistry:
        """The app's registry, for metrics defined elsewhere (flask_app/drift.py)."""
        return self._registry

    def add_collector(self, collector) -> None:
        """A collector computed at each scrape (flask_app/drift.py's gauges)."""
        self._extra.append(collector)
        if not self.multiprocess:
            self._registry.register(collector)

    def observe(self, endpoint: str | None, status: int, seconds: float) -> None:
        e = endpoint if endpoint in self.endpoints else OTHER
        s = str(status) if status in STATUSES else OTHER
        self.requests.labels(e, s).inc()
        self.duration.labels(e, s).observe(seconds)

    def count_predictions(self, class_counts: np.ndarray) -> None:
        for child, n in zip(self._by_class, class_counts.tolist(), strict=True):
            if n:
                child.inc(n)

    def render(self) -> bytes:
        """The Prometheus text exposition format (version 0.0.4)."""
        if not self.multiprocess:
            return generate_latest(self._registry)
        registry = CollectorRegistry()  # per scrape, as prometheus_client's docs do
        MultiProcessCollector(registry)  # reads PROMETHEUS_MULTIPROC_DIR
        registry.register(self._info)
        for collector in self._extra:
            registry.register(collector)
        return generate_latest(registry)
