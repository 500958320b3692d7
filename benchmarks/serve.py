"""Serving benchmark: `make bench-serve` -> reports/bench/serve.json + a table.

Side by side in one run, on loopback, with the same worker count (2) and the same load
generator (wrk, keep-alive connections):
  * ours      - gunicorn -c gunicorn.conf.py serving models/serving (ONNX), as shipped;
  * floor     - the same server with CONSTANT_MODEL=1 (fixed answer: the HTTP stack's cost);
  * gthread   - the same server with GUNICORN_WORKER_CLASS=gthread (4 threads per worker):
                gunicorn's threaded worker, the default before gevent (which bounds the time
                to read headers and bodies, see benchmarks/slow_clients.py);
  * nodrift   - the same server with DRIFT_TRACKING=0 (no drift counting: its overhead),
                restarted every round as ours is, so both are equally fresh;
  * mlflow    - `mlflow models serve --env-manager local -w 2` serving the model the train
                stage logged to MLflow (the same fitted pipeline, run id in models/model.joblib).
Measures requests/s and p50/p99 latency for one-row requests at 1, 8 and 32 connections,
rows/s for 1000-row batches (4 connections), cold start to the first prediction, and the
total RSS (and PSS) of each server's processes, and each run's server CPU time per
request. Scenarios are interleaved over several rounds; the table shows medians and ratios
of medians.

Targets: one-row throughput at 8 and 32 connections >= 10x MLflow, p99 at 8 connections
<= 1/10 of MLflow's, batch rows/s >= 5x, one-row throughput at 8 connections >= 50% of
the floor, cold start <= 2 s, total RSS <= 300 MB with 2 workers; one-row (8 and 32
connections) and batch throughput of the default gevent worker >= 95 % of gthread's (no
drop for the slow-client protection); one-row throughput at 1 and 8 connections with drift
tracking on >= 95 % of it off (nodrift), judged on back-to-back pairs after the rounds
(drift_pairs). A first, unrecorded round warms every server up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from src.config import MODEL_FILE, REPORTS_DIR, ROOT
from src.utils import sha256_file, write_json
from tests.repo_tools import free_port

SERVING_DIR = ROOT / "models" / "serving"
WORKERS = 2
ONE_ROW_CONNECTIONS = (1, 8, 32)
BATCH_ROWS = 1000
BATCH_CONNECTIONS = 4
# The one-row request is the test set's first complete row; the 1000-row batches are
# drawn from the test set (any configured dataset, any task).

WRK_SCRIPT = r"""
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_ms": %.3f, ' ..
    '"p99_ms": %.3f}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def post(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


