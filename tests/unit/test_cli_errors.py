"""Every command-line entry point fails with one line and a documented exit code, never a
traceback (src.utils.run_cli), and leaves nothing half-written behind."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.config import PARAMS_FILE, ROOT
from src.models.artifact import save_model
from src.utils import (
    EXIT_BUG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_PARAMS,
    FileError,
    atomic_path,
)
from tests.repo_tools import copy_repo, venv_env


def cli(args: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=venv_env(cwd, **env), capture_output=True, text=True
    )


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line.split(" ERROR ", 1)[1] for line in proc.stderr.splitlines() if " ERROR " in line]


@pytest.fixture(scope="module")
def bad_params(tmp_path_factory) -> Path:
    params = yaml.safe_load(PARAMS_FILE.read_text())
    params["train"]["n_estimators"] = -5
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stage_repo(tmp_path_factory) -> Path:
    """A copy of the repository with a raw data file, for stages run with bad params."""
    repo = copy_repo(tmp_path_factory.mktemp("stages") / "repo")
    (repo / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (repo / "data" / "raw" / "dataset.csv").write_text("kept\n")
    return repo


BAD_PARAMS_LINE = "params.yaml: train.n_estimators: -5: must be an integer from 1 to 10000"


@pytest.mark.parametrize(
    "module",
    [
        "src.data.make_dataset",
        "src.features.build_features",
        "src.models.train_model",
        "src.models.export_model",
        "src.models.evaluate_model",
    ],
)
def test_every_stage_checks_params_before_it_does_work(module, bad_params, stage_repo):
    repo = stage_repo
    marker = repo / "data" / "raw" / "dataset.csv"  # what prepare removes before it starts
    before = sorted(p.relative_to(repo) for p in repo.rglob("*") if ".git" not in p.parts)
    proc = cli(["-m", module, "--params", str(bad_params)], cwd=repo)
    assert proc.returncode == EXIT_PARAMS, proc.stderr
    assert error_lines(proc) == [BAD_PARAMS_LINE]
    assert "Traceback" not in proc.stderr
    assert marker.read_text() == "kept\n"
    assert sorted(p.relative_to(repo) for p in repo.rglob("*") if ".git" not in p.parts) == before


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["-m", "src.data.make_dataset", "--params", "nope.yaml"], "params file not found"),
        (
            ["-m", "src.models.predict_model", "--model", "nope.joblib", "--out", "x.csv"],
            "model file not found",
        ),
        (["-m", "src.data.draft_schema", "nope.csv"], "data file not found"),
        (["-m", "src.gate", "--base", "no-such-revision"], "no-such-revision"),
        (["-m", "src.report", "--base", "no-such-revision", "--out", "r.md"], "no-such-revision"),
    ],
)
def test_known_errors_are_one_line_and_exit_1(args, line, tmp_path):
    proc = cli(args, cwd=tmp_path if "draft_schema" in args[1] else ROOT)
    assert proc.returncode == EXIT_ERROR, proc.stderr
    (only,) = error_lines(proc)
    assert line in only
    assert "Traceback" not in proc.stderr
    assert not (ROOT / "x.csv").exists() and not (ROOT / "r.md").exists()


def test_the_ci_commands_fail_with_a_line_not_a_traceback(tmp_path):
    env = {k: "" for k in ("GITHUB_EVENT_PATH", "GITHUB_EVENT_NAME", "GITHUB_ACTIONS")}
    proc = cli(["-m", "src.ci", "comment", "--report", str(tmp_path / "nope.md")], **env)
    assert proc.returncode == EXIT_ERROR
    assert "error: src.ci comment:" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


RAISE = "import sys; from src.utils import run_cli\ndef main():\n    raise {error}\nrun_cli(main)\n"


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        ("ZeroDivisionError('division by zero')", EXIT_BUG, "unexpected error (a bug?): "),
        ("KeyboardInterrupt()", EXIT_INTERRUPTED, "interrupted"),
        (
            "PermissionError(13, 'Permission denied', 'models/model.joblib')",
            EXIT_IO,
            "models/model.joblib: Permission denied",
        ),
    ],
)
def test_unexpected_errors_are_one_line_with_the_way_to_the_traceback(error, code, line):
    proc = cli(["-c", RAISE.format(error=error)])
    assert proc.returncode == code
    (only,) = error_lines(proc)
    assert only.startswith(line)
    assert "Traceback" not in proc.stderr
    if code == EXIT_BUG:
        assert only.endswith(
            "ZeroDivisionError: division by zero "
            "(rerun with --debug or MLOPS_DEBUG=1 for the traceback)"
        )
        for debug in (
            cli(["-c", RAISE.format(error=error), "--debug"]),
            cli(["-c", RAISE.format(error=error)], MLOPS_DEBUG="1"),
        ):
            assert debug.returncode == EXIT_BUG
            assert "Traceback (most recent call last)" in debug.stderr
            assert 'File "<string>", line 3, in main' in debug.stderr


def test_debug_flag_is_removed_before_the_commands_own_parser(bad_params):
    proc = cli(["-m", "src.params", "check", "--debug", "--params", str(bad_params)])
    assert proc.returncode == EXIT_PARAMS  # not argparse's 2 for an unknown --debug
    assert error_lines(proc) == [BAD_PARAMS_LINE]
    assert "Traceback (most recent call last)" in proc.stderr


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    full = f"cannot write {target}: No space left on device"
    with pytest.raises(FileError, match=full), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_an_error_reading_another_file_is_not_called_a_write_error(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out.csv") as tmp:
        tmp.write_text((tmp_path / "missing.csv").read_text())
    assert list(tmp_path.iterdir()) == []


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str = "256k"):
    """A real, small filesystem (tmpfs) at `where`; skips the test when it cannot mount."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def fill(folder: Path) -> None:
    """Write to `folder` until its filesystem is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_batch_predict_onto_a_full_disk_is_one_line_and_keeps_the_old_output(
    fixture_cases, tmp_path
):
    case = fixture_cases["multiclass"]
    model = save_model(case.bundle, tmp_path / "model.joblib")
    case.test.to_csv(tmp_path / "input.csv", index=False)
    with tiny_tmpfs(tmp_path / "disk") as disk:
        out = disk / "predictions.csv"
        out.write_text("old\n")
        fill(disk)
        proc = cli(
            [
                "-m",
                "src.models.predict_model",
                "--input",
                str(tmp_path / "input.csv"),
                "--model",
                str(model),
                "--out",
                str(out),
            ]
        )
        assert proc.returncode == EXIT_IO, proc.stderr
        assert error_lines(proc) == [f"cannot write {out}: No space left on device"]
        assert "Traceback" not in proc.stderr
        assert out.read_text() == "old\n"  # the previous output, whole
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "predictions.csv"]
