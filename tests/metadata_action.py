"""The `json` output of docker/metadata-action v5 for release.yml's configuration.

The release job feeds that output to `make docker-publish` (DOCKER_METADATA_OUTPUT_JSON).
The action is JavaScript that only GitHub runs, so the tests compute its output here from
the `with:` block of release.yml's metadata-action step. Only the tag types, attributes and
expressions release.yml uses are implemented, by the rules of the action's src/meta.ts and
src/tag.ts at the pinned commit (v5.7.0); anything else raises NotImplementedError, so a
change to release.yml's configuration fails the tests instead of being computed wrongly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

PRIORITY = {"semver": 900, "raw": 200, "sha": 100}  # the action's DefaultPriorities
SEMVER = re.compile(  # what the `semver` npm package's valid() accepts (a leading v or =)
    r"^[v=]?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
EXPRESSION = re.compile(r"\$\{\{\s*([\w.]+)\s*\}\}")  # ${{ github.x }} in the step's inputs
HANDLEBARS = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class PushEvent:
    """The parts of a `push` run's context the action reads."""

    ref: str  # refs/heads/main, refs/tags/v1.2.3
    sha: str
    repository: str = "Acme/Penguins"  # github.repository (owner/name, any case)
    default_branch: str = "main"
    server_url: str = "https://github.com"

    @property
    def html_url(self) -> str:
        return f"{self.server_url}/{self.repository}"


def expand(text: str, event: PushEvent) -> str:
    """GitHub's ${{ }} expressions in the step's inputs (only github.repository is used)."""

    def value(match: re.Match) -> str:
        if match.group(1) != "github.repository":
            raise NotImplementedError(f"expression ${{{{ {match.group(1)} }}}}")
        return event.repository

    return EXPRESSION.sub(value, text)


def render(template: str, values: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        if match.group(1) not in values:
            raise NotImplementedError(f"{{{{{match.group(1)}}}}} in {template!r}")
        return values[match.group(1)]

    return HANDLEBARS.sub(value, template)


def parse_lines(block: str) -> list[str]:
    return [line.strip() for line in block.splitlines() if line.strip()]


def parse_tag(line: str) -> dict[str, str]:
    attrs = dict(part.split("=", 1) for part in line.split(","))
    kind = attrs.get("type")
    if kind not in PRIORITY:
        raise NotImplementedError(f"tag type in {line!r}")
    known = {"sha": {"prefix", "format"}, "raw": {"value"}, "semver": {"pattern"}}[kind]
    if unknown := set(attrs) - known - {"type", "enable", "priority"}:
        raise NotImplementedError(f"attributes {sorted(unknown)} in {line!r}")
    if kind == "sha":
        attrs.setdefault("prefix", "sha-")
        if attrs.setdefault("format", "short") != "short":
            raise NotImplementedError(f"sha format in {line!r}")
    attrs.setdefault("enable", "true")
    attrs.setdefault("priority", str(PRIORITY[kind]))
    return attrs


def metadata(step_inputs: dict, event: PushEvent, created: datetime | None = None) -> dict:
    """{"tags": [...], "labels": {...}, "annotations": [...]} as the action outputs them."""
    if set(step_inputs) - {"images", "flavor", "tags"}:
        raise NotImplementedError(
            f"inputs {sorted(set(step_inputs) - {'images', 'flavor', 'tags'})}"
        )
    flavor = dict(line.split("=", 1) for line in parse_lines(step_inputs.get("flavor", "")))
    if set(flavor) - {"latest"} or flavor.get("latest", "auto") not in ("auto", "true", "false"):
        raise NotImplementedError(f"flavor {flavor}")
    latest_flavor = flavor.get("latest", "auto")
    images = [expand(line, event).lower() for line in parse_lines(step_inputs["images"])]
    branch = event.ref.removeprefix("refs/heads/") if event.ref.startswith("refs/heads/") else ""
    tag_name = event.ref.removeprefix("refs/tags/") if event.ref.startswith("refs/tags/") else ""
    exprs = {
        "is_default_branch": "true" if branch and branch == event.default_branch else "false",
        "branch": branch,
        "tag": tag_name,
        "sha": event.sha[:7],
    }

    main: str | None = None
    partial: list[str] = []
    latest: bool | None = None
    tags = sorted(
        map(parse_tag, parse_lines(step_inputs["tags"])), key=lambda t: -int(t["priority"])
    )
    for tag in tags:  # stable sort by priority, as the action's
        enabled = render(tag["enable"], exprs)
        if enabled not in ("true", "false"):
            raise ValueError(f"Invalid value for enable attribute: {enabled}")
        if enabled == "false":
            continue
        auto_latest = False
        if tag["type"] == "sha":
            value = tag["prefix"] + event.sha[:7]
        elif tag["type"] == "raw":
            value = render(tag["value"], exprs)
        else:  # semver: only on tag refs; {{version}} alone for pre-releases
            version = SEMVER.match(tag_name)
            if not tag_name or not version:
                continue
            parts = {k: version.group(k) for k in ("major", "minor", "patch")}
            full = ".".join(parts.values()) + (f"-{version['pre']}" if version["pre"] else "")
            pattern = "{{version}}" if version["pre"] else tag["pattern"]
            value = render(pattern, {**parts, "version": full})
            auto_latest = not version["pre"]
        if not value:
            continue
        value = re.sub(r"[^a-zA-Z0-9._-]+", "-", value)
        if main is None:
            main = value
        elif value != main:
            partial.append(value)
        if latest is None:
            latest = auto_latest if latest_flavor == "auto" else latest_flavor == "true"
    partial = list(dict.fromkeys(partial))
    versions = [main, *partial, *(["latest"] if latest else [])] if main else []

    stamp = (created or datetime.now(UTC)).isoformat(timespec="milliseconds")
    labels = {
        "org.opencontainers.image.created": stamp.replace("+00:00", "Z"),
        "org.opencontainers.image.description": "",
        "org.opencontainers.image.licenses": "",
        "org.opencontainers.image.revision": event.sha,
        "org.opencontainers.image.source": event.html_url,
        "org.opencontainers.image.title": event.repository.split("/")[1],
        "org.opencontainers.image.url": event.html_url,
        "org.opencontainers.image.version": main or "",
    }
    return {
        "tags": [f"{image}:{version}" for image in images for version in versions],
        "labels": labels,
        "annotations": [f"manifest:{key}={value}" for key, value in labels.items()],
    }
