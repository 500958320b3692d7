"""The HTTP half of scripts/docker/smoke.sh: a running predictor against scikit-learn.

    python scripts/docker/smoke_check.py URL [--model models/model.joblib]
        [--data data/processed/test.csv] [--tolerance 1e-5] [--model-sha256 HEX] [--out FILE]

Checks GET /health, GET /ready, GET /metadata (its model_sha256 must be --model-sha256, the
image's label), POST /predict with one record and with every record of --data as a batch
(classification: labels equal to the pipeline's scikit-learn model's in-process
prediction, every class probability within --tolerance; regression: every value within
--tolerance of scikit-learn's, relative to the predictions' standard deviation), that
rows with categories unseen in training get what `features.unknown_categories` promises
(scored when ignore, a 422 naming the field when reject), that a bad record gets a
4xx JSON error, that GET /drift counted the records posted, and that GET /metrics parses
as Prometheus text (prometheus_client's own parser) with
mloperation_requests_total{endpoint="/predict"} up by exactly the /predict calls made here
and mloperation_model_info naming the served model. Runs on the
host with the project's venv (pandas, scikit-learn); needs the repo root on sys.path.
Prints one line per check; exits 1 naming the first failure; --out gets a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.features.schema import NUMERIC, to_model_frame, unknown_category_rows
from src.models.artifact import load_model, predict
from src.utils import load_params

MAX_BATCH = 500  # well under the server's default limit (1000 records)


class SmokeFailure(Exception):
    pass


PREDICT_CALLS = 0  # POST /predict requests made by this check (compared with /metrics)


DRIFT_WAIT_SECONDS = 5.0  # for GET /drift to count the records posted (other workers' too)


def call(url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any, float]:
    """(status, decoded JSON body, seconds) of GET (body None) or POST of JSON."""
    global PREDICT_CALLS
    data = None if body is None else json.dumps(body).encode()
    if url.endswith("/predict"):
        PREDICT_CALLS += 1
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise SmokeFailure(f"{url}: no answer ({exc})") from None
    elapsed = time.perf_counter() - start
    try:
        return status, json.loads(raw), elapsed
    except ValueError:
        raise SmokeFailure(f"{url}: HTTP {status}, body is not JSON: {raw[:200]!r}") from None


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def records_of(frame: pd.DataFrame, schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows as a client sends them: JSON numbers, category strings, null when missing."""
    model_frame = to_model_frame(frame, schema)
    kinds = {f["name"]: f["type"] for f in schema["features"]}
    records = []
    for row in model_frame.to_dict(orient="records"):
        record: dict[str, Any] = {}
        for name, value in row.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                record[name] = None
            else:
                record[name] = float(value) if kinds[name] == NUMERIC else str(value)
        records.append(record)
    return records


def compare(
    answer: Any, labels: list[str], proba: pd.DataFrame, tolerance: float, what: str
) -> float:
    """Check a /predict answer against scikit-learn's; return the largest probability gap."""
    expect(isinstance(answer, dict), f"{what}: answer is not a JSON object: {answer!r}")
    predictions, probabilities = answer.get("predictions"), answer.get("probabilities")
    expect(
        isinstance(predictions, list) and len(predictions) == len(labels),
        f"{what}: expected {len(labels)} predictions, got {predictions!r}",
    )
    expect(
        isinstance(probabilities, list) and len(probabilities) == len(labels),
        f"{what}: expected {len(labels)} probability maps, got {str(probabilities)[:200]}",
    )
    worst = 0.0
    classes = list(proba.columns)
    for i, (got, want) in enumerate(zip(predictions, labels, strict=True)):
        expect(str(got) == str(want), f"{what}: row {i} predicted {got!r}, scikit-learn {want!r}")
        served = probabilities[i]
        expect(
            isinstance(served, dict) and sorted(served) == sorted(classes),
            f"{what}: row {i} probabilities {served!r} do not name the classes {classes}",
        )
        for cls in classes:
            gap = abs(float(served[cls]) - float(proba.iloc[i][cls]))
            worst = max(worst, gap)
            expect(
                gap <= tolerance,
                f"{what}: row {i} P({cls}) = {served[cls]} vs scikit-learn "
                f"{proba.iloc[i][cls]:.8f}: differs by {gap:.3g} > {tolerance:g}",
            )
    return worst


