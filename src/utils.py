"""Small helpers shared by the stages: params, atomic writes, hashing, git identity, and
`run_cli`, the one error wrapper of every command-line entry point.

Exit codes of every `python -m src...` command (and so of the make targets and DVC stages
that run them; README.md, "Errors and exit codes"):

    0    done
    1    a problem to fix, named in one line (PipelineError: bad data, a failed quality
         gate, an unreachable service, a missing input)
    2    bad command-line arguments (argparse)
    70   an unexpected error (a bug): one line, and the traceback with --debug or
         MLOPS_DEBUG=1
    74   a file could not be read or written (full disk, permissions): the path and the
         operating system's reason
    78   params.yaml is invalid: one line per bad key (src.params)
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import reprlib
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from src.config import PARAMS_FILE, ROOT

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUG = 70  # sysexits.h EX_SOFTWARE
EXIT_IO = 74  # sysexits.h EX_IOERR
EXIT_PARAMS = 78  # sysexits.h EX_CONFIG
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
DEBUG_ENV = "MLOPS_DEBUG"
DEBUG_FLAG = "--debug"
MAX_SHOWN_PROBLEMS = 30
# errno of a failed write that names no file (a full disk is reported at write or close)
WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
}  # lines of a ParamsError before "and N more"


class PipelineError(Exception):
    """A problem the user must fix (bad data, bad params, unreachable service).

    Command-line entry points (run_cli) print the message as one line and exit with
    `exit_code` instead of a traceback.
    """

    exit_code = EXIT_ERROR


class FileError(PipelineError):
    """A file could not be read or written: the message names the path and the OS reason."""

    exit_code = EXIT_IO


class ParamsError(PipelineError):
    """params.yaml is invalid: one `(key path, problem)` per bad key.

    Printed one line each: `params.yaml: train.n_estimators: -5: must be an integer ...`.
    """

    exit_code = EXIT_PARAMS

    def __init__(self, problems: Sequence[tuple[str, str]], source: str = "params.yaml"):
        self.problems = list(problems)
        self.source = source
        super().__init__(self.problems)

    def lines(self) -> list[str]:
        shown = [
            f"{self.source}: {path}: {text}" if path else f"{self.source}: {text}"
            for path, text in self.problems[:MAX_SHOWN_PROBLEMS]
        ]
        if len(self.problems) > MAX_SHOWN_PROBLEMS:
            shown.append(f"{self.source}: and {len(self.problems) - MAX_SHOWN_PROBLEMS} more")
        return shown

    def __str__(self) -> str:
        return "\n".join(self.lines())


_SHOW = reprlib.Repr()  # bounded: a hostile value cannot make a long message
_SHOW.maxlevel, _SHOW.maxdict, _SHOW.maxlist, _SHOW.maxtuple = 2, 4, 4, 4
_SHOW.maxstring = _SHOW.maxother = 60


def show(value: Any) -> str:
    """A value from a user's file, bounded and on one line, for an error message."""
    return _SHOW.repr(value)


def os_reason(exc: OSError) -> str:
    """The operating system's reason for `exc` (`No space left on device`), without paths."""
    return exc.strerror or str(exc) or type(exc).__name__


def setup_logging() -> logging.Logger:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return logging.getLogger("mloperation")


def load_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml and validate it against its schema (src.params).

    Returns the values as the file holds them; raises ParamsError with one line per bad
    key, or PipelineError for a missing or unreadable file.
    """
    from src.params import load  # src.params builds on this module

    return load(path)


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
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield an empty staging directory next to `target`; if the block succeeds, swap it in
    for `target` as a whole (a reader sees the old directory or the new one). A failing block
    leaves `target` as it was; the staging directory is always removed. It gets the mode any
    new directory would (0777 less the umask), not mkdtemp's 0700."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staging.chmod(0o777 & ~current_umask())
        yield staging
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `target`; move it into place only if the block succeeds.

    An interrupted or failing writer never leaves a half-written `target` (nor the
    temporary file) behind. The file gets the mode any new file would (0666 less the
    umask), not mkstemp's private 0600. An OSError of the write itself (a full disk, a
    read-only or forbidden folder) is raised as FileError naming `target` and the OS
    reason; an OSError about another file (one the block reads) passes through unchanged.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
        yield tmp
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        ours = exc.filename in (str(tmp), str(target), str(target.parent))
        if not ours and not (exc.filename is None and exc.errno in WRITE_ERRNOS):
            raise  # e.g. a connection reset while downloading into `tmp`
        raise FileError(f"cannot write {target}: {os_reason(exc)}") from exc
    finally:
        if tmp is not None:
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


def _debug_requested(argv: list[str]) -> bool:
    """MLOPS_DEBUG=1 in the environment, or --debug among the arguments (removed from
    `argv`, before any `--`, so each command's own parser never sees it)."""
    flag = False
    end = argv.index("--") if "--" in argv else len(argv)
    while DEBUG_FLAG in argv[1:end]:
        argv.remove(DEBUG_FLAG)
        end -= 1
        flag = True
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def run_cli(main: Callable[[], Any], argv: list[str] | None = None) -> None:
    """Run a command-line entry point; every failure is one line and a documented exit code.

    PipelineError (and its kinds) -> its message, exit 1 / 74 / 78 (`exit_code`); an OSError
    -> the path and the OS reason, 74; anything else -> the error and how to see the
    traceback (--debug or MLOPS_DEBUG=1), 70; Ctrl-C -> 130. With debugging on, the
    traceback is printed too. `main` may return an exit code (int).
    """
    argv = sys.argv if argv is None else argv
    debug = _debug_requested(argv)
    log = setup_logging()
    try:
        result = main()
    except SystemExit:  # argparse usage errors (2), --help (0), explicit exits
        raise
    except BaseException as exc:  # the one place every failure is reported
        code = _report(log, exc, debug)
        if debug:
            traceback.print_exception(exc)
        raise SystemExit(code) from None
    raise SystemExit(result if isinstance(result, int) else 0)


def _report(log: logging.Logger, exc: BaseException, debug: bool) -> int:
    """Log `exc` as one line (a ParamsError: one per bad key) and return the exit code."""
    if isinstance(exc, KeyboardInterrupt):
        log.error("interrupted")
        return EXIT_INTERRUPTED
    if isinstance(exc, ParamsError):
        for line in exc.lines():
            log.error("%s", line)
        return exc.exit_code
    if isinstance(exc, PipelineError):
        log.error("%s", _one_line(str(exc), limit=2000))
        return exc.exit_code
    if isinstance(exc, OSError):
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        log.error("%s", f"{where}: {os_reason(exc)}" if where else f"OS error: {os_reason(exc)}")
        return EXIT_IO
    if not isinstance(exc, Exception):  # GeneratorExit and the like: not ours to swallow
        raise exc
    hint = "" if debug else f" (rerun with {DEBUG_FLAG} or {DEBUG_ENV}=1 for the traceback)"
    log.error("unexpected error (a bug?): %s: %s%s", type(exc).__name__, _one_line(str(exc)), hint)
    return EXIT_BUG
