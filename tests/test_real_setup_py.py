"""the pinned vLLM release's own setup.py, run on its sdist as csrc-build and build run it, with
VLLM_TARGET_DEVICE=empty (no compiler, no GPU) and upstream's build requirements from PyPI, torch
2.14.0 included: the dist-info and _version.py the fast path derives from csrc-build's wheel are
build's wheel's. No engine: the stages' containers cannot run real vLLM's csrc-build here (its
tools/setup_deepgemm_pythons.sh downloads uv-managed Pythons from GitHub), so setup.py runs on the
host, in a virtualenv cached by the hash of requirements/build/cuda.txt."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import CACHE, VLLM_VERSION, example_build, vllm_source
from vllm_ci.declare import DECLARED
from vllm_ci.fastpath.install import build_version, dist_info_as_built, metadata_inputs, metadata_version, version_file
from vllm_ci.main import VllmCi  # noqa: F401  (declares the stages)
from vllm_ci.stages.common import PRETEND_VERSION, SOURCE_DATE_EPOCH
from vllm_ci.version import git_versions

# What build's and csrc-build's setup.py commands read of their environment here (upstream's ENV and
# the compile RUN's exports, less CUDA's: target "empty").
SETUP_ENV = {"VLLM_TARGET_DEVICE": "empty", "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
BDIST_WHEEL = ["setup.py", "bdist_wheel", "--dist-dir=dist", "--py-limited-api=cp38"]

# What csrc-build's ENV gives setuptools-scm, as the pinned Dockerfile writes it.
CSRC_VERSION = example_build().env_value("csrc-build", PRETEND_VERSION)


@pytest.fixture(scope="module")
def build_python() -> pathlib.Path:
    """A Python with upstream's requirements/build/cuda.txt installed from PyPI (torch and its CUDA
    wheels: about 5.4 GB), made once per hash of that file."""
    requirements = vllm_source() / "requirements" / "build" / "cuda.txt"
    digest = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = CACHE / f"build-requirements-{digest}"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", "-r", requirements],
            check=True,
            timeout=1800,
        )
        (venv / ".complete").touch()
    return venv / "bin" / "python"


def setup_py_wheel(python: pathlib.Path, tree: pathlib.Path, version: str, **env: str) -> pathlib.Path:
    """setup.py bdist_wheel in a tree with setuptools-scm's pretend version; the wheel's path."""
    subprocess.run(
        [python, *BDIST_WHEEL],
        cwd=tree,
        check=True,
        capture_output=True,
        timeout=900,
        env={**os.environ, **SETUP_ENV, "SETUPTOOLS_SCM_PRETEND_VERSION": version, **env},
    )
    return next((tree / "dist").glob("*.whl"))


def copy_of(source: pathlib.Path, target: pathlib.Path, paths: list[str]) -> pathlib.Path:
    """The given files and folders of a tree, copied to another."""
    for path in paths:
        origin = source / path.rstrip("/")
        if origin.is_dir():
            shutil.copytree(origin, target / path.rstrip("/"))
        elif origin.is_file():
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target / path)
    return target


def unpacked(wheel: pathlib.Path) -> dict[str, str]:
    """A wheel's text files by path."""
    with zipfile.ZipFile(wheel) as archive:
        return {
            name: archive.read(name).decode()
            for name in archive.namelist()
            if name.endswith((".txt", ".py", "METADATA", "WHEEL")) or "/licenses/" in name
        }


@pytest.fixture(scope="module")
def wheels(
    build_python: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[pathlib.Path, pathlib.Path, str]:
    """(csrc-build's wheel, build's wheel, the version the client derives) of the pinned vLLM release's sdist."""
    source = vllm_source()
    # csrc-build's /workspace: what base copies in, then its own COPYs.
    csrc_tree = copy_of(
        source, tmp_path_factory.mktemp("csrc-build"), [*DECLARED["base"].reads, *DECLARED["csrc-build"].reads]
    )
    csrc = setup_py_wheel(build_python, csrc_tree, CSRC_VERSION, VLLM_DOCKER_BUILD_CONTEXT="1")
    build_tree = tmp_path_factory.mktemp("build") / "workspace"
    shutil.copytree(source, build_tree)  # COPY . .
    version, _ = git_versions(source)
    build = setup_py_wheel(build_python, build_tree, version, VLLM_SKIP_PRECOMPILED_VERSION_SUFFIX="1")
    return csrc, build, version


def test_vllms_dist_info_and_version_file_derived_from_csrc_builds_wheel_are_builds_wheels(
    wheels: tuple[pathlib.Path, pathlib.Path, str],
) -> None:
    csrc, build, version = wheels
    theirs, ours_from = unpacked(build), unpacked(csrc)
    csrc_info = next(name.split("/")[0] for name in ours_from if name.endswith(".dist-info/METADATA"))
    build_info = next(name.split("/")[0] for name in theirs if name.endswith(".dist-info/METADATA"))
    csrc_files = {
        name.removeprefix(f"{csrc_info}/"): text for name, text in ours_from.items() if name.startswith(f"{csrc_info}/")
    }
    csrc_version = metadata_version(csrc_files["METADATA"])
    assert csrc_version == f"{CSRC_VERSION}.empty"  # setup.py's suffix on the pretend version

    installed_version = build_version(csrc_version, version, CSRC_VERSION)
    assert installed_version == f"{VLLM_VERSION}+empty" and build_info == f"vllm-{installed_version}.dist-info"
    source = vllm_source()
    readme, patterns = metadata_inputs((source / "pyproject.toml").read_text())
    licenses = {
        path.relative_to(source).as_posix(): path.read_text()
        for pattern in patterns
        for path in sorted(source.glob(pattern))
    }
    assert readme and list(licenses) == ["LICENSE"]
    ours = dist_info_as_built(csrc_files, installed_version, (source / readme).read_text(), licenses)
    assert ours == {
        name.removeprefix(f"{build_info}/"): text for name, text in theirs.items() if name.startswith(f"{build_info}/")
    }
    assert version_file(ours_from["vllm/_version.py"], version) == theirs["vllm/_version.py"]
