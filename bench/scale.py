"""Does a Python-only rebuild cost the same whatever the image's size? The example, given a
synthetic, incompressible heavy layer in its runtime base image (0.5, 2 and 8 GB by default),
built by our stage cache and by BuildKit-today. For each size: a cold build (warms each tool's
cache), then a Python-only change on a fresh agent, measured: wall time, bytes pulled and pushed at
the registry. Prints the table and each tool's slope (seconds per GB); writes scale.json and
scale.png (time against size, both tools). Only an ARG changes (FINAL_BASE_IMAGE), as a fork would
pass it; the stage code and the Dockerfile stay as they are."""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import anyio
import dagger
from dagger import dag

from compare import (
    COMMIT_DATE,
    MB,
    Measure,
    add_package_argument,
    agent_pull,
    base_refs,
    checkout,
    make_tools,
    measure,
    write_results,
)
from stagecache.registry import ImageRef, connect
from tools import BENCH, REGISTRY, BenchError, BuildKit, Dagger, Names, engine_lock
from vllm_ci.engine import use_local_engine
from vllm_release import git

GB = 1e9
TOOLS = ("ours", "buildkit-today")
SCENARIOS = ("cold", "py-change")  # cold warms the cache; the Python-only change is what is compared
DISK_FACTOR = 6  # copies of the heavy layer at once: registry, engine, buildkitd (packed and unpacked), slack
STATE_DIR = pathlib.Path(os.environ.get("VLLM_CI_STATE", "/var/lib/vllm-ci"))


def check_disk(sizes: list[float]) -> None:
    """Refuse, before any work, a size the disk cannot hold a few copies of."""
    free = shutil.disk_usage(STATE_DIR).free
    needed = DISK_FACTOR * max(sizes) * GB + 5 * GB
    if free < needed:
        raise BenchError(
            f"{max(sizes)} GB needs about {needed / GB:.0f} GB free under {STATE_DIR}; {free / GB:.0f} GB are"
        )


async def publish_heavy_base(ref: str, size: int, log: pathlib.Path) -> None:
    """The example's runtime base image plus one layer of `size` random bytes, published uncompressed."""
    with log.open("w") as log_output:
        async with dagger.connection(dagger.Config(log_output=log_output)):
            heavy = (
                dag.container()
                .from_(base_refs()[1])
                .with_exec(["sh", "-c", f"mkdir -p /opt/heavy && head -c {size} /dev/urandom > /opt/heavy/blob"])
            )
            await heavy.publish(ref, forced_compression=dagger.ImageLayerCompression.Uncompressed)


def on_heavy_base(source: pathlib.Path, ref: str) -> pathlib.Path:
    """A checkout whose args file names the heavy base as FINAL_BASE_IMAGE (what both tools read), committed."""
    args = source / "vllm-ci.args"
    flag = "--build-arg=FINAL_BASE_IMAGE="
    lines = [f"{flag}{ref}" if line.startswith(flag) else line for line in args.read_text().splitlines()]
    if sum(line.startswith(flag) for line in lines) != 1:
        raise BenchError(f"{args}: expected one {flag}... line")
    args.write_text("\n".join(lines) + "\n")
    git(source, "commit", "-qm", "bench: the heavy base", "vllm-ci.args", date=COMMIT_DATE)
    return source


async def forget(repositories: list[str]) -> None:
    """Delete every tag of the given repositories (the registry frees the bytes at its next GC)."""
    async with connect(REGISTRY) as client:
        for repository in repositories:
            for tag in await client.tags(repository):
                if digest := await client.manifest_digest(repository, tag):
                    await client.delete_manifest(repository, digest)


