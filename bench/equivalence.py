"""Is our image what upstream's own Dockerfile gives? The example's image built by ours and by
BuildKit on vLLM's real Dockerfile (bench's today layout), compared file by file (kind, mode,
owner, content) and by config. BuildKit builds it twice, on empty daemons: what differs between
its own two builds is run-to-run noise (timestamps in bytecode and caches, machine ids, logs) and
is left out; what remains is where the port's result differs from upstream's. Each remaining
difference must be one of EXPECTED, with its reason; the run fails (exit 1) on any other, and on an
expected one that no longer occurs (so a closed gap leaves the list). Prints the remaining paths
grouped by folder and by reason, writes equivalence.json."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import fnmatch
import json
import pathlib
import sys
import tempfile

import anyio

from compare import checkout, make_tools
from imagefs import ImageFiles, difference, image_files
from tools import BENCH, BenchError, BuildKit, Names, engine_lock

CONFIG_FIELDS = ("Env", "WorkingDir", "Entrypoint", "Cmd", "User", "ExposedPorts", "Volumes", "StopSignal")
OUR_LABELS = "org.vllm-ci."  # the stage cache's own labels (key, preimage, created)


@dataclasses.dataclass(frozen=True)
class Expected:
    """A way our test image may differ from upstream's: lines of a kind ("only theirs", "differs",
    "record", ...) on paths matching a pattern, and why."""

    kind: str
    pattern: str
    why: str

    def explains(self, line: str) -> bool:
        """Whether a difference line is this one."""
        return line.startswith(self.kind + ":") and fnmatch.fnmatchcase(path_of(line), self.pattern)


OUR_WHEEL_FREE_FLOOR = "the Python-only floor never builds the wheels these are the checksums of"
NO_COMMIT_ID = (
    "deliberate: build's RUN gets the version derived from .git, not .git, so setuptools-scm writes "
    "vllm/_version.py with that version and commit_id None where upstream's has the commit (vLLM never reads it)"
)
EXPECTED = (
    Expected(
        "only theirs",
        "/vllm-workspace/.git*",
        "deliberate: the upload leaves .git out (no key reads its bytes; the version derived from it is in the keys)",
    ),
    Expected("only theirs", "/vllm-workspace/docs*", "deliberate: docs never enter a key (SOURCE_IGNORE)"),
    Expected("only theirs", "/tmp/vllm-wheel.sha256", f"deliberate: {OUR_WHEEL_FREE_FLOOR}"),
    Expected("only theirs", "/tmp/ep-kernels-wheels.sha256", f"deliberate: {OUR_WHEEL_FREE_FLOOR}"),
    Expected("differs", "*-packages/vllm/_version.py", NO_COMMIT_ID),
    Expected("differs", "*-packages/vllm/__pycache__/_version.*.pyc", NO_COMMIT_ID),
)


def explain(report: dict[str, object]) -> tuple[dict[str, int], list[str], list[Expected]]:
    """Each difference's reason: (count per reason, differences with none, expected ones that did not occur)."""
    lines = [*report["deviations"], *report["records"], *report["config"]]  # type: ignore[misc]
    counts: dict[str, int] = collections.Counter()
    unexplained = []
    for line in lines:
        known = [e for e in EXPECTED if e.explains(line)]
        if known:
            counts[known[0].why] += 1
        else:
            unexplained.append(line)
    return dict(counts), unexplained, [e for e in EXPECTED if e.why not in counts]


def config_difference(ours: ImageFiles, theirs: ImageFiles) -> list[str]:
    """The runtime config fields and labels that differ (our cache's own labels left out)."""
    a, b = ours.config.get("config", {}), theirs.config.get("config", {})
    lines = [
        f"config {field}: ours {a.get(field)!r}, theirs {b.get(field)!r}"
        for field in CONFIG_FIELDS
        if a.get(field) != b.get(field)
    ]
    labels_a = {k: v for k, v in (a.get("Labels") or {}).items() if not k.startswith(OUR_LABELS)}
    if labels_a != (b.get("Labels") or {}):
        lines.append(f"config Labels: ours {labels_a!r}, theirs {b.get('Labels')!r}")
    return lines


def is_record(path: str) -> bool:
    """A wheel install's RECORD: compared by the paths it lists, its hashes of bytecode being noise."""
    return path.endswith(".dist-info/RECORD")


