"""CI step helpers (src/ci.py): DVC pull/push decisions, posting the report, fork safety.

DVC runs for real against a local-folder remote. Only GitHub is replaced, at its API
boundary: `cml` (which would call GitHub's API) by a recorder script on PATH, and the REST
API that the fork workflow asks about a PR by a small HTTP server on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from src import ci

REPO = "acme/penguins"
HEAD = "a" * 40

RECORDER = """\
#!{python}
import json, os, sys
with open({record!r}, "a") as fh:
    fh.write(json.dumps({{"args": sys.argv[1:], "telemetry_off": os.environ.get(
        "ITERATIVE_DO_NOT_TRACK"), "token": bool(os.environ.get("GITHUB_TOKEN"))}}) + "\\n")
"""


def tool_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GITHUB_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


@pytest.fixture
def cml_recorder(tmp_path):
    """A `cml` on PATH that records its calls: the GitHub API boundary."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "cml-calls.jsonl"
    script = bin_dir / "cml"
    script.write_text(RECORDER.format(python=sys.executable, record=str(record)))
    script.chmod(0o755)

    def calls() -> list[dict]:
        if not record.exists():
            return []
        return [json.loads(line) for line in record.read_text().splitlines()]

    env = tool_env(PATH=f"{bin_dir}{os.pathsep}{tool_env()['PATH']}", GITHUB_TOKEN="t0ken")
    return env, calls


# --- which remote can be used ----------------------------------------------------------


S3 = {"core.remote": "storage", "remote.storage.url": "s3://bucket/store"}


def test_s3_remote_without_credentials_is_skipped_with_the_reason():
    name, why = ci.remote_usable(S3, {})
    assert name is None
    assert "no credentials for the DVC remote `storage` (s3://bucket/store)" in why
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in why
    # an empty secret (a fork's run) is no credential either
    assert ci.remote_usable(S3, {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})[0] is None


@pytest.mark.parametrize(
    ("config", "env"),
    [
        (S3, {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}),
        (S3, {"AWS_PROFILE": "ci"}),
        ({**S3, "remote.storage.access_key_id": "k"}, {}),  # dvc remote modify --local
        ({"core.remote": "gcs", "remote.gcs.url": "gs://bucket/x"}, {}),  # tried as is
    ],
)
def test_usable_remotes(config, env):
    name, _ = ci.remote_usable(config, env)
    assert name == config["core.remote"]


def test_no_default_remote_and_missing_folder(tmp_path):
    assert "no default DVC remote" in ci.remote_usable({}, {})[1]
    folder = {"core.remote": "here", "remote.here.url": str(tmp_path / "nope")}
    assert ci.remote_usable(folder, {})[0] is None
    (tmp_path / "nope").mkdir()
    assert ci.remote_usable(folder, {})[0] == "here"


# --- pull and push, for real, with a local-folder remote -------------------------------


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def dvc_template(tmp_path_factory):
    """A git + DVC repo tracking one file, its default remote a local folder (built once)."""
    top, env = tmp_path_factory.mktemp("dvc"), tool_env()
    repo, remote = top / "repo", top / "remote"
    repo.mkdir()
    remote.mkdir()
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "remote", "add", "-d", "store", "../remote"],  # relative: survives copying
    ):
        run(cmd, repo, env)
    (repo / "data.csv").write_text("a,b\n1,2\n")
    run(["dvc", "add", "-q", "data.csv"], repo, env)
    return top


@pytest.fixture
def dvc_repo(dvc_template, tmp_path):
    shutil.copytree(dvc_template, tmp_path, dirs_exist_ok=True, symlinks=True)
    return tmp_path / "repo", tmp_path / "remote", tool_env()


def test_pull_fetches_from_the_remote_and_records_it(dvc_repo, tmp_path, capsys):
    repo, remote, env = dvc_repo
    ci.push(repo, env)
    assert any(p.is_file() for p in remote.rglob("*")), "nothing pushed"
    (repo / "data.csv").unlink()
    shutil.rmtree(repo / ".dvc" / "cache")
    status = tmp_path / "dvc_pull.json"
    ci.pull(repo, status, env)
    assert (repo / "data.csv").read_text() == "a,b\n1,2\n"
    assert json.loads(status.read_text()) == {
        "message": f"pulled data and run-cache from remote `store` ({remote})",
        "pulled": True,
        "state": "pulled",
    }


def test_failed_pull_is_a_warning_not_a_failure(dvc_repo, tmp_path, capsys):
    repo, _, env = dvc_repo  # nothing was pushed: the pull cannot find data.csv
    (repo / "data.csv").unlink()
    shutil.rmtree(repo / ".dvc" / "cache")
    status = tmp_path / "dvc_pull.json"
    ci.pull(repo, status, {**env, "GITHUB_ACTIONS": "true"})
    result = json.loads(status.read_text())
    assert result["state"] == "failed" and not result["pulled"]
    assert "missing outputs are rebuilt" in result["message"]
    assert "::warning title=dvc pull failed::" in capsys.readouterr().out


