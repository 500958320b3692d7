"""Drift in the real server: gunicorn with gunicorn.conf.py, two gevent workers on loopback.

Records posted over many connections reach both workers; GET /drift (answered by either
worker) and /metrics must count every one of them, agree with each other and with the
statistic computed in-process on the same records, flag exactly the shifted features, and
start again after POST /drift/reset with the token. Each worker counts in its own memory
first: its counts reach the others within DRIFT_FLUSH_SECONDS with no more traffic, and
are not lost when it exits.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from src.models.export_model import frame_records
from src.serving.drift import INSUFFICIENT, Reference
from src.serving.manifest import read_model_dir
from tests.drift_data import resampled, shifted
from tests.serving.conftest import call

pytestmark = pytest.mark.slow

TOKEN = "drift-reset-token-for-tests"


def post_concurrently(url: str, records: list[dict], batch: int = 0) -> None:
    """One request per record (or per `batch` records), 8 at a time, each on a new
    connection, so the kernel hands them to both workers."""
    bodies = (
        [{"instances": records[i : i + batch]} for i in range(0, len(records), batch)]
        if batch
        else records
    )
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda b: call("POST", url + "/predict", b)[0], bodies))
    assert statuses == [200] * len(bodies)


def reset(url: str, token: str | None):
    req = urllib.request.Request(url + "/drift/reset", data=b"", method="POST")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def metrics(url: str) -> dict:
    status, text = call("GET", url + "/metrics")
    assert status == 200
    out: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def drift_counts_by_process(metrics_dir: Path) -> dict[str, float]:
    """Drift values counted per process file (prometheus_client's multiprocess files)."""
    out = {}
    for path in metrics_dir.glob("counter_*.db"):
        total = 0.0
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[0] == "mloperation_drift_values":
                total += value
        out[path.name] = total
    return out


def flushed_within(metrics_dir: Path, total: float, within: float) -> None:
    """Wait, sending nothing (a worker's own reads flush it), until the counter files hold
    `total` drift counts; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while (got := sum(drift_counts_by_process(metrics_dir).values())) != total:
        assert time.monotonic() < deadline, f"{got} of {total} counts after {within} s"
        time.sleep(0.05)


FLUSH = 0.3  # DRIFT_FLUSH_SECONDS of these servers


def test_drift_over_two_workers(start_server, fixture_serving_dir, multiclass_case, tmp_path):
    model_dir, train = fixture_serving_dir, multiclass_case.train
    schema = read_model_dir(model_dir)[1]["schema"]
    metrics_dir = tmp_path / "prometheus"
    server = start_server(
        model_dir,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        DRIFT_RESET_TOKEN=TOKEN,
        DRIFT_WINDOW_SECONDS="0",
        DRIFT_FLUSH_SECONDS=str(FLUSH),
    )
    server.wait_ready()
    assert len(server.wait_workers(2)) == 2

    # unshifted traffic: a resample of the training data, one record and batches; the
    # worker that does not answer /drift flushes on its own, with no more traffic
    records = frame_records(resampled(train, rows=600), schema)
    post_concurrently(server.url, records[:300])
    post_concurrently(server.url, records[300:], batch=20)
    features = len(schema["features"])
    flushed_within(metrics_dir, 600 * features, within=FLUSH + 2)
    status, body = call("GET", server.url + "/drift")
    assert status == 200 and body["records"] == 600
    assert body["status"] == "ok" and body["drifted"] == []

    by_process = drift_counts_by_process(metrics_dir)
    assert sum(by_process.values()) == 600 * features
    assert len([n for n in by_process.values() if n]) == 2, by_process  # both workers counted

    reference = Reference.from_bytes((model_dir / "drift_reference.json").read_bytes())
    columns = {f["name"]: [r[f["name"]] for r in records] for f in schema["features"]}
    expected = reference.summarize(reference.count_columns(columns))
    assert [f["psi"] for f in body["features"]] == [f["psi"] for f in expected["features"]]
    assert [f["null_rate"] for f in body["features"]] == [
        f["null_rate"] for f in expected["features"]
    ]

    samples = metrics(server.url)
    assert samples[("mloperation_drift_window_records", ())] == 600
    for f in body["features"]:
        label = (("feature", f["name"]),)
        assert samples[("mloperation_drift_psi", label)] == f["psi"]
        assert samples[("mloperation_drift_null_rate", label)] == f["null_rate"]
        assert samples[("mloperation_drift_drifted", label)] == 0.0
        counted = sum(
            v
            for (name, labels), v in samples.items()
            if name == "mloperation_drift_values_total" and ("feature", f["name"]) in labels
        )
        assert counted == 600

    # reset: refused without the token, then a new, empty window for every worker
    assert reset(server.url, None)[0] == 401
    assert reset(server.url, "not-the-token-at-all")[0] == 401
    status, body = reset(server.url, TOKEN)
    assert status == 200 and body["records"] == 0
    for _ in range(4):  # whichever worker answers
        body = call("GET", server.url + "/drift")[1]
        assert body["records"] == 0 and body["status"] == INSUFFICIENT

    # shifted traffic: exactly the shifted features flagged, in /drift and /metrics
    frame, changed = shifted(train, schema, rows=600)
    post_concurrently(server.url, frame_records(frame, schema), batch=10)
    flushed_within(metrics_dir, 1200 * features, within=FLUSH + 2)
    body = call("GET", server.url + "/drift")[1]
    assert body["records"] == 600 and set(body["drifted"]) == changed
    samples = metrics(server.url)
    flagged = {
        dict(labels)["feature"]
        for (name, labels), v in samples.items()
        if name == "mloperation_drift_drifted" and v == 1.0
    }
    assert flagged == changed
    # the counters themselves never go back: 600 before the reset, 600 after
    assert sum(drift_counts_by_process(metrics_dir).values()) == 1200 * features


def test_a_worker_flushes_its_drift_counts_as_it_exits(
    start_server, fixture_serving_dir, multiclass_case, tmp_path
):
    """With a flush interval longer than the test, counts reach the shared counters only
    through the exiting workers (SIGTERM: gunicorn replaces each one)."""
    model_dir = fixture_serving_dir
    schema = read_model_dir(model_dir)[1]["schema"]
    metrics_dir = tmp_path / "prometheus"
    server = start_server(
        model_dir,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        DRIFT_WINDOW_SECONDS="0",
        DRIFT_FLUSH_SECONDS="60",
    )
    server.wait_ready()
    workers = server.wait_workers(2)
    assert len(workers) == 2
    records = frame_records(resampled(multiclass_case.train, rows=300), schema)
    post_concurrently(server.url, records[:200])
    post_concurrently(server.url, records[200:], batch=25)
    features = len(schema["features"])
    assert sum(drift_counts_by_process(metrics_dir).values()) == 0  # all still pending
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while (server.worker_pids() & workers or len(server.worker_pids()) != 2) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert not server.worker_pids() & workers, "the workers did not exit"
    assert sum(drift_counts_by_process(metrics_dir).values()) == 300 * features
    server.wait_ready()
    assert call("GET", server.url + "/drift")[1]["records"] == 300
