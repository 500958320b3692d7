"""The release push, for real: `make docker-publish` to a Docker registry on loopback.

The release job (release.yml) runs `make docker-build` and `make docker-smoke`, then
`make docker-publish` with docker/metadata-action's output, which pushes to ghcr.io. Here
the same make targets run in a copy of the repository where the pipeline ran
(`pipeline_repo`), against Debian's docker-registry (2.8) on 127.0.0.1 over plain HTTP, with
the tags and labels that release.yml's metadata-action configuration gives
(tests/metadata_action.py) for a push to main and for a version tag: the image names are
release.yml's with `ghcr.io` replaced by the loopback registry, nothing else. (The registry
asks for no login, so docker/login-action's step has no counterpart here.)

Then every local copy of the image goes, the image is pulled back by the digest that
`make docker-publish` reported, and smoke-tested (scripts/docker/smoke.sh: healthy, and
`/predict` answers equal to the pipeline's own scikit-learn model's, whatever the dataset).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from src.config import ROOT
from tests.metadata_action import PushEvent, metadata
from tests.repo_tools import docker_registry, venv_env

pytestmark = pytest.mark.slow

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"  # what dockerd 20.10 pushes


@pytest.fixture(scope="module")
def docker_env() -> dict[str, str]:
    """DOCKER, DOCKER_HOST (and MLOPS_DOCKER_NETWORK) of the engine ensure-dockerd.sh reuses."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "docker" / "ensure-dockerd.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {}
    for line in proc.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0] if value else ""
    return env


@pytest.fixture(scope="module")
def registry(tmp_path_factory, docker_env) -> str:
    if shutil.which("docker-registry") is None:
        message = "docker-registry missing: run scripts/ci/install-system-deps.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # dockerd talks plain HTTP only to registries it calls insecure: 127.0.0.0/8 by default
    fmt = "{{json .RegistryConfig.InsecureRegistryCIDRs}}"
    insecure = json.loads(docker(docker_env, "info", "--format", fmt).stdout)
    assert "127.0.0.0/8" in insecure, f"dockerd pushes to 127.0.0.1 over HTTPS only: {insecure}"
    with docker_registry(tmp_path_factory.mktemp("registry")) as host:
        yield host