def measure_size(  # noqa: PLR0913
    size_gb: float,
    tools: list[BuildKit | Dagger],
    workdir: pathlib.Path,
    out: pathlib.Path,
    stamp: str,
    package: str = "example",
) -> dict[str, Measure]:
    """Cold, then the Python-only change on a fresh agent, for each tool, on one heavy base; and what a test agent
    holding the cold image pulls to run the changed one."""
    run_id = f"{stamp}-{size_gb:g}gb"
    heavy = f"{REGISTRY}/bench/{run_id}/heavy/base:bookworm"
    with engine_lock():
        anyio.run(publish_heavy_base, heavy, int(size_gb * GB), out / "logs" / f"heavy-{size_gb:g}gb.log")
    measured: dict[str, Measure] = {}
    try:
        for tool in tools:
            names = Names(run_id, tool.name)
            for scenario in SCENARIOS:
                log = out / "logs" / f"scale-{size_gb:g}gb-{tool.name}-{scenario}.log"
                source = on_heavy_base(checkout(workdir, scenario, package), heavy)
                result = measure(tool, source, scenario, names, log, {}, {}, extra_repos=(f"bench/{run_id}/heavy/",))
                print(
                    f"scale: {size_gb:g} GB {tool.name:15} {scenario:10} {result.seconds:6.1f} s  "
                    f"pulled {result.pulled / MB:8.1f} MB  pushed {result.pushed / MB:8.1f} MB  {result.rebuilt}",
                    file=sys.stderr,
                    flush=True,
                )
                if scenario == "py-change":
                    result.agent_pulled = agent_pull(names, scenario)
                    measured[tool.name] = result
            tool.done()
    finally:
        for tool in tools:
            tool.done()
        repositories = [f"bench/{run_id}/heavy/base"] + [
            ImageRef.parse(ref).repository
            for tool in tools
            for ref in (Names(run_id, tool.name).cache, Names(run_id, tool.name).image("x"))
        ]
        anyio.run(forget, repositories + [r + "-py-change" for r in repositories])
    return measured


def slope(points: list[tuple[float, float]]) -> float | None:
    """Seconds per GB, by least squares; None with fewer than two sizes."""
    if len({x for x, _ in points}) < 2:
        return None
    return statistics.linear_regression([x for x, _ in points], [y for _, y in points]).slope


def report(rows: dict[float, dict[str, Measure]]) -> tuple[str, dict[str, float | None]]:
    """The markdown table and each tool's slope."""
    slopes = {tool: slope([(size, per[tool].seconds) for size, per in rows.items() if tool in per]) for tool in TOOLS}
    lines = [
        "| heavy layer | tool | Python-only change, fresh agent: wall s | pulled | pushed | rebuilt | test agent pulls |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, per in rows.items():
        for tool, m in per.items():
            lines.append(
                f"| {size:g} GB | {tool} | {m.seconds:.1f} | {m.pulled / MB:.1f} MB | {m.pushed / MB:.1f} MB | {m.rebuilt} "
                f"| {'-' if m.agent_pulled is None else f'{m.agent_pulled / MB:.1f} MB'} |"
            )
    lines += ["", "| tool | slope (s per GB of image) |", "|---|---|"]
    lines += [f"| {tool} | {'-' if s is None else f'{s:.2f}'} |" for tool, s in slopes.items()]
    return "\n".join(lines), slopes


def chart(rows: dict[float, dict[str, Measure]], path: pathlib.Path) -> None:
    """Wall time and MB pulled against the heavy layer's size, both tools, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for tool in TOOLS:
        points = [(size, per[tool]) for size, per in rows.items() if tool in per]
        left.plot([s for s, _ in points], [m.seconds for _, m in points], marker="o", label=tool)
        right.plot([s for s, _ in points], [m.pulled / MB for _, m in points], marker="o", label=tool)
    left.set(xlabel="heavy layer in the image (GB)", ylabel="wall s", title="Python-only change, fresh agent")
    right.set(xlabel="heavy layer in the image (GB)", ylabel="MB pulled", title="bytes pulled from the registry")
    left.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the scale bench and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.5,2,8", help="heavy layer sizes in GB, comma-separated")
    parser.add_argument(
        "--results", type=pathlib.Path, default=BENCH / "results", help="folder for scale.json, scale.png, logs/"
    )
    add_package_argument(parser)
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",") if s]
    use_local_engine()
    (args.results / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    rows: dict[float, dict[str, Measure]] = {}
    try:
        check_disk(sizes)
        with tempfile.TemporaryDirectory(prefix="vllm-ci-scale-") as tmp:
            tools = make_tools(list(TOOLS), pathlib.Path(tmp))
            for size in sizes:
                rows[size] = measure_size(size, tools, pathlib.Path(tmp), args.results, stamp, args.package)
    except BenchError as err:
        print(f"scale: {err}", file=sys.stderr)
        return 1
    table, slopes = report(rows)
    print(table)
    data = {
        "sizes_gb": sizes,
        "package": args.package,
        "bench_seconds": round(time.monotonic() - started, 1),
        "slopes_s_per_gb": slopes,
        "results": {
            f"{size:g}": {
                tool: {
                    "seconds": m.seconds,
                    "pulled": m.pulled,
                    "pushed": m.pushed,
                    "rebuilt": m.rebuilt,
                    "agent_pulled": m.agent_pulled,
                }
                for tool, m in per.items()
            }
            for size, per in rows.items()
        },
        "markdown": table,
    }
    write_results(args.results, "scale", data, lambda png: chart(rows, png), "scale")
    return 0


if __name__ == "__main__":
    sys.exit(main())
