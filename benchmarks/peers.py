"""Peer serving benchmark: `make bench-peers` -> reports/bench/peers.json + a table.

Ours (gunicorn -c gunicorn.conf.py serving models/serving, ONNX) against the servers a team
would pick instead, each in its own venv (created on first use, pip from PyPI), all on the
same fitted pipeline (models/model.joblib's), 2 workers each, loopback, side by side:
  * mlserver - Seldon MLServer 1.7.1, scikit-learn runtime, V2 protocol, pandas codec;
  * bentoml  - BentoML 1.4, a generated service predicting from a JSON list of records.
Each must answer one record as scikit-learn does in-process. wrk then measures one-row
req/s and p50/p99 at 1 and 8 connections and 1000-row batch rows/s at 4 connections, in
interleaved rounds; the table shows medians and ratios ours/peer. The served model's
in-process batch rate is measured in each round too, interleaved with the HTTP runs (so both
see the same machine): WORKERS processes at once, each calling ServingModel.predict on the
same 1000 checked records for --seconds; their summed rows/s is what 2 workers could do
with no HTTP, JSON or checking. Ours over HTTP is reported as a share of it (medians).
A first, unrecorded round warms every server up. Every run also records the server's CPU
time per request. After the rounds, each step /predict takes for the batch is timed
in-process (decode, check, drift, model, encode: the share they leave with a free HTTP
stack), and a constant-answer copy of ours (CONSTANT_MODEL=1) gives the HTTP stack's own CPU
per batch request. `--peers ''` runs ours alone.

Targets: p99 at 8 connections <= 1/10 of every peer's; HTTP batch rows/s >= 85 % of
in-process. A peer that cannot be installed or started is reported, not benchmarked.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.serve import WRK_SCRIPT, Server, distinct_rows, post, timed_run
from src.config import MODEL_FILE, REPORTS_DIR, ROOT
from tests.repo_tools import free_port

WORKERS = 2
ONE_ROW_CONNECTIONS = (1, 8)
BATCH_ROWS = 1000
BATCH_CONNECTIONS = 4
VENV_ROOT = Path(os.environ.get("PEER_VENV_ROOT", "/tmp"))

BENTO_SERVICE = """\
import os

import bentoml
import joblib
import pandas as pd


@bentoml.service(workers={workers}, logging={{"access": {{"enabled": False}}}})
class Pipeline:
    def __init__(self) -> None:
        self.pipeline = joblib.load(os.environ["PEER_PIPELINE"])

    @bentoml.api
    def predict(self, records: list[dict]) -> list:
        return self.pipeline.predict(pd.DataFrame.from_records(records)).tolist()