def test_pull_and_push_without_credentials_skip_with_a_notice(dvc_repo, tmp_path, capsys):
    repo, _, env = dvc_repo
    run(["dvc", "remote", "add", "-d", "-f", "s3store", "s3://bucket/store"], repo, env)
    status = tmp_path / "dvc_pull.json"
    env = {**env, "GITHUB_ACTIONS": "true"}
    ci.pull(repo, status, env)
    ci.push(repo, env)
    result = json.loads(status.read_text())
    assert result["state"] == "skipped"
    assert result["message"].endswith("; the pipeline runs from scratch.")
    out = capsys.readouterr().out
    assert "::notice title=dvc pull skipped::no credentials for the DVC remote `s3store`" in out
    assert "::notice title=dvc push skipped::" in out


def test_push_failure_fails_the_step(dvc_repo):
    repo, _, env = dvc_repo
    run(["dvc", "remote", "add", "-d", "-f", "broken", "ssh://127.0.0.1:1/store"], repo, env)
    with pytest.raises(ci.CIError, match=r"dvc push --run-cache to remote `broken`"):
        ci.push(repo, env)


# --- posting the report ----------------------------------------------------------------


def pr_event(tmp_path: Path, head_repo: str | None = REPO) -> Path:
    event = tmp_path / "event.json"
    head = {"sha": HEAD, "ref": "feature", "repo": {"full_name": head_repo} if head_repo else None}
    event.write_text(json.dumps({"pull_request": {"number": 7, "head": head}}))
    return event


def report_dir(tmp_path: Path) -> Path:
    report = tmp_path / "experiment" / "report.md"
    report.parent.mkdir()
    report.write_text("## Experiment report\n")
    return report


def test_same_repo_pr_is_posted_with_cml_update(tmp_path, cml_recorder):
    env, calls = cml_recorder
    report = report_dir(tmp_path)
    env.update(GITHUB_EVENT_PATH=str(pr_event(tmp_path)), GITHUB_REPOSITORY=REPO)
    assert ci.comment(report, env) == "posted"
    assert calls() == [
        {
            "args": [
                "comment",
                "update",
                "--target=pr",
                "--watermark-title=MLOperation experiment report",
                "--publish",
                str(report),
            ],
            "telemetry_off": "1",
            "token": True,
        }
    ]
    assert json.loads((report.parent / "pr.json").read_text()) == {"head_sha": HEAD, "number": 7}


@pytest.mark.parametrize("head_repo", ["someone/penguins", None])  # a fork, or a deleted one
def test_fork_pr_is_left_to_the_workflow_run(tmp_path, cml_recorder, head_repo):
    env, calls = cml_recorder
    report = report_dir(tmp_path)
    env.update(GITHUB_EVENT_PATH=str(pr_event(tmp_path, head_repo)), GITHUB_REPOSITORY=REPO)
    assert ci.comment(report, env) == "fork"
    assert calls() == []
    assert json.loads((report.parent / "pr.json").read_text())["number"] == 7


def test_comment_errors_say_what_is_missing(tmp_path, cml_recorder):
    env, _ = cml_recorder
    report = report_dir(tmp_path)
    with pytest.raises(ci.CIError, match="no GitHub event"):
        ci.comment(report, env)
    with pytest.raises(ci.CIError, match="run `make report` first"):
        ci.comment(tmp_path / "nothing.md", env)
    env.update(GITHUB_EVENT_PATH=str(pr_event(tmp_path)), GITHUB_REPOSITORY=REPO)
    with pytest.raises(ci.CIError, match="cml needs a token"):
        ci.comment(report, {k: v for k, v in env.items() if k != "GITHUB_TOKEN"})
    with pytest.raises(ci.CIError, match=r"npm install -g @dvcorg/cml@0\.20\.6"):
        ci.comment(report, {**env, "PATH": "/nonexistent"})
    push_event = tmp_path / "push.json"
    push_event.write_text(json.dumps({"ref": "refs/heads/main"}))
    with pytest.raises(ci.CIError, match="not a pull_request event"):
        ci.comment(report, {**env, "GITHUB_EVENT_PATH": str(push_event)})