class Server:
    """One server under test: a process tree started from `cmd`."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], path: str, logdir: Path):
        self.name, self.cmd, self.env, self.path = name, cmd, env, path
        self.log_file = logdir / f"{name}.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self, probe: bytes, timeout: float = 180.0) -> float:
        """Start; return seconds until the first successful prediction."""
        self.port = free_port()
        cmd = [c.replace("{port}", str(self.port)) for c in self.cmd]
        env = {**self.env, "PORT": str(self.port)}
        with self.log_file.open("ab") as log:
            started = time.perf_counter()
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"{self.name} exited ({self.proc.returncode}); see {self.log_file}"
                )
            try:
                if post(self.url, probe, timeout=2)[0] == 200:
                    return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.01)
        self.stop()
        raise SystemExit(f"{self.name} did not answer within {timeout} s; see {self.log_file}")

    def pids(self) -> list[int]:
        assert self.proc is not None
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                children = task / "children"
                if children.exists():
                    todo += [int(p) for p in children.read_text().split()]
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time of the live process tree so far."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> dict[str, float]:
        rss = pss = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            except OSError:
                continue
        return {"rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1)}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def wrk(url: str, body_file: Path, connections: int, seconds: int, script: Path) -> dict:
    threads = min(connections, 2)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    proc = subprocess.run(
        [*cmd, "-s", str(script), url],
        capture_output=True,
        text=True,
        env={**os.environ, "WRK_BODY_FILE": str(body_file)},
        check=True,
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line.removeprefix("WRKJSON "))
    errors = sum(raw[k] for k in raw if k.endswith("_errors") or k == "timeouts")
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_ms"],
        "p99_ms": raw["p99_ms"],
        "requests": raw["requests"],
        "errors": errors,
    }


def timed_run(
    label: str,
    url: str,
    body_file: Path,
    connections: int,
    seconds: int,
    script: Path,
    server: Server | None = None,
) -> dict:
    """One wrk run, printed as a line of the round's log; with `server`, also the server's
    CPU time per request (steadier than req/s on a shared machine: another process taking
    the CPU lowers req/s but hardly the CPU each request costs)."""
    cpu = server.cpu_seconds() if server else 0.0
    result = wrk(url, body_file, connections, seconds, script)
    if server and result["requests"]:
        used = server.cpu_seconds() - cpu
        result["cpu_us_per_request"] = round(used / result["requests"] * 1e6, 1)
    print(
        f"{label} {result['rps']:9.1f} req/s  p50 {result['p50_ms']:8.2f} ms  "
        f"p99 {result['p99_ms']:8.2f} ms  errors {result['errors']}",
        flush=True,
    )
    return result


def drift_pairs(servers: dict, body: Path, pairs: int, seconds: int, script: Path) -> dict:
    """Drift tracking's cost, in back-to-back pairs of one-row runs of ours and nodrift at 1
    and 8 connections (the order alternating, ABBA), judged by the median of the pairs'
    ratios: neighbours in time share the machine's state, so this holds still where the
    medians of separate rounds moved by +-10 % on the quiet machine."""
    out: dict[str, Any] = {}
    for conns in (1, 8):
        ratios, cpu_ratios = [], []
        for p in range(pairs):
            order = ("ours", "nodrift") if p % 2 == 0 else ("nodrift", "ours")
            got = {
                name: timed_run(
                    f"drift pair {p + 1} {name:7} one   c{conns:<2}",
                    servers[name].url,
                    body,
                    conns,
                    seconds,
                    script,
                    servers[name],
                )
                for name in order
            }
            ratios.append(got["ours"]["rps"] / got["nodrift"]["rps"])
            cpu_ratios.append(
                got["ours"]["cpu_us_per_request"] / got["nodrift"]["cpu_us_per_request"]
            )
        out[f"c{conns}"] = {
            "rps_on_over_off": _median(ratios),
            "cpu_per_request_on_over_off": _median(cpu_ratios),
            "pair_rps_ratios": [round(x, 3) for x in ratios],
            "pair_cpu_ratios": [round(x, 3) for x in cpu_ratios],
        }
    return out


def mlflow_model_dir(run_id: str) -> Path:
    import mlflow

    from src.models.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    outputs = client.get_run(run_id).outputs.model_outputs
    if not outputs:
        raise SystemExit(f"MLflow run {run_id} logged no model")
    location = client.get_logged_model(outputs[0].model_id).artifact_location
    return Path(location.removeprefix("file://"))


def distinct_rows(frame: Any, n: int, schema: dict) -> list[dict]:
    """`n` records like the test set's, made distinct with a little noise on the numbers
    (a batch of repeated rows would flatter any server that caches or deduplicates)."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = frame.sample(n, replace=True, random_state=0).reset_index(drop=True)
    for f in schema["features"]:
        if f["type"] == "numeric":
            rows[f["name"]] = (rows[f["name"]] + rng.uniform(-0.5, 0.5, n)).round(2)
    return json.loads(rows.to_json(orient="records"))


