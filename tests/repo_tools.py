"""Helpers to run the project's commands inside a temporary copy of the repository, and
to start throwaway servers on loopback. Used by the tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from src.config import ROOT


def venv_env(repo: Path, **extra: str) -> dict[str, str]:
    """Environment for running the pipeline inside `repo` with this interpreter's venv."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo)  # the copy's `src`, not the editable install's
    env["GIT_PAGER"] = "cat"
    env.pop("MLFLOW_TRACKING_URI", None)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True):
    """Run a command, returning the CompletedProcess; on failure show its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or venv_env(cwd), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def copy_repo(dest: Path) -> Path:
    """Copy the project's files (tracked or not ignored) into `dest` and commit them."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    dest.mkdir(parents=True, exist_ok=True)
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.email", "test@example.com"],
        ["git", "config", "user.name", "test"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "copy"],
    ):
        run(args, dest)
    return dest


def stages_run(output: str) -> list[str]:
    """Names of the stages DVC actually ran, from `dvc repro` output."""
    return [
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    ]


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@contextlib.contextmanager
def moto_s3(bucket: str, timeout: float = 30) -> Iterator[tuple[str, Any]]:
    """A real S3 API on loopback (moto server) with `bucket` created: (endpoint, client)."""
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                s3.create_bucket(Bucket=bucket)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        yield endpoint, s3
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def docker_registry(storage: Path, timeout: float = 30) -> Iterator[str]:
    """A real Docker registry (Debian's docker-registry, distribution 2.8) on loopback over
    plain HTTP, storing into `storage`: yields its host, `127.0.0.1:PORT`. dockerd allows
    plain HTTP to 127.0.0.0/8 registries by default (`docker info`: Insecure Registries)."""

    binary = shutil.which("docker-registry")
    if binary is None:
        raise FileNotFoundError("docker-registry is missing: run scripts/ci/install-system-deps.sh")
    port = free_port()
    config = storage / "config.yml"
    storage.mkdir(parents=True, exist_ok=True)
    settings = {  # JSON is YAML: the registry reads it as its config.yml
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {
            "filesystem": {"rootdirectory": str(storage / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    config.write_text(json.dumps(settings, indent=2))
    with open(storage / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    host = f"127.0.0.1:{port}"
    try:
        if not wait_http(f"http://{host}/v2/", proc, timeout, interval=0.2):
            log_text = (storage / "registry.log").read_text(errors="replace")
            raise RuntimeError(f"docker-registry did not come up:\n{log_text}")
        yield host
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wait_http(url: str, proc: subprocess.Popen, timeout: float, interval: float) -> bool:
    """Poll `url` until it answers 200 (True); False once `proc` has exited or `timeout`
    seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(interval)


def postgres_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<major>/bin
    (the `postgresql` package puts only the client wrappers on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        raise FileNotFoundError(
            f"{name} is missing: install Debian's postgresql (scripts/ci/install-system-deps.sh)"
        )
    return str(candidates[-1])


@contextlib.contextmanager
def postgres(timeout: float = 60) -> Iterator[str]:
    """A throwaway PostgreSQL server (Debian's, initdb in a temporary folder) on loopback,
    on its own port and socket folder: yields a SQLAlchemy URI of its database `mlflow`.

    PostgreSQL refuses to run as root: as root it runs as the `postgres` user the Debian
    package creates (runuser), in a folder that user owns."""
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-"))  # /tmp/...: reachable by that user
    data, port = root / "data", free_port()
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        [
            *as_user,
            postgres_bin("initdb"),
            "-D",
            str(data),
            "-U",
            "mlflow",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = postgres_bin("pg_ctl")
    subprocess.run(
        [
            *as_user,
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                *as_user,
                postgres_bin("createdb"),
                "-h",
                str(root),
                "-p",
                str(port),
                "-U",
                "mlflow",
                "mlflow",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)
