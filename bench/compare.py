"""Our stage cache against BuildKit's registry cache (and the Dagger engine's own cache), side by
side: the same example, registry and machine; every scenario on a fresh agent. Prints markdown
tables, ratios and goals; writes JSON and a PNG chart."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from imagefs import lacking_layers
from tools import (
    ARGS_FILE,
    BENCH,
    REPO,
    WARM,
    BenchError,
    BuildKit,
    Buildkitd,
    Dagger,
    Names,
    ca_bundle,
    dockerfile_of,
    engine_lock,
    log_mark,
    stored,
    traffic_since,
)
from vllm_ci.args import BuildArgs, args_file_flags, read_args_file
from vllm_ci.declare import STAGE_SETS
from vllm_ci.graph import targets
from vllm_ci.upstream_file import UpstreamFile
from vllm_release import tagged_checkout, vllm_source

EXAMPLE = REPO / "examples" / "mini-vllm"
TOOLS = ("ours", "buildkit-oct2025", "buildkit-today", "dagger-engine-cache")
SCENARIOS = ("cold", "no-change", "py-change", "csrc-change", "lane-arch", "lane-cuda", "cold-no-export")
QUICK_TOOLS = ("ours", "buildkit-today")
QUICK_SCENARIOS = ("cold", "no-change", "py-change")
BASELINE = "buildkit-today"
COMMIT_DATE = "2026-01-01T00:00:00Z"
MB = 1e6


def append(relative: str, line: str) -> Callable[[pathlib.Path], None]:
    """An edit: append one line to a file of the checkout."""

    def edit(root: pathlib.Path) -> None:
        path = root / relative
        path.write_text(path.read_text() + line + "\n")

    return edit


# A release lane's build: the checkout as CI builds it, with another value of one ARG (another arch list,
# another CUDA: a patch release, as the example's mirror serves PyTorch's cu130 index only).
LANE_ARGS = {"lane-arch": ("torch_cuda_arch_list", "9.0 10.0"), "lane-cuda": ("CUDA_VERSION", "13.0.2")}


def release_args(source: pathlib.Path, scenario: str, into: pathlib.Path) -> pathlib.Path | None:
    """For a release lane, its args file, written outside the checkout (a release passes its arguments to the
    build; they are no file of the checkout, which would move every stage reading all of it): the checkout's
    CUDA args file with the lane's one ARG changed. None for any other scenario (the checkout's own)."""
    if scenario not in LANE_ARGS:
        return None
    name, value = LANE_ARGS[scenario]
    values = read_args_file((source / ARGS_FILE).read_text())
    values["build_arg"] = [a for a in values.get("build_arg", []) if not a.startswith(f"{name}=")]
    values["build_arg"].append(f"{name}={value}")
    path = into / f"{scenario}.args"
    path.write_text("\n".join(args_file_flags(values)) + "\n")
    return path


EDITS = {
    "py-change": append("vllm/layers.py", "BENCH_CHANGE = 1"),
    # a real function: a comment would compile to the same extension
    "csrc-change": append("csrc/ops.c", "int vllm_bench_change(void) { return 42; }"),
}


@dataclasses.dataclass
class Measure:
    """One build as the registry and the clock saw it."""

    seconds: float
    pulled: int
    pushed: int
    rebuilt: str
    cache_bytes: int | None  # bytes the cache refs it wrote hold that the warm cache did not
    cache_own: int | None  # the same without the base images' layers
    inner_seconds: float | None = None
    cache_blobs: dict[str, int] = dataclasses.field(default_factory=dict, repr=False)
    # What a test agent holding the cold build's image pulls to run this one (its layers the cold one lacks)
    agent_pulled: int | None = None
    stages_run: tuple[str, ...] = ()  # ours: the stages built; BuildKit: the stages with a RUN executed


def checkout(workdir: pathlib.Path, scenario: str, package: str = "example") -> pathlib.Path:
    """A private checkout of the example (no build outputs), one commit past the release's tag, with
    the scenario's edit in the working tree; with package `vllm`, its vllm/ holds the pinned release's
    Python tree too (every file the example lacks: vLLM's size, the example's own extension and tests). Fixed dates: every copy has the same commits, as a fresh
    clone on a new agent has (upstream's Dockerfile binds .git; ours keys the version it gives).
    The edit is not committed: a new commit is a new version, and rust-build, which links it into
    vllm-rs, relinks on rust-build-cache (upstream's too); see the README's Performance section."""
    target = workdir / f"src-{scenario}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        EXAMPLE,
        target,
        ignore=lambda folder, names: [
            n
            for n in names
            if n == "__pycache__" or n.endswith(".egg-info") or (folder == str(EXAMPLE) and n in ("build", "dist"))
        ],
    )
    if package == "vllm":
        shutil.copytree(vllm_source() / "vllm", target / "vllm", dirs_exist_ok=True, copy_function=copy_if_absent)
    tagged_checkout(target, date=COMMIT_DATE)
    if scenario in EDITS:
        EDITS[scenario](target)
    return target


def copy_if_absent(source: str, target: str) -> None:
    """Copy a file unless the target exists (the example's own files win)."""
    if not pathlib.Path(target).exists():
        shutil.copy2(source, target)


def agent_pull(names: Names, scenario: str) -> int:
    """Bytes a test agent holding the cold build's image pulls to run a scenario's image."""
    return sum(asyncio.run(lacking_layers(names.image("cold"), names.image(scenario))).values())


# The example's args file for each stage set: its CUDA build, its CPU build.
ARGS_FILES = {"cuda": ARGS_FILE, "cpu": "vllm-ci-cpu.args"}


def base_refs(args_file: str = ARGS_FILE) -> list[str]:
    """The base images the example builds on (its args file: the CUDA base image arguments, the images it
    rewrites a FROM to)."""
    args = BuildArgs(**read_args_file((EXAMPLE / args_file).read_text()))
    passed = args.passed()
    named = [passed[name] for name in ("BUILD_BASE_IMAGE", "FINAL_BASE_IMAGE") if name in passed]
    return [*named, *args.image_rewrites().values()]


def base_repos(args_file: str = ARGS_FILE) -> tuple[str, ...]:
    """The base images' repositories, as the registry's API names them."""
    return tuple(ref.split("/", 1)[1].rsplit(":", 1)[0] + "/" for ref in base_refs(args_file))


def measure(
    tool: BuildKit | Dagger,
    source: pathlib.Path,
    scenario: str,
    names: Names,
    log: pathlib.Path,
    warm: dict[str, int],
    base: dict[str, int],
    extra_repos: tuple[str, ...] = (),
    args_file: str = ARGS_FILE,
    release: pathlib.Path | None = None,
) -> Measure:
    """Fresh agent, then one timed build (with a release lane's args file, if given); bytes from the registry's
    request log (the tool's repositories, the base images' and `extra_repos`)."""
    with engine_lock():
        tool.fresh_agent()
        mark = log_mark()
        started = time.monotonic()
        outcome = tool.build(source, scenario, names, log, release)
        seconds = time.monotonic() - started
        end = log_mark()
    pulled, pushed = traffic_since(mark, end, (names.repos, *base_repos(args_file), *extra_repos))
    written = stored(outcome.cache_written)
    new = {digest: size for digest, size in written.items() if digest not in warm}
    cache, own = (
        (sum(new.values()), sum(s for d, s in new.items() if d not in base)) if outcome.cache_written else (None, None)
    )
    return Measure(
        seconds,
        pulled,
        pushed,
        outcome.rebuilt,
        cache,
        own,
        outcome.inner_seconds,
        written,
        stages_run=outcome.stages_run,
    )


def check_target(target: str, tool_names: list[str], stage_set: str = "cuda") -> None:
    """Refuse, before any work, a target one of the tools has no stage of (a BenchError)."""
    layouts = {name.removeprefix("buildkit-") for name in tool_names if name.startswith("buildkit-")}
    for layout in sorted(layouts):
        path = dockerfile_of(layout, STAGE_SETS[stage_set].dockerfile)
        if target not in {stage.name for stage in UpstreamFile.parse(path.read_text(), path.name).stages}:
            raise BenchError(f"target {target}: {path.name} has no stage of that name")
    stages = targets(STAGE_SETS[stage_set])
    if target not in stages:
        raise BenchError(f"target {target}: not a stage of the module ({', '.join(stages)})")


def make_tools(
    names: list[str],
    workdir: pathlib.Path,
    target: str = "test",
    args_file: str = ARGS_FILE,
    cache_compression: str = "",
) -> list[BuildKit | Dagger]:
    """The tools asked for, building `target`; BuildKit is built (or found cached) first."""
    tools: list[BuildKit | Dagger] = []
    daemon = None
    for name in names:
        if name.startswith("buildkit-"):
            if daemon is None:
                out = subprocess.run([str(BENCH / "buildkit-install")], check=True, capture_output=True, text=True)
                daemon = Buildkitd(pathlib.Path(out.stdout.strip().splitlines()[-1]))
            layout = name.removeprefix("buildkit-")
            tools.append(BuildKit(layout, daemon, ca_bundle(workdir / "ca.pem"), target, args_file))
        else:
            tools.append(Dagger(name == "ours", target, args_file, cache_compression))
    return tools


def save(results: dict[str, dict[str, list[Measure]]], path: pathlib.Path) -> None:
    """Every measurement so far, so an interrupted bench can still be reported (`--render`)."""
    plain = {
        s: {
            t: [{k: v for k, v in dataclasses.asdict(m).items() if k != "cache_blobs"} for m in runs]
            for t, runs in per_tool.items()
        }
        for s, per_tool in results.items()
    }
    path.write_text(json.dumps(plain, indent=1))


def load(path: pathlib.Path) -> dict[str, dict[str, list[Measure]]]:
    """Measurements written by save()."""
    return {
        s: {
            t: [Measure(**{**m, "stages_run": tuple(m.get("stages_run", ()))}) for m in runs]
            for t, runs in per_tool.items()
        }
        for s, per_tool in json.loads(path.read_text()).items()
    }


def run_bench(
    tool_names: list[str],
    scenarios: list[str],
    runs: int,
    out: pathlib.Path,
    resume: bool = False,
    target: str = "test",
    package: str = "example",
    args_file: str = ARGS_FILE,
    cache_compression: str = "",
) -> dict[str, dict[str, list[Measure]]]:
    """Every tool through the scenarios, `runs` times; cold first, as it warms the cache the others read.
    Resuming keeps the runs measurements.json holds whole and redoes the rest."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    order = [s for s in SCENARIOS if s in scenarios]
    if any(s in WARM for s in order) and "cold" not in order:
        order.insert(0, "cold")  # warms the cache; not reported
    results: dict[str, dict[str, list[Measure]]] = {s: {t: [] for t in tool_names} for s in scenarios}
    if resume and (out / "measurements.json").exists():
        for scenario, per_tool in load(out / "measurements.json").items():
            for tool_name, measured in per_tool.items():
                if scenario in results and tool_name in results[scenario]:
                    results[scenario][tool_name] = measured
    done = {t: min(len(results[s][t]) for s in scenarios) for t in tool_names}
    for per_tool in results.values():
        for tool_name, measured in per_tool.items():
            del measured[done[tool_name] :]  # a run cut short is redone whole, on fresh repositories
    with tempfile.TemporaryDirectory(prefix="vllm-ci-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        tools = make_tools(tool_names, workdir, target, args_file, cache_compression)
        base = stored(base_refs(args_file))
        try:
            for run in range(runs):
                for tool in tools:
                    if run < done[tool.name]:
                        continue
                    names = Names(f"{stamp}-{run}", tool.name)
                    warm: dict[str, int] = {}
                    for scenario in order:
                        log = out / "logs" / f"{tool.name}-{scenario}-{run}.log"
                        source = checkout(workdir, scenario, package)
                        result = measure(
                            tool,
                            source,
                            scenario,
                            names,
                            log,
                            warm if scenario in WARM else {},
                            base,
                            args_file=args_file,
                            release=release_args(source, scenario, workdir),
                        )
                        if scenario == "cold":
                            warm = result.cache_blobs
                        elif scenario in WARM:
                            result.agent_pulled = agent_pull(names, scenario)
                        print(
                            f"bench: run {run + 1}/{runs} {tool.name:20} {scenario:15} {result.seconds:6.1f} s  "
                            f"pulled {result.pulled / MB:7.1f} MB  pushed {result.pushed / MB:7.1f} MB  {result.rebuilt}",
                            file=sys.stderr,
                            flush=True,
                        )
                        if scenario in scenarios:
                            results[scenario][tool.name].append(result)
                            save(results, out / "measurements.json")
                    tool.done()
        finally:
            for tool in tools:
                tool.done()
    return results


def summarize(results: dict[str, dict[str, list[Measure]]]) -> dict[str, dict[str, dict[str, object]]]:
    """Medians per scenario and tool, with every run's time kept."""
    summary: dict[str, dict[str, dict[str, object]]] = {}
    for scenario, per_tool in results.items():
        summary[scenario] = {}
        for tool, runs in per_tool.items():
            if not runs:
                continue
            cache = [r.cache_bytes for r in runs if r.cache_bytes is not None]
            own = [r.cache_own for r in runs if r.cache_own is not None]
            inner = [r.inner_seconds for r in runs if r.inner_seconds is not None]
            agent = [r.agent_pulled for r in runs if r.agent_pulled is not None]
            summary[scenario][tool] = {
                "seconds": statistics.median(r.seconds for r in runs),
                "seconds_all": [round(r.seconds, 2) for r in runs],
                "pulled": int(statistics.median(r.pulled for r in runs)),
                "pushed": int(statistics.median(r.pushed for r in runs)),
                "rebuilt": runs[-1].rebuilt,
                "cache_bytes": int(statistics.median(cache)) if cache else None,
                "cache_bytes_without_base": int(statistics.median(own)) if own else None,
                "inner_seconds": statistics.median(inner) if inner else None,
                "agent_pulled": int(statistics.median(agent)) if agent else None,
                "stages_run": list(runs[-1].stages_run),
            }
    return summary


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    return a / b if a is not None and b else None


def goals(summary: dict[str, dict[str, dict[str, object]]]) -> list[dict[str, object]]:
    """The issue's goals, each with its measured ratio and whether it is met."""

    def get(scenario: str, tool: str, field: str) -> float | None:
        return summary.get(scenario, {}).get(tool, {}).get(field)  # type: ignore[return-value]

    checks = [
        (
            "Python-only change: time ≤ 0.2× BuildKit-today",
            ratio(get("py-change", "ours", "seconds"), get("py-change", BASELINE, "seconds")),
            0.2,
        ),
        (
            "Python-only change: bytes pulled ≤ 0.05× BuildKit-today",
            ratio(get("py-change", "ours", "pulled"), get("py-change", BASELINE, "pulled")),
            0.05,
        ),
        (
            "Python-only change: a test agent holding the previous image pulls ≤ 0.01× BuildKit-today's",
            ratio(get("py-change", "ours", "agent_pulled"), get("py-change", BASELINE, "agent_pulled")),
            0.01,
        ),
        (
            "No change: time ≤ 1× BuildKit-today",
            ratio(get("no-change", "ours", "seconds"), get("no-change", BASELINE, "seconds")),
            1.0,
        ),
        (
            "Cold with cache export: time ≤ 1.1× cold without",
            ratio(get("cold", "ours", "seconds"), get("cold-no-export", "ours", "seconds")),
            1.1,
        ),
        (
            "Cache storage ≤ 0.5× BuildKit-today mode=max",
            ratio(get("cold", "ours", "cache_bytes"), get("cold", BASELINE, "cache_bytes")),
            0.5,
        ),
        (
            "Cache storage without the base images ≤ 0.5× BuildKit-today mode=max (informative)",
            ratio(get("cold", "ours", "cache_bytes_without_base"), get("cold", BASELINE, "cache_bytes_without_base")),
            0.5,
        ),
    ]
    return [
        {"goal": goal, "ratio": value, "limit": limit, "met": None if value is None else value <= limit}
        for goal, value, limit in checks
    ]


def human(n: object) -> str:
    """Bytes in MB for tables."""
    return "-" if n is None else f"{n / MB:.1f} MB"  # type: ignore[operator]


def times(value: float | None) -> str:
    """A ratio for tables."""
    return "-" if value is None else f"{value:.3f}×"


def markdown(summary: dict[str, dict[str, dict[str, object]]], goal_list: list[dict[str, object]], runs: int) -> str:
    """The tables the README's Performance section shows."""
    lines = [
        f"Median of {runs} run(s), each on a fresh agent; bytes measured at the registry.",
        "",
        "| scenario | tool | wall s | pulled | pushed | rebuilt | cache stored (without base images) | test agent pulls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario, per_tool in summary.items():
        for tool, m in per_tool.items():
            lines.append(
                f"| {scenario} | {tool} | {m['seconds']:.1f} | {human(m['pulled'])} | {human(m['pushed'])} "
                f"| {m['rebuilt']} | {human(m['cache_bytes'])} ({human(m['cache_bytes_without_base'])}) "
                f"| {human(m.get('agent_pulled'))} |"
            )
    lines += [
        "",
        f"| scenario | time ours/{BASELINE} | pulled ours/{BASELINE} | pushed ours/{BASELINE} "
        f"| test agent pulls ours/{BASELINE} |",
        "|---|---|---|---|---|",
    ]
    for scenario, per_tool in summary.items():
        ours, base = per_tool.get("ours"), per_tool.get(BASELINE)
        if ours and base:
            lines.append(
                "| "
                + " | ".join(
                    [scenario]
                    + [times(ratio(ours.get(f), base.get(f))) for f in ("seconds", "pulled", "pushed", "agent_pulled")]
                )
                + " |"
            )  # type: ignore[arg-type]
    py, cold = summary.get("py-change", {}).get("ours"), summary.get("cold", {}).get("ours")
    if py and cold:
        lines += [
            "",
            "Ours, fresh-agent Python-only change / cold build: "
            + ", ".join(
                f"{label} {times(ratio(py[f], cold[f]))}"
                for label, f in (("time", "seconds"), ("pulled", "pulled"), ("pushed", "pushed"))
            ),
        ]  # type: ignore[arg-type]
    lanes = [
        (scenario, tool, m)
        for scenario, per_tool in summary.items()
        if scenario in LANE_ARGS
        for tool, m in per_tool.items()
    ]
    if lanes:
        lines += [
            "",
            "Release lanes, against CI's warm cache: the stages that ran",
            "",
            "| lane | tool | stages run |",
            "|---|---|---|",
        ]
        lines += [f"| {s} | {t} | {', '.join(m.get('stages_run') or []) or 'none'} |" for s, t, m in lanes]  # type: ignore[arg-type]
    lines += ["", "Goals:"]
    for g in goal_list:
        state = "not measured" if g["met"] is None else "met" if g["met"] else "NOT MET"
        lines.append(f"- {g['goal']}: {times(g['ratio'])} ({state})")  # type: ignore[arg-type]
    return "\n".join(lines)


def chart(summary: dict[str, dict[str, dict[str, object]]], path: pathlib.Path) -> None:
    """Grouped bars per scenario: wall time, MB pulled, MB pushed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(summary)
    tools = [t for t in TOOLS if any(t in summary[s] for s in scenarios)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    width = 0.8 / len(tools)
    for ax, (field, label, scale) in zip(
        axes, (("seconds", "wall s", 1), ("pulled", "MB pulled", MB), ("pushed", "MB pushed", MB))
    ):
        for i, tool in enumerate(tools):
            values = [summary[s][tool][field] / scale if tool in summary[s] else 0 for s in scenarios]  # type: ignore[operator]
            ax.bar([x + i * width for x in range(len(scenarios))], values, width, label=tool)
        ax.set_xticks([x + width * (len(tools) - 1) / 2 for x in range(len(scenarios))], scenarios, rotation=20)
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("vllm-ci stage cache vs BuildKit registry cache (fresh agent per build)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_package_argument(parser: argparse.ArgumentParser) -> None:
    """--package: the example's own Python package, or vLLM's (the pinned release's whole Python tree in vllm/)."""
    parser.add_argument(
        "--package",
        choices=("example", "vllm"),
        default="example",
        help="vllm: the example with the pinned release's whole Python tree in vllm/ (vLLM's size)",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the bench and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario and tool (median reported)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"1 run; tools {','.join(QUICK_TOOLS)}; scenarios {','.join(QUICK_SCENARIOS)}",
    )
    parser.add_argument("--tools", help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--scenarios", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument(
        "--results",
        type=pathlib.Path,
        default=BENCH / "results",
        help="folder for latest.json, latest.png, measurements.json, logs/",
    )
    parser.add_argument("--target", help="the stage both tools build (default: the stage set's test image)")
    parser.add_argument(
        "--stage-set",
        choices=tuple(ARGS_FILES),
        default="cuda",
        help="cpu: the example's CPU image (vllm-ci-cpu.args, upstream's docker/Dockerfile.cpu)",
    )
    add_package_argument(parser)
    parser.add_argument(
        "--cache-compression",
        choices=("zstd", "gzip"),
        help="ours: the stage cache's layer compression (default: the args file's, zstd); gzip keeps the base "
        "images' gzip layers as they are instead of storing zstd copies",
    )
    parser.add_argument(
        "--render", action="store_true", help="build nothing: report the measurements.json already there"
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the whole runs measurements.json holds, measure the rest"
    )
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    target = args.target or STAGE_SETS[args.stage_set].test_image
    tools = args.tools.split(",") if args.tools else list(QUICK_TOOLS if args.quick else TOOLS)
    scenarios = args.scenarios.split(",") if args.scenarios else list(QUICK_SCENARIOS if args.quick else SCENARIOS)
    unknown = sorted(set(tools) - set(TOOLS)) + sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown tool or scenario: {', '.join(unknown)}")
    if args.stage_set != "cuda" and set(scenarios) & set(LANE_ARGS):
        parser.error(f"{', '.join(LANE_ARGS)} change the CUDA args file's ARGs: --stage-set cuda only")
    (args.results / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # A SIGTERM ends the bench through its `finally` blocks: no buildkitd is left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
    try:
        if args.render:
            results = load(args.results / "measurements.json")
            runs = max(len(m) for per_tool in results.values() for m in per_tool.values())
            tools = [t for t in TOOLS if any(per_tool.get(t) for per_tool in results.values())]
            scenarios = list(results)
        else:
            check_target(target, tools, args.stage_set)
            results = run_bench(
                tools,
                [s for s in SCENARIOS if s in scenarios],
                runs,
                args.results,
                args.resume,
                target,
                args.package,
                ARGS_FILES[args.stage_set],
                args.cache_compression or "",
            )
    except BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 1
    summary = summarize(results)
    goal_list = goals(summary)
    table = markdown(summary, goal_list, runs)
    print(table)
    data = {
        "runs": runs,
        "tools": tools,
        "scenarios": scenarios,
        "target": target,
        "stage_set": args.stage_set,
        "package": args.package,
        "cache_compression": args.cache_compression or "zstd",
        "bench_seconds": round(time.monotonic() - started, 1),
        "results": summary,
        "goals": goal_list,
        "markdown": table,
    }
    write_results(args.results, "latest", data, lambda png: chart(summary, png), "bench")
    return 0


def write_results(
    folder: pathlib.Path, stem: str, data: dict[str, object], draw: Callable[[pathlib.Path], None], who: str
) -> None:
    """Write `<stem>.json` and the chart `<stem>.png` into the results folder, and say so on stderr."""
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=2))
    draw(folder / f"{stem}.png")
    print(
        f"\n{who}: {data['bench_seconds']} s; wrote {folder / f'{stem}.json'} and {folder / f'{stem}.png'}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
