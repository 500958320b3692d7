"""CI steps as commands that also run locally; the workflows only call these (via make).

    python -m src.ci pull                  dvc pull --run-cache if the remote is usable
    python -m src.ci push                  dvc push --run-cache if the remote is usable
    python -m src.ci comment               post reports/experiment/report.md on the PR with CML
    python -m src.ci comment-fork DIR --head-sha SHA
                                           post a fork PR's uploaded report (workflow_run)
    python -m src.ci publish-image IMAGE   add the OCI labels and tags of docker/metadata-action
                                           to the tested image, push it, print its digest

Standard library only: the fork workflow runs `python3 -m src.ci comment-fork` from the base
branch's checkout, with nothing installed and none of the PR's code run. What it hands CML
is rebuilt from the fork's artifact, never the fork's markdown itself (see "Fork reports").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
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


# --- fork reports ----------------------------------------------------------------------
#
# A fork's artifact (report.md, its PNGs, pr.json) was made by untrusted code, and this step
# runs with a token that can comment. `cml comment update --publish` uploads files that the
# markdown links: CML 0.20.6 (src/cml.js, `publishLocalFiles` in `commentCreate`) parses
# the report with remark 13 and no plugins (micromark 2.11: CommonMark, no GFM), visits
# every `definition`, `image` and `link` node, decodes a `data:image/` url and uploads it,
# and otherwise uploads `path.resolve(dirname(report), url)` whatever it is (src/utils.js
# `upload`: stat, read stream, mime from libmagic); only ENOENT is skipped. No url is
# exempt: `http://x/../../../../etc/passwd` resolves to /etc/passwd, as do `/etc/passwd`,
# `../..` paths, symlinks, and urls spelled with escapes (`\/`) or character references
# (`&#47;`). Such nodes come from `[` (inline links, images, reference definitions, anywhere)
# and from `<...>` autolinks; `html` nodes are not visited, but GitHub renders them.
# (With GFM, bare `http://` and `www.` text would be links too: re-check on a CML upgrade.)
#
# So the fork's markdown never reaches CML. `fork_markdown` rebuilds it in trusted code:
# every `\`, `[`, `]` and `<` of the fork's text gets a backslash, so it opens no link,
# image, definition, autolink or HTML (a character reference like `&#91;` is only ever text).
# An escape cannot be split from its character, as nothing sits between them; inside code
# the pair is literal text, which opens nothing either. So this holds whatever block
# structure micromark sees. Code spans are kept as written (no backslashes showing) only
# where every backtick run of the line pairs up within that line, so micromark pairs them
# the same way in whatever block the line lands; a line with an unpaired run gets all its
# backticks escaped (a span opened on one line and closed on the next, or a bare `\r`
# splitting a line, would otherwise hide a link). Headings, tables, lists and emphasis
# read as the fork wrote them. The only links in the result are written here:
# `![alt](plot-NN.png)` for each image of the report that is a PNG inside the artifact
# (`read_inside`: no symlink, a regular file, PNG signature, size and count bounds), copied
# into a fresh folder that holds nothing else but the rebuilt report.md; and the fork run's
# own link, rebuilt from GitHub's event. Other links keep their text and lose their url;
# the comment says how many and the job log lists them. Hand-written because the
# workflow's bare python3 has no markdown library, and escaping needs no parser that
# agrees with micromark about the structure.
#
# The same-repo `comment` path posts its report unchanged: there the PR's code runs with the
# PR's own token and could call CML, or post anything, itself; a filter would guard nothing.

FORK_REPORT_MAX_BYTES = 256 * 1024  # GitHub caps a comment at 65,536 characters
FORK_PLOT_MAX_BYTES = 2 * 1024 * 1024  # a plot of src/report.py is ~20 KB
FORK_PLOT_MAX_COUNT = 32  # src/report.py draws a few per side
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MARKDOWN_SPECIAL = re.compile(r"([\\\[\]<])")  # all that opens a link or HTML (see above)
BACKTICKS = re.compile(r"`+")
# An inline link or image as src/report.py writes them; anything fancier stays escaped text.
FORK_LINK = re.compile(r"(!?)\[([^\[\]\n]*)\]\(([^()\s]*)\)")
# A relative path of plain names (none starts with a dot, so no `.`, `..` or hidden file).
PLOT_PATH = re.compile(r"(?:[A-Za-z0-9_-][A-Za-z0-9_.-]*/)*[A-Za-z0-9_-][A-Za-z0-9_.-]*\.png")
GITHUB_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*/[A-Za-z0-9_-][A-Za-z0-9_.-]*")
GITHUB_SERVER = re.compile(r"https://[A-Za-z0-9.-]+(?::[0-9]+)?")


class Refused(Exception):
    """A file of the artifact is not used; the message says why."""


class Absent(Refused):
    """The file is not in the artifact."""


def read_inside(root: Path, relative: str, limit: int) -> bytes:
    """The bytes of the regular file `relative` below `root`, following no symlink below it.

    Opened one component at a time relative to the open parent, with O_NOFOLLOW, so what
    is checked is what is read (lstat only names the reason). Raises Refused saying why.
    """
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise Refused("not a plain relative path inside the artifact")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = "/".join(parts[: depth + 1])
            try:
                mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                raise Absent(f"no {where} in the artifact") from None
            if stat.S_ISLNK(mode):
                raise Refused(f"{where} is a symlink")
            if not (stat.S_ISREG(mode) if last else stat.S_ISDIR(mode)):
                raise Refused(f"{where} is not a {'regular file' if last else 'folder'}")
            flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the lstat
            raise Refused(f"{relative} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise Refused(f"{relative} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise Refused(f"{relative} is larger than {limit} bytes")
    return data


def escape_markdown(text: str, backticks: bool = False) -> str:
    r"""`text` with `\ [ ] <` (and backticks) escaped: it reads the same, opens no link or HTML."""
    text = MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return text.replace("`", "\\`") if backticks else text


def code_spans(line: str) -> list[tuple[int, int]] | None:
    """(start, end) of the code spans of a line, its backtick runs paired as CommonMark does
    (an opener takes the next run of the same length); None if a run has no closer on it."""
    runs = [(m.start(), m.end()) for m in BACKTICKS.finditer(line)]
    spans, i = [], 0
    while i < len(runs):
        start, end = runs[i]
        closer = next(
            (k for k in range(i + 1, len(runs)) if runs[k][1] - runs[k][0] == end - start), None
        )
        if closer is None:
            return None
        spans.append((start, runs[closer][1]))
        i = closer + 1
    return spans


def fork_markdown(
    text: str, artifact: Path, out_dir: Path, run_url: str | None
) -> tuple[str, list[str]]:
    """The fork's report rebuilt for CML, its verified PNGs copied into `out_dir`.

    Returns the markdown and one line per link or image left out (for the job log).
    """
    copies: dict[str, str] = {}  # artifact path -> name of the copy in out_dir
    dropped: list[str] = []

    def image(alt: str, url: str) -> str:
        if url not in copies:
            if not PLOT_PATH.fullmatch(url):
                raise Refused("not a .png path inside the artifact")
            if len(copies) >= FORK_PLOT_MAX_COUNT:
                raise Refused(f"more than {FORK_PLOT_MAX_COUNT} images")
            data = read_inside(artifact, url, FORK_PLOT_MAX_BYTES)
            if not data.startswith(PNG_SIGNATURE):
                raise Refused("not a PNG file")
            name = f"plot-{len(copies) + 1:02d}.png"
            (out_dir / name).write_bytes(data)
            copies[url] = name
        return f"![{escape_markdown(alt).replace('`', '')}]({copies[url]})"

    def rebuild(match: re.Match) -> str:
        bang, label, url = match.groups()
        if not bang:
            if run_url is not None and url == run_url:
                return f"[{escape_markdown(label, backticks=True)}]({run_url})"
            dropped.append(f"link {url[:200]!r}: only images of the artifact are kept")
            return escape_markdown(label, backticks=True)
        try:
            return image(label, url)
        except Refused as exc:
            dropped.append(f"image {url[:200]!r}: {exc}")
            return escape_markdown(label, backticks=True)

    def outside_code(segment: str, backticks: bool) -> str:
        parts, end = [], 0
        for match in FORK_LINK.finditer(segment):
            parts += [escape_markdown(segment[end : match.start()], backticks), rebuild(match)]
            end = match.end()
        return "".join([*parts, escape_markdown(segment[end:], backticks)])

    # Line by line, \r and \r\n being line endings too: a code span is kept as written
    # only when all backtick runs of its line pair up within the line, so micromark pairs
    # them the same way whichever block the line ends up in; otherwise they are escaped.
    lines = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        spans = code_spans(line)
        if spans is None:
            lines.append(outside_code(line, backticks=True))
            continue
        parts, end = [], 0
        for start, stop in spans:
            parts += [outside_code(line[end:start], backticks=False), line[start:stop]]
            end = stop
        lines.append("".join([*parts, outside_code(line[end:], backticks=False)]))
    markdown = "\n".join(lines)
    if dropped:
        markdown = markdown.rstrip("\n") + (
            f"\n\n_{len(dropped)} link(s) or image(s) of this fork's report are not shown: "
            "from a fork only PNG plots inside its artifact are published (the "
            "`PR comment (forks)` job log lists them)._\n"
        )
    return markdown, dropped


def fork_run_url(env: Mapping[str, str]) -> str | None:
    """The fork PR run's page, from GitHub's `workflow_run` event (None if there is none)."""
    path = env.get("GITHUB_EVENT_PATH")
    if not path or not Path(path).is_file():
        return None
    run_id = (json.loads(Path(path).read_text(encoding="utf-8")).get("workflow_run") or {}).get(
        "id"
    )
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repo = env.get("GITHUB_REPOSITORY", "")
    if isinstance(run_id, bool) or not isinstance(run_id, int) or run_id <= 0:
        return None
    if not (GITHUB_SERVER.fullmatch(server) and GITHUB_NAME.fullmatch(repo)):
        return None
    return f"{server}/{repo}/actions/runs/{run_id}"


def read_artifact_text(artifact: Path, name: str, limit: int) -> str | None:
    """A UTF-8 file at the top of the artifact; None if absent, CIError if unusable."""
    try:
        data = read_inside(artifact, name, limit)
    except Absent:
        return None
    except Refused as exc:
        raise CIError(f"the fork's artifact is refused: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CIError(f"{name} in the fork's artifact is not UTF-8 text: not posting") from None


def comment_fork(artifact: Path, head_sha: str, env: Mapping[str, str] | None = None) -> str:
    """Post a fork PR's report from its artifact, only if it really belongs to that PR.

    The artifact was produced by untrusted code, so its PR number is checked against GitHub:
    the PR must be in this repository and its head must be the commit the run was for
    (`github.event.workflow_run.head_sha`). CML gets the report rebuilt by `fork_markdown`
    in a fresh folder, never the artifact's. Returns "posted", "missing" or "stale".
    """
    env = os.environ if env is None else env
    if not artifact.is_dir():
        annotate("notice", "report comment", f"no report in {artifact}: nothing to post", env)
        return "missing"
    text = read_artifact_text(artifact, "report.md", FORK_REPORT_MAX_BYTES)
    info_text = read_artifact_text(artifact, PR_INFO, 4096)
    if text is None or info_text is None:
        annotate("notice", "report comment", f"no report in {artifact}: nothing to post", env)
        return "missing"
    try:
        info = json.loads(info_text)
    except ValueError:
        raise CIError(f"{PR_INFO} in the fork's artifact is not JSON: not posting") from None
    number = info.get("number") if isinstance(info, dict) else None
    if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
        raise CIError(f"{PR_INFO} in the fork's artifact holds no valid PR number: {number!r}")
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
    with tempfile.TemporaryDirectory(prefix="fork-report-") as tmp:
        markdown, dropped = fork_markdown(text, artifact, Path(tmp), fork_run_url(env))
        for line in dropped:
            annotate("warning", "fork report", f"not published: {line}", env)
        report = Path(tmp) / "report.md"
        report.write_text(markdown, encoding="utf-8")
        cml_comment(report, f"pr/{number}", env)
    return "posted"


# --- container image -------------------------------------------------------------------


def lowercase_repository(tag: str) -> str:
    """ghcr.io/Owner/Repo:v1 -> ghcr.io/owner/repo:v1 (registries want lowercase names)."""
    name, sep, version = tag.rpartition(":")
    if not sep or "/" in version:  # no tag part, or the colon was a registry port
        return tag.lower()
    return f"{name.lower()}:{version}"


IMAGE_REFERENCE = re.compile(r"[a-z0-9][a-z0-9._/:-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_LINE = re.compile(r"^(?P<tag>\S+): digest: (?P<digest>sha256:[0-9a-f]{64}) size: \d+$")


def repository_of(tag: str) -> str:
    """ghcr.io/acme/penguins:sha-1234567 -> ghcr.io/acme/penguins (a registry port stays)."""
    name, sep, version = tag.rpartition(":")
    return name if sep and "/" not in version else tag


def metadata_from_env(env: Mapping[str, str]) -> dict:
    """docker/metadata-action's `json` output, passed as DOCKER_METADATA_OUTPUT_JSON."""
    raw = env.get("DOCKER_METADATA_OUTPUT_JSON", "")
    if not raw.strip():
        raise CIError(
            "DOCKER_METADATA_OUTPUT_JSON is empty: set it to docker/metadata-action's "
            "`json` output (steps.meta.outputs.json)"
        )
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CIError(f"DOCKER_METADATA_OUTPUT_JSON is not JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise CIError("DOCKER_METADATA_OUTPUT_JSON is not a JSON object with tags and labels")
    return metadata


def push_tag(docker: str, tag: str, env: Mapping[str, str]) -> str:
    """`docker push tag`, its output passed through; returns the manifest digest it reports."""
    proc = subprocess.run(
        [docker, "push", tag], env=dict(env), stdout=subprocess.PIPE, text=True, check=False
    )
    sys.stdout.write(proc.stdout)
    sys.stdout.flush()
    if proc.returncode != 0:
        raise CIError(f"docker push {tag} failed (exit {proc.returncode})")
    digests = [m["digest"] for m in map(DIGEST_LINE.match, proc.stdout.splitlines()) if m]
    if len(digests) != 1:
        raise CIError(f"docker push {tag} reported no manifest digest")
    return digests[0]


def report_pushed(pushed: Mapping[str, str], tags: list[str], env: Mapping[str, str]) -> None:
    """One line per repository (`REPO@sha256:...`), plus the job's outputs and summary."""
    for repository, digest in pushed.items():
        version_tags = ", ".join(
            t.rpartition(":")[2] for t in tags if repository_of(t) == repository
        )
        annotate("notice", "image pushed", f"{repository}@{digest} (tags: {version_tags})", env)
    if env.get("GITHUB_OUTPUT"):  # the registry's version is tagged with both (make promote)
        with open(env["GITHUB_OUTPUT"], "a", encoding="utf-8") as out:
            out.write(f"digest={next(iter(pushed.values()))}\nimage={tags[0]}\n")
    if env.get("GITHUB_STEP_SUMMARY"):
        with open(env["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as out:
            out.write("### Image pushed\n\n| image | digest |\n|---|---|\n")
            out.writelines(f"| `{tag}` | `{pushed[repository_of(tag)]}` |\n" for tag in tags)


def publish_image(
    image: str, metadata: dict, push_tags: bool = True, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Give the tested `image` the tags and OCI labels of docker/metadata-action, push it.

    The labels (and MLOPERATION_IMAGE_TAGS, the tags, for /metadata) go on with a `FROM image`
    build: the layers that were smoke-tested are the layers pushed (only the image config
    changes). `DOCKER` names the client binary, as in
    scripts/docker/. Returns {repository: pushed manifest digest} ({} with push_tags=False);
    every tag of a repository must report the same digest.
    """
    env = dict(os.environ if env is None else env)
    docker = env.get("DOCKER") or "docker"
    tags = [lowercase_repository(tag) for tag in metadata.get("tags") or []]
    if not tags:
        raise CIError("docker/metadata-action gave no tags")
    for tag in tags:  # they go into the Dockerfile's ENV line below: plain references only
        if not IMAGE_REFERENCE.fullmatch(tag):
            raise CIError(
                f"docker/metadata-action gave a tag that is not an image reference: {tag!r}"
            )
    labels = metadata.get("labels") or {}
    cmd = [docker, "build", "--quiet"]
    cmd += [f"--label={key}={value}" for key, value in sorted(labels.items())]
    cmd += [f"--tag={tag}" for tag in tags]
    cmd.append("-")  # Dockerfile from stdin, no build context
    # The tags it is pushed as, for GET /metadata (image_tags): known only now, so set here.
    dockerfile = f'FROM {image}\nENV MLOPERATION_IMAGE_TAGS="{" ".join(tags)}"\n'
    proc = subprocess.run(cmd, input=dockerfile, text=True, env=env)
    if proc.returncode != 0:
        raise CIError(f"labelling {image} failed (exit {proc.returncode})")
    if not push_tags:
        return {}
    pushed: dict[str, str] = {}
    for tag in tags:
        digest = push_tag(docker, tag, env)
        repository = repository_of(tag)
        if pushed.setdefault(repository, digest) != digest:
            raise CIError(f"{tag} was pushed as {digest}, other tags as {pushed[repository]}")
    report_pushed(pushed, tags, env)
    return pushed


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
            publish_image(args.image, metadata_from_env(os.environ), push_tags=not args.no_push)
    except CIError as exc:
        annotate("error", f"src.ci {args.command}", str(exc))
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
