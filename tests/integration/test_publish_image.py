"""`make docker-publish` (python -m src.ci publish-image) on a real Docker engine.

The release job smoke-tests the built image, then gives it docker/metadata-action's tags and
OCI labels and pushes it. This checks, for real, that the tags and labels land on an image
whose layers are exactly the tested image's. The push itself goes to ghcr.io, GitHub's
registry, which cannot be reached here: it runs with --no-push.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from src.config import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def docker_env() -> dict[str, str]:
    """The engine scripts/docker/ensure-dockerd.sh reuses or starts (as the image tests do)."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "docker" / "ensure-dockerd.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = dict(os.environ)
    for line in proc.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'\"")
    return env


def docker(env: dict, *args: str, stdin: bytes | None = None) -> str:
    proc = subprocess.run([env["DOCKER"], *args], env=env, input=stdin, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def test_publish_adds_tags_and_labels_without_touching_the_layers(docker_env):
    run_id = uuid.uuid4().hex[:8]
    tested = f"mloperation-publish-test:{run_id}"
    empty_tar = subprocess.run(["tar", "cf", "-", "--files-from", "/dev/null"], capture_output=True)
    docker(
        docker_env,
        "import",
        "-c",
        "LABEL org.opencontainers.image.title=predictor",
        "-",
        tested,
        stdin=empty_tar.stdout,
    )
    metadata = {
        "tags": [f"ghcr.io/Acme/Penguins:sha-{run_id}", f"ghcr.io/acme/penguins:t{run_id}"],
        "labels": {
            "org.opencontainers.image.revision": run_id,
            "org.opencontainers.image.source": "https://github.com/Acme/Penguins",
        },
    }
    env = {**docker_env, "DOCKER_METADATA_OUTPUT_JSON": json.dumps(metadata)}
    tags = [f"ghcr.io/acme/penguins:sha-{run_id}", f"ghcr.io/acme/penguins:t{run_id}"]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "src.ci", "publish-image", tested, "--no-push"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        fmt = "{{json .Config.Labels}}|{{json .RootFS.Layers}}"
        source_labels, source_layers = docker(docker_env, "inspect", "--format", fmt, tested).split(
            "|"
        )
        for tag in tags:  # repository lowercased, tag kept
            labels, layers = docker(docker_env, "inspect", "--format", fmt, tag).split("|")
            assert layers == source_layers
            assert json.loads(labels) == {
                **json.loads(source_labels),
                **metadata["labels"],
            }
    finally:
        subprocess.run(
            [docker_env["DOCKER"], "rmi", "-f", tested, *tags], env=docker_env, capture_output=True
        )
