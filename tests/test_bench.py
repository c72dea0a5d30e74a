"""The bench runs end to end on a tiny scenario and writes its JSON and chart (no timing assertions)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

from conftest import REPO
from vllm_ci.main import SOURCE_IGNORE

BENCH = REPO / "bench"


def test_the_dockerfiles_ignore_what_our_source_ignores() -> None:
    for layout in ("today", "oct2025"):
        lines = (BENCH / "dockerfiles" / f"Dockerfile.{layout}.dockerignore").read_text().splitlines()
        assert [line for line in lines if line and not line.startswith("#")] == SOURCE_IGNORE


@pytest.mark.wipes_engine  # each scenario runs on a fresh agent
def test_the_bench_compares_ours_with_buildkit_on_a_no_change_build(engine: None, tmp_path: pathlib.Path) -> None:
    # The test run already holds the engine lock (or runs alone): the bench must not wait for it.
    env = {**os.environ, "VLLM_CI_ENGINE_LOCK": ""}
    # Target csrc-build: both tools have it, and the fixed cost of a no-change build is what is measured;
    # the test image's cold build would only add minutes of the runtime base's apt and pip steps.
    cmd = [str(BENCH / "run"), "--quick", "--tools", "ours,buildkit-today", "--scenarios", "no-change",
           "--target", "csrc-build", "--results", str(tmp_path)]
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


@pytest.mark.wipes_engine  # each scenario runs on a fresh agent
def test_the_scale_bench_runs_at_a_tiny_size_and_only_buildkit_pulls_the_heavy_layer(engine: None, tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "VLLM_CI_ENGINE_LOCK": ""}
    proc = subprocess.run([str(BENCH / "scale"), "--sizes", "0.05", "--results", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "scale.json").read_text())["results"]["0.05"]
    # A Python-only change on a fresh agent: ours pulls none of the 50 MB layer, BuildKit all of it.
    assert results["ours"]["pulled"] < 5_000_000, results
    assert results["buildkit-today"]["pulled"] > 50_000_000, results
    assert "| 0.05 GB | ours |" in proc.stdout and "slope (s per GB of image)" in proc.stdout
    assert (tmp_path / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