def record_difference(ours: ImageFiles, theirs: ImageFiles) -> list[str]:
    """RECORDs in both images that list different paths: what each lists that the other does not."""
    lines = []
    for path in sorted(set(ours.kept) & set(theirs.kept)):
        listed = [
            {row.split(",")[0] for row in image.kept[path].decode().splitlines() if row} for image in (ours, theirs)
        ]
        if listed[0] != listed[1]:
            lines.append(
                f"record: /{path}: {len(listed[1] - listed[0])} paths only theirs lists "
                f"(e.g. {sorted(listed[1] - listed[0])[:3]}), {len(listed[0] - listed[1])} only ours"
            )
    return lines


def path_of(line: str) -> str:
    """The path a difference line names."""
    return line.split(": ", 1)[1].split(" ", 1)[0].rstrip(":")


def folder_of(path: str, depth: int = 5) -> str:
    """A path cut to its first folders (a checkout's .git as one), to group differences."""
    parts = path.split("/")
    return "/".join(parts[: parts.index(".git") + 1] if ".git" in parts[:depth] else parts[:depth])


async def compare_images(ours: str, theirs: str, theirs_again: str) -> dict[str, object]:
    """Deviations of ours from theirs, less the contents that differ between theirs and theirs_again
    (a path one image has and the other lacks is a deviation however noisy its content)."""
    a, b, c = [await image_files(ref, keep=is_record) for ref in (ours, theirs, theirs_again)]
    noise = {path_of(line) for line in difference(c.files, b.files) if line.startswith("differs")}
    deviations = [
        line for line in difference(a.files, b.files) if not (line.startswith("differs") and path_of(line) in noise)
    ]
    return {
        "files": {"ours": len(a.files), "theirs": len(b.files)},
        "noise_paths": len(noise),
        "deviations": deviations,
        "records": record_difference(a, b),
        "config": config_difference(a, b),
    }


def main(argv: list[str] | None = None) -> int:
    """Build the example with both tools, compare, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="test", help="the stage both tools build (default: the test image)")
    parser.add_argument("--results", type=pathlib.Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    (args.results / "logs").mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        with tempfile.TemporaryDirectory(prefix="vllm-ci-equivalence-") as tmp:
            workdir = pathlib.Path(tmp)
            source = checkout(workdir, "cold")
            refs = []
            for run, tool in enumerate(
                [
                    *make_tools(["ours", "buildkit-today"], workdir, args.target),
                    *make_tools(["buildkit-today"], workdir, args.target),
                ]
            ):
                names = Names(f"equivalence-{stamp}-{run}", tool.name)
                with engine_lock():
                    if isinstance(tool, BuildKit):
                        tool.fresh_agent()  # the second BuildKit build starts empty too: its noise is honest
                    tool.build(
                        source, "cold-no-export", names, args.results / "logs" / f"equivalence-{tool.name}-{run}.log"
                    )
                    tool.done()
                refs.append(names.image("cold-no-export"))
        report = anyio.run(compare_images, *refs)
    except BenchError as err:
        print(f"equivalence: {err}", file=sys.stderr)
        return 1
    groups = collections.Counter(folder_of(path_of(line)) for line in report["deviations"])  # type: ignore[union-attr]
    print(f"{report['files']}; {report['noise_paths']} paths differ between BuildKit's own two builds (left out)")
    for folder, count in sorted(groups.items()):
        print(f"{count:6}  {folder}")
    for line in [*report["records"], *report["config"]]:  # type: ignore[misc]
        print(line)
    explained, unexplained, absent = explain(report)
    for why, count in explained.items():
        print(f"{count:6}  {why}")
    (args.results / "equivalence.json").write_text(
        json.dumps(
            {
                "target": args.target,
                **report,
                "explained": explained,
                "unexplained": unexplained,
                "no_longer_differ": [e.why for e in absent],
            },
            indent=2,
        )
    )
    print(f"equivalence: wrote {args.results / 'equivalence.json'}", file=sys.stderr)
    for line in unexplained:
        print(f"equivalence: unexplained: {line}", file=sys.stderr)
    for expected in absent:
        print(f"equivalence: expected, no longer differs (remove it from EXPECTED): {expected.why}", file=sys.stderr)
    return 1 if unexplained or absent else 0


if __name__ == "__main__":
    sys.exit(main())
