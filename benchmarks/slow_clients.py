"""Slow clients benchmark: `make bench-slow-clients` -> reports/bench/slow-clients.json.

The predictor as shipped (gunicorn -c gunicorn.conf.py, 2 workers, models/serving) on a
loopback port, with slow clients attached the whole time:
  * slow-header clients send a request line, then one header line every `--interval` s,
    never finishing the headers (slowloris);
  * slow-body clients send complete /predict headers announcing a body, then one byte of
    it every `--interval` s.
Each reconnects when the server closes its connection, so the pressure never lets up.
Meanwhile a normal client probes `GET /health` and `POST /predict` (a new connection
each, 5 s timeout) every `--probe-every` s; the report gives probes answered, answered
within 1 s, and their latency. `--worker-class gthread` measures the previous setting
side by side (the default runs both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from src.config import REPORTS_DIR, ROOT
from src.serving.model import ServingModel
from src.utils import write_json
from tests.repo_tools import free_port

BOUND_S = 1.0  # a probe answered later than this counts as not answered in time


@dataclass
class SlowClients:
    """`headers` slow-header and `bodies` slow-body clients, each in a thread, until stop()."""

    port: int
    headers: int
    bodies: int
    interval: float = 2.0
    stop_event: threading.Event = field(default_factory=threading.Event)
    connections: int = 0  # connections opened, reconnections included
    closed_by_server: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> SlowClients:
        head = b"GET /health HTTP/1.1\r\nHost: slow\r\n"
        body = (
            b"POST /predict HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        for k in range(self.headers + self.bodies):
            first, drip = (head, b"X-Slow: 1\r\n") if k < self.headers else (body, b" ")
            t = threading.Thread(target=self._run, args=(first, drip), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _run(self, first: bytes, drip: bytes) -> None:
        while not self.stop_event.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                self.stop_event.wait(0.2)
                continue
            with self.lock:
                self.connections += 1
            try:
                sock.sendall(first)
                while not self.stop_event.wait(self.interval):
                    sock.sendall(drip)
                    sock.settimeout(0.0)  # has the server answered or closed?
                    try:
                        if sock.recv(65536) == b"":
                            raise ConnectionResetError
                    except BlockingIOError:
                        pass
                    sock.settimeout(5)
            except OSError:
                with self.lock:
                    self.closed_by_server += 1
            finally:
                sock.close()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=10)


def probe(url: str, body: bytes | None, timeout: float = 5.0) -> tuple[int | None, float]:
    """(status or None, seconds) for one request on a new connection."""
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    if body:
        req.add_header("Content-Type", "application/json")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = None
    return status, time.perf_counter() - started


def probe_for(base: str, record: bytes, seconds: float, every: float) -> dict[str, dict]:
    """Probe /health and /predict every `every` s for `seconds`; a summary per endpoint."""
    results: dict[str, list[tuple[int | None, float]]] = {"/health": [], "/predict": []}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        results["/health"].append(probe(base + "/health", None))
        results["/predict"].append(probe(base + "/predict", record))
        time.sleep(max(0.0, every - (time.monotonic() - tick)))
    return {path: summarize(rows) for path, rows in results.items()}


def summarize(rows: list[tuple[int | None, float]]) -> dict:
    answered = sorted(t for status, t in rows if status == 200)
    in_time = [t for t in answered if t <= BOUND_S]
    return {
        "probes": len(rows),
        "answered": len(answered),
        "answered_within_1s": len(in_time),
        "p50_ms": round(statistics.median(answered) * 1000, 2) if answered else None,
        "p99_ms": round(answered[min(len(answered) - 1, int(len(answered) * 0.99))] * 1000, 2)
        if answered
        else None,
        "max_ms": round(answered[-1] * 1000, 2) if answered else None,
    }


def start_server(model_dir: Path, port: int, log: Path, **env: str) -> subprocess.Popen:
    full_env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MODEL_DIR": str(model_dir),
        "WEB_CONCURRENCY": "2",
        "ACCESS_LOG": "",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); see {log}")
        if probe(f"http://127.0.0.1:{port}/ready", None, timeout=1)[0] == 200:
            return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the server did not become ready within 30 s; see {log}")


def run(worker_class: str | None, args: argparse.Namespace, record: bytes, log: Path) -> dict:
    port = free_port()
    env = {"GUNICORN_WORKER_CLASS": worker_class} if worker_class else {}
    proc = start_server(args.model_dir, port, log, **env)
    base = f"http://127.0.0.1:{port}"
    try:
        quiet = probe_for(base, record, seconds=2, every=args.probe_every)
        slow = SlowClients(port, args.slow_headers, args.slow_bodies, args.interval).start()
        time.sleep(args.interval + 1)  # every slow client connected and sent something
        loaded = probe_for(base, record, seconds=args.seconds, every=args.probe_every)
        slow.stop()
        return {
            "worker_class": worker_class or "as shipped",
            "without_slow_clients": quiet,
            "with_slow_clients": loaded,
            "slow_connections_opened": slow.connections,
            "slow_connections_closed_by_server": slow.closed_by_server,
            "server_alive": proc.poll() is None,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow-headers", type=int, default=64)
    parser.add_argument("--slow-bodies", type=int, default=64)
    parser.add_argument("--interval", type=float, default=2.0, help="s between slow sends")
    parser.add_argument("--seconds", type=float, default=25.0, help="probing time")
    parser.add_argument("--probe-every", type=float, default=0.5)
    parser.add_argument(
        "--worker-class",
        action="append",
        help="gunicorn worker class to measure (repeatable); default: as shipped and gthread",
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "serving")
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / "bench" / "slow-clients.json")
    args = parser.parse_args()
    if not (args.model_dir / "model.json").is_file():
        raise SystemExit(f"no exported model in {args.model_dir}: run `make repro`")
    record = json.dumps(ServingModel.load(args.model_dir).example_record()).encode()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log = args.out.with_suffix(".log")
    log.write_bytes(b"")
    classes = args.worker_class or [None, "gthread"]
    runs = []
    for worker_class in classes:
        result = run(worker_class, args, record, log)
        runs.append(result)
        loaded = result["with_slow_clients"]
        print(
            f"{result['worker_class']:>12}: with {args.slow_headers} slow-header + "
            f"{args.slow_bodies} slow-body clients, "
            + "; ".join(
                f"{path} {s['answered_within_1s']}/{s['probes']} within 1 s "
                f"(p50 {s['p50_ms']} ms, max {s['max_ms']} ms)"
                for path, s in loaded.items()
            )
        )
    write_json(
        args.out,
        {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "settings": {
                "slow_headers": args.slow_headers,
                "slow_bodies": args.slow_bodies,
                "interval_s": args.interval,
                "probe_seconds": args.seconds,
                "probe_every_s": args.probe_every,
                "bound_s": BOUND_S,
                "workers": 2,
            },
            "runs": runs,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