"""


def pins() -> dict[str, str]:
    """scikit-learn, pandas and joblib as pinned in requirements.txt."""
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        spec = line.split("#")[0].strip()
        name, _, version = spec.partition("==")
        if name.lower() in ("scikit-learn", "pandas", "joblib", "pyyaml"):
            out[name] = version
    return out


def ensure_venv(path: Path, packages: list[str]) -> None:
    """Create (or reuse, if it was made for the same packages) a venv; raise on failure."""
    stamp = path / ".peer-packages"
    wanted = "\n".join(packages)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    if not (path / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    print(f"installing into {path}: {' '.join(packages)}", flush=True)
    proc = subprocess.run(
        [str(path / "bin" / "pip"), "install", "--quiet", *packages],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if proc.returncode:
        raise RuntimeError(f"pip install failed: {proc.stderr.strip()[-800:]}")
    stamp.write_text(wanted)


def v2_body(records: list[dict], schema: dict) -> dict:
    """A V2 inference request, pandas codec: one input per feature column."""
    inputs = []
    for f in schema["features"]:
        column = [r[f["name"]] for r in records]
        if f["type"] == "numeric":
            inputs.append(
                {"name": f["name"], "shape": [len(records)], "datatype": "FP64", "data": column}
            )
        else:
            inputs.append(
                {
                    "name": f["name"],
                    "shape": [len(records)],
                    "datatype": "BYTES",
                    "parameters": {"content_type": "str"},
                    "data": column,
                }
            )
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def first_prediction(name: str, body: Any) -> Any:
    if name == "ours":
        return body["predictions"][0]
    if name == "mlserver":
        return body["outputs"][0]["data"][0]
    return body[0]  # bentoml


def same_answer(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, float):
        return abs(got - want) <= 1e-4 * max(1.0, abs(want))
    return got == want


PEERS = ("mlserver", "bentoml")


def make_peers(
    work: Path, pipeline_file: Path, logdir: Path, wanted: tuple[str, ...] = PEERS
) -> tuple[dict, dict]:
    """(servers, reasons a peer is unavailable) of the `wanted` peers."""
    p = pins()
    common = [f"{k}=={v}" for k, v in p.items()]
    # The pipeline pickles a src.* transformer (Float32): peers import it from the repo.
    peer_env = {**os.environ, "PYTHONPATH": str(ROOT), "PEER_PIPELINE": str(pipeline_file)}
    servers: dict[str, Server] = {}
    unavailable: dict[str, str] = {}

    venv = VENV_ROOT / "peer-mlserver"
    try:
        if "mlserver" not in wanted:
            raise OSError("left out (--peers)")
        ensure_venv(venv, ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22", *common])
        model_dir = work / "mlserver" / "pipeline"
        model_dir.mkdir(parents=True)
        (model_dir / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": "pipeline",
                    "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": str(pipeline_file)},
                }
            )
        )
        (work / "mlserver" / "settings.json").write_text(
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "parallel_workers": WORKERS,
                    "metrics_endpoint": None,
                    "debug": False,
                }
            )
        )
        env = {
            **peer_env,
            "MLSERVER_GRPC_PORT": str(free_port()),
            "MLSERVER_METRICS_PORT": str(free_port()),
        }
        cmd = ["env", "MLSERVER_HTTP_PORT={port}", str(venv / "bin" / "mlserver")]
        cmd += ["start", str(work / "mlserver")]
        servers["mlserver"] = Server("mlserver", cmd, env, "/v2/models/pipeline/infer", logdir)
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        unavailable["mlserver"] = str(exc)

    venv = VENV_ROOT / "peer-bentoml"
    try:
        if "bentoml" not in wanted:
            raise OSError("left out (--peers)")
        ensure_venv(venv, ["bentoml==1.4.40", *common])
        service_dir = work / "bentoml"
        service_dir.mkdir()
        (service_dir / "service.py").write_text(BENTO_SERVICE.format(workers=WORKERS))
        env = {**peer_env, "BENTOML_HOME": str(work / "bentoml-home"), "BENTOML_DO_NOT_TRACK": "1"}
        cmd = [str(venv / "bin" / "bentoml"), "serve", "service:Pipeline"]
        cmd += ["--working-dir", str(service_dir), "--host", "127.0.0.1", "--port", "{port}"]
        servers["bentoml"] = Server("bentoml", cmd, env, "/predict", logdir)
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        unavailable["bentoml"] = str(exc)
    return servers, unavailable


def in_process_worker(serving_dir: Path, batch_file: Path, start_at: float, seconds: float) -> None:
    """One process of the in-process measurement: predict on the checked batch from
    `start_at` (a time.time() shared by every process) for `seconds`; print rows and time."""
    from flask_app.contract import RecordChecker
    from src.serving.model import ServingModel

    model = ServingModel.load(serving_dir)
    batch = json.loads(batch_file.read_text())
    records, _ = RecordChecker(model.schema, max_batch=len(batch)).records({"instances": batch})
    model.predict(records)  # warm
    time.sleep(max(0.0, start_at - time.time()))
    rows, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        model.predict(records)
        rows += len(batch)
    print(json.dumps({"rows": rows, "seconds": elapsed}), flush=True)


def stage_times(serving_dir: Path, batch_file: Path, reps: int = 300) -> dict[str, float]:
    """Median ms of each step /predict takes for the 1000-record batch, in-process (no
    HTTP): what the answer costs beyond the model even with a free HTTP stack. Run in
    WORKERS processes at once (stages_worker), as the server's workers and the in-process
    rate run: on this machine one process alone runs each step ~1.4x faster."""
    got = at_once("--stages-worker", [serving_dir, batch_file], reps, timeout=600)
    return {k: round(statistics.median(g[k] for g in got), 4) for k in got[0]}


def stages_worker(serving_dir: Path, batch_file: Path, start_at: float, reps: int) -> None:
    """One process of stage_times: print {step: median ms}."""
    import orjson
    from prometheus_client import CollectorRegistry

    from flask_app import _row_dicts, encode_classification
    from flask_app.contract import RecordChecker, decode_json
    from flask_app.drift import DriftMonitor, load_reference
    from src.serving.model import ServingModel

    model = ServingModel.load(serving_dir)
    body = json.dumps({"instances": json.loads(batch_file.read_text())}).encode()
    checker = RecordChecker(model.schema, max_batch=BATCH_ROWS)
    monitor = DriftMonitor(
        load_reference(model.source, model.manifest), CollectorRegistry(), False, 0, 1.0
    )
    payload = decode_json(body)
    checked = checker.check(payload)
    n = len(checked.records)
    labels, proba = model.predict_columns(checked.columns, n)
    row_dicts = _row_dicts(model.classes)

    def encode() -> bytes:
        if model.is_classifier:
            return encode_classification(row_dicts, labels, proba)
        return orjson.dumps({"predictions": labels})

    steps = {
        "decode": lambda: decode_json(body),
        "check": lambda: checker.check(payload),
        "drift": lambda: monitor.observe(checked.records, checked.columns),
        "predict_columns": lambda: model.predict_columns(checked.columns, n),
        "encode": encode,
        "predict_records": lambda: model.predict(checked.records),
    }
    time.sleep(max(0.0, start_at - time.time()))
    out = {}
    for name, step in steps.items():
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        out[name] = statistics.median(times) * 1e3
    print(json.dumps(out), flush=True)


def in_process_rows_per_s(serving_dir: Path, batch_file: Path, seconds: float) -> float:
    """WORKERS in-process predictors at once (as many as the server's workers); summed
    rows/s."""
    got = at_once("--in-process-worker", [serving_dir, batch_file], seconds, seconds + 120)
    return sum(g["rows"] / g["seconds"] for g in got)


def at_once(flag: str, paths: list[Path], amount: float, timeout: float) -> list[dict]:
    """Run `python -m benchmarks.peers FLAG PATHS... START_AT AMOUNT` in WORKERS processes
    that start their work together at START_AT (after each has loaded the model); the JSON
    each prints last."""
    start_at = time.time() + 3.0
    cmd = [sys.executable, "-m", "benchmarks.peers", flag, *map(str, paths)]
    cmd += [str(start_at), str(amount)]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(WORKERS)
    ]
    got = []
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise SystemExit(f"benchmarks.peers {flag} exited {proc.returncode}")
        got.append(json.loads(out.strip().splitlines()[-1]))
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--model", type=Path, default=MODEL_FILE)
    parser.add_argument("--serving-dir", type=Path, default=ROOT / "models" / "serving")
    parser.add_argument("--test", type=Path, default=ROOT / "data" / "processed" / "test.csv")
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / "bench" / "peers.json")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="comma-separated peers to run (default: all); '' for ours and in-process only",
    )
    parser.add_argument("--in-process-worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--stages-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages_worker:
        serving_dir, batch_file, start_at, reps = args.stages_worker
        stages_worker(Path(serving_dir), Path(batch_file), float(start_at), int(reps))
        return
    if args.in_process_worker:
        serving_dir, batch_file, start_at, seconds = args.in_process_worker
        in_process_worker(Path(serving_dir), Path(batch_file), float(start_at), float(seconds))
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: run scripts/ci/install-system-deps.sh (apt wrk)")
    wall = time.perf_counter()

    import joblib
    import pandas as pd

    from src.features.schema import to_model_frame
    from src.utils import write_json

    bundle = joblib.load(args.model)
    schema = bundle["schema"]
    test = pd.read_csv(args.test)
    complete = to_model_frame(test, schema).dropna()
    if complete.empty:
        raise SystemExit("the test set has no row without nulls to benchmark with")
    record = json.loads(complete.head(1).to_json(orient="records"))[0]
    expected = bundle["pipeline"].predict(to_model_frame(pd.DataFrame([record]), schema))[0]
    expected = expected.item() if hasattr(expected, "item") else expected
    batch = distinct_rows(complete, BATCH_ROWS, schema)

    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    logdir = REPORTS_DIR / "bench" / "peers-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    pipeline_file = work / "pipeline.joblib"
    joblib.dump(bundle["pipeline"], pipeline_file)
    bodies = {
        ("ours", "one"): record,
        ("ours", "batch"): {"instances": batch},
        ("mlserver", "one"): v2_body([record], schema),
        ("mlserver", "batch"): v2_body(batch, schema),
        ("bentoml", "one"): {"records": [record]},
        ("bentoml", "batch"): {"records": batch},
    }
    files = {}
    for (name, shape), body in bodies.items():
        files[name, shape] = work / f"{name}-{shape}.json"
        files[name, shape].write_text(json.dumps(body))
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)

    venv_bin = str(Path(sys.executable).parent)
    ours_env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": str(WORKERS),
        "MODEL_DIR": str(args.serving_dir),
        "ACCESS_LOG": "",
    }
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    servers = {"ours": Server("ours", gunicorn, ours_env, "/predict", logdir)}
    wanted = tuple(p for p in args.peers.split(",") if p)
    if set(wanted) - set(PEERS):
        raise SystemExit(f"--peers: unknown {sorted(set(wanted) - set(PEERS))}; known: {PEERS}")
    peers, unavailable = make_peers(work, pipeline_file, logdir, wanted)
    servers.update(peers)

    runs: dict[str, list[dict]] = {}
    checks: dict[str, Any] = {}
    processes: dict[str, int] = {}
    scenarios = [("one", c) for c in ONE_ROW_CONNECTIONS] + [("batch", BATCH_CONNECTIONS)]
    try:
        for name in list(servers):
            try:
                servers[name].start(files[name, "one"].read_bytes())
                status, body = post(servers[name].url, files[name, "one"].read_bytes())
                got = first_prediction(name, body) if status == 200 else body
                checks[name] = {"status": status, "got": got, "sklearn": expected}
                if status != 200 or not same_answer(got, expected):
                    raise SystemExit(f"answered {status} {got}, scikit-learn {expected}")
                status, body = post(servers[name].url, files[name, "batch"].read_bytes(), 30)
                if status != 200:
                    raise SystemExit(f"batch answered {status} {str(body)[:300]}")
            except SystemExit as exc:
                if name == "ours":
                    raise
                unavailable[name] = f"start/check failed: {exc}"
                servers.pop(name).stop()
            if name in servers:
                processes[name] = len(servers[name].pids())
            print(f"{name}: {checks.get(name)}, processes {processes.get(name)}", flush=True)
        names = list(servers)
        batch_file = work / "batch-records.json"
        batch_file.write_text(json.dumps(batch))
        in_process_runs: list[float] = []
        for r in range(-1, args.rounds):  # round -1: warm-up, not recorded
            order = names[r % len(names) :] + names[: r % len(names)]
            rate = in_process_rows_per_s(args.serving_dir, batch_file, args.seconds)
            print(f"round {r + 1 if r >= 0 else 'warm-up'} in-process {rate:9.0f} rows/s")
            if r >= 0:
                in_process_runs.append(rate)
            for shape, conns in scenarios:
                for name in order:  # interleaved, the order rotating from round to round
                    result = timed_run(
                        f"round {r + 1 if r >= 0 else 'warm-up'} {name:8} {shape:5} c{conns:<2}",
                        servers[name].url,
                        files[name, shape],
                        conns,
                        args.seconds,
                        script,
                        servers[name],
                    )
                    if r >= 0:
                        runs.setdefault(f"{name}/{shape}/c{conns}", []).append(result)
        for server in servers.values():  # the machine to itself for the step timings
            server.stop()
        stages = stage_times(args.serving_dir, batch_file)
        # the same server with a constant answer (no model): its CPU per batch request is
        # the HTTP stack's plus the steps above but the model's
        floor = Server("floor", gunicorn, {**ours_env, "CONSTANT_MODEL": "1"}, "/predict", logdir)
        floor.start(files["ours", "one"].read_bytes())
        floor_run = timed_run(
            f"floor    batch c{BATCH_CONNECTIONS}",
            floor.url,
            files["ours", "batch"],
            BATCH_CONNECTIONS,
            args.seconds,
            script,
            floor,
        )
        floor.stop()
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    beyond = sum(stages[k] for k in ("decode", "check", "drift", "predict_columns", "encode"))
    in_process = {
        "stages_ms": stages,
        # the share over HTTP if the HTTP stack cost nothing: the model's own time over the
        # time of everything /predict does in-process
        "share_ceiling_without_http": round(stages["predict_records"] / beyond, 3),
        "floor_cpu_ms_per_batch_request": round(floor_run["cpu_us_per_request"] / 1000, 3),
        # CPU the HTTP stack (gunicorn, gevent, werkzeug, Flask, sockets) takes per batch
        "http_stack_cpu_ms_per_batch_request": round(
            floor_run["cpu_us_per_request"] / 1000
            - sum(stages[k] for k in ("decode", "check", "drift", "encode")),
            3,
        ),
        "processes": WORKERS,
        "rows_per_s": round(statistics.median(in_process_runs), 1),
        "runs_rows_per_s": [round(x, 1) for x in in_process_runs],
    }
    medians = {
        key: {
            "rps": round(statistics.median(x["rps"] for x in v), 3),
            "p50_ms": round(statistics.median(x["p50_ms"] for x in v), 3),
            "p99_ms": round(statistics.median(x["p99_ms"] for x in v), 3),
            "errors": sum(x["errors"] for x in v),
            "cpu_us_per_request": round(
                statistics.median(x.get("cpu_us_per_request", 0.0) for x in v), 1
            ),
        }
        for key, v in runs.items()
    }
    for key, m in medians.items():
        if "/batch/" in key:
            m["rows_per_s"] = round(m["rps"] * BATCH_ROWS, 1)
    peer_names = [n for n in names if n != "ours"]
    ratios: dict[str, dict[str, float]] = {}
    for peer in peer_names:
        ratios[peer] = {
            **{
                f"rps_c{c}": medians[f"ours/one/c{c}"]["rps"] / medians[f"{peer}/one/c{c}"]["rps"]
                for c in ONE_ROW_CONNECTIONS
            },
            **{
                f"p99_c{c}": medians[f"ours/one/c{c}"]["p99_ms"]
                / medians[f"{peer}/one/c{c}"]["p99_ms"]
                for c in ONE_ROW_CONNECTIONS
            },
            "batch_rows": medians[f"ours/batch/c{BATCH_CONNECTIONS}"]["rps"]
            / medians[f"{peer}/batch/c{BATCH_CONNECTIONS}"]["rps"],
        }
        ratios[peer] = {k: round(v, 3) for k, v in ratios[peer].items()}
    ours_rows = medians[f"ours/batch/c{BATCH_CONNECTIONS}"]["rows_per_s"]
    share = round(ours_rows / in_process["rows_per_s"], 3)
    targets = {f"p99_c8 <= 0.1 x {peer}": ratios[peer]["p99_c8"] <= 0.1 for peer in peer_names}
    targets[f"batch rows/s >= 0.85 x in-process ({WORKERS} processes)"] = share >= 0.85
    targets["zero errors (ours)"] = all(
        m["errors"] == 0 for k, m in medians.items() if k.startswith("ours/")
    )
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "workers": WORKERS,
        "rounds": args.rounds,
        "seconds_per_run": args.seconds,
        "load_generator": "wrk (keep-alive)",
        "model": str(args.model),
        "serving_dir": str(args.serving_dir),
        "peers": peer_names,
        "unavailable": unavailable,
        "checks": checks,
        "processes": processes,
        "medians": medians,
        "ratios_ours_over_peer": ratios,
        "in_process": in_process,
        "batch_share_of_in_process": share,
        "targets_met": targets,
        "wall_s": round(time.perf_counter() - wall, 1),
        "runs": runs,
    }
    write_json(args.out, result)
    print_table(result, names)
    print(f"written to {args.out} (server logs in {logdir})")


def _row(label: str, *cells: str) -> str:
    return f"{label:<22}" + "".join(f"{c:>14}" for c in cells)


def print_table(result: dict, names: list[str]) -> None:
    m, ratios = result["medians"], result["ratios_ours_over_peer"]
    peers = [n for n in names if n != "ours"]
    print()
    print(
        f"Peer serving benchmark: {result['workers']} workers, {result['rounds']} interleaved "
        f"rounds x {result['seconds_per_run']} s, medians"
    )
    print(_row("scenario", *names, *(f"ours/{p}" for p in peers)))
    for c in ONE_ROW_CONNECTIONS:
        for key, label, fmt in (("rps", "req/s", "{:.1f}"), ("p50_ms", "p50 ms", "{:.2f}")):
            cells = [fmt.format(m[f"{n}/one/c{c}"][key]) for n in names]
            extra = [f"{ratios[p][f'rps_c{c}']:.2f}x" for p in peers] if key == "rps" else []
            print(_row(f"1 row c{c}: {label}", *cells, *extra))
        cells = [f"{m[f'{n}/one/c{c}']['p99_ms']:.2f}" for n in names]
        print(
            _row(f"1 row c{c}: p99 ms", *cells, *(f"{ratios[p][f'p99_c{c}']:.3f}x" for p in peers))
        )
    b = f"/batch/c{BATCH_CONNECTIONS}"
    cells = [f"{m[n + b]['rows_per_s']:.0f}" for n in names]
    print(
        _row(
            f"{BATCH_ROWS}-row c{BATCH_CONNECTIONS}: rows/s",
            *cells,
            *(f"{ratios[p]['batch_rows']:.2f}x" for p in peers),
        )
    )
    ip = result["in_process"]
    print(
        f"in-process: {ip['rows_per_s']:.0f} rows/s ({ip['processes']} processes at once); "
        "ours over HTTP = "
        f"{result['batch_share_of_in_process']:.1%} of it"
    )
    st = ip["stages_ms"]
    print(
        "per batch in-process, ms: "
        + ", ".join(f"{k} {v:.3f}" for k, v in st.items())
        + f"; the share could be at most {ip['share_ceiling_without_http']:.1%} with a free "
        f"HTTP stack, which takes {ip['http_stack_cpu_ms_per_batch_request']:.2f} ms of CPU a "
        "request (the constant-answer server's CPU per batch request less those steps)"
    )
    for name, why in result["unavailable"].items():
        print(f"  [N/A ] {name}: {why[:200]}")
    for target, ok in result["targets_met"].items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {target}")


if __name__ == "__main__":
    main()
