"""CI steps as commands that also run locally; the workflows only call these (via make).

    python -m src.ci pull                  dvc pull --run-cache if the remote is usable
    python -m src.ci push                  dvc push --run-cache if the remote is usable
    python -m src.ci comment               post reports/experiment/report.md on the PR with CML
    python -m src.ci comment-fork DIR --head-sha SHA
                                           post a fork PR's uploaded report (workflow_run)
    python -m src.ci publish-image IMAGE   add the OCI labels and tags of docker/metadata-action
                                           to the tested image and push it

Standard library only: the fork workflow runs `python3 -m src.ci comment-fork` from the base
branch's checkout, with nothing installed and none of the PR's code run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from src.config import REPORTS_DIR, ROOT
from src.utils import run_cli

REPORT = REPORTS_DIR / "experiment" / "report.md"
PULL_STATUS = REPORTS_DIR / "dvc_pull.json"  # read by src.report
PR_INFO = "pr.json"  # written beside the report: which PR and commit it is for
WATERMARK = "MLOperation experiment report"  # one comment per PR, updated in place
CML_VERSION = "0.20.6"
S3_CREDENTIAL_ENV = ("AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE")
S3_CREDENTIAL_CONFIG = ("access_key_id", "profile", "credentialpath")


class CIError(Exception):
    """A CI step cannot do its job; the message says why (exit status 1)."""


def annotate(level: str, title: str, message: str, env: Mapping[str, str] | None = None) -> None:
    """A GitHub Actions annotation (notice/warning/error), or a plain line elsewhere."""
    if (os.environ if env is None else env).get("GITHUB_ACTIONS") == "true":
        print(f"::{level} title={title}::{message}", flush=True)
    else:
        print(f"{level}: {title}: {message}", flush=True)


# --- DVC remote ------------------------------------------------------------------------


def dvc_executable() -> str:
    """The venv's dvc (beside this interpreter) even when it is not on PATH, else `dvc`."""
    beside = Path(sys.executable).with_name("dvc")
    return str(beside) if beside.is_file() else "dvc"


