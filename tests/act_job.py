"""Run the PR workflow's `experiment` job with act (nektos/act) on this host.

Shared by tests/integration/test_pr_workflow_act.py and benchmarks/ci.py. What is not real,
and why:
  * the remote `uses:` actions (setup-python, actions/cache, setup-node, upload-artifact)
    are stubs: act cannot fetch them here, and the host already has Python. The venv that
    actions/cache would restore is the caller's VENV (a directory outside the checkout);
  * `cml` is a recorder placed on PATH. Posting the comment is the GitHub API boundary
    (and the npm package cannot be installed on these machines): the recorder keeps the
    arguments the job gives it, the report and the images it would publish.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from src.config import ROOT

WORKFLOW = Path(".github") / "workflows" / "pr.yml"
JOB = "experiment"
REPOSITORY = "acme/penguins"  # act derives github.repository from the origin URL
TOKEN = "ghs_recorder_only"  # never leaves this machine: `cml` is a recorder
PR_NUMBER = 7

STUB_ACTION = """\
name: stub
description: Stands in for a remote action that act cannot fetch offline.
runs:
  using: composite
  steps:
    - run: 'true'
      shell: bash
"""

# The recorder: what `cml comment update` receives at the GitHub boundary.
CML_RECORDER = """\
#!{python}
import json, os, pathlib, re, shutil, sys
record = pathlib.Path({record!r})
record.mkdir(parents=True, exist_ok=True)
args = sys.argv[1:]
report = pathlib.Path(args[-1])
keep = {{k: os.environ.get(k) for k in ("ITERATIVE_DO_NOT_TRACK", "GITHUB_EVENT_PATH")}}
keep["token_set"] = bool(os.environ.get("GITHUB_TOKEN") or os.environ.get("REPO_TOKEN"))
keep["event"] = json.loads(pathlib.Path(os.environ["GITHUB_EVENT_PATH"]).read_text())
(record / "call.json").write_text(json.dumps({{"args": args, "env": keep}}))
shutil.copy(report, record / "report.md")
# --publish uploads the local files the report links to, resolved against its folder.
for link in re.findall(r"!\\[[^\\]]*\\]\\(([^)\\s]+)\\)", report.read_text()):
    source = (report.parent / link).resolve()
    if not source.is_file():
        sys.exit(f"cml recorder: the report links to a missing image: {{link}}")
    (record / "published" / link).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, record / "published" / link)
info = report.parent / "pr.json"
if info.is_file():
    shutil.copy(info, record / "pr.json")
"""


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GITHUB_"))}
    for key in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "VENV", "UV_CACHE_DIR"):
        env.pop(key, None)  # each checkout imports its own `src`; the caller sets the rest
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["GIT_PAGER"] = "cat"
    env.update(extra)
    return env


def remote_actions(workflow: Path, job: str = JOB) -> list[str]:
    """`owner/repo@ref` of every remote action the job uses (act handles actions/checkout)."""
    steps = yaml.safe_load(workflow.read_text())["jobs"][job]["steps"]
    uses = [step["uses"] for step in steps if "uses" in step]
    return sorted({u for u in uses if not u.startswith(("./", "actions/checkout@"))})


def install_stamps(repo: Path = ROOT) -> dict[str, str]:
    """Makefile stamp -> the content `make setup`/`setup-dev` writes (sha256 of its inputs)."""
    out = {}
    for stamp, inputs in (("RUN_STAMP", "RUN_INPUTS"), ("DEV_STAMP", "DEV_INPUTS")):
        proc = subprocess.run(
            ["make", "-s", "--eval", f"_print: ; @echo $(notdir $({stamp})) $({inputs})", "_print"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
        name, *files = proc.stdout.split()
        data = b"".join((repo / f).read_bytes() for f in files)
        out[name] = f"{hashlib.sha256(data).hexdigest()}  -\n"
    return out


def event_file(path: Path, head: str, ref: str) -> Path:
    repo = {"full_name": REPOSITORY, "name": REPOSITORY.split("/")[1], "owner": {"login": "acme"}}
    pull = {
        "number": PR_NUMBER,
        "head": {"sha": head, "ref": ref, "repo": repo},
        "base": {"ref": "main", "repo": repo},
    }
    event = {"act": True, "action": "synchronize", "number": PR_NUMBER, "pull_request": pull}
    path.write_text(json.dumps({**event, "repository": repo}))
    return path


def run_job(
    checkout: Path, top: Path, s3_endpoint: str, s3_keys: dict[str, str], **env: str
) -> tuple[subprocess.CompletedProcess, Path, float]:
    """act runs the job on `checkout` (a clone whose origin is REPOSITORY); `env` adds to
    the host environment the steps inherit (VENV, UV_CACHE_DIR...). Returns the process,
    the recorder's folder and the wall time in seconds."""
    top.mkdir(parents=True, exist_ok=True)
    stub = top / "stub"
    stub.mkdir(exist_ok=True)
    (stub / "action.yml").write_text(STUB_ACTION)
    record, bin_dir = top / "cml-record", top / "bin"
    bin_dir.mkdir(exist_ok=True)
    cml = bin_dir / "cml"
    cml.write_text(CML_RECORDER.format(python=sys.executable, record=str(record)))
    cml.chmod(0o755)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True
    ).stdout.strip()
    branch = subprocess.run(
        ["git", "branch", "--show-current"], cwd=checkout, capture_output=True, text=True
    ).stdout.strip()
    event = event_file(top / "event.json", head, branch)
    cmd = [
        str(Path(sys.executable).parent / "act"),
        "pull_request",
        *("-W", str(WORKFLOW), "-j", JOB, "-P", "ubuntu-latest=-self-hosted"),
        *("--no-cache-server", "--action-cache-path", str(top / "act-cache"), "-e", str(event)),
        *("-s", f"GITHUB_TOKEN={TOKEN}"),
        *("-s", f"AWS_ACCESS_KEY_ID={s3_keys['AWS_ACCESS_KEY_ID']}"),
        *("-s", f"AWS_SECRET_ACCESS_KEY={s3_keys['AWS_SECRET_ACCESS_KEY']}"),
        *("--var", f"AWS_ENDPOINT_URL={s3_endpoint}"),
    ]
    for action in remote_actions(checkout / WORKFLOW):
        cmd += ["--local-repository", f"{action}={stub}"]
    host = base_env(ACT_DISABLE_VERSION_CHECK="1", **env)
    host["PATH"] = f"{bin_dir}{os.pathsep}{host['PATH']}"
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=checkout,
        env=host,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    wall = time.perf_counter() - start
    (top / "act.log").write_text(proc.stdout + proc.stderr)
    return proc, record, wall


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|µs|us|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6}


def step_times(log: str) -> dict[str, float]:
    """Seconds per step, from act's `✅  Success - Main <step name> [1m2.3s]` lines."""
    times: dict[str, float] = {}
    for name, duration in re.findall(r"Success - Main (.+?) \[([^\]]+)\]", log):
        times[name] = sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(duration))
    return times