def compare_values(
    answer: Any, expected: np.ndarray, tolerance: float, scale: float, what: str
) -> float:
    """Check a regression /predict answer; return the largest gap relative to `scale`."""
    expect(isinstance(answer, dict), f"{what}: answer is not a JSON object: {answer!r}")
    predictions = answer.get("predictions")
    expect(
        isinstance(predictions, list) and len(predictions) == len(expected),
        f"{what}: expected {len(expected)} predictions, got {str(predictions)[:200]}",
    )
    expect("probabilities" not in answer, f"{what}: a regression answer has no probabilities")
    worst = 0.0
    for i, (got, want) in enumerate(zip(predictions, expected, strict=True)):
        expect(isinstance(got, int | float), f"{what}: row {i} predicted {got!r}, not a number")
        gap = abs(float(got) - float(want)) / scale
        worst = max(worst, gap)
        expect(
            gap <= tolerance,
            f"{what}: row {i} predicted {got} vs scikit-learn {want:.8g}: differs by "
            f"{gap:.3g} of the predictions' std > {tolerance:g}",
        )
    return worst


def scrape(base: str) -> dict[str, Any]:
    """GET /metrics, parsed with prometheus_client's parser (a scraper's view): the
    /predict request count summed over statuses, and the model_info labels."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"{base}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status, text = response.status, response.read().decode()
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
        raise SmokeFailure(f"{url}: no answer ({exc})") from None
    expect(status == 200, f"{url}: HTTP {status}")
    predict, info = 0.0, None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "mloperation_requests_total"
                    and sample.labels.get("endpoint") == "/predict"
                ):
                    predict += sample.value
                elif sample.name == "mloperation_model_info":
                    info = sample.labels
    except ValueError as exc:
        raise SmokeFailure(f"{url}: not valid Prometheus text: {exc}") from None
    expect(info is not None, f"{url}: no mloperation_model_info sample")
    return {"predict_requests": predict, "model_info": info}


def check_unknown_categories(base: str, bundle: dict[str, Any], frame: pd.DataFrame) -> str:
    """Rows with categories unseen in training must get the policy's answer."""
    schema = bundle["schema"]
    policy = schema.get("unknown_categories", "reject")
    categorical = [f for f in schema["features"] if f["type"] != NUMERIC]
    if not categorical:
        return "no categorical features"
    record = records_of(frame.head(1), schema)[0]
    record[categorical[0]["name"]] = "(smoke test: a category never seen in training)"
    status, answer, _ = call(f"{base}/predict", record)
    if policy == "reject":
        expect(
            status == 422 and categorical[0]["name"] in json.dumps(answer),
            f"unseen category with unknown_categories: reject: expected a 422 naming "
            f"{categorical[0]['name']!r}, got {status} {str(answer)[:200]}",
        )
    else:
        expect(
            status == 200 and len(answer.get("predictions", [])) == 1,
            f"unseen category with unknown_categories: ignore: expected 200, got {status} "
            f"{str(answer)[:200]}",
        )
    return f"{policy}: {status}"