class FakeGitHub(BaseHTTPRequestHandler):
    """GET /repos/{repo}/pulls/{n}: the only GitHub REST call the fork workflow makes."""

    pulls: ClassVar[dict[int, dict]] = {}
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        prefix = f"/repos/{REPO}/pulls/"
        number = self.path.removeprefix(prefix)
        pull = self.pulls.get(int(number)) if number.isdigit() else None
        body = json.dumps(pull or {"message": "Not Found"}).encode()
        self.send_response(200 if pull else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def github_api():
    FakeGitHub.pulls, FakeGitHub.seen = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeGitHub
    server.shutdown()
    server.server_close()


def fork_artifact(tmp_path: Path, number) -> Path:
    artifact = tmp_path / "artifact"
    (artifact / "report_images" / "pr").mkdir(parents=True)
    (artifact / "report.md").write_text("## Experiment report\n")
    (artifact / "pr.json").write_text(json.dumps({"number": number, "head_sha": HEAD}))
    return artifact


def pull_json(head_sha: str, base_repo: str = REPO) -> dict:
    return {"number": 7, "head": {"sha": head_sha}, "base": {"repo": {"full_name": base_repo}}}


def test_fork_report_is_posted_to_the_pr_github_confirms(tmp_path, cml_recorder, github_api):
    env, calls = cml_recorder
    api, fake = github_api
    fake.pulls[7] = pull_json(HEAD)
    env.update(GITHUB_API_URL=api, GITHUB_REPOSITORY=REPO)
    artifact = fork_artifact(tmp_path, 7)
    assert ci.comment_fork(artifact, HEAD, env) == "posted"
    assert fake.seen == [(f"/repos/{REPO}/pulls/7", "Bearer t0ken")]
    (call,) = calls()
    assert call["args"][:3] == ["comment", "update", "--target=pr/7"]
    assert call["args"][-1] == str(artifact / "report.md")


def test_fork_report_for_another_commit_is_not_posted(tmp_path, cml_recorder, github_api):
    env, calls = cml_recorder
    api, fake = github_api
    fake.pulls[7] = pull_json("b" * 40)  # the PR moved on, or the artifact lies
    env.update(GITHUB_API_URL=api, GITHUB_REPOSITORY=REPO)
    assert ci.comment_fork(fork_artifact(tmp_path, 7), HEAD, env) == "stale"
    assert calls() == []


@pytest.mark.parametrize(
    ("number", "pulls", "message"),
    [
        ("7; rm -rf /", {}, "no valid PR number"),
        (True, {}, "no valid PR number"),
        (8, {}, "HTTP 404"),
        (7, {7: pull_json(HEAD, base_repo="evil/penguins")}, "not a pull request into"),
    ],
)
def test_fork_artifact_that_does_not_check_out_is_refused(
    tmp_path, cml_recorder, github_api, number, pulls, message
):
    env, calls = cml_recorder
    api, fake = github_api
    fake.pulls.update(pulls)
    env.update(GITHUB_API_URL=api, GITHUB_REPOSITORY=REPO)
    with pytest.raises(ci.CIError, match=message):
        ci.comment_fork(fork_artifact(tmp_path, number), HEAD, env)
    assert calls() == []


def test_missing_fork_artifact_is_a_notice(tmp_path, cml_recorder):
    env, calls = cml_recorder
    assert ci.comment_fork(tmp_path / "absent", HEAD, env) == "missing"
    assert calls() == []


# --- image tags and the CLI ------------------------------------------------------------


def test_image_names_are_lowercased_but_not_their_tags():
    assert (
        ci.lowercase_repository("ghcr.io/Acme/Penguins:sha-AbC") == "ghcr.io/acme/penguins:sha-AbC"
    )
    assert ci.lowercase_repository("localhost:5000/Acme/img") == "localhost:5000/acme/img"
    assert ci.lowercase_repository("Img") == "img"


def test_publish_without_tags_is_an_error():
    with pytest.raises(ci.CIError, match="gave no tags"):
        ci.publish_image("mloperation:latest", {"tags": []})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "DOCKER_METADATA_OUTPUT_JSON is empty"),
        ('{"tags": [', "DOCKER_METADATA_OUTPUT_JSON is not JSON"),
        ('["ghcr.io/a/b:latest"]', "not a JSON object"),
    ],
)
def test_publish_cli_names_bad_metadata_in_one_line(value, message, capsys, monkeypatch):
    monkeypatch.setenv("DOCKER_METADATA_OUTPUT_JSON", value)
    monkeypatch.setenv("DOCKER", "/nonexistent/docker")  # never reached
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    assert ci.main(["publish-image", "mloperation:latest"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("error: src.ci publish-image: ") and message in out
    assert out.count("\n") == 1


def test_cli_returns_1_with_an_error_annotation(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.delenv("GITHUB_EVENT_PATH", raising=False)
    assert ci.main(["comment", "--report", str(report_dir(tmp_path))]) == 1
    assert "::error title=src.ci comment::no GitHub event" in capsys.readouterr().out


def test_ci_module_needs_only_the_standard_library():
    """The fork workflow runs it with the runner's bare python3: no venv, no installs."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); import src.ci; print(src.ci.WATERMARK)"
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code, str(ci.ROOT)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "MLOperation experiment report"
