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

import anyio
import pytest

from conftest import REGISTRY, REPO
from stagecache.registry import ImageRef, RegistryClient
from stagecache.why import latest_tag

PROJECT = REPO / "examples" / "stagecache-user"
BASE_IMAGE = f"{REGISTRY}/library/vllm-ci-build:bookworm"  # its layers are gzip
ZSTD, GZIP = "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.v1.tar+gzip"


def build(
    project: pathlib.Path, cache: str, layers: str = "zstd", whys: dict[str, str] | None = None
) -> dict[str, str]:
    """Run the project's build script with plain Python; stage name to outcome (and to why, into `whys`)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "src")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stagecache_user.build",
            "--project",
            str(project),
            "--base-image",
            f"{BASE_IMAGE}",
            "--cache",
            cache,
            "--layer-compression",
            layers,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        pytest.fail(f"stagecache-user exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    if whys is not None:
        whys.update({s["stage"]: s["why"] for s in report["stages"]})
    return {s["stage"]: s["outcome"] for s in report["stages"]}


async def layer_types(cache: str, stage: str) -> set[str]:
    """The media types of the layers of a stage's newest entry in a cache repository."""
    ref = ImageRef.parse(cache)
    async with RegistryClient(ref.registry) as registry:
        found = await registry.manifest(ref.repository, latest_tag(stage))
        assert found is not None
        return {layer["mediaType"] for layer in found[0]["layers"]}


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


def test_entries_of_each_layer_compression_are_whole_in_it_and_never_mixed(
    engine: None, tmp_path: pathlib.Path
) -> None:
    cache = f"{REGISTRY}/test/stagecache-user-{uuid.uuid4().hex[:12]}"
    project = tmp_path / "stagecache-user"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))

    assert build(project, cache) == {"deps": "exported", "app": "exported"}
    # zstd, the default: the base image's gzip layers were recompressed, so no entry holds a gzip one.
    assert anyio.run(layer_types, cache, "deps") == anyio.run(layer_types, cache, "app") == {ZSTD}

    # gzip is another key: nothing of the zstd entries is used, and the misses say why.
    whys: dict[str, str] = {}
    assert build(project, cache, "gzip", whys) == {"deps": "exported", "app": "exported"}
    assert whys["deps"] == "layer compression: zstd -> gzip"
    assert anyio.run(layer_types, cache, "deps") == anyio.run(layer_types, cache, "app") == {GZIP}
    assert build(project, cache, "gzip") == {"deps": "unused", "app": "hit"}
    assert build(project, cache) == {"deps": "unused", "app": "hit"}
