"""The bench runs end to end on a tiny scenario and writes its JSON and chart (no timing assertions)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import EXAMPLE, REPO
from vllm_ci.args import PORTABLE_COMMANDS, arg_defaults, read_args_file
from vllm_ci.conformance import normalise, parse
from vllm_ci.main import SOURCE_IGNORE
from vllm_ci.upstream import vllm_source

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))
from fork_dockerfile import fork  # noqa: E402

from tools import BenchError  # noqa: E402


def test_the_dockerfiles_ignore_what_our_source_ignores() -> None:
    # Today's layout is upstream's file: BuildKit reads the checkout's own .dockerignore, as ours does.
    lines = (BENCH / "dockerfiles" / "Dockerfile.oct2025.dockerignore").read_text().splitlines()
    assert [line for line in lines if line and not line.startswith("#")] == SOURCE_IGNORE


def test_todays_layout_is_upstreams_dockerfile_with_only_the_portable_commands_replaced() -> None:
    upstream = (vllm_source() / "docker" / "Dockerfile").read_text()
    generated = fork(upstream, (EXAMPLE / "vllm-ci.args").read_text())
    before, after = parse(upstream, "upstream"), parse(generated.dockerfile, "fork")
    assert [c.cmd for c in before] == [c.cmd for c in after]  # instruction for instruction
    changed = [(old, new) for old, new in zip(before, after) if normalise(old.original) != normalise(new.original)]
    defaults = arg_defaults()
    # Each portable command the example overrides replaces upstream's text in exactly one RUN, and
    # nothing else of the file moves; the example's other flags are upstream ARGs, passed as build args.
    assert sorted(
        name for name in PORTABLE_COMMANDS for old, _ in changed if defaults[name] in normalise(old.original)
    ) == sorted(
        name
        for name in PORTABLE_COMMANDS
        if read_args_file((EXAMPLE / "vllm-ci.args").read_text()).get(name, defaults[name]) != defaults[name]
    )
    assert len(changed) == len(PORTABLE_COMMANDS) and all(new.cmd == "RUN" for _, new in changed)
    assert generated.build_args["BUILD_BASE_IMAGE"].endswith("/library/vllm-ci-build:bookworm")
    assert generated.build_args["torch_cuda_arch_list"] == ""  # upstream's ARG, in upstream's spelling
    with pytest.raises(BenchError, match="declares no ARG NO_SUCH_ARG"):
        fork(upstream, "--no-such-arg=1\n")


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
    assert [g["goal"] for g in results["goals"]][2].startswith("No change")
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
