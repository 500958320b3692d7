"""PR-job benchmark: `make bench-ci` -> reports/bench/ci.json + a table.

Runs the steps of the PR workflow's `experiment` job (pull, repro, report) locally, in
fresh clones (no DVC cache, no outputs) of a temporary copy of the repository, as a runner
would after installing dependencies. The seed copy runs the pipeline once (cold) and pushes
data and run-cache to a local-folder DVC remote; it also makes two PR branches:
  * unchanged (x2): main itself: pull, repro (nothing to do), report against main;
  * pr_committed (x2): params changed, pipeline run and dvc.lock + results committed and pushed
    (the DVC way): pull brings the PR's model, repro has nothing to do;
  * pr_params_only: only params.yaml changed: train and evaluate run on the runner
    (`dvc pull --run-cache` fetches run-cache entries, not their outputs; `dvc repro --pull`
    would, but fails outright without credentials, as on forks).
Checks: each unchanged run < 60 s in total, and the reports (tables and images) of two runs
of the same commit byte-identical (unchanged, pr_committed).

Then the whole job under act (tests/act_job.py), install included, on a PR that changes
nothing in the pipeline, its DVC remote an S3 API on loopback (moto) filled from `main`:
  * cold: no venv and an empty uv cache: `make setup` installs everything from PyPI;
  * warm: the venv of the cold run, saved and restored as actions/cache does (a zstd tar,
    extracted at the same path; the download from GitHub's cache is not emulated), so
    `make setup` installs nothing. Target: warm job + restore < 90 s.
Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from src.config import REPORTS_DIR, ROOT
from src.utils import write_json
from tests.act_job import REPOSITORY, base_env, run_job, step_times
from tests.repo_tools import S3_KEYS, copy_repo, moto_s3, run, stages_run, venv_env

TARGET_S = 60.0
ACT_WARM_TARGET_S = 90.0
BUCKET = "mloperation-dvc"  # the bucket of .dvc/config's default remote `storage`
STEPS = {
    "pull": ["python", "-m", "src.ci", "pull"],
    "repro": ["dvc", "repro"],
    "report": ["python", "-m", "src.report", "--base", "origin/main"],  # as CI: BASE=origin/main
}
REPORT_DIR = Path("reports") / "experiment"
RUNS = {  # run name -> branch
    "unchanged_1": "main",
    "unchanged_2": "main",
    "pr_committed_1": "pr_committed",
    "pr_committed_2": "pr_committed",
    "pr_params_only": "pr_params_only",
}


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = run(cmd, cwd, env=venv_env(cwd))
    return time.perf_counter() - start, proc.stdout + proc.stderr


def use_remote(repo: Path, remote: Path) -> None:
    run(["dvc", "remote", "modify", "--local", "storage", "url", str(remote)], repo)


def seed(workdir: Path, remote: Path) -> dict[str, float]:
    """Fill the remote as earlier runs would: main's results, and a PR's committed results."""
    repo = copy_repo(workdir / "seed")
    use_remote(repo, remote)
    cold_s, _ = timed(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "--allow-empty", "-m", "main: pipeline results"], repo)
    push_s, _ = timed(["dvc", "push", "--run-cache"], repo)
    params = repo / "params.yaml"
    for branch in ("pr_committed", "pr_params_only"):
        run(["git", "checkout", "-q", "-b", branch, "main"], repo)
        params.write_text(re.sub(r"(?m)^(  n_estimators:) \d+", r"\1 50", params.read_text()))
        if branch == "pr_committed":
            run(["dvc", "repro"], repo)
            run(["dvc", "push", "--run-cache"], repo)
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-q", "-m", f"{branch}: n_estimators 50"], repo)
    run(["git", "checkout", "-q", "main"], repo)
    return {"cold_repro_s": cold_s, "push_s": push_s}


def job(workdir: Path, name: str, branch: str, remote: Path) -> tuple[dict, Path]:
    """The job's steps in a fresh clone (no DVC cache, no outputs); their times."""
    clone = workdir / name
    run(["git", "clone", "-q", "-b", branch, str(workdir / "seed"), str(clone)], workdir)
    use_remote(clone, remote)
    times, outputs = {}, {}
    for step, cmd in STEPS.items():
        times[f"{step}_s"], outputs[step] = timed(cmd, clone)
    times["total_s"] = sum(times.values())
    times["stages_run"] = stages_run(outputs["repro"])
    status = json.loads((clone / "reports" / "dvc_pull.json").read_text())
    times["pull_state"] = status["state"]
    return times, clone / REPORT_DIR


