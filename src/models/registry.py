"""The model registry on the team MLflow server: versions of the trained model, and aliases
moved only to versions whose recorded test metrics pass the gate.

    python -m src.models.registry register            (make register; the release runs it)
    python -m src.models.registry promote --version N --alias A
                                                      (make promote VERSION=N ALIAS=A)
    python -m src.models.registry show                (make registry: versions and aliases)

`register` makes models/model.joblib a version of `registry.model_name` (params.yaml):
the training run is found on the server by the model's sha256 tag (src/models/tracking.py),
and the version is tagged with the git commit, the model's sha256, its task and the test
metrics of metrics/scores.json (`metric.<name>`). The same model registered again is the
same version (found by its `model_sha256` tag), so a version tag's release, which rebuilds
the same model, reuses the version `main` registered. In a release (GITHUB_REF) it also
names the alias that the release will set (`registry.branch_alias` for main,
`registry.tag_alias` for a v* tag), checks the gate for it first, and writes `name`,
`version` and `alias` to GITHUB_OUTPUT for the image build. Without MLFLOW_TRACKING_URI
there is no registry: `register` says so and does nothing (the journey without MLflow).

`promote` points an alias at a version after checking that the version exists and that its
recorded metrics pass the `min`/`max` bounds of the gate block of its task family
(src/gate.py, params.yaml `gate:`). `max_drop` is the PR-against-base rule and is not
applied: a rollback to an older version must stay possible. With `--image`/`--digest`
(the release, after the push) the version is first tagged with the image reference and
digest. Rolling back is promoting N-1. Every refusal is one line, exit 1, with nothing
changed in the registry: an unreachable server, a missing version, a failing gate, a bad
alias.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src import config
from src.ci import annotate
from src.gate import Check, bounds_for, evaluate_gate, validate_gate
from src.params import REGISTERED_NAME, alias_problem
from src.utils import PipelineError, git_commit, load_params, run_cli, sha256_file

log = logging.getLogger(__name__)

METRIC_PREFIX = "metric."  # version tags holding the test metrics of metrics/scores.json
PROMOTION_RULES = ("min", "max")  # of the gate block; max_drop is PR-vs-base only
IMAGE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# registry[:port]/path[:tag] as docker/metadata-action writes them (lowercase)
IMAGE_REF = re.compile(
    r"[a-z0-9][a-z0-9.-]*(:[0-9]+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
)


@dataclass(frozen=True)
class Settings:
    """params.yaml `registry:`: the registered model's name and the release's aliases."""

    model_name: str
    branch_alias: str = "candidate"
    tag_alias: str = "production"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Settings:
        block = params.get("registry")
        if not block:
            raise PipelineError(
                "params.yaml has no `registry:` section: add one with model_name (the "
                "registered model's name), branch_alias and tag_alias"
            )
        return cls(**block)


def release_alias(settings: Settings, env: Mapping[str, str]) -> str | None:
    """The alias a release sets: `tag_alias` for a version tag v*, `branch_alias` for a push
    to a branch (the release workflow runs on main only); None outside a release."""
    ref = env.get("GITHUB_REF", "")
    if ref.startswith("refs/tags/v"):
        return settings.tag_alias
    if ref.startswith("refs/heads/"):
        return settings.branch_alias
    return None


# --- the gate on promotion (pure: unit-tested without a server) --------------------------


def family_of(task: str | None) -> str | None:
    """A task (binary, multiclass, regression) -> its gate family."""
    if task in ("binary", "multiclass", "classification"):
        return "classification"
    if task == "regression":
        return "regression"
    return None


def promotion_checks(
    gate: Any, task: str | None, metrics: Mapping[str, float], source: str = "params.yaml"
) -> tuple[list[Check], str]:
    """The gate's min/max checks of a version's recorded metrics: (checks, block applied).

    `gate` is params.yaml's `gate:` section (validated here: a bad one is a ParamsError);
    the version's task picks the block, as for a PR (src.gate.bounds_for).
    """
    validated = validate_gate(gate, source)
    rules, block, _ = bounds_for(validated, family_of(task)) if validated else ({}, "gate", None)
    applied = {rule: rules.get(rule, {}) for rule in PROMOTION_RULES}
    return evaluate_gate(applied, dict(metrics), None, key=block), block


def check_promotion(
    gate: Any, task: str | None, metrics: Mapping[str, float], what: str, alias: str
) -> list[Check]:
    """Raise PipelineError naming every failed bound unless `what` may get `alias`."""
    if not metrics:
        raise PipelineError(
            f"{what} has no recorded test metrics ({METRIC_PREFIX}* tags): cannot check the "
            f"gate for alias {alias!r}; register it with `make register`"
        )
    checks, block = promotion_checks(gate, task, metrics)
    failed = [c.detail for c in checks if not c.passed]
    if failed:
        raise PipelineError(
            f"{what} fails the gate ({block} in params.yaml) for alias {alias!r}: "
            + "; ".join(failed)
            + ": nothing changed"
        )
    return checks


def metric_tags(scores: Mapping[str, Any]) -> dict[str, str]:
    """metrics/scores.json's numbers as version tags `metric.<name>` (repr: exact floats)."""
    return {
        f"{METRIC_PREFIX}{name}": repr(float(value))
        for name, value in sorted(scores.items())
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def recorded_metrics(tags: Mapping[str, str]) -> dict[str, float]:
    """The test metrics recorded on a version (`metric.<name>` tags); unreadable ones left out."""
    out = {}
    for key, value in tags.items():
        if key.startswith(METRIC_PREFIX):
            try:
                out[key.removeprefix(METRIC_PREFIX)] = float(value)
            except ValueError:
                continue
    return out


def check_alias(alias: str) -> str:
    problem = alias_problem(alias)
    if problem:
        raise PipelineError(f"ALIAS {problem}")
    return alias


def check_version(version: Any) -> int:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise PipelineError(f"VERSION {version!r}: must be a version number (1, 2, ...)")
    return int(text)


# --- the server ------------------------------------------------------------------------


def server_uri(env: Mapping[str, str] | None = None) -> str | None:
    return (os.environ if env is None else env).get("MLFLOW_TRACKING_URI") or None


def connect(uri: str) -> Any:
    """An MlflowClient for `uri`, after checking that the server answers (one line if not)."""
    from src.models.tracking import check_tracking_server

    check_tracking_server(uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _mlflow_error(exc: Exception) -> str | None:
    return getattr(exc, "error_code", None)


def get_version(client: Any, name: str, version: int) -> Any:
    """The model version, or PipelineError naming what exists instead."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _mlflow_error(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise PipelineError(f"MLflow registry: {exc}") from exc
    versions = sorted(int(v.version) for v in _versions(client, name))
    have = (
        f"versions {versions[0]} to {versions[-1]}"
        if versions
        else "no versions (run make register)"
    )
    raise PipelineError(
        f"version {version} of registered model {name!r} does not exist (it has {have}): "
        "nothing changed"
    )


def _versions(client: Any, name: str) -> list[Any]:
    if not re.fullmatch(REGISTERED_NAME, name):  # quoted in the filter below
        raise PipelineError(f"registry.model_name {name!r} is not a valid registered model name")
    return list(client.search_model_versions(f"name='{name}'"))


def version_of_model(client: Any, name: str, model_sha256: str) -> Any | None:
    """The version of `name` registered for the model with this sha256 (the oldest), or None."""
    if not re.fullmatch(r"[0-9a-f]{64}", model_sha256):
        raise ValueError(f"not a sha256: {model_sha256!r}")
    found = [v for v in _versions(client, name) if v.tags.get("model_sha256") == model_sha256]
    return min(found, key=lambda v: int(v.version)) if found else None


def aliases_of(client: Any, name: str) -> dict[str, int]:
    from mlflow.exceptions import MlflowException

    try:
        return {a: int(v) for a, v in client.get_registered_model(name).aliases.items()}
    except MlflowException as exc:
        if _mlflow_error(exc) == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise


# --- register ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    name: str
    version: int
    alias: str | None  # the alias the release will set (None: not a release)
    created: bool


def _read_json(path: Path) -> Any:
    """A pipeline output; one line naming it when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path} is missing: run make repro first") from None
    except ValueError as exc:
        raise PipelineError(f"{path} is not JSON ({exc}): run make repro") from None


def read_scores(path: Path) -> dict[str, Any]:
    scores = _read_json(path)
    if not isinstance(scores, dict):
        raise PipelineError(f"{path} does not hold a mapping of metrics: run make repro")
    return scores


def read_task(manifest: Path, model_sha256: str) -> str:
    """The task of the exported model, which must be the export of this model file."""
    data = _read_json(manifest)
    if (data.get("model") or {}).get("model_sha256") != model_sha256:
        raise PipelineError(f"{manifest} was exported from another model: run make repro first")
    return str(data.get("task"))


def check_outputs_current(root: Path) -> None:
    """The model and metrics are what dvc.lock says (not left by a failed `make repro`)."""
    from src.models.serving_status import stale_reason

    reason = stale_reason(root, targets=("export", "evaluate"))
    if reason:
        raise PipelineError(
            f"models/ and metrics/ do not match dvc.lock ({reason}): run make repro first"
        )


def register(
    params: Mapping[str, Any],
    uri: str,
    alias: str | None,
    root: Path = config.ROOT,
) -> Registered:
    """Make the work tree's model a version of `registry.model_name` (or find the version it
    already is). With `alias`, the version's metrics must pass the gate for it first (the
    alias itself is set by `promote`, once the image is out). Nothing is written when any
    check fails."""
    settings = Settings.from_params(params)
    if alias is not None:
        check_alias(alias)
    check_outputs_current(root)
    model_file = root / "models" / "model.joblib"
    model_sha = sha256_file(model_file)
    task = read_task(root / "models" / "serving" / "model.json", model_sha)
    scores = read_scores(root / "metrics" / "scores.json")
    tags = metric_tags(scores)
    if alias is not None:
        check_promotion(
            params.get("gate"), task, recorded_metrics(tags), f"model {model_sha[:12]}…", alias
        )
    client = connect(uri)
    from mlflow.exceptions import MlflowException

    from src.models.tracking import MODEL_TAG, experiment_name, run_id_for_sha

    name = settings.model_name
    try:
        existing = version_of_model(client, name, model_sha)
        if existing is not None:
            log.info(
                "model %s… is already version %s of %s", model_sha[:12], existing.version, name
            )
            return Registered(name, int(existing.version), alias, False)
        run_id = run_id_for_sha(model_sha, uri)
        if run_id is None:
            raise PipelineError(
                f"no MLflow run tagged {MODEL_TAG}={model_sha[:12]}… in experiment "
                f"{experiment_name()!r} at {uri}: the model was trained without this server "
                "(restored by dvc pull?); retrain it with this MLFLOW_TRACKING_URI "
                "(dvc repro -f train) and register again"
            )
        version_tags = {
            MODEL_TAG: model_sha,
            "task": task,
            "git_sha": git_commit(root) or "unknown",
            **tags,
        }
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        created = mlflow.register_model(f"runs:/{run_id}/model", name, tags=version_tags)
    except MlflowException as exc:
        raise PipelineError(f"MLflow registry at {uri}: {exc}") from exc
    log.info("registered model %s… as version %s of %s", model_sha[:12], created.version, name)
    return Registered(name, int(created.version), alias, True)


def write_outputs(registered: Registered, env: Mapping[str, str]) -> None:
    """`name`, `version`, `alias` as step outputs (the image build bakes them in)."""
    path = env.get("GITHUB_OUTPUT")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"name={registered.name}\nversion={registered.version}\n")
        out.write(f"alias={registered.alias or ''}\n")


