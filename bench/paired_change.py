"""A one-line Python change built by this checkout's client and by another commit's, paired: the same warm cache,
each build on a fresh agent, the two alternating (A B, B A, ...) so that the machine's drift falls on both. Each
build appends one more line to vllm/layers.py: a one-line change from the build before it, whichever built it.
Prints each pair, the medians and the median ratio; writes paired_change.json.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/paired_change.py --baseline /tmp/before --package vllm

Each client has a cache of its own, warmed by its own cold build: a stage it keys otherwise than the other (its code
changed) builds on its own previous entry, as on a CI that runs one of them."""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import statistics
import sys
import tempfile

from compare import MB, add_package_argument, append, base_refs, checkout, measure
from tools import BENCH, Dagger, Names, stored

CHANGED = "vllm/layers.py"


def main(argv: list[str] | None = None) -> int:
    """Warm the cache with a cold build, then time the pairs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=pathlib.Path, required=True, help="a checkout of this repository")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--results", type=pathlib.Path, default=BENCH / "results")
    add_package_argument(parser)
    args = parser.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    run_id = datetime.datetime.now().strftime("paired-%Y%m%d-%H%M%S")
    sides = {"this": Dagger(True), "baseline": Dagger(True, client=args.baseline.resolve())}
    names = {side: Names(run_id, f"ours-{side}") for side in sides}
    base = stored(base_refs())
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    warm: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="vllm-ci-paired-") as tmp:
        source = checkout(pathlib.Path(tmp), "cold", args.package)
        for side, tool in sides.items():
            cold = measure(tool, source, "cold", names[side], args.results / f"paired-cold-{side}.log", {}, base)
            warm[side] = cold.cache_blobs
            print(f"paired: cold ({side}) {cold.seconds:.1f} s", file=sys.stderr, flush=True)
        for pair in range(args.pairs):
            order = list(sides) if pair % 2 == 0 else list(reversed(sides))
            for side in order:
                append(CHANGED, f"PAIRED_CHANGE_{pair}_{side} = 1")(source)
                log = args.results / f"paired-{side}-{pair}.log"
                result = measure(sides[side], source, "py-change", names[side], log, warm[side], base)
                seconds[side].append(result.seconds)
                print(
                    f"paired: pair {pair + 1} {side:8} {result.seconds:5.2f} s  pulled {result.pulled / MB:6.1f} MB  "
                    f"{result.rebuilt}",
                    file=sys.stderr,
                    flush=True,
                )
    ratios = [a / b for a, b in zip(seconds["this"], seconds["baseline"])]
    summary = {
        "baseline": str(args.baseline),
        "package": args.package,
        "seconds": seconds,
        "median": {side: statistics.median(values) for side, values in seconds.items()},
        "median_ratio": statistics.median(ratios),
    }
    (args.results / "paired_change.json").write_text(json.dumps(summary, indent=2))
    print(
        f"one-line change: this {summary['median']['this']:.2f} s, baseline {summary['median']['baseline']:.2f} s "
        f"(medians of {args.pairs}); median ratio this/baseline {summary['median_ratio']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