def identical(first: Path, second: Path) -> tuple[bool, list[str]]:
    """Same files with the same bytes (the report has no run link outside CI)."""
    names = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    others = sorted(p.relative_to(second).as_posix() for p in second.rglob("*") if p.is_file())
    differ = [n for n in names if (first / n).read_bytes() != (second / n).read_bytes()]
    return names == others and not differ, differ or sorted(set(names) ^ set(others))


def act_checkout(workdir: Path, seed_repo: Path, s3_endpoint: str) -> Path:
    """A PR that changes no pipeline input (README only), `main`'s results in the S3 remote."""
    work = workdir / "act-work"
    shutil.copytree(seed_repo, work, symlinks=True)
    (work / ".dvc" / "config.local").unlink(missing_ok=True)  # the S3 remote of .dvc/config
    env = base_env(AWS_ENDPOINT_URL=s3_endpoint, **S3_KEYS)
    run(["dvc", "push", "--run-cache"], work, env=env)
    run(["git", "checkout", "-q", "-b", "docs-only", "main"], work, env=env)
    with (work / "README.md").open("a") as fh:
        fh.write("\nA PR that changes only the docs.\n")
    run(["git", "commit", "-q", "-am", "PR: docs only"], work, env=env)
    bare, checkout = workdir / "origin.git", workdir / "act-checkout"
    run(["git", "clone", "-q", "--bare", str(work), str(bare)], workdir, env=env)
    run(["git", "clone", "-q", "-b", "docs-only", str(bare), str(checkout)], workdir, env=env)
    url = f"https://github.com/{REPOSITORY}.git"
    run(["git", "remote", "set-url", "origin", url], checkout, env=env)
    return checkout


def act_figures(proc: subprocess.CompletedProcess, wall: float) -> dict:
    log = proc.stdout + proc.stderr
    steps = step_times(log)
    return {
        "succeeded": proc.returncode == 0 and "Job succeeded" in log,
        "act_wall_s": round(wall, 1),
        "steps_s": {name: round(t, 1) for name, t in steps.items()},
        "install_s": round(next((t for n, t in steps.items() if n.startswith("Install")), -1), 1),
        "installed_nothing": "unchanged since installed" in log and "uv pip install" not in log,
        "stages_run": stages_run(proc.stdout),
    }


