"""The bench runs end to end on a tiny scenario and writes its JSON and chart (no timing assertions)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest
from dagger import dag
from docker.utils.build import exclude_paths

from conftest import EXAMPLE, REPO, source_of, vllm_source
from stagecache import StageContext
from vllm_ci import stages  # noqa: F401  (the stage functions, each declaring its deviations)
from vllm_ci.args import PORTABLE_COMMANDS, BuildArgs, read_args_file
from vllm_ci.declare import DECLARED, STAGE_SETS
from vllm_ci.deviations import anchored
from vllm_ci.instructions import AsWritten
from vllm_ci.upstream_file import UpstreamFile

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))
from fork_dockerfile import fork  # noqa: E402

from compare import LANE_ARGS, goals, release_args  # noqa: E402
from tools import ARGS_FILE, BenchError, BuildKit, dockerfile_of  # noqa: E402

# One path of a checkout for each pattern our source ignores (two for `vllm/**/*.so`), and paths it keeps.
CHECKOUT = (
    ".git/HEAD",
    ".github/workflows/ci.yml",
    "docs/index.md",
    "build/temp/ops.o",
    "dist/vllm.whl",
    ".venv/bin/python",
    "vllm/__pycache__/envs.cpython-312.pyc",
    "tools/stray.pyc",
    "vllm.egg-info/PKG-INFO",
    "tests/.pytest_cache/v/lastfailed",
    "vllm/_C.so",
    "vllm/attention/_ops.so",
    "setup.py",
    "vllm/__init__.py",
    "csrc/ops.cu",
    "tools/docs.py",
)


@pytest.mark.anyio
async def test_the_oct2025_buildkit_build_is_sent_the_files_our_source_holds(
    client: None, tmp_path: pathlib.Path
) -> None:
    # BuildKit reads the ignore file beside the Dockerfile the bench gives it (`<filename>.dockerignore`): applied
    # by the docker CLI's own matcher (docker-py's), it must keep of a checkout what the module's source keeps.
    dockerfile = dockerfile_of("oct2025")
    lines = dockerfile.with_name(f"{dockerfile.name}.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in CHECKOUT:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(path)
    theirs = {path for path in exclude_paths(str(tmp_path), patterns) if (tmp_path / path).is_file()}
    ours = {path for path in await source_of(tmp_path).glob("**/*") if (tmp_path / path).is_file()}
    assert ours == {"setup.py", "vllm/__init__.py", "csrc/ops.cu", "tools/docs.py"}
    assert theirs == ours


def test_todays_layout_is_upstreams_dockerfile_with_only_the_portable_commands_replaced() -> None:
    upstream = (vllm_source() / "docker" / "Dockerfile").read_text()
    example = BuildArgs(**read_args_file((EXAMPLE / "vllm-ci.args").read_text()))
    portable = example.portable()
    generated = fork(upstream, (EXAMPLE / "vllm-ci.args").read_text())
    before, after = UpstreamFile.parse(upstream, "upstream"), UpstreamFile.parse(generated.dockerfile, "fork")
    # Stage for stage and instruction for instruction (ARGs and FROMs included): only some RUNs' text differs.
    assert [i.text for i in before.global_args] == [i.text for i in after.global_args]
    assert [s.from_text for s in before.stages] == [s.from_text for s in after.stages]
    assert [[i.kind for i in s.instructions] for s in before.stages] == [
        [i.kind for i in s.instructions] for s in after.stages
    ]
    changed = {
        (stage.name, old.line): (old, new)
        for stage, forked in zip(before.stages, after.stages)
        for old, new in zip(stage.instructions, forked.instructions)
        if old.text != new.text
    }
    # The RUNs that differ are exactly the ones the stage functions' portable deviations anchor, one for
    # each portable command the example sets (every one the CUDA set declares), found as ours finds them.
    replaced = {
        (name, anchored("upstream", before.stage(name), deviation).line): deviation
        for name, decl in DECLARED.items()
        for deviation in decl.deviations
        if deviation.portable and portable[deviation.portable]
    }
    assert sorted(d.portable for d in replaced.values()) == sorted(n for n in PORTABLE_COMMANDS if portable[n])
    cuda_portable = {d.portable for decl in DECLARED.values() for d in decl.deviations if d.portable}
    assert {d.portable for d in replaced.values()} == cuda_portable and set(changed) == set(replaced)
    for (name, line), deviation in replaced.items():
        old, new = changed[(name, line)]
        script, value = new.value[0], portable[deviation.portable]
        assert new.kind == "RUN" and not new.json and new.flags == old.flags, new.original
        if deviation.whole:  # the whole script is the example's command
            assert script == value, (name, script)
        else:  # the commands holding the anchor are the example's; upstream's others stay, in order
            others = [c.strip() for c in " ".join(old.value[0].split()).split("&&") if deviation.anchor not in c]
            assert deviation.anchor not in script and script.count(value) == 1, (name, script)
            assert [c.strip() for c in script.split("&&") if c.strip() in others] == others, (name, script)
        # What BuildKit runs from the fork is what ours runs from upstream's file with the example's arguments.
        walk = AsWritten(
            before.stage(name), before, example.passed(), StageContext(dag.directory(), {}), DECLARED[name].deviations
        )
        assert script == dataclasses.replace(walk, portable=portable).portable_script(old) != walk.portable_script(old)
    # The example's --build-arg values are the build args, under upstream's ARG names as given.
    assert generated.build_args == example.passed() and set(generated.build_args) <= before.names()
    assert generated.build_args["BUILD_BASE_IMAGE"].endswith("/library/vllm-ci-build:bookworm")
    assert generated.build_args["torch_cuda_arch_list"] == ""  # upstream's ARG, in upstream's spelling
    with pytest.raises(BenchError, match="declares no ARG NO_SUCH_ARG"):
        fork(upstream, "--build-arg=NO_SUCH_ARG=1\n")
    with pytest.raises(BenchError, match="--max-jobs: no such constructor argument"):
        fork(upstream, "--max-jobs=4\n")


def test_the_cpu_fork_is_upstreams_dockerfile_cpu_with_its_portable_commands_and_rewritten_base_image() -> None:
    upstream = (vllm_source() / "docker" / "Dockerfile.cpu").read_text()
    args = (EXAMPLE / "vllm-ci-cpu.args").read_text()
    generated = fork(upstream, args)
    before, after = UpstreamFile.parse(upstream, "upstream"), UpstreamFile.parse(generated.dockerfile, "fork")
    assert [[i.kind for i in s.instructions] for s in before.stages] == [
        [i.kind for i in s.instructions] for s in after.stages
    ]
    # The FROM the example rewrites names the mirror's copy; every other FROM is upstream's.
    (rewritten,) = [
        (b.from_text, a.from_text) for b, a in zip(before.stages, after.stages) if b.from_text != a.from_text
    ]
    mirror = BuildArgs(**read_args_file(args)).image_rewrites()["ubuntu:22.04"]
    assert rewritten == ("FROM ubuntu:22.04 AS base", f"FROM {mirror} AS base")
    # The RUNs that differ are the CPU set's portable deviations, one for each portable command the example sets.
    differ = {
        (s.name, old.line)
        for s, forked in zip(before.stages, after.stages)
        for old, new in zip(s.instructions, forked.instructions)
        if old.kind == "RUN" and old.text != new.text
    }
    portable = {d.portable for decl in STAGE_SETS["cpu"].declared.values() for d in decl.deviations if d.portable}
    assert len(differ) == len(portable) == 3


def test_each_goal_is_the_ratio_of_its_two_measures_and_met_only_within_its_limit() -> None:
    # Ours took 30 s where BuildKit took 60 on a no-change build; a Python-only change was not measured.
    summary = {"no-change": {"ours": {"seconds": 30.0}, "buildkit-today": {"seconds": 60.0}}}
    measured = {g["goal"]: (g["ratio"], g["met"]) for g in goals(summary)}
    assert measured["No change: time ≤ 1× BuildKit-today"] == (0.5, True)
    # A goal whose measures are missing (or whose baseline is zero) is neither met nor failed.
    assert measured["Python-only change: time ≤ 0.2× BuildKit-today"] == (None, None)
    summary["no-change"]["ours"]["seconds"] = 61.0
    assert {g["goal"]: g["met"] for g in goals(summary)}["No change: time ≤ 1× BuildKit-today"] is False


def test_a_release_lane_passes_another_value_of_one_arg_and_every_other_argument_as_ci_does(
    tmp_path: pathlib.Path,
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    ci = (EXAMPLE / ARGS_FILE).read_text()
    (checkout / ARGS_FILE).write_text(ci)
    assert release_args(checkout, "py-change", tmp_path) is None  # not a lane: the checkout's own args file
    for lane, (name, value) in LANE_ARGS.items():
        path = release_args(checkout, lane, tmp_path)
        assert path is not None and checkout not in path.parents  # outside the checkout: its files do not change
        assert (checkout / ARGS_FILE).read_text() == ci
        release, before = BuildArgs(**read_args_file(path.read_text())), BuildArgs(**read_args_file(ci))
        assert release.passed()[name] == value
        assert [a for a in release.build_arg or [] if a.startswith(f"{name}=")] == [f"{name}={value}"]  # one value
        assert {k: v for k, v in release.passed().items() if k != name} == {
            k: v for k, v in before.passed().items() if k != name
        }
        assert dataclasses.replace(release, build_arg=[]) == dataclasses.replace(before, build_arg=[])
    assert set(LANE_ARGS) == {"lane-arch", "lane-cuda"}


def test_buildkits_rebuilt_count_names_the_stages_whose_run_steps_executed(tmp_path: pathlib.Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch AS base\nRUN a\nFROM base AS build\nRUN b\nRUN c\nFROM base AS test\nRUN d\n")
    progress = [
        "#5 [base 2/2] RUN a",
        "#5 CACHED",  # a hit in BuildKit's own state
        "#6 [build 2/3] RUN b",
        "#6 0.105 compiling",
        "#6 DONE 0.2s",  # ran
        "#7 [build 3/3] RUN c",
        "#7 sha256:0123 1.0MB / 1.0MB",
        "#7 extracting sha256:0123",
        "#7 DONE 0.1s",  # pulled from the registry cache, not run
        "#8 [test 2/2] RUN d",
        "#8 0.2 ok",
        "#8 DONE 0.3s",
    ]
    assert BuildKit.rebuilt("\n".join(progress), dockerfile) == ("2/4 RUN", ("build", "test"))


@pytest.mark.bench
@pytest.mark.wipes_engine  # each scenario runs on a fresh agent
def test_the_bench_compares_ours_with_buildkit_on_a_no_change_build(engine: None, tmp_path: pathlib.Path) -> None:
    # The test run already holds the engine lock (or runs alone): the bench must not wait for it.
    env = {**os.environ, "VLLM_CI_ENGINE_LOCK": ""}
    # Target csrc-build: both tools have it, and the fixed cost of a no-change build is what is measured;
    # the test image's cold build would only add minutes of the runtime base's apt and pip steps.
    cmd = [
        str(BENCH / "run"),
        "--quick",
        "--tools",
        "ours,buildkit-today",
        "--scenarios",
        "no-change",
        "--target",
        "csrc-build",
        "--results",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["target"] == "csrc-build"
    for tool in ("ours", "buildkit-today"):
        measured = results["results"]["no-change"][tool]
        # Bytes measured at the registry (ints, not "not measured"); a no-change build moves no
        # layer, only manifests and configs: look-ups, and ours publishes the image. A config carries
        # each RUN's text in its history (about 30 kB per stage of the ported file); a stage pulled
        # or rebuilt would move its layers (the build base alone is hundreds of MB).
        assert measured["seconds"] > 0
        assert isinstance(measured["pulled"], int) and isinstance(measured["pushed"], int), measured
        assert measured["pulled"] < 500_000 and measured["pushed"] < 100_000, measured
    assert results["results"]["no-change"]["ours"]["rebuilt"].startswith("0/")  # nothing rebuilt
    (no_change,) = [g for g in results["goals"] if g["goal"].startswith("No change")]
    assert no_change["ratio"] is not None and no_change["met"] == (no_change["ratio"] <= no_change["limit"])
    assert "| no-change | ours |" in proc.stdout
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.bench
@pytest.mark.wipes_engine  # each scenario runs on a fresh agent
def test_the_scale_bench_runs_at_a_tiny_size_and_only_buildkit_pulls_the_heavy_layer(
    engine: None, tmp_path: pathlib.Path
) -> None:
    env = {**os.environ, "VLLM_CI_ENGINE_LOCK": ""}
    proc = subprocess.run(
        [str(BENCH / "scale"), "--sizes", "0.05", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "scale.json").read_text())["results"]["0.05"]
    # A Python-only change on a fresh agent: ours pulls none of the 50 MB layer, BuildKit all of it.
    # Layers are pulled whole and the heavy one alone is 50 MB, so less than that means not it (ours
    # pulls runtime-python, the runtime's interpreter alone, about 20 MB, to compile the bytecode).
    assert results["ours"]["pulled"] < 0.05e9, results
    assert results["buildkit-today"]["pulled"] > 50_000_000, results
    assert "| 0.05 GB | ours |" in proc.stdout and "slope (s per GB of image)" in proc.stdout
    assert (tmp_path / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_our_test_image_differs_from_upstreams_own_build_only_where_a_reason_is_given(
    engine: None, tmp_path: pathlib.Path
) -> None:
    # The example's test image by ours, and twice by BuildKit on upstream's real Dockerfile (as the
    # example's args fork it), compared file by file and by config: every difference must be one the
    # bench names with its reason, and every one it names must still occur.
    env = {**os.environ, "VLLM_CI_ENGINE_LOCK": ""}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "equivalence.py"), "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=2400,
    )
    report = json.loads((tmp_path / "equivalence.json").read_text())
    assert proc.returncode == 0, (report.get("unexplained"), report.get("no_longer_differ"), proc.stderr[-2000:])
    assert report["unexplained"] == [] and report["no_longer_differ"] == [] and report["config"] == []
    assert report["files"]["ours"] > 1000 and report["explained"], report["files"]
