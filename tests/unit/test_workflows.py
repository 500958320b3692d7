"""The GitHub workflows: actionlint (with shellcheck), zizmor, and the rules they are written to.

Rules: actions pinned to a commit SHA with its version as a comment; no permissions at the
top, least privilege per job; a timeout on every job; every `run:` step is a make target
(or, in the fork workflow, the `src.ci` module) so no logic hides in YAML; the fork
workflow never checks out the PR; the release smoke-tests the image before pushing it,
restores no cache, and reads secrets only in its `release` environment.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.config import ROOT
from tests.metadata_action import PushEvent, metadata

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)

WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
CML_INSTALL = "npm install -g @dvcorg/cml@0.20.6"


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def on(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True


def steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def runs(workflow: dict, job: str) -> list[str]:
    return [step["run"] for step in steps(workflow, job) if "run" in step]


BIN = Path(sys.executable).parent
SHA = "0123456789abcdef0123456789abcdef01234567"


def actionlint(*files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """actionlint as `make lint-workflows` runs it: shellcheck checks every `run:` script."""
    cmd = [str(BIN / "actionlint"), f"-shellcheck={BIN / 'shellcheck'}", "-no-color"]
    return subprocess.run([*cmd, *map(str, files)], cwd=cwd, capture_output=True, text=True)


def zizmor(target: Path) -> subprocess.CompletedProcess:
    """zizmor as `make lint-workflows` runs it: offline, findings of medium severity and up."""
    cmd = [str(BIN / "zizmor"), "--offline", "--min-severity=medium", str(target)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_actionlint_passes():
    proc = actionlint(*FILES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_runs_shellcheck_on_run_steps(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    step = {"run": "echo $UNQUOTED"}
    job = {"runs-on": "ubuntu-latest", "permissions": {}, "steps": [step]}
    bad.write_text(yaml.safe_dump({"name": "bad", "on": "push", "jobs": {"a": job}}))
    proc = actionlint(bad, cwd=tmp_path)
    assert proc.returncode == 1 and "SC2086" in proc.stdout, proc.stdout + proc.stderr


def test_zizmor_passes():
    proc = zizmor(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_flags_a_cache_restored_in_a_release(tmp_path):
    """The check can fail: the pip cache release.yml used to have is a finding."""
    bad = tmp_path / ".github" / "workflows" / "release.yml"
    bad.parent.mkdir(parents=True)
    text = (WORKFLOWS / "release.yml").read_text()
    python = 'python-version: "3.11"\n'
    assert python in text
    bad.write_text(text.replace(python, python + "          cache: pip\n"))
    proc = zizmor(tmp_path)
    assert proc.returncode != 0 and "cache-poisoning" in proc.stdout, proc.stdout + proc.stderr


def test_the_expected_workflows_exist():
    assert [f.name for f in FILES] == ["pr-comment.yml", "pr.yml", "release.yml", "tests.yml"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_commit_with_its_version(path):
    for line in path.read_text().splitlines():
        match = re.search(r"uses:\s*(\S+)(.*)", line)
        if not match or match.group(1).startswith("./"):
            continue
        assert PINNED.match(match.group(1)), line
        assert re.search(r"#\s*v\d+\.\d+\.\d+", match.group(2)), f"no version comment: {line}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_least_privilege_and_timeouts(path):
    workflow = yaml.safe_load(path.read_text())
    assert workflow["permissions"] == {}, "grant permissions per job, not per workflow"
    for name, job in workflow["jobs"].items():
        assert "permissions" in job, name
        granted = {k for k, v in job["permissions"].items() if v == "write"}
        assert granted <= {"pull-requests", "packages"}, (name, granted)
        assert set(job["permissions"]) <= {"contents", "pull-requests", "packages", "actions"}
        if "uses" not in job:  # reusable-workflow calls carry their jobs' timeouts
            assert 0 < job["timeout-minutes"] <= 60, name


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_run_steps_only_call_make_or_the_ci_module(path):
    workflow = yaml.safe_load(path.read_text())
    for name in workflow["jobs"]:
        for command in runs(workflow, name) if "steps" in workflow["jobs"][name] else []:
            assert "\n" not in command.strip(), f"multi-line script in YAML: {command}"
            assert (
                command.startswith("make ")
                or command == CML_INSTALL
                or command.startswith("python3 -m src.ci comment-fork ")
            ), command


def test_pr_workflow():
    pr = load("pr.yml")
    assert list(on(pr)) == ["pull_request"]
    assert pr["concurrency"]["cancel-in-progress"] is True
    assert "pull_request.number" in pr["concurrency"]["group"]
    assert pr["jobs"]["test"]["uses"] == "./.github/workflows/tests.yml"
    job = pr["jobs"]["experiment"]
    assert job["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert job["env"]["ITERATIVE_DO_NOT_TRACK"] == "1"
    checkout = steps(pr, "experiment")[0]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"]["fetch-depth"] == 0  # the base branch is there to diff against
    python, cache, install = steps(pr, "experiment")[1:4]
    assert python["uses"].startswith("actions/setup-python@") and python["id"] == "python"
    assert "cache" not in python["with"]  # the venv is cached whole instead
    assert cache["uses"].startswith("actions/cache@")
    assert cache["with"]["path"] == ".venv"
    for part in ("runner.os", "runner.arch", "steps.python.outputs.python-version"):
        assert part in cache["with"]["key"]
    assert "hashFiles('requirements*.txt', 'setup.py')" in cache["with"]["key"]
    assert "restore-keys" not in cache["with"]  # exact key: a stale venv is never restored
    assert install["run"] == "make setup"
    assert runs(pr, "experiment") == [
        "make setup",
        CML_INSTALL,
        "make dvc-pull",
        "make repro",
        "make experiments",
        "make report",
        "make comment",
        "make gate",
    ]
    gated = [s for s in steps(pr, "experiment") if "if" in s and "upload" not in str(s)]
    assert [s.get("run") or s["uses"].split("@")[0] for s in gated] == [
        "actions/setup-node",
        CML_INSTALL,
    ]
    for step in gated:  # not under act, and only where the token may comment
        assert step["if"].startswith("${{ !env.ACT && ")
        assert "head.repo.full_name == github.repository" in step["if"]
    upload = next(s for s in steps(pr, "experiment") if "upload-artifact" in s.get("uses", ""))
    assert upload["with"]["name"] == "experiment-report"
    assert upload["with"]["path"] == "reports/experiment/"
    order = [s.get("run") or s["uses"].split("@")[0] for s in steps(pr, "experiment")]
    assert order.index("make comment") < order.index("actions/upload-artifact")  # pr.json
    assert order.index("actions/upload-artifact") < order.index("make gate")  # even if it fails
    secrets_at = [s.get("run") for s in steps(pr, "experiment") if "secrets." in str(s)]
    assert secrets_at == ["make dvc-pull", "make repro", "make experiments", "make report"], (
        "credentials only where they are used"
    )
    for step in steps(pr, "experiment"):
        if "MLFLOW_TRACKING_URI" in step.get("env", {}):  # never a fork's server
            assert "head.repo.full_name == github.repository" in step["env"]["MLFLOW_TRACKING_URI"]


def test_fork_comment_workflow_never_runs_the_pr_code():
    fork = load("pr-comment.yml")
    assert on(fork) == {"workflow_run": {"workflows": ["PR"], "types": ["completed"]}}
    job = fork["jobs"]["comment"]
    assert "head_repository.full_name != github.repository" in job["if"]
    assert job["permissions"] == {
        "actions": "read",
        "contents": "read",
        "pull-requests": "write",
    }
    checkout = steps(fork, "comment")[0]
    assert "ref" not in checkout.get("with", {}) and "repository" not in checkout.get("with", {})
    download = steps(fork, "comment")[1]
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    assert download["with"]["name"] == "experiment-report"
    text = (WORKFLOWS / "pr-comment.yml").read_text()
    assert "head_sha }}" not in text.split("env:")[0]  # event data only through env
    assert "make " not in text  # nothing that could install or run the PR's code


def test_release_workflow():
    release = load("release.yml")
    assert on(release) == {"push": {"branches": ["main"], "tags": ["v*"]}}
    assert release["concurrency"]["cancel-in-progress"] is False
    assert release["jobs"]["image"]["needs"] == "test"
    assert release["jobs"]["image"]["permissions"] == {"contents": "read", "packages": "write"}
    order = [s.get("run") or s["uses"].split("@")[0] for s in steps(release, "image")]
    assert order.index("make repro") < order.index("make dvc-push")
    assert order.index("make docker-build") < order.index("make docker-smoke")
    assert order.index("make docker-smoke") < order.index("make docker-publish")
    meta = next(s for s in steps(release, "image") if "metadata-action" in s.get("uses", ""))
    assert meta["with"]["images"] == "ghcr.io/${{ github.repository }}"
    login = next(s for s in steps(release, "image") if "login-action" in s.get("uses", ""))
    assert login["with"]["registry"] == "ghcr.io"  # the host of the image names


def test_release_registers_before_the_build_and_moves_the_alias_after_the_push():
    """The model version is registered (and gate-checked for its alias) before an image is
    built, baked into the build, and its alias moves only once the image is pushed, tagged
    with that image's reference and digest. Without a server `make register` skips itself
    and outputs no version, so the promote step does not run."""
    image = steps(load("release.yml"), "image")
    order = [s.get("run") or s["uses"].split("@")[0] for s in image]
    assert order.index("make repro") < order.index("make register")
    assert order.index("make register") < order.index("make docker-build")
    assert order.index("make docker-publish") < order.index("make promote")
    by_run = {s.get("run"): s for s in image if s.get("run")}
    register, build, promote = (
        by_run["make register"],
        by_run["make docker-build"],
        by_run["make promote"],
    )
    for step in (by_run["make repro"], register, promote):
        assert step["env"]["MLFLOW_TRACKING_URI"] == "${{ vars.MLFLOW_TRACKING_URI }}"
        assert step["env"]["MLFLOW_TRACKING_TOKEN"] == "${{ secrets.MLFLOW_TRACKING_TOKEN }}"
    assert build["env"] == {
        f"REGISTERED_MODEL_{key.upper()}": f"${{{{ steps.{register['id']}.outputs.{key} }}}}"
        for key in ("name", "version", "alias")
    }
    assert promote["if"] == f"${{{{ steps.{register['id']}.outputs.version != '' }}}}"
    publish = by_run["make docker-publish"]
    assert promote["env"]["IMAGE_REF"] == f"${{{{ steps.{publish['id']}.outputs.image }}}}"
    assert promote["env"]["IMAGE_DIGEST"] == f"${{{{ steps.{publish['id']}.outputs.digest }}}}"
    assert promote["env"]["VERSION"] == f"${{{{ steps.{register['id']}.outputs.version }}}}"
    assert promote["env"]["ALIAS"] == f"${{{{ steps.{register['id']}.outputs.alias }}}}"


def test_release_restores_no_cache_and_reads_secrets_only_in_its_environment():
    """What the release installs is published: nothing comes from a cache (zizmor's
    cache-poisoning); the DVC remote's keys are the `release` environment's secrets."""
    release = load("release.yml")
    for step in steps(release, "image"):
        action = step.get("uses", "").split("@")[0]
        assert action not in ("actions/cache", "actions/cache/restore"), step
        assert "cache" not in step.get("with", {}), step
    for name, job in release["jobs"].items():
        if "secrets." in yaml.safe_dump(job):
            assert job.get("environment") == "release", name
    assert "secrets." in yaml.safe_dump(release["jobs"]["image"])


def release_metadata(ref: str) -> dict:
    release = load("release.yml")
    meta = next(s for s in steps(release, "image") if "metadata-action" in s.get("uses", ""))
    return metadata(meta["with"], PushEvent(ref=ref, sha=SHA, repository="Acme/Penguins"))


@pytest.mark.parametrize(
    ("ref", "versions"),
    [
        ("refs/heads/main", ["latest", "sha-0123456"]),
        ("refs/tags/v1.2.3", ["1.2.3", "1.2", "sha-0123456"]),
        ("refs/tags/v2.0.0-rc.1", ["2.0.0-rc.1", "sha-0123456"]),  # no 2.0 for a pre-release
        ("refs/tags/vnext", ["sha-0123456"]),  # not semver: no version tag
    ],
)
def test_release_image_tags(ref, versions):
    """README's tag table, computed from release.yml's metadata-action configuration."""
    out = release_metadata(ref)
    assert out["tags"] == [f"ghcr.io/acme/penguins:{v}" for v in versions]
    assert out["labels"]["org.opencontainers.image.version"] == versions[0]
    assert out["labels"]["org.opencontainers.image.revision"] == SHA
    assert out["labels"]["org.opencontainers.image.source"] == "https://github.com/Acme/Penguins"


def test_tests_workflow_lints_the_workflows_too():
    assert runs(load("tests.yml"), "test") == ["make setup-dev", "make lint", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "lint-workflows" in lint
    recipe = makefile.split("\nlint-workflows:", 1)[1].split("\n\n", 1)[0]
    assert "actionlint -shellcheck=$(BIN)/shellcheck" in recipe
    assert "zizmor --offline --min-severity=medium ." in recipe


def test_dependabot_watches_actions_and_pip():
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    assert {u["package-ecosystem"] for u in config["updates"]} == {"github-actions", "pip"}