def in_configured_copy(name: str, args: argparse.Namespace) -> int:
    """Configure a copy of the repo for dataset `name` as a fork would, `dvc repro` it
    (training logs its model to the copy's MLflow store), and run this benchmark there."""
    from tests.repo_tools import copy_repo, run, venv_env
    from tests.run_on_dataset import DATASETS, configure

    with tempfile.TemporaryDirectory(prefix=f"bench-serve-{name}-") as tmp:
        repo = copy_repo(Path(tmp) / "repo")
        env = venv_env(repo)
        configure(repo, DATASETS[name], env)
        run(["dvc", "repro"], repo, env)
        cmd = [sys.executable, "-m", "benchmarks.serve", "--rounds", str(args.rounds)]
        cmd += ["--seconds", str(args.seconds), "--out", str(args.out.resolve())]
        cmd += ["--drift-pairs", str(args.drift_pairs)]
        return subprocess.run(cmd, cwd=repo, env=env).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / "bench" / "serve.json")
    parser.add_argument(
        "--drift-pairs", type=int, default=6, help="ours/nodrift pairs at 1 and 8 connections"
    )
    parser.add_argument(
        "--dataset",
        help="a dataset of tests/run_on_dataset.py (e.g. diabetes, regression): benchmark "
        "it in a configured copy of the repo instead of the configured data",
    )
    args = parser.parse_args()
    if args.dataset:
        raise SystemExit(in_configured_copy(args.dataset, args))
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: run scripts/ci/install-system-deps.sh (apt wrk)")

    import joblib
    import pandas as pd

    from src.features.schema import to_model_frame

    bundle = joblib.load(MODEL_FILE)
    manifest = json.loads((SERVING_DIR / "model.json").read_text())
    if manifest["model"]["model_sha256"] != sha256_file(MODEL_FILE):
        raise SystemExit("models/serving is not the export of models/model.joblib: dvc repro")
    from src.models.tracking import run_id_for_sha

    run_id = run_id_for_sha(sha256_file(MODEL_FILE))
    if not run_id:
        raise SystemExit("no MLflow run is tagged with models/model.joblib's sha256: make repro")
    model_dir = mlflow_model_dir(run_id)

    test = pd.read_csv(ROOT / "data" / "processed" / "test.csv")
    frame = to_model_frame(test, bundle["schema"])
    complete = frame.dropna()
    if complete.empty:
        raise SystemExit("the test set has no row without nulls to benchmark with")
    record = json.loads(complete.head(1).to_json(orient="records"))[0]
    expected = bundle["pipeline"].predict(to_model_frame(pd.DataFrame([record]), bundle["schema"]))
    batch = distinct_rows(complete, BATCH_ROWS, bundle["schema"])

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    bodies = {
        ("ours", "one"): json.dumps(record),
        ("ours", "batch"): json.dumps({"instances": batch}),
        ("mlflow", "one"): json.dumps({"dataframe_records": [record]}),
        ("mlflow", "batch"): json.dumps({"dataframe_records": batch}),
    }
    files = {}
    for (kind, shape), text in bodies.items():
        files[kind, shape] = work / f"{kind}-{shape}.json"
        files[kind, shape].write_text(text)
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)

    venv_bin = str(Path(sys.executable).parent)
    base_env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    ours_env = {
        **base_env,
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": str(WORKERS),
        "MODEL_DIR": str(SERVING_DIR),
    }
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    servers = {
        "ours": Server("ours", gunicorn, ours_env, "/predict", work),
        "floor": Server("floor", gunicorn, {**ours_env, "CONSTANT_MODEL": "1"}, "/predict", work),
        "gthread": Server(
            "gthread", gunicorn, {**ours_env, "GUNICORN_WORKER_CLASS": "gthread"}, "/predict", work
        ),
        "nodrift": Server(
            "nodrift", gunicorn, {**ours_env, "DRIFT_TRACKING": "0"}, "/predict", work
        ),
        "mlflow": Server(
            "mlflow",
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                str(model_dir),
                "--env-manager",
                "local",
                "-w",
                str(WORKERS),
                "-h",
                "127.0.0.1",
                "-p",
                "{port}",
            ],
            base_env,
            "/invocations",
            work,
        ),
    }
    kind_of = {"ours": "ours", "floor": "ours", "gthread": "ours", "nodrift": "ours"}
    kind_of["mlflow"] = "mlflow"
    always_on = ("floor", "gthread")  # started once; ours, mlflow, nodrift every round
    scenarios = [("one", c) for c in ONE_ROW_CONNECTIONS] + [("batch", BATCH_CONNECTIONS)]
    runs: dict[str, list[dict]] = {}
    cold: dict[str, list[float]] = {"ours": [], "mlflow": []}
    memory: dict[str, dict] = {}
    print(f"model: {manifest['model']['model_type']}, MLflow model {model_dir}", flush=True)
    try:
        for r in range(-1, args.rounds):  # round -1: warm-up, not recorded
            for name in ("ours", "mlflow", "nodrift"):  # a fresh start every round
                servers[name].stop()
                started = servers[name].start(files[kind_of[name], "one"].read_bytes())
                if r >= 0 and name in cold:  # timed; nodrift restarts only to be as fresh
                    cold[name].append(started)  # as ours, which it is compared with
            for name in always_on:
                if servers[name].proc is None:
                    servers[name].start(files["ours", "one"].read_bytes())
            if r == -1:  # both answer the sample record as scikit-learn does in-process
                for name in ("ours", "mlflow"):
                    status, body = post(servers[name].url, files[name, "one"].read_bytes())
                    got = body["predictions"][0] if status == 200 else body
                    want = expected[0]
                    if isinstance(want, float) and isinstance(got, float):  # regression
                        same = abs(got - want) <= 1e-4 * max(1.0, abs(want))  # float32
                    else:
                        same = got == want
                    if status != 200 or not same:
                        raise SystemExit(f"{name} answered {status} {got}, sklearn {expected[0]}")
            names = ["ours", "mlflow", "floor", "gthread", "nodrift"]
            order = names[r % len(names) :] + names[: r % len(names)]
            for shape, conns in scenarios:
                for name in order:  # interleaved, the order rotating from round to round
                    if name == "floor" and shape == "batch":
                        continue
                    result = timed_run(
                        f"round {r + 1 if r >= 0 else 'warm-up'} {name:7} {shape:5} c{conns:<2}",
                        servers[name].url,
                        files[kind_of[name], shape],
                        conns,
                        args.seconds,
                        script,
                        servers[name],
                    )
                    if r >= 0:
                        runs.setdefault(f"{name}/{shape}/c{conns}", []).append(result)
        for name in ("ours", "mlflow"):
            memory[name] = servers[name].memory_mb()
        servers["mlflow"].stop()  # the pairs below have the machine to themselves
        drift = drift_pairs(servers, files["ours", "one"], args.drift_pairs, args.seconds, script)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary = summarize(runs, cold, memory, drift)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "model_type": manifest["model"]["model_type"],
        "workers": WORKERS,
        "rounds": args.rounds,
        "seconds_per_run": args.seconds,
        "load_generator": "wrk (keep-alive)",
        "mlflow_model": str(model_dir),
        **summary,
        "runs": runs,
    }
    write_json(args.out, result)
    print_table(result)
    print(f"written to {args.out}")


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarize(runs: dict, cold: dict, memory: dict, drift: dict) -> dict:
    medians = {
        key: {
            "rps": _median([x["rps"] for x in values]),
            "p50_ms": _median([x["p50_ms"] for x in values]),
            "p99_ms": _median([x["p99_ms"] for x in values]),
            "errors": sum(x["errors"] for x in values),
            "cpu_us_per_request": _median([x.get("cpu_us_per_request", 0.0) for x in values]),
        }
        for key, values in runs.items()
    }
    for key, m in medians.items():
        if "/batch/" in key:
            m["rows_per_s"] = round(m["rps"] * BATCH_ROWS, 1)
    ours, ml, floor = "ours/one/c{}", "mlflow/one/c{}", "floor/one/c{}"
    batch = f"/batch/c{BATCH_CONNECTIONS}"
    ratios = {
        "rps_c1_vs_mlflow": medians[ours.format(1)]["rps"] / medians[ml.format(1)]["rps"],
        "rps_c8_vs_mlflow": medians[ours.format(8)]["rps"] / medians[ml.format(8)]["rps"],
        "rps_c32_vs_mlflow": medians[ours.format(32)]["rps"] / medians[ml.format(32)]["rps"],
        "p99_c8_vs_mlflow": medians[ours.format(8)]["p99_ms"] / medians[ml.format(8)]["p99_ms"],
        "batch_rows_vs_mlflow": medians["ours" + batch]["rps"] / medians["mlflow" + batch]["rps"],
        "rps_c8_vs_own_floor": medians[ours.format(8)]["rps"] / medians[floor.format(8)]["rps"],
        **{
            f"rps_c{c}_vs_gthread": medians[ours.format(c)]["rps"]
            / medians[f"gthread/one/c{c}"]["rps"]
            for c in ONE_ROW_CONNECTIONS
        },
        "batch_rows_vs_gthread": medians["ours" + batch]["rps"] / medians["gthread" + batch]["rps"],
        # drift tracking on (ours) vs off (nodrift): its cost per request
        "rps_c1_vs_drift_off": medians[ours.format(1)]["rps"] / medians["nodrift/one/c1"]["rps"],
        "rps_c8_vs_drift_off": medians[ours.format(8)]["rps"] / medians["nodrift/one/c8"]["rps"],
        **{
            f"cpu_per_request_c{c}_drift_on_over_off": medians[ours.format(c)]["cpu_us_per_request"]
            / medians[f"nodrift/one/c{c}"]["cpu_us_per_request"]
            for c in (1, 8)
        },
    }
    ratios = {k: round(v, 3) for k, v in ratios.items()}
    cold_s = {k: _median(v) for k, v in cold.items()}
    targets = {
        "rps_c8_vs_mlflow >= 10": ratios["rps_c8_vs_mlflow"] >= 10,
        "rps_c32_vs_mlflow >= 10": ratios["rps_c32_vs_mlflow"] >= 10,
        "p99_c8_vs_mlflow <= 0.1": ratios["p99_c8_vs_mlflow"] <= 0.1,
        "batch_rows_vs_mlflow >= 5": ratios["batch_rows_vs_mlflow"] >= 5,
        "rps_c8_vs_own_floor >= 0.5": ratios["rps_c8_vs_own_floor"] >= 0.5,
        "drift on/off one-row rps c1 >= 0.95 (median of pairs)": drift["c1"]["rps_on_over_off"]
        >= 0.95,
        "drift on/off one-row rps c8 >= 0.95 (median of pairs)": drift["c8"]["rps_on_over_off"]
        >= 0.95,
        "cold_start_s <= 2": cold_s["ours"] <= 2,
        "rss_mb <= 300": memory["ours"]["rss_mb"] <= 300,
        "rps_c8_vs_gthread >= 0.95": ratios["rps_c8_vs_gthread"] >= 0.95,
        "rps_c32_vs_gthread >= 0.95": ratios["rps_c32_vs_gthread"] >= 0.95,
        "batch_rows_vs_gthread >= 0.95": ratios["batch_rows_vs_gthread"] >= 0.95,
        "zero errors": all(
            m["errors"] == 0 for k, m in medians.items() if k.startswith(("ours", "gthread"))
        ),
    }
    return {
        "medians": medians,
        "ratios": ratios,
        "cold_start_s": cold_s,
        "cold_start_runs_s": {k: [round(x, 3) for x in v] for k, v in cold.items()},
        "memory": memory,
        "drift_pairs": drift,
        "targets_met": targets,
    }


