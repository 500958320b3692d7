"""Small helpers shared by the stages: params, atomic writes, hashing, git identity."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from src.config import PARAMS_FILE, ROOT


class PipelineError(Exception):
    """A problem the user must fix (bad data, bad params, unreachable service).

    Stage CLIs print the message and exit with status 1 instead of a traceback.
    """


def setup_logging() -> logging.Logger:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return logging.getLogger("mloperation")


def load_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml into a dict."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            params = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise PipelineError(f"params file not found: {path}") from exc
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must hold a mapping of sections (base, data, ...)")
    return params


def current_umask() -> int:
    """The process umask: from /proc (Linux), else by setting it and setting it back."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `target`; move it into place only if the block succeeds.

    An interrupted or failing writer never leaves a half-written `target` behind. The file
    gets the mode any new file would (0666 less the umask), not mkstemp's private 0600.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(target: Path | str, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` and atomically move the result to `target`."""
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


def write_json(target: Path | str, data: Any) -> Path:
    """Write JSON deterministically (sorted keys, trailing newline), atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(target, lambda p: p.write_text(text, encoding="utf-8"))


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def git_commit(cwd: Path = ROOT) -> str | None:
    """The current git commit (with a `-dirty` suffix for uncommitted changes), if any."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("GITHUB_SHA")
    return f"{sha}-dirty" if dirty else sha


def run_cli(main: Callable[[], Any]) -> None:
    """Run a stage entry point, turning PipelineError into a one-line message and exit code 1."""
    log = setup_logging()
    try:
        main()
    except PipelineError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
