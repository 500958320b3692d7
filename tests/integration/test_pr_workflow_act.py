"""The PR workflow's `experiment` job, run for real by act (nektos/act) on this host.

Real: .github/workflows/pr.yml itself and every `run:` step in it (the make targets),
`dvc pull --run-cache` from an S3 API on loopback (moto) that the test fills from a `main`
commit, `dvc repro` of a PR commit that changes params, the report and the quality gate.
Stubbed (tests/act_job.py says why): the remote `uses:` actions, and `cml`, a recorder at
the GitHub API boundary. The venv stands in for the one actions/cache restores.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tests.act_job import PR_NUMBER, REPOSITORY, base_env, install_stamps, run_job, step_times
from tests.repo_tools import S3_KEYS, moto_s3, run

pytestmark = pytest.mark.slow

BUCKET = "mloperation-dvc"  # the bucket of .dvc/config's default remote `storage`
PR_TREES = 50  # the PR's change: train.n_estimators


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API on loopback (moto server) with the DVC remote's bucket."""
    with moto_s3(BUCKET) as (endpoint, _):
        yield endpoint


def make_venv(path: Path, checkout: Path) -> Path:
    """A venv that sees this venv's packages, with the install stamps `make setup` writes.

    As in a venv restored by actions/cache, the stamps are older than the checkout's
    requirement files (act copies them with fresh mtimes) but hold their sha256: the
    workflow's `make setup` must then install nothing.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(path), "platbase": str(path)})["purelib"])
    (site / "outer_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for stamp, content in install_stamps(checkout).items():
        (path / stamp).write_text(content)
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
    # empty when the run reproduced the committed outputs byte for byte (the usual case)
    run(["git", "commit", "-q", "--allow-empty", "-m", "main: pipeline results"], work, env=env)
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
    proc, record, _ = run_job(
        checkout, top, s3_endpoint, S3_KEYS, VENV=str(make_venv(top / "venv", checkout))
    )
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
    assert "pip install" not in log  # the install step had nothing to do:
    assert "unchanged since installed" in log  # the stamps' sha256 matched
    steps = step_times(act_run[0].stdout)
    assert any(name.startswith("Install (.venv") for name in steps), steps
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
    # one figure per plot whose data changed (base and PR on one set of axes), one line per
    # plot that did not; every linked figure was published
    linked = re.findall(r"!\[[^\]]*, main vs PR\]\((report_images/(\w+)\.png)\)", report)
    assert published == sorted(path for path, _ in linked)
    titles = {
        "confusion_matrix": "Confusion matrix",
        "roc": "ROC curves",
        "precision_recall": "Precision-recall curves",
        "feature_importance": "Feature importance",
    }
    drawn = {name for _, name in linked}
    assert drawn, report  # more trees change at least the feature importance
    for name, title in titles.items():
        assert (name in drawn) != (f"\n{title}: unchanged\n" in report), name
    for png in (record / "published").rglob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"
    print(textwrap.shorten(report, 400))
