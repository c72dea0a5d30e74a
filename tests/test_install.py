"""The package layer's files (vllm_ci.fastpath.install): the engine's filter and the manifest's reading of one spec."""

from __future__ import annotations

import pathlib

import pytest
from dagger import dag

from vllm_ci.fastpath.install import in_package, package_files

# Bytecode and extensions at every depth, a folder named like an extension, and names that only look alike.
PACKAGE_TREE = (
    "vllm/__init__.py",
    "vllm/_version.py",
    "vllm/_C.so",
    "vllm/old.pyc",
    "vllm/__pycache__/layers.cpython-311.pyc",
    "vllm/sub/__pycache__/notes.txt",
    "vllm/sub/mod.py",
    "vllm/plugins.so/inner.py",
    "vllm/shared.sop",
    "vllm/pycache/__pycache__x.py",
    "vllm/sub/.so",
)


@pytest.mark.anyio
async def test_the_package_layer_keeps_the_files_the_engines_filter_keeps_and_no_others(
    client: None, tmp_path: pathlib.Path
) -> None:
    for path in PACKAGE_TREE:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(path)
    # The whole folder, none of it left out on upload (the module's source ignores bytecode and extensions too).
    listed = await package_files(dag.host().directory(str(tmp_path), no_cache=True)).glob("**")
    engine = {f"vllm/{path}" for path in listed if (tmp_path / "vllm" / path).is_file()}
    assert {path for path in PACKAGE_TREE if in_package(path.removeprefix("vllm/"))} == engine
    assert engine == {
        "vllm/__init__.py",
        "vllm/_version.py",
        "vllm/sub/mod.py",
        "vllm/shared.sop",
        "vllm/pycache/__pycache__x.py",
    }