def dvc_config(root: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The merged DVC config (repo, local, global) as flat `section.key=value` pairs."""
    proc = subprocess.run(
        [dvc_executable(), "config", "--list"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env=None if env is None else dict(env),
    )
    pairs = (line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def remote_usable(config: Mapping[str, str], env: Mapping[str, str]) -> tuple[str | None, str]:
    """(remote name, why) when the default remote can be used, (None, why not) otherwise.

    S3 remotes need credentials: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (the repository
    secrets), a profile or web identity, or keys in `.dvc/config.local`. Other kinds of
    remote are tried (their credentials are their own business); a local folder must exist.
    """
    name = config.get("core.remote")
    if not name:
        return None, "no default DVC remote is configured (`dvc remote add -d ...`)"
    url = config.get(f"remote.{name}.url", "")
    scheme = urlsplit(url).scheme
    if scheme == "s3":
        from_env = bool(env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"))
        from_env = from_env or any(env.get(key) for key in S3_CREDENTIAL_ENV)
        from_config = any(config.get(f"remote.{name}.{key}") for key in S3_CREDENTIAL_CONFIG)
        if not (from_env or from_config):
            return None, (
                f"no credentials for the DVC remote `{name}` ({url}): add the repository "
                "secrets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (PRs from forks never "
                "get secrets)"
            )
        return name, f"remote `{name}` ({url})"
    if scheme in ("", "file") and not Path(urlsplit(url).path if scheme else url).is_dir():
        return None, f"the DVC remote `{name}` is a folder that does not exist: {url}"
    return name, f"remote `{name}` ({url})"


def write_status(path: Path, state: str, message: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    status = {"state": state, "pulled": state == "pulled", "message": message}
    path.write_text(json.dumps(status, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def pull(root: Path, status_file: Path = PULL_STATUS, env: Mapping[str, str] | None = None) -> None:
    """`dvc pull --run-cache` when the remote is usable; never fails the job.

    A skipped or failed pull only costs time (`dvc repro` then runs the stages itself); the
    outcome goes to `status_file` for the report and to a job annotation.
    """
    env = os.environ if env is None else env
    name, why = remote_usable(dvc_config(root, env), env)
    if name is None:
        write_status(status_file, "skipped", f"{why}; the pipeline runs from scratch.")
        annotate("notice", "dvc pull skipped", why, env)
        return
    proc = subprocess.run(
        [dvc_executable(), "pull", "--run-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env=dict(env),
    )
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode == 0:
        write_status(status_file, "pulled", f"pulled data and run-cache from {why}")
        return
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
    reason = errors[0].removeprefix("ERROR:").strip() if errors else f"exit {proc.returncode}"
    message = f"`dvc pull` from {why} failed ({reason}); missing outputs are rebuilt."
    write_status(status_file, "failed", message)
    annotate("warning", "dvc pull failed", message, env)


def push(root: Path, env: Mapping[str, str] | None = None) -> None:
    """`dvc push --run-cache` when the remote is usable (a notice otherwise); fails loudly."""
    env = os.environ if env is None else env
    name, why = remote_usable(dvc_config(root, env), env)
    if name is None:
        annotate("notice", "dvc push skipped", why, env)
        return
    proc = subprocess.run([dvc_executable(), "push", "--run-cache"], cwd=root, env=dict(env))
    if proc.returncode != 0:
        raise CIError(f"dvc push --run-cache to {why} failed (exit {proc.returncode})")


# --- PR comment ------------------------------------------------------------------------


def cml_comment(report: Path, target: str, env: Mapping[str, str] | None = None) -> None:
    """`cml comment update`: one comment per PR (found by its watermark), images published."""
    env = dict(os.environ if env is None else env)
    cml = shutil.which("cml", path=env.get("PATH"))
    if cml is None:
        raise CIError(f"cml is not installed: npm install -g @dvcorg/cml@{CML_VERSION}")
    if not (env.get("REPO_TOKEN") or env.get("GITHUB_TOKEN")):
        raise CIError("cml needs a token: set GITHUB_TOKEN (or REPO_TOKEN) for this step")
    env["ITERATIVE_DO_NOT_TRACK"] = "1"  # CML's telemetry off
    cmd = [
        cml,
        "comment",
        "update",
        f"--target={target}",
        f"--watermark-title={WATERMARK}",
        "--publish",
        str(report),
    ]
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise CIError(f"cml comment update failed (exit {proc.returncode})")


def load_event(env: Mapping[str, str]) -> dict:
    path = env.get("GITHUB_EVENT_PATH")
    if not path or not Path(path).is_file():
        raise CIError(
            "no GitHub event: `comment` runs in GitHub Actions on pull_request events "
            "(locally, read the report itself)"
        )
    return json.loads(Path(path).read_text(encoding="utf-8"))


def comment(report: Path = REPORT, env: Mapping[str, str] | None = None) -> str:
    """Post the report on the PR of this `pull_request` run, or leave it for the fork workflow.

    Writes `pr.json` (PR number and head commit) beside the report either way; the
    `workflow_run` workflow checks it against GitHub before posting a fork's report.
    Returns "posted" or "fork".
    """
    env = os.environ if env is None else env
    if not report.is_file():
        raise CIError(f"no report at {report}: run `make report` first")
    pr = load_event(env).get("pull_request")
    if not pr:
        raise CIError("not a pull_request event: there is no PR to comment on")
    info = {"number": int(pr["number"]), "head_sha": pr["head"]["sha"]}
    (report.parent / PR_INFO).write_text(json.dumps(info, sort_keys=True) + "\n")
    head_repo = ((pr.get("head") or {}).get("repo") or {}).get("full_name")
    if head_repo != env.get("GITHUB_REPOSITORY"):
        annotate(
            "notice",
            "report comment",
            f"PR from the fork {head_repo or '(deleted)'}: its token cannot comment, so the "
            "`PR comment (forks)` workflow posts the uploaded report",
            env,
        )
        return "fork"
    cml_comment(report, "pr", env)
    return "posted"


def github_get(url: str, token: str) -> dict:
    request = urllib.request.Request(
        url,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise CIError(f"GitHub API {url}: HTTP {exc.code}") from exc


def comment_fork(artifact: Path, head_sha: str, env: Mapping[str, str] | None = None) -> str:
    """Post a fork PR's report from its artifact, only if it really belongs to that PR.

    The artifact was produced by untrusted code, so its PR number is checked against GitHub:
    the PR must be in this repository and its head must be the commit the run was for
    (`github.event.workflow_run.head_sha`). Returns "posted", "missing" or "stale".
    """
    env = os.environ if env is None else env
    report, info_file = artifact / "report.md", artifact / PR_INFO
    if not (report.is_file() and info_file.is_file()):
        annotate("notice", "report comment", f"no report in {artifact}: nothing to post", env)
        return "missing"
    number = json.loads(info_file.read_text(encoding="utf-8")).get("number")
    if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
        raise CIError(f"{info_file} holds no valid PR number: {number!r}")
    repo = env.get("GITHUB_REPOSITORY", "")
    api = env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    token = env.get("GITHUB_TOKEN") or env.get("REPO_TOKEN") or ""
    pr = github_get(f"{api}/repos/{repo}/pulls/{number}", token)
    if ((pr.get("base") or {}).get("repo") or {}).get("full_name") != repo:
        raise CIError(f"PR #{number} is not a pull request into {repo}: not posting")
    if (pr.get("head") or {}).get("sha") != head_sha:
        annotate(
            "notice",
            "report comment",
            f"PR #{number} has moved on from {head_sha[:7]}: this report is stale, not posted",
            env,
        )
        return "stale"
    cml_comment(report, f"pr/{number}", env)
    return "posted"


# --- container image -------------------------------------------------------------------


def lowercase_repository(tag: str) -> str:
    """ghcr.io/Owner/Repo:v1 -> ghcr.io/owner/repo:v1 (registries want lowercase names)."""
    name, sep, version = tag.rpartition(":")
    if not sep or "/" in version:  # no tag part, or the colon was a registry port
        return tag.lower()
    return f"{name.lower()}:{version}"


def publish_image(
    image: str, metadata: dict, push_tags: bool = True, env: Mapping[str, str] | None = None
) -> list[str]:
    """Give the tested `image` the tags and OCI labels of docker/metadata-action, push it.

    The labels go on with a `FROM image` build: the layers that were smoke-tested are the
    layers pushed (only the image config changes). `DOCKER` names the client binary, as in
    scripts/docker/. Returns the tags.
    """
    env = dict(os.environ if env is None else env)
    docker = env.get("DOCKER") or "docker"
    tags = [lowercase_repository(tag) for tag in metadata.get("tags") or []]
    if not tags:
        raise CIError("docker/metadata-action gave no tags")
    labels = metadata.get("labels") or {}
    cmd = [docker, "build", "--quiet"]
    cmd += [f"--label={key}={value}" for key, value in sorted(labels.items())]
    cmd += [f"--tag={tag}" for tag in tags]
    cmd.append("-")  # Dockerfile from stdin, no build context
    proc = subprocess.run(cmd, input=f"FROM {image}\n", text=True, env=env)
    if proc.returncode != 0:
        raise CIError(f"labelling {image} failed (exit {proc.returncode})")
    if push_tags:
        for tag in tags:
            if subprocess.run([docker, "push", tag], env=env).returncode != 0:
                raise CIError(f"docker push {tag} failed")
    return tags


# --- CLI -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pull", help="dvc pull --run-cache when the remote is usable")
    sub.add_parser("push", help="dvc push --run-cache when the remote is usable")
    post = sub.add_parser("comment", help="post the report on this run's PR")
    post.add_argument("--report", type=Path, default=REPORT)
    fork = sub.add_parser("comment-fork", help="post a fork PR's uploaded report")
    fork.add_argument("artifact", type=Path, help="folder of the downloaded report artifact")
    fork.add_argument("--head-sha", required=True, help="github.event.workflow_run.head_sha")
    image = sub.add_parser("publish-image", help="label, tag and push the tested image")
    image.add_argument("image", help="local image that `make docker-smoke` tested")
    image.add_argument("--no-push", action="store_true", help="label and tag only")
    args = parser.parse_args(argv)
    root = ROOT
    try:
        if args.command == "pull":
            pull(root)
        elif args.command == "push":
            push(root)
        elif args.command == "comment":
            comment(args.report)
        elif args.command == "comment-fork":
            comment_fork(args.artifact, args.head_sha)
        else:
            metadata = json.loads(os.environ.get("DOCKER_METADATA_OUTPUT_JSON") or "{}")
            publish_image(args.image, metadata, push_tags=not args.no_push)
    except CIError as exc:
        annotate("error", f"src.ci {args.command}", str(exc))
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