def sh(cmd: list[str], cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def docker(engine: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = sh([engine["DOCKER"], *args], ROOT, {**os.environ, **engine})
    assert proc.returncode == 0 or not check, f"docker {' '.join(args)}: {proc.stderr}"
    return proc


def release_metadata_inputs(registry: str) -> dict:
    """release.yml's metadata-action inputs with the registry host swapped, nothing else."""
    release = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    step = next(s for s in release["jobs"]["image"]["steps"] if "metadata-action" in str(s))
    inputs = dict(step["with"])
    assert inputs["images"].startswith("ghcr.io/"), inputs["images"]
    inputs["images"] = registry + inputs["images"].removeprefix("ghcr.io")
    return inputs


def manifest_digest(registry: str, repository: str, tag: str) -> str:
    """The digest the registry serves for repository:tag (its Docker-Content-Digest)."""
    url = f"http://{registry}/v2/{repository}/manifests/{tag}"
    request = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Docker-Content-Digest"]


def verify_registry_holds_image(registry: str, repository: str, digest: str) -> int:
    """The manifest and every blob it names (config, layers) are in the registry, each with
    the digest and size the manifest says. Returns the number of layers."""
    base = f"http://{registry}/v2/{repository}"
    request = urllib.request.Request(f"{base}/manifests/{digest}", headers={"Accept": MANIFEST})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    assert f"sha256:{hashlib.sha256(body).hexdigest()}" == digest
    manifest = json.loads(body)
    for blob in [manifest["config"], *manifest["layers"]]:
        sha, size = hashlib.sha256(), 0
        with urllib.request.urlopen(f"{base}/blobs/{blob['digest']}", timeout=60) as response:
            while chunk := response.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
        assert (f"sha256:{sha.hexdigest()}", size) == (blob["digest"], blob["size"])
    return len(manifest["layers"])


def registry_tags(registry: str, repository: str) -> set[str]:
    with urllib.request.urlopen(f"http://{registry}/v2/{repository}/tags/list", timeout=10) as r:
        return set(json.load(r)["tags"])


def test_release_push_then_pull_by_digest_serves_the_model(
    pipeline_repo, docker_env, registry, tmp_path
):
    run_id = uuid.uuid4().hex[:8]
    tested = f"mloperation-publish-test:{run_id}"
    github_repository = f"Acme/Penguins-{run_id}"  # as GitHub spells it; names get lowercased
    repository = github_repository.lower()
    image = f"{registry}/{repository}"
    env = {**venv_env(pipeline_repo), **docker_env, "IMAGE_REPORT": str(tmp_path / "image.json")}
    sha = sh(["git", "rev-parse", "HEAD"], pipeline_repo, env).stdout.strip()
    inputs = release_metadata_inputs(registry)
    events = {  # ref -> the tags README's table promises for it
        "refs/heads/main": ["latest", f"sha-{sha[:7]}"],
        "refs/tags/v1.2.3": ["1.2.3", "1.2", f"sha-{sha[:7]}"],
    }
    pushed: dict[str, tuple[str, str, dict]] = {}  # ref -> (digest, image id, labels)
    try:
        proc = sh(["make", "docker-build", f"IMAGE={tested}"], pipeline_repo, env, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-6000:]
        tested_id = docker(docker_env, "image", "inspect", "-f", "{{.Id}}", tested).stdout.strip()

        for n, (ref, versions) in enumerate(events.items()):
            meta = metadata(inputs, PushEvent(ref=ref, sha=sha, repository=github_repository))
            assert meta["tags"] == [f"{image}:{v}" for v in versions]
            output, summary = tmp_path / f"output-{n}", tmp_path / f"summary-{n}.md"
            publish_env = {
                **env,
                "DOCKER_METADATA_OUTPUT_JSON": json.dumps(meta),
                "GITHUB_ACTIONS": "true",
                "GITHUB_OUTPUT": str(output),
                "GITHUB_STEP_SUMMARY": str(summary),
            }
            proc = sh(["make", "docker-publish", f"IMAGE={tested}"], pipeline_repo, publish_env)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
            assert set(outputs) == {"digest", "image"}, outputs
            digest = outputs["digest"]
            assert digest.startswith("sha256:") and len(digest) == 71, outputs
            assert outputs["image"] == meta["tags"][0].lower()  # tagged on the registry's version
            notice = f"::notice title=image pushed::{image}@{digest} (tags: {', '.join(versions)})"
            assert notice in proc.stdout
            assert all(f"`{image}:{v}` | `{digest}`" in summary.read_text() for v in versions)
            for version in versions:  # every tag the release gives is in the registry
                assert manifest_digest(registry, repository, version) == digest, version
            image_id = docker(docker_env, "image", "inspect", "-f", "{{.Id}}", meta["tags"][0])
            pushed[ref] = (digest, image_id.stdout.strip(), meta["labels"])

        assert registry_tags(registry, repository) == {v for vs in events.values() for v in vs}
        main_digest, tag_digest = (pushed[ref][0] for ref in events)
        assert main_digest != tag_digest  # its own labels (version 1.2.3), same layers

        # the registry holds all of each image; then nothing local is left of it but layers
        # the engine may share with other images (its build cache): the pull by digest gets
        # manifest and config from the registry and checks every layer against them
        for digest, _, _ in pushed.values():
            assert verify_registry_holds_image(registry, repository, digest) >= 2
        local = dict.fromkeys([tested, *(f"{image}:{v}" for vs in events.values() for v in vs)])
        docker(docker_env, "image", "rm", *local)
        for image_id in (tested_id, *(image_id for _, image_id, _ in pushed.values())):
            gone = docker(docker_env, "image", "inspect", image_id, check=False)
            assert gone.returncode != 0, f"{image_id} is still in the engine"

        for ref, (digest, image_id, labels) in pushed.items():
            by_digest = f"{image}@{digest}"
            pull = docker(docker_env, "pull", by_digest).stdout
            assert f"Digest: {digest}" in pull
            (info,) = json.loads(docker(docker_env, "image", "inspect", by_digest).stdout)
            assert info["Id"] == image_id  # the very image that was pushed
            assert labels.items() <= info["Config"]["Labels"].items(), ref
            tags = " ".join(f"{image}:{v}" for v in events[ref])  # GET /metadata image_tags
            assert f"MLOPERATION_IMAGE_TAGS={tags}" in info["Config"]["Env"], info["Config"]["Env"]
            proc = sh(["scripts/docker/smoke.sh", by_digest], pipeline_repo, env, timeout=600)
            assert proc.returncode == 0, f"smoke of {by_digest} failed:\n{proc.stderr[-6000:]}"
            assert "POST /predict batch" in proc.stderr
            assert json.loads((tmp_path / "image.json").read_text())["max_gap"] <= 1e-5
    finally:
        leftovers = list(
            dict.fromkeys([tested, *(f"{image}:{v}" for vs in events.values() for v in vs)])
        )
        leftovers += [f"{image}@{digest}" for digest, _, _ in pushed.values()]
        docker(docker_env, "image", "rm", "--force", *leftovers, check=False)
