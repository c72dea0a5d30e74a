"""How `plan` scales with the checkout: vLLM's real source (the 0.33.0 sdist, by pinned hash), cut to
a quarter, a half and all of its files, planned by the client command on a fresh agent (cold: a fresh
engine and no stat cache) and again right after (warm), beside `git status` on the same tree (its index
warm). Prints a table and the seconds per 1,000 files of each; writes plan_scale.json."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from tools import BENCH, REPO, engine_lock
from vllm_release import VLLM_VERSION, vllm_source

CLIENT = REPO / ".venv" / "bin" / "vllm-ci"
FRACTIONS = (0.25, 0.5, 1.0)


def cut(tree: pathlib.Path, fraction: float, into: pathlib.Path) -> tuple[int, int]:
    """A copy of the tree with an even share of its files (every 1/fraction-th, by sorted path) and the
    Dockerfile the plan reads; its file count and bytes."""
    files = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    kept = sorted({*files[:: round(1 / fraction)], tree / "docker" / "Dockerfile"})
    for path in kept:
        target = into / path.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return len(kept), sum(p.stat().st_size for p in kept)


def timed_plan(source: pathlib.Path, cache_home: pathlib.Path) -> float:
    """Seconds of one `vllm-ci plan` of every stage the test image needs, its stat cache under cache_home."""
    started = time.monotonic()
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    subprocess.run(
        [str(CLIENT), "plan", "--source", str(source)], check=True, capture_output=True, timeout=1800, env=env
    )
    return time.monotonic() - started


def timed_git_status(tree: pathlib.Path) -> float:
    """Seconds of `git status` on the tree with its index warm (every file added, then status once before)."""
    git = ["git", "-C", str(tree), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "tree"], ["status", "--porcelain"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    started = time.monotonic()
    subprocess.run([*git, "status", "--porcelain"], check=True, capture_output=True)
    return time.monotonic() - started


def per_thousand(points: list[tuple[int, float]]) -> float:
    """Seconds per 1,000 files, by least squares."""
    return statistics.linear_regression([n / 1000 for n, _ in points], [s for _, s in points]).slope


def main(argv: list[str] | None = None) -> int:
    """Measure and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=pathlib.Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    tree = vllm_source()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vllm-ci-plan-") as tmp:
        for fraction in FRACTIONS:
            source = pathlib.Path(tmp) / f"vllm-{fraction:g}"
            files, size = cut(tree, fraction, source)
            cache_home = pathlib.Path(tmp) / f"cache-{fraction:g}"
            with engine_lock():
                subprocess.run([str(REPO / "ci" / "engine"), "fresh"], check=True, capture_output=True)
                cold = timed_plan(source, cache_home)
                warm = timed_plan(source, cache_home)
            status = timed_git_status(source)
            rows.append(
                {"fraction": fraction, "files": files, "bytes": size, "cold_s": cold, "warm_s": warm, "git_s": status}
            )
            print(
                f"plan: {files:6} files {size / 1e6:6.1f} MB  cold {cold:5.1f} s  warm {warm:5.1f} s  "
                f"git status {status:5.2f} s",
                file=sys.stderr,
            )
    cold_slope = per_thousand([(r["files"], r["cold_s"]) for r in rows])
    warm_slope = per_thousand([(r["files"], r["warm_s"]) for r in rows])
    lines = [
        f"`plan` of vLLM {VLLM_VERSION}'s source, cut by files; client command, fresh agent:",
        "",
        "| files | MB | cold s | warm s | git status s |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['files']} | {r['bytes'] / 1e6:.1f} | {r['cold_s']:.1f} | {r['warm_s']:.1f} | {r['git_s']:.2f} |"
        for r in rows
    ]
    lines += ["", f"Seconds per 1,000 files: cold {cold_slope:.2f}, warm {warm_slope:.2f}"]
    print("\n".join(lines))
    (args.results / "plan_scale.json").write_text(
        json.dumps({"rows": rows, "cold_s_per_1000_files": cold_slope, "warm_s_per_1000_files": warm_slope}, indent=2)
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DAGGER_NO_NAG", "1")
    sys.exit(main())