# --- promote -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Promoted:
    name: str
    alias: str
    version: int
    previous: int | None


def promote(
    params: Mapping[str, Any],
    uri: str,
    version: int,
    alias: str,
    image: str | None = None,
    digest: str | None = None,
) -> Promoted:
    """Point `alias` at `version` of `registry.model_name`, if the version exists and its
    recorded metrics pass the gate; with `image` and `digest`, tag the version with them
    first. Every check runs before anything is written."""
    settings = Settings.from_params(params)
    version = check_version(version)
    check_alias(alias)
    if (image is None) != (digest is None):
        raise PipelineError("--image and --digest go together (the pushed image and its digest)")
    if digest is not None and not IMAGE_DIGEST.fullmatch(digest):
        raise PipelineError(f"--digest {digest[:80]!r}: must be sha256: and 64 hex digits")
    if image is not None and not IMAGE_REF.fullmatch(image):
        raise PipelineError(f"--image {image[:200]!r}: not an image reference (registry/name:tag)")
    client = connect(uri)
    from mlflow.exceptions import MlflowException

    name = settings.model_name
    try:
        found = get_version(client, name, version)
        what = f"version {version} of {name!r}"
        check_promotion(
            params.get("gate"), found.tags.get("task"), recorded_metrics(found.tags), what, alias
        )
        previous = aliases_of(client, name).get(alias)
        if image is not None:
            client.set_model_version_tag(name, str(version), "image", image)
            client.set_model_version_tag(name, str(version), "image_digest", digest)
        client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as exc:
        raise PipelineError(f"MLflow registry at {uri}: {exc}") from exc
    return Promoted(name, alias, version, previous)


