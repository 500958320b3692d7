"""The real server: gunicorn with gunicorn.conf.py, two workers, on a loopback port.

Load (64 keep-alive clients for 30 s), a worker killed under load, start-up faults, and
predictions over HTTP equal to scikit-learn's in-process ones.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from src.config import ROOT
from src.features.schema import to_model_frame
from src.serving.model import ServingModel
from src.tasks import schema_task
from tests.serving.conftest import call, parity_tolerance, rewrite_export, unrunnable_graph

pytestmark = pytest.mark.slow


@dataclass
class LoadResult:
    ok: int = 0
    wrong_answers: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # non-200 answers
    errors: list[str] = field(default_factory=list)  # connection-level, first attempt
    failures: list[str] = field(default_factory=list)  # still failing after one retry
    ok_after: dict[float, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_load(port, records, expected, clients, seconds, mark_times=()):
    """`clients` threads, each with one keep-alive connection, POST records in a loop.

    A request that fails at the connection level is retried once on a new connection
    (what a client library with retries does); failures after that retry are recorded.
    """
    result = LoadResult()
    deadline = time.monotonic() + seconds
    start = time.monotonic()
    bodies = [json.dumps(r).encode() for r in records]
    headers = {"Content-Type": "application/json"}

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = k
        ok = wrong = 0
        statuses: dict[int, int] = {}
        while time.monotonic() < deadline:
            j = i % len(bodies)
            i += 1
            for attempt in (1, 2):
                try:
                    conn.request("POST", "/predict", bodies[j], headers)
                    response = conn.getresponse()
                    payload = response.read()
                    break
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    with result.lock:
                        (result.errors if attempt == 1 else result.failures).append(repr(exc))
            else:
                continue
            if response.status != 200:
                statuses[response.status] = statuses.get(response.status, 0) + 1
            elif json.loads(payload)["predictions"][0] != expected[j]:
                wrong += 1
            else:
                ok += 1
                now = time.monotonic() - start
                with result.lock:
                    for t in mark_times:
                        if now > t:
                            result.ok_after[t] = result.ok_after.get(t, 0) + 1
        conn.close()
        with result.lock:
            result.ok += ok
            result.wrong_answers += wrong
            for status, n in statuses.items():
                result.statuses[status] = result.statuses.get(status, 0) + n

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    return result, threads


def scrape(url) -> dict[tuple[str, frozenset], float]:
    """/metrics as {(sample name, labels): value}, parsed by prometheus_client's parser
    (which raises on output that is not valid Prometheus text)."""
    status, text = call("GET", url + "/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(url, name, **labels) -> float:
    return scrape(url).get((name, frozenset(labels.items())), 0.0)


def predict_200(url) -> float:
    return metric(url, "mloperation_requests_total", endpoint="/predict", status="200")


@pytest.fixture
def expected(serving_dir, test_records):
    """What the exported model answers in-process, record by record: the server must give
    the same answers under load (its parity with scikit-learn is checked just below)."""
    served, _ = ServingModel.load(serving_dir).predict(test_records)
    return served


def test_server_predictions_equal_sklearn(
    start_server, serving_dir, bundle, params, test_records, expected
):
    server = start_server(serving_dir)
    server.wait_ready()
    frame = to_model_frame(pd.DataFrame(test_records), bundle["schema"])
    tolerance = parity_tolerance(params, bundle["schema"])
    status, body = call("POST", server.url + "/predict", {"instances": test_records})
    assert status == 200
    assert body["predictions"] == expected
    if schema_task(bundle["schema"]).is_classifier:
        assert body["predictions"] == bundle["pipeline"].predict(frame).tolist()
        served = np.array([list(p.values()) for p in body["probabilities"]])
        assert np.abs(served - bundle["pipeline"].predict_proba(frame)).max() <= tolerance
    else:
        assert set(body) == {"predictions"}
        want = bundle["pipeline"].predict(frame)
        gap = np.abs(np.asarray(body["predictions"]) - want).max()
        assert gap <= tolerance * (float(np.std(want)) or 1.0)
    for record, answer in list(zip(test_records, expected, strict=True))[:10]:
        status, body = call("POST", server.url + "/predict", record)
        assert (status, body["predictions"]) == (200, [answer])
    assert len(server.wait_workers(2)) == 2
    # the same server answers every other endpoint
    assert call("GET", server.url + "/health") == (200, {"status": "ok"})
    metadata = call("GET", server.url + "/metadata")[1]
    assert metadata["task"] == bundle["schema"]["task"]
    assert metadata["classes"] == bundle["schema"].get("classes", [])
    assert call("GET", server.url + "/openapi.json")[1]["openapi"].startswith("3.")
    assert "<form" in call("GET", server.url + "/")[1]


def test_64_clients_for_30_seconds(start_server, serving_dir, test_records, expected):
    server = start_server(serving_dir)
    server.wait_ready()
    result, threads = run_load(server.port, test_records, expected, clients=64, seconds=30)
    for t in threads:
        t.join()
    assert result.errors == [] and result.failures == []
    assert result.statuses == {}  # no 5xx, no 4xx
    assert result.wrong_answers == 0
    assert result.ok > 64 * 30  # at least one answer per client per second
    # /metrics aggregates both workers: it counted every request the clients saw answered
    assert predict_200(server.url) == result.ok
    assert "Traceback" not in server.log()


def test_worker_killed_under_load_is_replaced(start_server, serving_dir, test_records, expected):
    server = start_server(serving_dir)
    server.wait_ready()
    workers = server.wait_workers(2)
    assert len(workers) == 2
    result, threads = run_load(
        server.port, test_records, expected, clients=16, seconds=10, mark_times=(5.0,)
    )
    time.sleep(2)
    before_kill = predict_200(server.url)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join()
    now = server.wait_workers(2)
    assert victim not in now and len(now) == 2, (workers, now)  # replaced
    assert result.failures == []  # every request got an answer (at most one retry)
    assert len(result.errors) <= 16  # only connections held by the killed worker broke
    assert result.statuses == {} and result.wrong_answers == 0
    assert result.ok_after.get(5.0, 0) > 100  # kept answering after the kill
    after = predict_200(server.url)
    assert after >= before_kill  # the dead worker's counts were kept
    assert result.ok <= after <= result.ok + len(result.errors)
    assert server.proc.poll() is None


def _copy(serving_dir, dest):
    dest.mkdir(parents=True)
    for p in serving_dir.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("missing", r"model directory not found: .*/missing"),
        ("truncated", r"model.onnx does not match its manifest .*truncated"),
        ("foreign", r"not an MLOperation serving manifest: .*model.json"),
        ("bad_setting", r"MAX_BATCH_SIZE='-3' must be at least 1"),
        ("metrics_dir_is_a_file", r"PROMETHEUS_MULTIPROC_DIR='.*/taken': File exists"),
    ],
)
def test_start_up_faults_stop_the_server(fault, message, start_server, serving_dir, tmp_path):
    model_dir = tmp_path / "missing"
    env = {}
    if fault == "truncated":
        model_dir = _copy(serving_dir, tmp_path / "m")
        data = (model_dir / "model.onnx").read_bytes()
        (model_dir / "model.onnx").write_bytes(data[:1000])
    elif fault == "foreign":
        model_dir = _copy(serving_dir, tmp_path / "m")
        (model_dir / "model.json").write_text('{"model": "someone else\'s"}')
    elif fault == "bad_setting":
        model_dir, env = serving_dir, {"MAX_BATCH_SIZE": "-3"}
    elif fault == "metrics_dir_is_a_file":
        (tmp_path / "taken").write_text("not a directory")
        model_dir, env = serving_dir, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "taken")}
    server = start_server(model_dir, **env)
    started = time.monotonic()
    code = server.proc.wait(timeout=30)
    log = server.log()
    assert code == 4, log  # gunicorn's "application failed to load": no respawn
    assert time.monotonic() - started < 15
    assert "cannot start" in log
    assert __import__("re").search(message, log), log
    assert "Booting worker" not in log  # stopped before forking any worker
    assert "Traceback" not in log


def test_model_onnxruntime_cannot_run_stops_the_server(start_server, serving_dir, tmp_path):
    model_dir = rewrite_export(
        serving_dir, tmp_path / "m", onnx_bytes=unrunnable_graph(serving_dir)
    )
    server = start_server(model_dir)
    code = server.proc.wait(timeout=30)
    log = server.log()
    assert code != 0, log
    assert "ONNX Runtime cannot load" in log and "model.onnx" in log
    assert log.count("Booting worker") <= 2  # the first workers only: no crash loop


def test_clients_that_stall_mid_body_get_408_and_others_are_served(
    start_server, serving_dir, test_records
):
    import socket

    server = start_server(serving_dir, BODY_TIMEOUT="1")
    server.wait_ready()
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500\r\n\r\n"
    )
    stalled = []
    for _ in range(12):  # more than the 2 workers x 4 threads
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(head + json.dumps(test_records[0]).encode()[:15])
        sock.settimeout(10)
        stalled.append(sock)
    started = time.monotonic()
    status, _ = call("POST", server.url + "/predict", test_records[0], timeout=10)
    assert status == 200 and time.monotonic() - started < 5  # not wedged by the stallers
    for sock in stalled:
        answer = b""
        while chunk := sock.recv(4096):  # until the server closes the connection
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"field":"(body)"' in answer
    assert server.proc.poll() is None


# -- /metrics across workers, worker restarts ------------------------------------------------


COUNTERS = ("mloperation_requests_total", "mloperation_predictions_total")


def counters(samples) -> dict:
    """The counter samples, histogram counts included (none of them may ever go down)."""
    return {
        key: v
        for key, v in samples.items()
        if key[0] in COUNTERS or key[0].endswith(("_bucket", "_count", "_sum"))
    }


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_metrics_stay_valid_and_monotonic_when_a_worker_is_replaced(
    start_server, serving_dir, test_records, sig
):
    server = start_server(serving_dir)
    server.wait_ready()
    workers = server.wait_workers(2)
    sent = 0
    for record in test_records[:40]:  # new connections: both workers get some
        assert call("POST", server.url + "/predict", record)[0] == 200
        sent += 1
    assert call("POST", server.url + "/predict", {"instances": test_records[:5]})[0] == 200
    assert call("GET", server.url + "/nope")[0] == 404
    assert call("POST", server.url + "/predict", b"{")[0] == 400
    before = scrape(server.url)  # parses: valid Prometheus text
    assert predict_200(server.url) == sent + 1
    assert metric(server.url, "mloperation_requests_total", endpoint="other", status="404") == 1
    victim = min(workers)
    os.kill(victim, sig)
    now = server.wait_workers(2)
    deadline = time.monotonic() + 15
    while (victim in now or len(now) != 2) and time.monotonic() < deadline:
        time.sleep(0.1)
        now = server.wait_workers(2)
    assert victim not in now and len(now) == 2, (workers, now)  # respawned
    server.wait_ready()
    old = counters(before)
    for _ in range(8):  # several scrapes, so both workers (the new one too) answer some
        after = counters(scrape(server.url))
        went_down = {k: (v, after.get(k)) for k, v in old.items() if after.get(k, -1) < v}
        assert went_down == {}  # the replaced worker's counts were kept
    for record in test_records[:10]:
        assert call("POST", server.url + "/predict", record)[0] == 200
    assert predict_200(server.url) == sent + 1 + 10
    info = [k for k in scrape(server.url) if k[0] == "mloperation_model_info"]
    assert len(info) == 1  # one identity, not one per worker
    assert "Traceback" not in server.log()


def _smoke_check_module():
    import importlib.util

    path = ROOT / "scripts" / "docker" / "smoke_check.py"
    spec = importlib.util.spec_from_file_location("smoke_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_check_holds_metrics_to_the_requests_it_made(
    start_server, pipeline_repo, capsys, monkeypatch
):
    """The image's smoke check scrapes /metrics like Prometheus would; a /predict request the
    server answered but did not count (here: one sent behind the check's back) fails it."""
    smoke = _smoke_check_module()
    server = start_server(pipeline_repo / "models" / "serving")
    server.wait_ready()
    argv = [server.url, "--model", str(pipeline_repo / "models" / "model.joblib")]
    argv += ["--data", str(pipeline_repo / "data" / "processed" / "test.csv")]
    argv += ["--params", str(pipeline_repo / "params.yaml")]
    assert smoke.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "ok   GET /metrics -> Prometheus text; /predict requests +" in out

    real_call, extra = smoke.call, []

    def call_and_one_more(url, body=None, timeout=10.0):
        if url.endswith("/predict") and not extra:  # an uncounted request, once
            extra.append(call("POST", url, body)[0])
        return real_call(url, body, timeout)

    monkeypatch.setattr(smoke, "call", call_and_one_more)
    assert smoke.main(argv) == 1
    assert extra == [200]  # the server answered it
    err = capsys.readouterr().err
    assert "/metrics counts" in err and "/predict requests since the first scrape" in err, err
    made = int(err.split("this check made ")[1].split()[0])
    assert f"counts {made + 1} /predict requests" in err, err


# -- slow clients ------------------------------------------------------------------------------


def test_slow_clients_do_not_stall_normal_ones(start_server, serving_dir, test_records):
    """16 clients dripping headers and 16 dripping a body (4x the threads the gthread
    worker had) attached the whole time; a normal client's /health and /predict are still
    answered within 1 s, and the slow ones are cut off by the server."""
    from benchmarks.slow_clients import SlowClients, probe

    server = start_server(serving_dir, BODY_TIMEOUT="3")
    server.wait_ready()
    slow = SlowClients(server.port, headers=16, bodies=16, interval=1.0).start()
    try:
        time.sleep(2)
        record = json.dumps(test_records[0]).encode()
        answers = []
        for _ in range(10):
            answers.append(("/health", *probe(server.url + "/health", None)))
            answers.append(("/predict", *probe(server.url + "/predict", record)))
            time.sleep(0.3)
        time.sleep(4)  # past keepalive (the headers' deadline) and BODY_TIMEOUT
    finally:
        slow.stop()
    late = [(path, status, round(t, 3)) for path, status, t in answers if status != 200 or t > 1]
    assert late == []
    assert slow.closed_by_server >= 32  # every slow client was cut off at least once
    assert server.proc.poll() is None


# -- draining on SIGTERM -------------------------------------------------------------------


def test_sigterm_drains_ready_503_and_idle_keepalive_connections_answered(
    start_server, serving_dir, test_records
):
    server = start_server(serving_dir)
    server.wait_ready()
    server.wait_workers(2)
    idle = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10) for _ in range(4)]
    for conn in idle:  # keep-alive connections, then left idle
        conn.request("GET", "/ready")
        response = conn.getresponse()
        response.read()
        assert response.status == 200 and response.getheader("Connection") != "close"
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # the workers are draining now
    assert server.proc.poll() is None
    record = json.dumps(test_records[0]).encode()
    for k, conn in enumerate(idle[:3]):  # a client sends on its idle connection: answered
        if k == 0:
            conn.request("POST", "/predict", record, {"Content-Type": "application/json"})
        else:
            conn.request("GET", "/ready")
        response = conn.getresponse()  # no RemoteDisconnected
        body = json.loads(response.read())
        assert response.getheader("Connection") == "close"
        if k == 0:
            assert response.status == 200 and "predictions" in body
        else:
            assert (response.status, body) == (503, {"status": "draining"})
        conn.close()
    sock = idle[3].sock  # the one left idle is closed by the server with a FIN, not a reset
    sock.settimeout(15)
    assert sock.recv(1) == b""
    idle[3].close()
    assert server.proc.wait(timeout=15) == 0
    log = server.log()
    assert "Traceback" not in log and "Worker graceful timeout" not in log