def run_checks(args: argparse.Namespace) -> dict[str, Any]:
    base = args.url.rstrip("/")
    summary: dict[str, Any] = {}

    status, body, _ = call(f"{base}/health")
    expect(status == 200 and body == {"status": "ok"}, f"/health: {status} {body!r}")
    print("ok   GET /health -> 200 {'status': 'ok'}")

    status, body, _ = call(f"{base}/ready")
    expect(status == 200, f"/ready: {status} {body!r} (the model is not loaded)")
    print("ok   GET /ready -> 200")

    before = scrape(base)
    calls_before = PREDICT_CALLS

    status, meta, _ = call(f"{base}/metadata")
    expect(status == 200 and isinstance(meta, dict), f"/metadata: {status} {meta!r}")
    if args.model_sha256:
        expect(
            meta.get("model_sha256") == args.model_sha256,
            f"/metadata model_sha256 {meta.get('model_sha256')!r} differs from the image label "
            f"io.mloperation.model.sha256 {args.model_sha256!r}",
        )
    print(f"ok   GET /metadata -> model_sha256 {str(meta.get('model_sha256'))[:12]}…")
    if args.registry is not None:  # the image's io.mloperation.registry.* labels
        name, version, alias = (value or None for value in args.registry)
        want = {"name": name, "version": int(version) if version else None, "alias": alias}
        expect(
            meta.get("registry") == want,
            f"/metadata registry {meta.get('registry')!r} differs from the image labels "
            f"io.mloperation.registry.* {want!r}",
        )
        print(f"ok   GET /metadata -> registry {want}")

    bundle = load_model(args.model)
    if args.tolerance is None:
        export = load_params(args.params).get("export") or {}
        key = (
            "max_rel_diff" if bundle["schema"].get("task") == "regression" else "max_abs_proba_diff"
        )
        args.tolerance = float(export.get(key, 1e-5))
    frame = pd.read_csv(args.data).head(MAX_BATCH)
    expect(len(frame) > 0, f"{args.data} has no rows")
    if bundle["schema"].get("unknown_categories") == "reject":  # refused: checked below
        frame = frame[~unknown_category_rows(frame, bundle["schema"])].reset_index(drop=True)
        expect(len(frame) > 0, f"every row of {args.data} holds an unseen category")
    labels, proba = predict(bundle, frame)
    records = records_of(frame, bundle["schema"])
    batch = f"batch of {len(records)}"

    status, answer, seconds = call(f"{base}/predict", records[0])
    expect(status == 200, f"POST /predict (one record): {status} {answer!r}")
    if proba is None:  # regression
        scale = float(np.std(labels)) or 1.0
        gap_one = compare_values(answer, labels[:1], args.tolerance, scale, "one record")
    else:
        labels = [str(label) for label in labels]
        gap_one = compare(answer, labels[:1], proba.iloc[:1], args.tolerance, "one record")
    print(
        f"ok   POST /predict one record -> {answer['predictions'][0]!r} as scikit-learn "
        f"(max gap {gap_one:.2g}, {seconds * 1000:.1f} ms)"
    )

    status, answer, seconds = call(f"{base}/predict", {"instances": records})
    expect(status == 200, f"POST /predict ({len(records)} instances): {status} {answer!r}")
    if proba is None:
        gap_all = compare_values(answer, labels, args.tolerance, scale, batch)
    else:
        gap_all = compare(answer, labels, proba, args.tolerance, batch)
    print(
        f"ok   POST /predict {batch} ({args.data}) -> every prediction as "
        f"scikit-learn (max gap {gap_all:.2g} <= {args.tolerance:g}, {seconds * 1000:.1f} ms)"
    )
    unseen = check_unknown_categories(base, bundle, frame)
    print(f"ok   POST /predict with an unseen category -> {unseen}")

    bad = dict(records[0], not_a_feature=1)
    status, error, _ = call(f"{base}/predict", bad)
    expect(
        400 <= status < 500 and isinstance(error, dict) and "error" in error,
        f"POST /predict with an unknown field: expected a 4xx JSON error, got {status} {error!r}",
    )
    print(f"ok   POST /predict with an unknown field -> {status} with a JSON error")

    # drift counting works in the read-only container (its window file lives in /tmp); a
    # worker adds its counts to the shared ones within DRIFT_FLUSH_SECONDS (1 s by default)
    deadline = time.monotonic() + DRIFT_WAIT_SECONDS
    while True:
        status, drift, _ = call(f"{base}/drift")
        counted = drift.get("records") if isinstance(drift, dict) else None
        done = status != 200 or (isinstance(counted, int) and counted >= 1 + len(records))
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    expect(
        status == 200 and isinstance(counted, int) and counted >= 1 + len(records),
        f"GET /drift: expected the {1 + len(records)} records posted, got {status} {drift!r}"[:300],
    )
    print(f"ok   GET /drift -> {counted} records counted, status {drift['status']!r}")

    after = scrape(base)
    made = PREDICT_CALLS - calls_before
    counted = after["predict_requests"] - before["predict_requests"]
    expect(
        counted == made,
        f"/metrics counts {counted:g} /predict requests since the first scrape, this check "
        f"made {made}",
    )
    sha = meta.get("model_sha256")
    expect(
        after["model_info"].get("model_sha256") == str(sha or "unknown"),
        f"/metrics mloperation_model_info {after['model_info']} does not name model_sha256 {sha}",
    )
    print(f"ok   GET /metrics -> Prometheus text; /predict requests +{made} as made")

    summary.update(
        rows=len(records),
        task=bundle["schema"].get("task"),
        max_gap=max(gap_one, gap_all),
        tolerance=args.tolerance,
        model_sha256=meta.get("model_sha256"),
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="base URL of the running predictor")
    parser.add_argument("--model", type=Path, default=Path("models/model.joblib"))
    parser.add_argument("--data", type=Path, default=Path("data/processed/test.csv"))
    parser.add_argument(
        "--tolerance",
        type=float,
        help="default: params.yaml's export.max_abs_proba_diff (classification) or "
        "export.max_rel_diff (regression), the export stage's own parity bound",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model-sha256", default="", help="expected /metadata model_sha256")
    parser.add_argument("--out", type=Path, help="write a JSON summary here")
    parser.add_argument(
        "--registry",
        nargs=3,
        metavar=("NAME", "VERSION", "ALIAS"),
        help="expected /metadata registry (the image's labels; empty strings: null)",
    )
    args = parser.parse_args(argv)
    try:
        summary = run_checks(args)
    except SmokeFailure as exc:
        print(f"FAIL {exc}", file=sys.stderr)
        return 1
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