def show(params: Mapping[str, Any], uri: str) -> list[str]:
    """One line per version, newest first: aliases, metrics of the gate, git sha, image."""
    settings = Settings.from_params(params)
    client = connect(uri)
    name = settings.model_name
    by_version: dict[int, list[str]] = {}
    for alias, number in aliases_of(client, name).items():
        by_version.setdefault(number, []).append(alias)
    lines = []
    for v in sorted(_versions(client, name), key=lambda v: -int(v.version)):
        metrics = recorded_metrics(v.tags)
        try:
            checks, _ = promotion_checks(params.get("gate"), v.tags.get("task"), metrics)
            gate = (
                "passes the gate" if metrics and all(c.passed for c in checks) else "fails the gate"
            )
        except PipelineError:
            gate = "gate unknown"
        aliases = ",".join(sorted(by_version.get(int(v.version), []))) or "-"
        git, image = v.tags.get("git_sha", "?")[:12], v.tags.get("image", "-")
        lines.append(f"{name} v{v.version}  aliases: {aliases}  {gate}  git {git}  image {image}")
    return lines or [f"{name}: no versions registered at {uri}"]


# --- CLI ---------------------------------------------------------------------------------


def _required_uri(command: str) -> str:
    uri = server_uri()
    if uri is None:
        raise PipelineError(
            f"MLFLOW_TRACKING_URI is not set: `{command}` works on the team MLflow server's "
            'registry (README, "Team MLflow server and model registry")'
        )
    return uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=config.PARAMS_FILE)
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("register", help="register models/model.joblib as a version")
    reg.add_argument(
        "--alias",
        help="the alias it is meant for, gate-checked now (default: the release's, by GITHUB_REF)",
    )
    pro = sub.add_parser("promote", help="point an alias at a version that passes the gate")
    pro.add_argument("--version", required=True, help="version number")
    pro.add_argument("--alias", required=True)
    pro.add_argument("--image", default=None, help="pushed image reference, tagged on the version")
    pro.add_argument("--digest", default=None, help="its manifest digest (sha256:...)")
    sub.add_parser("show", help="versions, aliases, gate")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.command == "register":
        uri = server_uri()
        if uri is None:
            annotate(
                "notice",
                "register skipped",
                "MLFLOW_TRACKING_URI is not set: no team MLflow server, so no registry (the "
                "image carries no registered version)",
            )
            return 0
        settings = Settings.from_params(params)
        alias = args.alias or release_alias(settings, os.environ)
        registered = register(params, uri, alias)
        write_outputs(registered, os.environ)
        print(
            f"{registered.name} version {registered.version}"
            + (" (new)" if registered.created else " (already registered)")
            + (f", for alias {registered.alias}" if registered.alias else "")
        )
    elif args.command == "promote":
        done = promote(
            params,
            _required_uri("make promote"),
            check_version(args.version),
            args.alias,
            args.image or None,
            args.digest or None,
        )
        before = f"version {done.previous}" if done.previous is not None else "unset"
        print(f"{done.name}@{done.alias}: {before} -> version {done.version}")
    else:
        print("\n".join(show(params, _required_uri("make registry"))))
    return 0


if __name__ == "__main__":
    run_cli(main)
