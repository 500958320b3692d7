"""The PR workflow's `experiment` job, run for real by act (nektos/act) on this host.

Real: .github/workflows/pr.yml itself and every `run:` step in it (the make targets),
`dvc pull --run-cache` from an S3 API on loopback (moto) that the test fills from a `main`
commit, `dvc repro` of a PR commit that changes params, the report and the quality gate.

Not real, and why:
  * the remote `uses:` actions (setup-python, setup-node, upload-artifact) are stubs: act
    cannot fetch them here, and the host already has Python and the venv;
  * `cml` is a recorder placed on PATH. Posting the comment is the GitHub API boundary
    (and the npm package cannot be installed on these machines): the recorder checks the
    arguments the job gives it and keeps the report and the images it would publish.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from src.config import ROOT
from tests.repo_tools import S3_KEYS, moto_s3, run

pytestmark = pytest.mark.slow

WORKFLOW = ROOT / ".github" / "workflows" / "pr.yml"
REPOSITORY = "acme/penguins"  # act derives github.repository from the origin URL
BUCKET = "mloperation-dvc"  # the bucket of .dvc/config's default remote `storage`
TOKEN = "ghs_recorder_only"  # never leaves this machine: `cml` is a recorder
PR_NUMBER = 7
PR_TREES = 50  # the PR's change: train.n_estimators

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


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API on loopback (moto server) with the DVC remote's bucket."""
    with moto_s3(BUCKET) as (endpoint, _):
        yield endpoint


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GITHUB_"))}
    env.pop("PYTHONPATH", None)  # each checkout imports its own `src`
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["GIT_PAGER"] = "cat"
    env.update(extra)
    return env


def remote_actions(workflow: Path, job: str) -> list[str]:
    """`owner/repo@ref` of every remote action the job uses (act handles actions/checkout)."""
    steps = yaml.safe_load(workflow.read_text())["jobs"][job]["steps"]
    uses = [step["uses"] for step in steps if "uses" in step]
    return sorted({u for u in uses if not u.startswith(("./", "actions/checkout@"))})


