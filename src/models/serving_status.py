"""Is models/serving/ the export that dvc.lock describes? (`make serve`, `make docker-build`)

    python -m src.models.serving_status

Exit 0 when the `export` stage and every stage before it are up to date (`dvc status
--with-deps export` finds nothing: the files match dvc.lock, and so do their code, data and
params); otherwise one line naming what changed and `run make repro`, exit 1. A failed
`make repro` leaves the previous models/serving/ in place: this keeps it from being served
(or baked into an image) as if it were the current model.
"""

from __future__ import annotations

import sys
from typing import Any

from src import config

SHOWN = 3  # changes named in the message; the rest are counted


def describe(status: dict[str, Any]) -> list[str]:
    """`stage: changed deps src/x.py (modified)` per change in DVC's status dict (params:
    `train: changed deps params.yaml: train.n_estimators (modified)`)."""
    found = []
    for stage, entries in status.items():
        for entry in entries:
            if not isinstance(entry, dict):  # e.g. "always changed"
                found.append(f"{stage}: {entry}")
                continue
            for kind, paths in entry.items():
                items = paths.items() if isinstance(paths, dict) else [(paths, "")]
                for path, how in items:
                    if isinstance(how, dict):  # params: {"params.yaml": {key: "modified"}}
                        for key, change in how.items():
                            found.append(f"{stage}: {kind} {path}: {key} ({change})")
                    else:
                        found.append(f"{stage}: {kind} {path}" + (f" ({how})" if how else ""))
    return found


def stale_reason(root: Any = config.ROOT, targets: tuple[str, ...] = ("export",)) -> str | None:
    """None when the outputs of `targets` (and of the stages before them) are what dvc.lock
    says; else what differs, in one line."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            status = repo.status(targets=list(targets), with_deps=True)
    except DvcException as exc:
        return f"dvc cannot tell ({type(exc).__name__}: {exc})"
    changes = describe(status)
    if not changes:
        return None
    more = f" and {len(changes) - SHOWN} more" if len(changes) > SHOWN else ""
    return "; ".join(changes[:SHOWN]) + more


def main() -> int:
    reason = stale_reason()
    if reason is None:
        return 0
    print(
        f"models/serving/ does not match dvc.lock ({reason}): run make repro",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