def act_bench(workdir: Path, seed_repo: Path) -> dict:
    """The job under act, cold then warm (see the module docstring)."""
    venv, uv_cache = workdir / "act-venv", workdir / "uv-cache"
    with moto_s3(BUCKET) as (endpoint, _):
        checkout = act_checkout(workdir, seed_repo, endpoint)
        env = {"VENV": str(venv), "UV_CACHE_DIR": str(uv_cache)}
        proc, _, wall = run_job(checkout, workdir / "act-cold", endpoint, S3_KEYS, **env)
        cold = act_figures(proc, wall)
        if not cold["succeeded"]:
            raise SystemExit(f"cold act run failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        archive = workdir / "venv.tar.zst"  # actions/cache's format: tar + zstd
        start = time.perf_counter()
        subprocess.run(
            ["tar", "-I", "zstd -T0", "-cf", str(archive), "-C", str(workdir), venv.name],
            check=True,
        )
        save_s = time.perf_counter() - start
        shutil.rmtree(venv)
        shutil.rmtree(uv_cache)  # a GitHub runner starts without one
        start = time.perf_counter()
        subprocess.run(["tar", "-I", "zstd", "-xf", str(archive), "-C", str(workdir)], check=True)
        restore_s = time.perf_counter() - start
        proc, _, wall = run_job(checkout, workdir / "act-warm", endpoint, S3_KEYS, **env)
        warm = act_figures(proc, wall)
    warm["restore_s"] = round(restore_s, 1)
    warm["total_s"] = round(warm["act_wall_s"] + restore_s, 1)
    return {
        "cold": cold,
        "warm": warm,
        "cache": {
            "archive_mb": round(archive.stat().st_size / 1e6, 1) if archive.exists() else None,
            "save_s": round(save_s, 1),
            "restore_s": round(restore_s, 1),
        },
        "emulated": (
            "actions/cache: the venv of the cold run saved as a zstd tar and extracted at the "
            "same path before the warm run (no download); the other remote actions are stubs, "
            "`cml` a recorder (tests/act_job.py)"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / "bench" / "ci.json")
    parser.add_argument("--skip-act", action="store_true", help="only the steps, not act")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ci-") as tmp:
        workdir, remote = Path(tmp), Path(tmp) / "remote"
        remote.mkdir()
        seeded = seed(workdir, remote)
        runs, reports = {}, {}
        for name, branch in RUNS.items():
            runs[name], reports[name] = job(workdir, name, branch, remote)
        pairs = {
            pair: identical(reports[f"{pair}_1"], reports[f"{pair}_2"])
            for pair in ("unchanged", "pr_committed")
        }
        first = reports["unchanged_1"]
        files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
        act = None if args.skip_act else act_bench(workdir, workdir / "seed")
    same = all(ok for ok, _ in pairs.values())
    worst = max(runs["unchanged_1"]["total_s"], runs["unchanged_2"]["total_s"])
    result = {
        "seed": seeded,
        "runs": runs,
        "report_identical_between_runs": {pair: ok for pair, (ok, _) in pairs.items()},
        "report_files_compared": files,
        "differing_files": {pair: differ for pair, (_, differ) in pairs.items() if differ},
        "targets": {
            "unchanged_total_lt_60s": worst < TARGET_S,
            "unchanged_nothing_rerun": all(
                runs[n]["stages_run"] == [] for n in ("unchanged_1", "unchanged_2")
            ),
            "pr_committed_not_retrained": runs["pr_committed_1"]["stages_run"] == [],
            "report_identical": same,
        },
    }
    if act is not None:
        result["act"] = act
        result["targets"]["act_warm_total_lt_90s"] = act["warm"]["total_s"] < ACT_WARM_TARGET_S
        result["targets"]["act_warm_installed_nothing"] = act["warm"]["installed_nothing"]
        result["targets"]["act_warm_nothing_rerun"] = act["warm"]["stages_run"] == []
        result["targets"]["act_warm_succeeded"] = act["warm"]["succeeded"]
    write_json(args.out, result)

    print(f"seed: cold repro {seeded['cold_repro_s']:.1f} s, push {seeded['push_s']:.1f} s")
    print(f"{'run':<15} {'pull s':>7} {'repro s':>8} {'report s':>9} {'total s':>8}  stages run")
    for name, r in runs.items():
        print(
            f"{name:<15} {r['pull_s']:>7.1f} {r['repro_s']:>8.1f} {r['report_s']:>9.1f} "
            f"{r['total_s']:>8.1f}  {r['stages_run'] or '-'}"
        )
    for pair, (ok, _) in pairs.items():
        print(f"report identical between the two {pair} runs: {ok} ({len(files)} files)")
    if act is not None:
        for name in ("cold", "warm"):
            r = act[name]
            print(
                f"act {name}: job {r['act_wall_s']:.1f} s (install {r['install_s']:.1f} s), "
                f"stages run {r['stages_run'] or '-'}"
            )
        c = act["cache"]
        print(f"venv cache: {c['archive_mb']} MB, save {c['save_s']} s, restore {c['restore_s']} s")
        print(f"act warm total (restore + job): {act['warm']['total_s']:.1f} s")
    print(f"written to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    failed = [k for k, ok in result["targets"].items() if not ok]
    if failed:
        raise SystemExit(f"targets missed: {failed}")


if __name__ == "__main__":
    main()
