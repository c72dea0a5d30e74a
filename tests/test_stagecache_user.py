"""The stage cache as a library: examples/stagecache-user builds two stages of its own with it,
from plain Python (no Dagger module), against the real engine and registry."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import uuid

import pytest

from conftest import REGISTRY, REPO

PROJECT = REPO / "examples" / "stagecache-user"


def build(project: pathlib.Path, cache: str) -> dict[str, str]:
    """Run the project's build script with plain Python; stage name to outcome."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "stagecache_user.build", "--project", str(project),
         "--base-image", f"{REGISTRY}/library/vllm-ci-build:bookworm", "--cache", cache],
        env=env, capture_output=True, text=True, timeout=1200,
    )
    if proc.returncode != 0:
        pytest.fail(f"stagecache-user exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    return {s["stage"]: s["outcome"] for s in report["stages"]}


def test_two_stages_of_its_own_are_cached_and_reused(engine: None, tmp_path: pathlib.Path) -> None:
    cache = f"{REGISTRY}/test/stagecache-user-{uuid.uuid4().hex[:12]}"
    project = tmp_path / "stagecache-user"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))

    assert build(project, cache) == {"deps": "exported", "app": "exported"}
    # The target's own entry is enough: its parent is not even looked at.
    assert build(project, cache) == {"deps": "unused", "app": "hit"}

    # An edit to app/ changes app's key only: deps still comes from the cache.
    greet = project / "app" / "greet.py"
    greet.write_text(greet.read_text() + "# edited\n")
    assert build(project, cache) == {"deps": "hit", "app": "exported"}
