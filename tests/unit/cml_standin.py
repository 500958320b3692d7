"""A stand-in for `cml comment update --publish`: records the call and what CML would upload.

The npm package @dvcorg/cml cannot be installed on these machines (its registry answers
404), so this emulates the publish step of CML 0.20.6 (src/cml.js `publishLocalFiles`,
src/utils.js `upload`), rule by rule:

- the report is parsed as CommonMark (remark 13 = micromark 2.11, no GFM, no plugins; here
  markdown-it's `commonmark` preset), and every `definition`, `image` and `link` node is
  visited (inline links, images, autolinks and reference definitions, used or not); `html`
  nodes are not. A url is taken as CML gets it: escapes and character references decoded,
  nothing percent-decoded, no scheme refused (markdown-it's link validation and
  normalisation are switched off for that);
- an empty url is skipped; a `data:image/...;base64,` url is decoded and uploaded;
- any other url is resolved like node's `path.resolve(dirname(report), url)` (a plain
  join and normalisation: `http://x/../../etc/passwd` is a path too) and that file is read,
  symlinks followed, whatever its type; a missing file is skipped, any other error fails.

Each "upload" is recorded with its bytes, so a test can see exactly what would leave the
runner. GitHub's API is not called: the call and the markdown CML would post are recorded.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import sys
from pathlib import Path

from markdown_it import MarkdownIt


def cml_urls(markdown: str) -> list[str]:
    """The url of every definition, image and link node remark would give CML, in order."""
    md = MarkdownIt("commonmark", {"inline_definitions": True})
    md.validateLink = lambda url: True  # micromark keeps file:, javascript:, data: ... urls
    md.normalizeLink = lambda url: url  # and does not percent-encode them
    urls: list[str] = []

    def walk(tokens) -> None:
        for token in tokens:
            if token.type == "definition":
                urls.append(token.meta["url"])
            elif token.type == "link_open":
                urls.append(str(token.attrGet("href")))
            elif token.type == "image":
                urls.append(str(token.attrGet("src")))
            walk(token.children or [])

    walk(md.parse(markdown))
    return urls


def node_path_resolve(base: str, url: str) -> str:
    """node's path.resolve(base, url) on POSIX: join, then normalise (`//` and `..` too)."""
    joined = url if url.startswith("/") else posixpath.join(os.path.abspath(base), url)
    return "/" + posixpath.normpath(joined).lstrip("/")


def publish(report: Path) -> list[dict]:
    """What CML would upload from `report`: one record per url it resolves to a file."""
    uploads = []
    for url in cml_urls(report.read_text(encoding="utf-8")):
        if not url:
            continue
        if url.startswith("data:image/"):
            encoded = url[url.find(",") + 1 :]  # as url.slice(url.indexOf(',') + 1)
            try:  # node's Buffer.from(..., "base64") is lenient; close enough
                data = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
            except ValueError:
                data = b""
            uploads.append({"url": url, "path": None, "bytes": data})
            continue
        path = node_path_resolve(str(report.parent), url)
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            continue  # CML: logger.debug('file not found') and the url stays as it is
        uploads.append({"url": url, "path": path, "bytes": data})
    return uploads


def main(argv: list[str], record: str) -> int:
    report = Path(argv[-1])
    call = {
        "args": argv,
        "telemetry_off": os.environ.get("ITERATIVE_DO_NOT_TRACK"),
        "token": bool(os.environ.get("GITHUB_TOKEN")),
    }
    if "--publish" in argv:
        copies = {}  # the report's folder is gone once the step ends: keep its files' bytes
        for path in sorted(report.parent.rglob("*")):
            if path.is_file():
                copies[str(path.relative_to(report.parent))] = path.read_bytes().hex()
        try:
            uploads = publish(report)
        except OSError as exc:  # CML rethrows all but ENOENT and the comment is not posted
            print(f"cml stand-in: {exc}", file=sys.stderr)
            return 1
        call["body"] = report.read_text(encoding="utf-8")
        call["folder"] = copies
        call["uploads"] = [{**u, "bytes": u["bytes"].hex()} for u in uploads]
    with open(record, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(call) + "\n")
    return 0