def _row(label: str, *cells: str) -> str:
    return f"{label:<24}" + "".join(f"{c:>12}" for c in cells)


def print_table(result: dict) -> None:
    m, r = result["medians"], result["ratios"]
    print()
    print(
        f"Serving benchmark: {result['model_type']}, {result['workers']} workers, "
        f"{result['rounds']} interleaved rounds x {result['seconds_per_run']} s, medians"
    )
    print(_row("scenario", "ours", "mlflow", "floor", "ours/mlflow"))
    for c in ONE_ROW_CONNECTIONS:
        o, ml, fl = m[f"ours/one/c{c}"], m[f"mlflow/one/c{c}"], m[f"floor/one/c{c}"]
        ratio = f"{o['rps'] / ml['rps']:.1f}x"
        print(_row(f"1 row c{c}: req/s", *(f"{x['rps']:.1f}" for x in (o, ml, fl)), ratio))
        print(_row(f"1 row c{c}: p50 ms", *(f"{x['p50_ms']:.2f}" for x in (o, ml, fl))))
        ratio = f"{o['p99_ms'] / ml['p99_ms']:.3f}x"
        print(_row(f"1 row c{c}: p99 ms", *(f"{x['p99_ms']:.2f}" for x in (o, ml, fl)), ratio))
    b = f"/batch/c{BATCH_CONNECTIONS}"
    ours_rows, ml_rows = m["ours" + b]["rows_per_s"], m["mlflow" + b]["rows_per_s"]
    ratio = f"{r['batch_rows_vs_mlflow']:.1f}x"
    print(_row(f"{BATCH_ROWS}-row batch: rows/s", f"{ours_rows:.0f}", f"{ml_rows:.0f}", "", ratio))
    cs, mem = result["cold_start_s"], result["memory"]
    print(_row("cold start s", f"{cs['ours']:.2f}", f"{cs['mlflow']:.2f}"))
    for key in ("rss_mb", "pss_mb"):
        print(
            _row(
                f"total {key[:3].upper()} MB",
                f"{mem['ours'][key]:.1f}",
                f"{mem['mlflow'][key]:.1f}",
            )
        )
    print(f"own floor: ours/floor at c8 = {r['rps_c8_vs_own_floor']:.2f}")
    print(
        "gevent (default) / gthread: "
        + ", ".join(f"1 row c{c} {r[f'rps_c{c}_vs_gthread']:.2f}" for c in ONE_ROW_CONNECTIONS)
        + f", batch {r['batch_rows_vs_gthread']:.2f}"
    )
    print(
        f"drift tracking on/off, rounds: c1 = {r['rps_c1_vs_drift_off']:.3f}, "
        f"c8 = {r['rps_c8_vs_drift_off']:.3f}; CPU per request on/off: c1 = "
        f"{r['cpu_per_request_c1_drift_on_over_off']:.3f}, "
        f"c8 = {r['cpu_per_request_c8_drift_on_over_off']:.3f}"
    )
    d = result["drift_pairs"]
    print(
        "drift tracking on/off, median of back-to-back pairs: "
        + ", ".join(
            f"{c}: req/s {d[c]['rps_on_over_off']:.3f}, CPU/request "
            f"{d[c]['cpu_per_request_on_over_off']:.3f}"
            for c in ("c1", "c8")
        )
    )
    for target, ok in result["targets_met"].items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {target}")


if __name__ == "__main__":
    main()
