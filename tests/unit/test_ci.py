"""CI step helpers (src/ci.py): DVC pull/push decisions, posting the report, fork safety.

DVC runs for real against a local-folder remote. Only GitHub is replaced, at its API
boundary: `cml` (which would call GitHub's API) by a script on PATH that records the call
and emulates CML's publish step (tests/unit/cml_standin.py: the npm package cannot be
installed here), and the REST API that the fork workflow asks about a PR by a small HTTP
server on loopback.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from src import ci
from src.report import build_report
from tests.unit.cml_standin import cml_urls, publish
from tests.unit.experiment_repo import make_repo, plot_frames

pytestmark = pytest.mark.mechanics  # never reads the configured dataset (pyproject.toml)

REPO = "acme/penguins"
HEAD = "a" * 40

RECORDER = """\
#!{python}
import sys
sys.path.insert(0, {root!r})
from tests.unit import cml_standin
sys.exit(cml_standin.main(sys.argv[1:], {record!r}))
"""


def tool_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GITHUB_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


@pytest.fixture
def cml_recorder(tmp_path):
    """A `cml` on PATH that records its calls and what CML would upload: the GitHub API
    boundary (each call: args, telemetry_off, token, and with --publish the body, the
    report folder's files and the uploads, bytes as hex)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "cml-calls.jsonl"
    script = bin_dir / "cml"
    script.write_text(RECORDER.format(python=sys.executable, root=str(ci.ROOT), record=str(record)))
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
    (call,) = calls()
    assert call["args"] == [
        "comment",
        "update",
        "--target=pr",
        "--watermark-title=MLOperation experiment report",
        "--publish",
        str(report),
    ]
    assert call["telemetry_off"] == "1" and call["token"]
    assert call["body"] == "## Experiment report\n"  # built by trusted code: posted as is
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
    # CML gets a rebuilt copy in a folder of its own, never the artifact's report.md
    assert Path(call["args"][-1]).parent != artifact
    assert call["body"] == "## Experiment report\n" and call["folder"].keys() == {"report.md"}


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


# --- a fork's markdown never makes CML upload a runner file -----------------------------


def png(payload: bytes) -> bytes:
    """A real 1x1 PNG carrying `payload` in a tEXt chunk (so each one's bytes are unique)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 1x1, 8-bit grey
    return (
        ci.PNG_SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"Comment\0" + payload)
        + chunk(b"IDAT", zlib.compress(b"\0\0"))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def secrets(tmp_path):
    """Files of the runner outside the artifact: a private key and a PNG."""
    home = tmp_path / "home" / ".ssh"
    home.mkdir(parents=True)
    (home / "id").write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY----- s3cr3t-key-bytes\n")
    (home / "key.png").write_bytes(png(b"s3cr3t-png-bytes"))
    return home


def hostile_report(secrets: Path) -> str:
    """Every way we know for CommonMark to hand CML a url that reaches `secrets`."""
    key, key_png = secrets / "id", secrets / "key.png"
    up = "/.." * 30  # more than enough to climb from any folder to /
    escaped = str(key).replace("/", "\\/")
    referenced = "&#47;" + str(key)[1:].replace("/", "&#47;")
    data = base64.b64encode(key_png.read_bytes()).decode()
    return f"""## Experiment report

| plot | note |
|---|---|
| ![good](report_images/pr/good.png) | a real plot, kept |

![absolute]({key_png}) and [absolute link]({key}) and [titled]({key} "t")
[dot-dot](../home/.ssh/id) ![dot-dot image](report_images/../../home/.ssh/key.png)
![symlink](report_images/pr/leak.png) ![through a symlinked folder](report_images/linked/key.png)
[file url](file://{key}) [angle destination](<{key}>)
[http climbing out](http://example.com{up}{key}) <ab:{up}{key}>
[escapes]({escaped}) [character references]({referenced})
<img src="{key_png}"> <a href="{key}">html</a>
`code` [after a code span]({key}) \\[escaped]({key}) \\\\[after a backslash]({key})
[![good](report_images/pr/good.png)]({key}) [link text [nested]({key})]({key})
![not a png](report_images/pr/fake.png) ![too big](report_images/pr/huge.png)
![inline data](data:image/png;base64,{data})
[used reference][key]
a code span ` that a later line closes
` [after a span across lines]({key}) `
# a heading `
[after a heading's backtick]({key}) `
a backtick `[before a bare CR]({key})\r# `then a heading
``` fenced
[in a fence]({key}) `[in a fence, in code]({key})`
```

[key]: {key}
> [quoted]: {key_png}
- [in a list]: {key}
"""


def hostile_artifact(tmp_path: Path, secrets: Path) -> tuple[Path, bytes]:
    artifact = fork_artifact(tmp_path, 7)
    images = artifact / "report_images"
    good = png(b"the fork's own plot")
    (images / "pr" / "good.png").write_bytes(good)
    (images / "pr" / "fake.png").write_text("#!/bin/sh\necho not a png\n")
    (images / "pr" / "huge.png").write_bytes(ci.PNG_SIGNATURE + bytes(ci.FORK_PLOT_MAX_BYTES))
    (images / "pr" / "leak.png").symlink_to(secrets / "key.png")
    (images / "linked").symlink_to(secrets, target_is_directory=True)
    (artifact / "report.md").write_text(hostile_report(secrets))
    return artifact, good


def secret_bytes(secrets: Path) -> list[bytes]:
    return [(secrets / name).read_bytes() for name in ("id", "key.png")]


def test_the_cml_stand_in_uploads_the_files_cml_would(tmp_path, secrets):
    """The emulation catches the leak that the fork path must prevent (so that test can fail)."""
    artifact, _ = hostile_artifact(tmp_path, secrets)
    uploads = publish(artifact / "report.md")
    leaked = {u["url"]: u["bytes"] for u in uploads if u["bytes"] in secret_bytes(secrets)}
    key, key_png = secrets / "id", secrets / "key.png"
    for url in [
        str(key_png),  # absolute
        "../home/.ssh/id",
        "report_images/pr/leak.png",  # a symlink inside the artifact
        "report_images/linked/key.png",
        f"http://example.com{'/..' * 30}{key}",  # no scheme is exempt from path.resolve
        f"ab:{'/..' * 30}{key}",  # an autolink (a scheme has 2 to 32 letters)
        str(key),  # via escapes, character references, definitions, angle brackets ...
    ]:
        assert url in leaked, url
    assert any(u["path"] is None and u["bytes"] == key_png.read_bytes() for u in uploads)
    # CML does not visit html nodes, and resolves file: urls as a relative folder `file:`
    assert str(key_png) not in [u["url"] for u in uploads if "<img" in u["url"]]
    assert f"file://{key}" not in {u["url"] for u in uploads}


def test_hostile_fork_artifact_uploads_only_verified_png_copies(
    tmp_path, secrets, cml_recorder, github_api, capsys
):
    env, calls = cml_recorder
    api, fake = github_api
    fake.pulls[7] = pull_json(HEAD)
    env.update(GITHUB_API_URL=api, GITHUB_REPOSITORY=REPO, GITHUB_ACTIONS="true")
    artifact, good = hostile_artifact(tmp_path, secrets)
    assert ci.comment_fork(artifact, HEAD, env) == "posted"
    (call,) = calls()
    folder = Path(call["args"][-1]).parent
    # the folder CML was given holds the rebuilt report and the one verified plot, copied
    assert call["folder"] == {"report.md": call["body"].encode().hex(), "plot-01.png": good.hex()}
    # every url CML sees is that copy, so that copy is all it uploads
    assert set(cml_urls(call["body"])) == {"plot-01.png"}
    assert call["uploads"], "the fork's real plot was not posted"
    for upload in call["uploads"]:
        assert upload["path"] == str(folder / "plot-01.png")
        assert bytes.fromhex(upload["bytes"]) == good
    for secret in secret_bytes(secrets):
        assert secret.hex() not in json.dumps(call)
    assert b"s3cr3t".hex() not in json.dumps(call) and "s3cr3t" not in call["body"]
    # the fork's text stays readable: heading, table, the labels of the links it lost
    body = call["body"]
    assert body.startswith("## Experiment report\n\n| plot | note |\n|---|---|\n")
    assert "| ![good](plot-01.png) | a real plot, kept |" in body
    assert "\nabsolute and absolute link and " in body and "\ndot-dot dot-dot image\n" in body
    assert "links or images of this fork's report are not shown" in body.replace("(s)", "s")
    log = capsys.readouterr().out
    assert "::warning title=fork report::not published: image 'report_images/pr/fake.png': " in log
    assert "report_images/pr/leak.png is a symlink" in log
    assert "report_images/linked is a symlink" in log
    assert f"report_images/pr/huge.png is larger than {ci.FORK_PLOT_MAX_BYTES} bytes" in log
    assert "not a PNG file" in log


SOUP = [
    *["[", "]", "(", ")", "<", ">", "`", "``", "```", "~~~", "\\", "\\[", "\\`", "!", ":"],
    *["\n", "\r", "\r\n", "\n\n", "# ", "> ", "- ", "1. ", "    ", " ", "*", "_", "|", "==="],
    *["x", "/etc/k", "http://h/..", "&#91;", "&#60;", "&#96;", '"t"', "![g](good.png)"],
    *["[l](/etc/k)", "[r]: /etc/k", "<ab:/etc/k>", "<img src=/k>", "[r]", "[l](<k>)"],
]


def test_no_mix_of_markdown_makes_a_link_of_its_own(tmp_path):
    """Seeded random soups of markdown's link, code and block syntax: after the rebuild,
    the only url the CML stand-in finds is the verified copy (20,000 soups ran clean)."""
    artifact, out = tmp_path / "artifact", tmp_path / "out"
    artifact.mkdir()
    out.mkdir()
    (artifact / "good.png").write_bytes(png(b"g"))
    rng = random.Random(9)
    for _ in range(500):
        text = "".join(rng.choice(SOUP) for _ in range(rng.randint(1, 40)))
        markdown, _ = ci.fork_markdown(text, artifact, out, None)
        assert set(cml_urls(markdown)) <= {"plot-01.png"}, (text, markdown)
    assert (out / "plot-01.png").read_bytes() == (artifact / "good.png").read_bytes()


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    """A report as src.report writes it on a fork's CI run (4 changed plots, the run link)."""
    top = tmp_path_factory.mktemp("real")
    out = top / "artifact" / "report.md"
    ci_env = {
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_RUN_ID": "123456",
    }
    repo = make_repo(
        top / "repo",
        base_plots=plot_frames("multiclass", flips=2),
        pr_plots=plot_frames("multiclass", flips=20),
    )
    text, _ = build_report(repo, "main", out, env=ci_env)
    (out.parent / "pr.json").write_text(json.dumps({"number": 7, "head_sha": HEAD}))
    return out.parent, text


def test_a_real_fork_report_is_posted_with_its_plots(
    tmp_path, real_report, cml_recorder, github_api
):
    env, calls = cml_recorder
    api, fake = github_api
    fake.pulls[7] = pull_json(HEAD)
    event = tmp_path / "workflow_run.json"
    event.write_text(json.dumps({"workflow_run": {"id": 123456, "head_sha": HEAD}}))
    env.update(
        GITHUB_API_URL=api,
        GITHUB_REPOSITORY=REPO,
        GITHUB_SERVER_URL="https://github.com",
        GITHUB_EVENT_PATH=str(event),
    )
    artifact, text = real_report
    assert ci.comment_fork(artifact, HEAD, env) == "posted"
    (call,) = calls()
    plots = re.findall(r"\]\((report_images/[^)]+\.png)\)", text)
    assert plots == [
        f"report_images/{name}.png"
        for name in ("confusion_matrix", "roc", "precision_recall", "feature_importance")
    ]
    # the same report, plots renamed to their verified copies, nothing dropped
    renamed = iter(f"plot-{n:02d}.png" for n in range(1, 5))
    assert call["body"] == re.sub(r"report_images/[^)]+\.png", lambda _: next(renamed), text)
    run = f"https://github.com/{REPO}/actions/runs/123456"
    assert cml_urls(call["body"]) == [f"plot-{n:02d}.png" for n in range(1, 5)] + [run]
    assert [bytes.fromhex(u["bytes"]) for u in call["uploads"]] == [
        (artifact / path).read_bytes() for path in plots
    ]


def test_a_fork_report_that_is_a_symlink_is_refused(tmp_path, secrets, cml_recorder, github_api):
    env, calls = cml_recorder
    api, fake = github_api
    fake.pulls[7] = pull_json(HEAD)
    env.update(GITHUB_API_URL=api, GITHUB_REPOSITORY=REPO)
    artifact = fork_artifact(tmp_path, 7)
    (artifact / "report.md").unlink()
    (artifact / "report.md").symlink_to(secrets / "id")
    with pytest.raises(ci.CIError, match=r"^the fork.s artifact is refused: report.md is a sym"):
        ci.comment_fork(artifact, HEAD, env)
    (artifact / "report.md").unlink()
    (artifact / "report.md").write_text("x" * (ci.FORK_REPORT_MAX_BYTES + 1))
    with pytest.raises(ci.CIError, match=r"report.md is larger than 262144 bytes"):
        ci.comment_fork(artifact, HEAD, env)
    (artifact / "report.md").write_text("## Report\n")
    (artifact / "pr.json").write_text("{not json")
    with pytest.raises(ci.CIError, match=r"pr.json in the fork's artifact is not JSON"):
        ci.comment_fork(artifact, HEAD, env)
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
    "tag",
    ['ghcr.io/a/b:1"\nRUN curl x', "ghcr.io/a/b:1 x", "ghcr.io/a/b", "ghcr.io/a/b:$HOME"],
)
def test_publish_refuses_a_tag_that_is_not_a_plain_reference(tag, monkeypatch):
    """The tags are written into the labelling build's ENV line: nothing else may get in."""
    monkeypatch.setenv("DOCKER", "/nonexistent/docker")  # never reached
    with pytest.raises(ci.CIError, match="not an image reference"):
        ci.publish_image("mloperation:latest", {"tags": [tag]})


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