def make_venv(path: Path) -> Path:
    """A venv that sees this venv's packages, its install stamps current for the whole run.

    act copies the checkout with fresh mtimes, so the stamps are dated a day ahead: `make
    setup` (the workflow's install step) then has nothing to do, as on a warm runner.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(path), "platbase": str(path)})["purelib"])
    (site / "outer_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    ahead = time.time() + 86400
    for stamp in (".installed-run", ".installed-dev"):
        (path / stamp).touch()
        os.utime(path / stamp, (ahead, ahead))
    return path


@pytest.fixture(scope="module")
def pr_checkout(pipeline_repo, s3_endpoint, tmp_path_factory) -> tuple[Path, str, int]:
    """A clone of a PR branch (params changed) whose `main` results are in the S3 remote."""
    top = tmp_path_factory.mktemp("act")
    work = top / "work"
    shutil.copytree(pipeline_repo, work, symlinks=True)  # outputs, DVC cache and lock
    (work / ".dvc" / "config.local").unlink(missing_ok=True)
    env = base_env(AWS_ENDPOINT_URL=s3_endpoint, **S3_KEYS)
    run(["git", "add", "-A"], work, env=env)
    run(["git", "commit", "-q", "-m", "main: pipeline results"], work, env=env)
    run(["dvc", "push", "--run-cache"], work, env=env)

    run(["git", "checkout", "-q", "-b", "more-trees"], work, env=env)
    params = (work / "params.yaml").read_text()
    trees = int(re.search(r"(?m)^  n_estimators: (\d+)", params).group(1))
    changed = re.sub(r"(?m)^(  n_estimators:) \d+", rf"\1 {PR_TREES}", params)
    assert trees != PR_TREES
    (work / "params.yaml").write_text(changed)
    run(["git", "commit", "-q", "-am", f"PR: n_estimators {PR_TREES}"], work, env=env)

    bare = top / "origin.git"
    run(["git", "clone", "-q", "--bare", str(work), str(bare)], top, env=env)
    checkout = top / "checkout"
    run(["git", "clone", "-q", "-b", "more-trees", str(bare), str(checkout)], top, env=env)
    run(
        ["git", "remote", "set-url", "origin", f"https://github.com/{REPOSITORY}.git"],
        checkout,
        env=env,
    )
    head = run(["git", "rev-parse", "HEAD"], checkout, env=env).stdout.strip()
    return checkout, head, trees


@pytest.fixture(scope="module")
def act_run(pr_checkout, s3_endpoint, tmp_path_factory):
    checkout, head, trees = pr_checkout
    top = tmp_path_factory.mktemp("act-run")
    stub = top / "stub"
    stub.mkdir()
    (stub / "action.yml").write_text(STUB_ACTION)
    record = top / "cml-record"
    bin_dir = top / "bin"
    bin_dir.mkdir()
    cml = bin_dir / "cml"
    cml.write_text(CML_RECORDER.format(python=sys.executable, record=str(record)))
    cml.chmod(0o755)
    event = top / "event.json"
    repo = {"full_name": REPOSITORY, "name": "penguins", "owner": {"login": "acme"}}
    event.write_text(
        json.dumps(
            {
                "act": True,
                "action": "synchronize",
                "number": PR_NUMBER,
                "pull_request": {
                    "number": PR_NUMBER,
                    "head": {"sha": head, "ref": "more-trees", "repo": repo},
                    "base": {"ref": "main", "repo": repo},
                },
                "repository": repo,
            }
        )
    )
    cmd = [
        str(Path(sys.executable).parent / "act"),
        "pull_request",
        "-W",
        str(WORKFLOW.relative_to(ROOT)),
        "-j",
        "experiment",
        "-P",
        "ubuntu-latest=-self-hosted",
        "--no-cache-server",
        "--action-cache-path",
        str(top / "act-cache"),
        "-e",
        str(event),
        "-s",
        f"GITHUB_TOKEN={TOKEN}",
        "-s",
        f"AWS_ACCESS_KEY_ID={S3_KEYS['AWS_ACCESS_KEY_ID']}",
        "-s",
        f"AWS_SECRET_ACCESS_KEY={S3_KEYS['AWS_SECRET_ACCESS_KEY']}",
        "--var",
        f"AWS_ENDPOINT_URL={s3_endpoint}",
    ]
    for action in remote_actions(checkout / WORKFLOW.relative_to(ROOT), "experiment"):
        cmd += ["--local-repository", f"{action}={stub}"]
    env = base_env(
        ACT_DISABLE_VERSION_CHECK="1",
        VENV=str(make_venv(top / "venv")),
        PATH=f"{bin_dir}{os.pathsep}{base_env()['PATH']}",
    )
    proc = subprocess.run(
        cmd,
        cwd=checkout,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    (top / "act.log").write_text(proc.stdout + proc.stderr)
    return proc, record, head, trees


def test_experiment_job_succeeds_under_act(act_run):
    proc = act_run[0]
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert "Job succeeded" in log


def test_pull_fetched_main_and_repro_reran_only_what_the_params_touch(act_run):
    log = act_run[0].stdout
    ran = re.findall(r"Running stage '(\w+)'", log)
    assert {"train", "evaluate"} <= set(ran), log[-6000:]
    assert not {"prepare", "features"} & set(ran), log[-6000:]  # pulled from the remote
    assert "pip install" not in log  # the install step had nothing to do
    assert "Install CML" not in log and "Main actions/setup-node" not in log  # GitHub only


def test_cml_got_the_update_command_and_the_report(act_run):
    _, record, head, _ = act_run
    call = json.loads((record / "call.json").read_text())
    args = call["args"]
    assert args[:5] == [
        "comment",
        "update",
        "--target=pr",
        "--watermark-title=MLOperation experiment report",
        "--publish",
    ]
    assert args[5].endswith("reports/experiment/report.md")
    assert call["env"]["ITERATIVE_DO_NOT_TRACK"] == "1"
    assert call["env"]["token_set"]
    assert call["env"]["event"]["pull_request"]["number"] == PR_NUMBER
    assert json.loads((record / "pr.json").read_text()) == {"head_sha": head, "number": PR_NUMBER}


def test_report_compares_the_pr_with_main(act_run):
    _, record, _, trees = act_run
    report = (record / "report.md").read_text()
    assert "**Quality gate:** ✅ passed" in report
    assert "**DVC remote:** ✅ pulled data and run-cache from remote `storage`" in report
    assert f"| `train.n_estimators` | `{trees}` | `{PR_TREES}` |" in report
    assert re.search(r"\| Metric \| `main` `[0-9a-f]{7}` \| PR \| Change \|", report)
    assert re.search(r"\| balanced_accuracy \| \d\.\d{4} \| \d\.\d{4} \|", report)
    assert "| modified | `models/model.joblib` |" in report
    assert re.search(
        r"\[Workflow run\]\(https://github\.com/acme/penguins/actions/runs/\d+\)", report
    )
    published = sorted(
        p.relative_to(record / "published").as_posix()
        for p in (record / "published").rglob("*.png")
    )
    assert published == [
        f"report_images/{side}/{name}.png"
        for side in ("base", "pr")
        for name in ("confusion_matrix", "feature_importance", "precision_recall", "roc")
    ]
    for png in (record / "published").rglob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"
    print(textwrap.shorten(report, 400))
